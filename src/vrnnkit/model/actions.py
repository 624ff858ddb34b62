"""Per-step inputs u_t (actions, controls, commands): a VRNN conditioned on them is a world model.

Alignment: ``actions[:, t]`` is u_t, the input applied *before* frame x_t is observed (the one
that led from x_{t-1} to x_t); u_0 is whatever preceded the first frame (zeros if nothing did).
With a_t = embed(u_t), one step of the model reads::

    p(z_t | h_{t-1}, u_t)       = N(prior(h_{t-1}, a_t))
    q(z_t | x_t, h_{t-1}, u_t)  = N(posterior([e_t, a_t], h_{t-1}))
    p(x_t | z_t, h_{t-1}, u_t)  = likelihood(decoder(f_t, h_{t-1}, a_t))
    h_t                         = rnn([e_t, a_t, f_t], h_{t-1})

so a prediction of x_t under a chosen u_t sees the input through the prior and the decoder, and
the state remembers it through the recurrence.

Where a_t enters, and why there:

- The embedding runs once over every step, outside the time loop, like phi_x.
- The posterior and the recurrence read a_t as extra frame features: the model builds them with
  ``feature_dim + action_embedding`` and concatenates a_t to e_t before their ``precompute``,
  which already runs outside the loop. Any posterior or rnn block takes it, plug-ins included,
  and the fused time loop (``vrnnkit.model.fused``) runs unchanged.
- A prior or decoder class that declares ``reads_actions = True`` is built with
  ``action_dim`` (the embedding's width) and called with ``actions=a_t`` (the built-in ``mlp``
  prior and decoder concatenate it to h_{t-1}). For any other block (the conv decoders, the
  standard-normal prior, a plug-in that knows nothing of actions) the model adds a linear map
  of a_t to the h_{t-1} it passes: ``h_{t-1} + W a_t``.

The embedding's output layer starts at zero, so a new model with inputs starts out as the same
model without them (a_t = 0 exactly: every use of it adds zero), and learns how much to read
them; with its output weights zero (or u = 0 through a zero embedding) the model is today's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vrnnkit.errors import DataError


def reads_actions(builder: Any) -> bool:
    """Whether a block (or its class) is built with ``action_dim`` and called with ``actions=``."""
    return bool(getattr(builder, "reads_actions", False))


class ActionInput(nn.Module):
    """The embedding a_t = embed(u_t) and the linear maps that fold it into the h_{t-1} of a
    prior or decoder that does not read it (``fold_prior``/``fold_decoder``: None when the
    block reads a_t itself)."""

    def __init__(self, action_dim: int, width: int, h_dim: int, *, fold_prior: bool, fold_decoder: bool) -> None:
        super().__init__()
        self.action_dim, self.width = action_dim, width
        self.embed = nn.Sequential(nn.Linear(action_dim, width), nn.ReLU(), nn.Linear(width, width))
        nn.init.zeros_(self.embed[2].weight)
        nn.init.zeros_(self.embed[2].bias)
        self.prior_fold = nn.Linear(width, h_dim, bias=False) if fold_prior else None
        self.decoder_fold = nn.Linear(width, h_dim, bias=False) if fold_decoder else None

    def forward(self, u: Tensor) -> Tensor:
        """a_t for inputs u (..., action_dim): (..., width)."""
        return self.embed(u)

    def prior(self, prior: nn.Module, h: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """p(z_t | h_{t-1}, u_t)'s mean and std, rows of h (N, H) with their a_t (N, W)."""
        if self.prior_fold is None:
            return prior(h, actions=a)
        return prior(h + self.prior_fold(a))

    def decoder_inputs(self, h: Tensor, a: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The h_{t-1} and the keywords to call the decoder with, for rows with their a_t."""
        if self.decoder_fold is None:
            return h, {"actions": a}
        return h + self.decoder_fold(a), {}


def check_actions(action_dim: int, actions: Any, batch: int, steps: int, step_mask: Tensor | None, like: Tensor,
                  name: str = "actions") -> Tensor | None:
    """The inputs u (B, T, A) of a batch, checked against the model's ``action_dim`` (0: the
    model takes none), in ``like``'s dtype and device, with padded steps zeroed (padding may
    hold anything, NaN included: a select, so it cannot reach a real step or a gradient).
    DataError when a model with inputs gets none, a model without gets some, or the shape,
    type or values are wrong."""
    if action_dim == 0:
        if actions is not None:
            raise DataError(f"this model was trained without actions (action_dim 0), but {name} were given; "
                            "train on data with actions to get a model that takes them")
        return None
    if actions is None:
        raise DataError(f"this model takes an action per step (action_dim {action_dim}); give {name} of shape "
                        f"(batch, time, {action_dim}), u_t being the action taken before frame t")
    if not isinstance(actions, Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(actions).__name__}")
    if tuple(actions.shape) != (batch, steps, action_dim):
        raise DataError(f"{name} must have shape (batch, time, action_dim) = {(batch, steps, action_dim)} for "
                        f"these frames and this model, got {tuple(actions.shape)}")
    if not (actions.is_floating_point() or actions.dtype in (torch.bool, torch.uint8, torch.int32, torch.int64)):
        raise DataError(f"{name} must hold numbers, got dtype {actions.dtype}")
    actions = actions.to(device=like.device, dtype=like.dtype)
    if step_mask is not None:
        keep = step_mask.unsqueeze(-1) > 0
        actions = torch.where(keep, actions, torch.zeros((), dtype=like.dtype, device=like.device))
    if not bool(torch.isfinite(actions).all()):
        raise DataError(f"{name} hold non-finite values (NaN or inf) at observed steps")
    return actions


def step_actions(actions: Tensor | None, t: int) -> Tensor | None:
    """u_t of every row (rows, A) from inputs (rows, T, A), or None."""
    return None if actions is None else actions[:, t]
