"""An autoregressive Bernoulli observation model: notes of one time step that depend on each other.

The factorised Bernoulli makes the elements of a frame independent given (z_t, h_{t-1}): every
correlation between the notes of one chord must pass through z_t. ``ar-bernoulli`` writes
p(x_t | z_t, h_{t-1}) = prod_d p(x_{t,d} | x_{t,<d}, z_t, h_{t-1}) with a masked autoencoder
(MADE, Germain et al. 2015): one hidden layer whose units see only the elements before their
degree, conditioned on the decoder's output. It is the emission of RNN-NADE (Boulanger-Lewandowski
et al. 2012) given to a VRNN. The log-density of a whole frame is one batched pass (no loop over
elements); drawing a frame takes one cheap update per element. Meant for vectors such as 88-key
piano rolls; it builds for any frame shape, in flattened (C, H, W) order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vrnnkit.blocks.base import Likelihood
from vrnnkit.blocks.distributions import rand
from vrnnkit.blocks.layers import check_positive
from vrnnkit.registry import register

CHUNK_ROWS = 1024
"""Rows of the hidden layer computed at once without gradients (``ARBernoulli.logits``):
1,024 x 4,096 floats are 16 MiB, under glibc's largest threshold for reusing freed memory
instead of mapping fresh pages."""


@register("likelihood", "ar-bernoulli")
class AutoregressiveBernoulli(Likelihood):
    """Bernoulli elements in a fixed order, each conditioned on those before it (MADE).

    The decoder gives ``1 + context`` parameters per element: channel 0 the logits the
    elements would have on their own (the factorised Bernoulli's; the output-bias
    initialisation sets them), channels 1.. a context that sets the hidden units' biases. Each
    element's logit adds ``hidden`` masked ReLU units and a direct masked linear term of the
    elements before it. The masked weights start at zero, so a new model is exactly the
    factorised Bernoulli and learns how far to depart from it.

    ``mean`` is not available in closed form for an autoregressive model; it returns the
    element probabilities of a deterministic pass that feeds each element's probability to the
    next (a mean-field approximation of the marginals), which is what pictures and fed-back
    frames show. ``sample`` draws exactly from the model.
    """

    support = "unit-interval"
    sample_feedback = "draw"
    needs_frame_shape = True

    def __init__(self, frame_shape: tuple[int, ...], hidden: int = 1024, context: int = 2) -> None:
        super().__init__()
        check_positive(hidden=hidden, context=context)
        size = math.prod(frame_shape)
        if size < 2:
            raise ValueError(f"ar-bernoulli needs frames of at least 2 elements, got shape {tuple(frame_shape)}")
        self.size = size
        self.params_per_element = 1 + context
        # Hidden unit k has degree m_k in 1..D-1: it reads elements d < m_k and feeds
        # elements d >= m_k, so element d's logit depends on elements before d only.
        degree = torch.arange(hidden) % (size - 1) + 1
        element = torch.arange(size)
        self.register_buffer("in_mask", (element[None, :] < degree[:, None]).float(), persistent=False)
        self.register_buffer("out_mask", (element[:, None] >= degree[None, :]).float(), persistent=False)
        self.register_buffer("direct_mask", torch.ones(size, size).tril(-1), persistent=False)
        self.w_in = nn.Parameter(torch.empty(hidden, size))
        nn.init.kaiming_uniform_(self.w_in, a=math.sqrt(5))
        self.context = nn.Linear(context * size, hidden)
        self.w_out = nn.Parameter(torch.zeros(size, hidden))
        self.w_direct = nn.Parameter(torch.zeros(size, size))

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The base logits (N, D) and the hidden units' biases from the context (N, H)."""
        flat = params.flatten(2)
        return flat[:, 0], self.context(flat[:, 1:].flatten(1))

    def _masked(self) -> tuple[Tensor, Tensor, Tensor]:
        """The masked weights: input to hidden (H, D), hidden to output (D, H), direct (D, D)."""
        return self.w_in * self.in_mask, self.w_out * self.out_mask, self.w_direct * self.direct_mask

    def logits(self, params: Tensor, x: Tensor) -> Tensor:
        """Each element's logit given the elements of ``x`` before it: (N, D), one pass.

        The hidden units' input from the context and from ``x`` is one matrix product over
        both, concatenated. Without gradients the rows go ``CHUNK_ROWS`` at a time: a hidden
        layer of N x 4,096 floats for thousands of rows would be a fresh allocation, and a
        round of page faults, every call."""
        flat = params.flatten(2)
        base, x = flat[:, 0], x.flatten(1)
        inputs = torch.cat([flat[:, 1:].flatten(1), x], dim=1)
        w_in, w_out, w_direct = self._masked()
        weight = torch.cat([self.context.weight, w_in], dim=1)
        if torch.is_grad_enabled() or len(x) <= CHUNK_ROWS:
            hidden = F.relu(F.linear(inputs, weight, self.context.bias))
            return base + hidden @ w_out.t() + x @ w_direct.t()
        out = torch.addmm(base, x, w_direct.t())
        for start in range(0, len(x), CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            hidden = F.linear(inputs[rows], weight, self.context.bias).relu_()
            out[rows].addmm_(hidden, w_out.t())
        return out

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = self.logits(params, x)
        return -F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)

    def _roll(self, params: Tensor, draw: bool, generator: torch.Generator | None) -> Tensor:
        """Elements one at a time: each one's probability from those already set, then its
        value (a draw, or the probability itself). Updates the hidden units' inputs by one
        column per element instead of recomputing the whole pass."""
        base, pre = self._split(params)
        w_in, w_out, w_direct = self._masked()
        w_in, w_direct = w_in.t(), w_direct.t()  # row d: what element d feeds to the others
        direct = torch.zeros_like(base)  # each element's direct term from the elements set so far
        outputs = []
        for d in range(self.size):
            p = torch.sigmoid(base[:, d] + F.relu(pre) @ w_out[d] + direct[:, d])
            if draw:
                value = (rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)
            else:
                value = p
            outputs.append(value)
            pre = pre + value[:, None] * w_in[d]
            direct = direct + value[:, None] * w_direct[d]
        return torch.stack(outputs, dim=1).view(params.shape[0], *params.shape[2:])

    def mean(self, params: Tensor) -> Tensor:
        return self._roll(params, draw=False, generator=None)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self._roll(params, draw=True, generator=generator)

    def frame_params(self, frame: Tensor) -> Tensor:
        logits = torch.logit(frame.clamp(1e-3, 1 - 1e-3)).unsqueeze(1)
        context = torch.zeros_like(logits).expand(-1, self.params_per_element - 1, *frame.shape[1:])
        return torch.cat([logits, context], dim=1)
