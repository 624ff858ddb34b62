"""Generation: sampling from the prior and predicting after a context, the model's methods
``VRNN.sample``, ``VRNN.predict`` and ``VRNN.generate`` (kept here so that the model's module
stays the step-level interface they are written on).

A generated frame feeds back into phi_x, so here the whole step runs in the time loop
(``VRNN.generate_step``). A model with inputs (``action_dim`` > 0) takes u_t at every step,
context and generated alike: ``actions[:, t]`` is the input before frame t.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import vrnnkit.model.inputs as inputs
import vrnnkit.model.skips as skips
from vrnnkit.blocks.distributions import randn
from vrnnkit.errors import check_counts
from vrnnkit.model.actions import step_actions

VRNN = Any
"""The model these functions are methods of (``vrnnkit.model.vrnn.VRNN``), named loosely: that
module imports this one, and an import back, even for type checking, would be a cycle."""


@torch.no_grad()
def sample(
    model: VRNN,
    num: int,
    steps: int,
    *,
    generator: torch.Generator | None = None,
    mean: bool = True,
    feedback: str | None = None,
    actions: Tensor | None = None,
) -> Tensor:
    """``num`` new sequences of ``steps`` frames, shape (num, steps, *frame_shape).

    Latents come from the prior; each frame is the likelihood's mean (``mean=True``) or a
    draw from it. ``feedback`` is what phi_x reads back to update the state: ``"mean"``,
    ``"draw"`` (a draw from the likelihood: ancestral sampling), or None: the frame returned.
    ``actions`` (num, steps, A): the inputs u_t of a model with inputs (needed there, refused
    elsewhere)."""
    check_counts(num=num, steps=steps)
    device, dtype = model._device_dtype()
    state = model.rnn.initial_state(num, device=device, dtype=dtype)
    like = torch.empty((), device=device, dtype=dtype)
    actions = model.checked_actions(actions, num, steps, None, like)
    return model.generate(state, steps, generator, mean, None, first=0, hold=model.config.skip_context, feedback=feedback,
                          actions=actions)


@torch.no_grad()
def predict(
    model: VRNN,
    context: Tensor,
    horizon: int,
    samples: int = 1,
    *,
    generator: torch.Generator | None = None,
    mean: bool = True,
    feedback: str | None = None,
    actions: Tensor | None = None,
) -> Tensor:
    """Continue each context sequence (B, C, *frame) for ``horizon`` frames, ``samples``
    times: shape (B, samples, horizon, *frame).

    The posterior filters the real context frames; then latents come from the prior, with
    generated frames fed back (``mean`` and ``feedback`` as in ``sample``). The samples of
    one sequence share its context and differ in their latent draws, the posterior's included.
    ``actions`` (B, C + horizon, A): a model with inputs takes u_t for every step, the context's
    (the recorded ones) and then the future's (the plan the futures are imagined under)."""
    batch, steps = model.check_frames(context, "context")
    check_counts(horizon=horizon, samples=samples)
    actions = model.checked_actions(actions, batch, steps + horizon, None, context)
    features, maps = model.encode(context, None if actions is None else actions[:, :steps])
    features = features.repeat_interleave(samples, dim=0)
    filtered = model.filter(features, model.noise(steps, batch * samples, context, generator))
    last = skips.last_frame(maps, batch, steps, samples)
    hold = steps if model.config.skip_context > 0 else 0  # the last context frame is held
    previous = context[:, -1].repeat_interleave(samples, dim=0)
    future = None if actions is None else actions[:, steps:].repeat_interleave(samples, dim=0)
    frames = model.generate(filtered.state, horizon, generator, mean, last, first=steps, hold=hold, previous=previous,
                            feedback=feedback, actions=future)
    return frames.view(batch, samples, horizon, *model.config.frame_shape)


def generate(
    model: VRNN,
    state: Tensor,
    steps: int,
    generator: torch.Generator | None,
    use_mean: bool,
    reference: list[Tensor] | None,
    *,
    first: int,
    hold: int,
    previous: Tensor | None = None,
    feedback: str | None = None,
    actions: Tensor | None = None,
) -> Tensor:
    """Roll the prior forward from ``state`` for ``steps`` frames, feeding frames back: the
    frames (rows, steps, *frame_shape), each the likelihood's mean (``use_mean``) or a draw.

    ``first`` is the index of the first generated frame in its sequence, ``reference`` the
    skip reference of that step and ``previous`` the frame before it (None: zeros). A
    generated frame becomes the reference while its index is below ``hold`` (always when
    ``hold`` is 0): ``vrnnkit.model.skips``' rule. ``feedback`` as in ``sample``; ``actions``
    (rows, steps, A) the inputs of the generated steps, for a model with inputs."""
    feed_draw = inputs.feeds_draw(feedback, use_mean)
    frames, shape = [], (state.shape[0], model.config.z_dim)
    for i, t in enumerate(range(first, first + steps)):
        noise = randn(shape, generator=generator, device=state.device, dtype=state.dtype)
        params, fed, state, new_reference = model.generate_step(
            state, noise, reference, previous=previous, mean=not feed_draw, generator=generator, action=step_actions(actions, i)
        )
        if hold == 0 or t < hold:
            reference = new_reference
        frame = fed
        if feed_draw == use_mean:  # the frame shown is not the one fed back
            frame = model.likelihood.mean(params) if use_mean else model.likelihood.sample(params, generator)
        frames.append(frame)
        previous = fed
    return torch.stack(frames, dim=1)
