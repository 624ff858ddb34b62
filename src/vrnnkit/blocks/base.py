"""The contracts a block of each kind fulfils, with defaults a plug-in can rely on.

What the model passes to each builder (plus the user's options for that block):

| kind       | built with                                                  | called as                                   |
|------------|-------------------------------------------------------------|---------------------------------------------|
| encoder    | frame_shape, out_dim                                        | (N, *frame) -> (N, out_dim)                 |
| decoder    | latent_dim, h_dim, frame_shape, params_per_element          | (f (N, latent_dim), h (N, h_dim)) -> (N, P, *frame) |
| prior      | h_dim, z_dim                                                | h -> (mean, std), each (N, z_dim)           |
| posterior  | feature_dim, h_dim, z_dim                                   | subclass of Posterior                       |
| rnn        | feature_dim, latent_dim, hidden_size, num_layers           | subclass of RecurrentCell                   |
| likelihood | (options only)                                              | subclass of Likelihood                      |

Skip connections (see ``vrnnkit.skips``): an encoder with ``provides_skips = True`` also has
``encode(x) -> (features, maps)`` and ``skip_shapes``, the (C, H, W) of each map; a decoder with
``uses_skips = True`` is built with ``skip_shapes`` too and called as ``(f, h, maps)``, the maps
of the step's reference frame. A likelihood's ``frame_params(frame)`` gives the parameters
whose mean is ``frame``, which ``skip_residual`` adds the decoder's output to.

Posterior and RecurrentCell split their work in two so that the model can keep the time loop
short: ``precompute`` runs once over the features of every frame before the loop, ``step``
runs at each time step. Their defaults (identity, then ``forward``) let a plug-in implement
only ``forward``.

A model with a per-step input u_t (an action: ``vrnnkit.model.actions``) builds the posterior
and the recurrence with ``feature_dim`` widened by the input's embedding a_t, which it appends
to e_t; a prior or decoder class with ``reads_actions = True`` is built with ``action_dim`` (the
embedding's width) and called with ``actions=a_t`` (the mlp ones append it to h_{t-1}); any
other prior or decoder gets ``h_{t-1} + W a_t`` in place of h_{t-1} and needs no change.

A posterior that also reads the frames after step t (a smoothing one, ``blocks/smoothing.py``)
sets ``reads_future = True``: the model then calls ``precompute(e, mask)`` with the step mask
(T, B) (None: every step observed) so that it reads no padding, and ``forward(e, h, mask)``
with whole batch-first sequences; it has no one-step form (``VRNN.filter_step``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Posterior(nn.Module):
    """q(z_t | x_t, h_{t-1}): a diagonal Gaussian over z from frame features e_t and h_{t-1}."""

    reads_future: bool = False
    """Whether q at step t reads the frames after t (see the module docstring)."""

    def forward(self, e: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def precompute(self, e: Tensor) -> Tensor:
        """The part that depends on the frame features only; runs over all steps at once."""
        return e

    def step(self, pre: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) at one step, from ``precompute(e)[t]`` and h_{t-1}."""
        return self(pre, h)


def posterior_inputs(posterior: nn.Module, e: Tensor, mask: Tensor | None) -> Tensor:
    """``posterior.precompute`` over time-major frame features ``e`` (T, B, E), given the
    batch-first step ``mask`` (B, T) (None: every step observed) when it ``reads_future``;
    a posterior that reads step t's frame only never needs the mask."""
    if getattr(posterior, "reads_future", False):
        return posterior.precompute(e, None if mask is None else mask.transpose(0, 1))
    return posterior.precompute(e)


class RecurrentCell(nn.Module):
    """The recurrence h_t = rnn([e_t, f_t], h_{t-1}) with its whole state in one tensor.

    The state is a single ``(B, state_size)`` tensor whatever the cell keeps (several layers,
    an LSTM's cell vector), so that prediction can repeat it per sample and export can pass it
    across a graph boundary; ``output(state)`` is the h_t that the prior, posterior and decoder
    see.
    """

    hidden_size: int
    state_size: int

    def __init__(self, learn_initial_state: bool = False) -> None:
        super().__init__()
        self.learn_initial_state = learn_initial_state

    def _init_state_parameter(self) -> None:
        # Called by subclasses once state_size is known.
        if self.learn_initial_state:
            self.initial = nn.Parameter(torch.zeros(self.state_size))

    def initial_state(self, batch: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
        """h_0 for a batch: zeros, or the learned initial state."""
        if self.learn_initial_state:
            return self.initial.to(dtype).expand(batch, -1)
        return torch.zeros(batch, self.state_size, device=device, dtype=dtype)

    def output(self, state: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def precompute(self, e: Tensor) -> Tensor:
        """The part of the input transform that depends on frame features only."""
        return e

    def step(self, pre: Tensor, f: Tensor, state: Tensor) -> Tensor:  # pragma: no cover
        """The next state from ``precompute(e)[t]``, the latent features f_t and the state."""
        raise NotImplementedError


class Likelihood(nn.Module):
    """p(x_t | z_t, h_{t-1}) from the decoder's parameters, shaped (N, P, *frame)."""

    params_per_element: int
    support: str = "real"
    """Where the data lives: ``"real"``, or ``"unit-interval"`` for likelihoods whose targets
    must lie in [0, 1] (vrnnkit then checks the data's range before training or evaluating)."""
    sample_feedback: str | None = None
    """What ``vrnnkit sample`` feeds back into the state by default: ``"draw"`` (ancestral
    sampling; the Bernoulli likelihoods, whose mean frame is a blur the encoder never sees in
    training) or None (the frame shown; the continuous likelihoods, whose draws add noise)."""

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:  # pragma: no cover
        """log p(x) per frame, summed over the frame's elements: shape (N,)."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:  # pragma: no cover
        """The distribution's mean frame, shape (N, *frame)."""
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        """A frame drawn from the distribution, shape (N, *frame)."""
        raise NotImplementedError

    def frame_params(self, frame: Tensor) -> Tensor:  # pragma: no cover
        """Parameters (N, P, *frame) whose distribution has ``frame`` as its mean (or close):
        what a residual skip decoder adds its output to."""
        raise NotImplementedError(f"likelihood {type(self).__name__} does not define frame_params")
