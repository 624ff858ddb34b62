"""A smoothing posterior: q(z_t | x_{t:T}, h_{t-1}), which also reads the frames after t.

The filtering posterior of the paper (``mlp``, eq. 9) sees the frames up to t only, through
e_t and h_{t-1}. Like the structured inference network of the deep Markov model (Krishnan et
al. 2017) and SRNN's posterior (Fraccaro et al. 2016), this one adds a backward summary
``b_t = GRU_back(e_t, b_{t+1})``, ``b_{T+1} = 0``, of the frame features from t to the end of
the sequence, and reads ``[e_t, b_t]`` where ``mlp`` reads ``e_t``; ``h_{t-1}`` carries the
path of latents so far as before.

b_t is a deterministic function of the frame features, not of the latents, so the backward pass
runs in ``precompute``, once over the whole batch before the time loop (one ``nn.GRU`` call);
the time loop is the ``mlp`` posterior's, on a wider precomputed input (and so runs in the
fused loop of ``vrnnkit.model.fused``).

Masks: the summary at step t reads the observed frames at steps >= t only. For a padded
sequence the backward pass starts at the sequence's own last step (b = 0 after it), and no
padded frame is read. Any proposal that depends on all the frames still gives lower bounds
(ELBO, IWAE, FIVO) on log p(x).

There is no one-step form: q at step t needs the frames after t. ``forward`` takes whole
sequences; a single frame (``VRNN.filter_step``, the ONNX filtering graph) is refused.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vrnnkit.blocks.layers import check_positive
from vrnnkit.blocks.mlp import MLPPosterior
from vrnnkit.errors import ConfigError
from vrnnkit.registry import register

NO_ONE_STEP_FORM = (
    "the smoothing posterior reads the frames after step t (a backward pass over the whole sequence), "
    "so it has no one-step filtering form: filter whole sequences (VRNN.filter, VRNN.predict), "
    "or use the filtering posterior (posterior = \"mlp\") for step-by-step filtering and ONNX export"
)


@register("posterior", "smoothing")
class SmoothingPosterior(MLPPosterior):
    """q(z_t | x_{t:T}, h_{t-1}) from [phi_x(x_t), b_t, h_{t-1}]: the ``mlp`` posterior
    (``hidden``, ``layers``, ``activation``, ``min_std``, ``dropout`` as there) on the frame
    features and a backward GRU summary b_t of width ``backward_dim`` (default ``h_dim``) of
    the features from t to the sequence's end."""

    reads_future = True
    """``precompute`` takes the step mask, and ``forward`` whole sequences (``blocks.base``)."""

    def __init__(
        self,
        feature_dim: int,
        h_dim: int,
        z_dim: int,
        hidden: int | None = None,
        layers: int = 2,
        activation: str = "relu",
        min_std: float = 1e-3,
        dropout: float = 0.0,
        backward_dim: int | None = None,
    ) -> None:
        backward_dim = h_dim if backward_dim is None else backward_dim
        check_positive(feature_dim=feature_dim, h_dim=h_dim, backward_dim=backward_dim)
        super().__init__(feature_dim + backward_dim, h_dim, z_dim, hidden, layers, activation, min_std, dropout)
        self.backward_rnn = nn.GRU(feature_dim, backward_dim)

    def summary(self, e: Tensor, mask: Tensor | None = None) -> Tensor:
        """The backward summaries b_t (T, B, backward_dim) of time-major features ``e``
        (T, B, E); ``mask`` (T, B) marks observed steps (None: all). b_t reads the observed
        steps >= t, last first; it is 0 where none remains (after a sequence's end)."""
        if mask is None:
            return self.backward_rnn(e.flip(0))[0].flip(0)
        observed = mask > 0
        steps = torch.arange(e.shape[0], device=e.device).unsqueeze(1)
        # Each column's observed steps latest first, then its unobserved ones: the backward
        # pass reads a sequence's own frames from its last observed step, and the outputs that
        # read padding come after every output that is used.
        order = torch.argsort(torch.where(observed, -steps, steps + e.shape[0]), dim=0)
        e = torch.where(observed.unsqueeze(-1), e, torch.zeros((), dtype=e.dtype, device=e.device))
        out = self.backward_rnn(e.gather(0, order.unsqueeze(-1).expand_as(e)))[0]
        remaining = observed.flip(0).cumsum(0).flip(0)  # observed steps >= t: b_t is output remaining - 1
        index = (remaining - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        b = out.gather(0, index)
        return torch.where(remaining.unsqueeze(-1) > 0, b, torch.zeros((), dtype=b.dtype, device=b.device))

    def precompute(self, e: Tensor, mask: Tensor | None = None) -> Tensor:
        """The first layer's frame part for every step, from time-major features (T, B, E)
        and the step mask (T, B) (None: every step observed)."""
        return self.from_features(torch.cat([e, self.summary(e, mask)], dim=-1))

    def forward(self, e: Tensor, h: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mean, std) (B, T, z_dim) of whole sequences: features ``e`` (B, T, E), h_{t-1}
        ``h`` (B, T, H), ``mask`` (B, T) or None. One frame per row (B, E) is refused."""
        if e.dim() != 3:
            raise ConfigError(NO_ONE_STEP_FORM)
        pre = self.precompute(e.transpose(0, 1), None if mask is None else mask.transpose(0, 1)).transpose(0, 1)
        mean, std = self.step(pre.flatten(0, 1), h.flatten(0, 1))
        return mean.view(*h.shape[:2], -1), std.view(*h.shape[:2], -1)
