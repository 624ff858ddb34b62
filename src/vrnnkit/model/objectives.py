"""The training objectives and bounds, written on the model's public step-level methods: the
ELBO, and two tighter ones computed with K particles per sequence, IWAE and FIVO. Each is
registered by name in ``vrnnkit.model.objective_registry``, where ``VRNN.forward`` finds it.

- ``elbo`` (Chung et al. 2015, eq. 11): one latent path per sequence, the KL in closed form;
  ``free_bits`` floors each step's batch-mean KL in the loss.

Both estimate log p(x) from weights ``log w = log p(x_t | .) + log p(z_t | h_{t-1}) - log q(z_t | .)``
of latent paths drawn from the posterior; both are lower bounds on log p(x) in expectation, and
both equal the one-sample ELBO (with the KL sampled, not in closed form) at K = 1.

- ``iwae`` (Burda et al. 2016): K independent paths per sequence, ``logsumexp_k(sum_t log w) - log K``.
- ``fivo`` (Maddison et al. 2017; also Le et al. 2018, Naesseth et al. 2018): a particle filter.
  The K particles move together step by step; when the effective sample size of their weights
  falls below ``threshold * K`` they are resampled (systematic resampling) and their weights
  reset. The bound is the sum over steps of the log of the weighted mean of the incremental
  weights. As in FIVO, no gradient flows through the resampling decisions (the ancestor
  indices are constants; gradients do flow along each surviving particle's history).

The K particles of a batch of B sequences run as one batch of K*B rows, particle-major (row
``k * B + b``), as ``VRNN.log_likelihood`` lays out its samples. IWAE's recurrence is the
plain filter (the hand-written fused loop applies); FIVO's must resample inside the time loop,
and the resampling needs each step's frame likelihood, so there the prior and the decoder run
inside the loop too (the encoder still runs once, before it).

``latent_weight`` (the KL weight of KL annealing) scales ``log p(z_t | .) - log q(z_t | .)``
inside the weights: below 1 the objective is an annealed bound, not a bound on log p(x); at 1
it is the bound itself.

``gradient="dreg"`` (IWAE only) gives the posterior's own parameters the doubly reparameterised
gradient of Tucker et al. (2019) instead of the plain IWAE gradient, whose signal to the
posterior fades as K grows (Rainforth et al. 2018): every other parameter takes the gradient
of ``loss``, the posterior's take that of ``surrogate``,
``-sum_k c_k log w_k`` with ``c_k = (1 - beta) W_k + beta W_k^2`` held constant (``W`` the
normalised weights, ``beta`` the latent weight) and ``log q`` evaluated with the posterior's
parameters held fixed, so they are reached through the latent paths only. The expectation is
the IWAE gradient's (the score term is rewritten, not dropped); the tests check it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import vrnnkit.model.skips as skips
from vrnnkit.blocks.distributions import normal_kl, normal_log_prob, rand
from vrnnkit.errors import ConfigError, check_counts
from vrnnkit.model.masking import masked
from vrnnkit.model.objective_registry import (
    DEFAULT_THRESHOLD,
    GRADIENTS,
    Objective,
    register_objective,
)
from vrnnkit.model.outputs import Filtered, VRNNOutput

if TYPE_CHECKING:
    from vrnnkit.model.vrnn import VRNN

OBJECTIVES = ("elbo", "iwae", "fivo")
"""The training objectives (``--objective``), in the order they are registered."""
BOUNDS = OBJECTIVES
"""The bounds ``vrnnkit eval --bound`` reports."""


def elbo_output(
    model: VRNN, x: Tensor, step_mask: Tensor | None, *, latent_weight: float = 1.0, free_bits: float = 0.0,
    generator: torch.Generator | None = None, actions: Tensor | None = None, **_: Any,
) -> VRNNOutput:
    """The training figures of the ELBO over a batch ``x`` (B, T, ...) whose padding is already
    zeroed: ``loss`` is the batch mean of NLL + ``latent_weight`` * KL, the KL floored by
    ``free_bits``; ``elbo`` holds each sequence's ELBO (KL not floored). ``actions``: the
    checked inputs of a model with inputs (``VRNN.checked_actions``), here and below."""
    batch, steps = x.shape[:2]
    features, maps = model.encode(x, actions)
    filtered = model.filter(features, model.noise(steps, batch, x, generator), mask=step_mask)
    nll = -model.log_prob_frames(x, filtered, model.references(maps, steps))
    mean_p, std_p = model.prior_params(filtered.h, filtered.actions)
    kl = normal_kl(filtered.mean, filtered.std, mean_p, std_p).sum(-1)
    if step_mask is not None:
        nll, kl = masked(nll, step_mask), masked(kl, step_mask)
    kl_per_step = kl.mean(0)
    kl_term = kl_per_step.sum()
    if free_bits > 0:
        observed = step_mask.mean(0) if step_mask is not None else torch.ones_like(kl_per_step)
        kl_term = torch.maximum(kl_per_step, free_bits * observed).sum()
    nll_seq, kl_seq = nll.sum(1), kl.sum(1)
    return VRNNOutput(
        loss=nll_seq.mean() + latent_weight * kl_term,
        nll=nll_seq.mean(),
        kl=kl_seq.mean(),
        elbo=-(nll_seq + kl_seq),
        nll_per_step=nll.mean(0),
        kl_per_step=kl_per_step,
        dims=_observed_elements(model, step_mask, nll_seq, steps),
    )


def _observed_elements(model: VRNN, step_mask: Tensor | None, like: Tensor, steps: int) -> Tensor:
    """(B,) the observed elements of each sequence: observed steps times the frame size."""
    observed = step_mask.sum(1) if step_mask is not None else torch.full_like(like, steps)
    return observed * math.prod(model.config.frame_shape)


def particle_output(
    model: VRNN,
    x: Tensor,
    step_mask: Tensor | None,
    *,
    objective: str,
    particles: int,
    latent_weight: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    generator: torch.Generator | None = None,
    gradient: str = "reparam",
    actions: Tensor | None = None,
    **_: Any,
) -> VRNNOutput:
    """The training figures of ``objective`` ("iwae" or "fivo") over a batch ``x`` (B, T, ...)
    whose padding is already zeroed: ``loss`` is minus the batch mean of the bound;
    ``elbo`` holds each sequence's bound; ``nll`` and ``kl`` are the particles' mean
    reconstruction term and sampled KL, for the logs; ``surrogate`` is set with
    ``gradient="dreg"`` (module docstring). ``get_objective`` has refused the gradients
    ``objective`` does not take."""
    batch, steps = x.shape[:2]
    surrogate = None
    if objective == "iwae":
        features, filtered, reference = _iwae_paths(model, x, step_mask, particles, generator, encoded=model.encode(x, actions))
        terms = _path_terms(model, x, filtered, reference, step_mask, particles)
        log_w = (terms[0] + latent_weight * (terms[1] - terms[2])).sum(1).view(particles, batch)
        bound = torch.logsumexp(log_w, 0) - math.log(particles)
        if gradient == "dreg":
            surrogate = _dreg_surrogate(model, features, filtered, step_mask, terms, log_w, latent_weight)
    elif objective == "fivo":
        bound, terms = _fivo(model, x, step_mask, particles, latent_weight, threshold, generator, actions)
    else:
        raise ValueError(f"objective must be iwae or fivo here, got {objective!r}")
    log_px, log_pz, log_qz = (t.view(particles, batch, steps) for t in terms)
    nll, kl = -log_px.mean(0), (log_qz - log_pz).mean(0)
    return VRNNOutput(
        loss=-bound.mean(),
        nll=nll.sum(1).mean(),
        kl=kl.sum(1).mean(),
        elbo=bound,
        nll_per_step=nll.mean(0),
        kl_per_step=kl.mean(0),
        dims=_observed_elements(model, step_mask, bound, steps),
        surrogate=surrogate,
    )


@torch.no_grad()
def iwae_log_likelihood(
    model: VRNN, x: Tensor, k: int = 100, *, chunk_size: int | None = None, mask: Tensor | None = None,
    generator: torch.Generator | None = None, actions: Tensor | None = None,
) -> Tensor:
    """The IWAE bound of each sequence of ``x`` (B, T, ...) with ``k`` samples, (B,), for
    evaluation (``VRNN.log_likelihood``): the samples run ``chunk_size`` at a time (None:
    ``VRNN.iwae_chunk_size``), all on one encoding of the frames (phi_x is deterministic)."""
    x, step_mask = model.checked_batch(x, mask)
    actions = model.checked_actions(actions, *x.shape[:2], step_mask, x)
    check_counts(k=k)
    if chunk_size is None:
        chunk_size = model.iwae_chunk_size(*x.shape[:2], k)
    encoded = model.encode(x, actions)
    log_weights = [
        iwae_log_weights(model, x, step_mask, min(chunk_size, k - start), generator, encoded=encoded)
        for start in range(0, k, chunk_size)
    ]
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)


def iwae_log_weights(
    model: VRNN, x: Tensor, step_mask: Tensor | None, particles: int, generator: torch.Generator | None,
    *, encoded: tuple[Tensor, list[Tensor] | None] | None = None,
) -> Tensor:
    """Each path's log weight summed over time, (particles, B): ``particles`` independent
    latent paths per sequence from the posterior. ``encoded`` reuses ``VRNN.encode(x)``."""
    log_px, log_pz, log_qz = _iwae_terms(model, x, step_mask, particles, generator, encoded=encoded)
    return (log_px + log_pz - log_qz).sum(1).view(particles, x.shape[0])


def _iwae_terms(
    model: VRNN, x: Tensor, step_mask: Tensor | None, particles: int, generator: torch.Generator | None,
    *, encoded: tuple[Tensor, list[Tensor] | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """log p(x_t | .), log p(z_t | .), log q(z_t | .) of ``particles`` independent paths per
    sequence, each (particles * B, T), zero at padded steps."""
    _, filtered, reference = _iwae_paths(model, x, step_mask, particles, generator, encoded=encoded)
    return _path_terms(model, x, filtered, reference, step_mask, particles)


def _iwae_paths(
    model: VRNN, x: Tensor, step_mask: Tensor | None, particles: int, generator: torch.Generator | None,
    *, encoded: tuple[Tensor, list[Tensor] | None] | None = None,
) -> tuple[Tensor, Filtered, list[Tensor] | None]:
    """The frame features (B, T, E), ``particles`` independent filtered paths per sequence and
    the skip references."""
    batch, steps = x.shape[:2]
    features, maps = encoded if encoded is not None else model.encode(x)
    filtered = model.filter(features, model.noise(steps, particles * batch, x, generator), particles=particles, mask=step_mask)
    return features, filtered, model.references(maps, steps)


def _dreg_surrogate(
    model: VRNN, features: Tensor, filtered: Filtered, step_mask: Tensor | None,
    terms: tuple[Tensor, Tensor, Tensor], log_w: Tensor, latent_weight: float,
) -> Tensor:
    """The scalar whose gradient is the doubly reparameterised IWAE gradient of the posterior's
    own parameters (module docstring): log q again, over all steps at once, with those
    parameters detached and the recurrent state and frame features live. A posterior that
    reads later frames (``reads_future``) takes whole sequences and their mask."""
    particles = log_w.shape[0]
    fixed = {name: p.detach() for name, p in model.posterior.named_parameters()}
    if getattr(model.posterior, "reads_future", False):
        rows_mask = None if step_mask is None else step_mask.repeat(particles, 1)
        arguments: tuple[Any, ...] = (_repeat(features, particles), filtered.h, rows_mask)
    else:
        arguments = (_repeat(features, particles).flatten(0, 1), filtered.h.flatten(0, 1))
    mean, std = torch.func.functional_call(model.posterior, fixed, arguments)
    log_q = normal_log_prob(filtered.z, mean.view_as(filtered.z), std.view_as(filtered.z)).sum(-1)
    if step_mask is not None:
        log_q = masked(log_q, step_mask.repeat(particles, 1))
    log_w_fixed = (terms[0] + latent_weight * (terms[1] - log_q)).sum(1).view_as(log_w)
    weights = torch.softmax(log_w.detach(), 0)
    coefficients = (1.0 - latent_weight) * weights + latent_weight * weights.square()
    return -(coefficients * log_w_fixed).sum(0).mean()


def _repeat(x: Tensor, particles: int) -> Tensor:
    """The frames once per particle, particle-major like the filter's rows."""
    return x.repeat(particles, *([1] * (x.dim() - 1)))


def _path_terms(
    model: VRNN, x: Tensor, filtered: Filtered, reference: list[Tensor] | None, step_mask: Tensor | None, particles: int,
    *, xs: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The three log-densities of every filtered path at every step, over all steps at once;
    ``xs`` is ``x`` already repeated per particle, when the caller has it."""
    mean_p, std_p = model.prior_params(filtered.h, filtered.actions)
    xs = _repeat(x, particles) if xs is None else xs
    terms = (
        model.log_prob_frames(xs, filtered, skips.repeat(reference, particles)),
        normal_log_prob(filtered.z, mean_p, std_p).sum(-1),
        normal_log_prob(filtered.z, filtered.mean, filtered.std).sum(-1),
    )
    if step_mask is None:
        return terms
    mask = step_mask.repeat(particles, 1)
    return tuple(masked(t, mask) for t in terms)  # type: ignore[return-value]


def fivo_bound(
    model: VRNN,
    x: Tensor,
    step_mask: Tensor | None,
    particles: int,
    generator: torch.Generator | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    actions: Tensor | None = None,
) -> Tensor:
    """The FIVO bound of each sequence of ``x`` (B, T, ...), padding zeroed: (B,). Without
    gradients and with the whole model in eval mode (evaluation), the loop's own scores are
    the increments, so the bound is summed in the loop and the second pass is skipped."""
    scored = not torch.is_grad_enabled() and not any(m.training for m in model.modules())
    return _fivo(model, x, step_mask, particles, 1.0, threshold, generator, actions, scored_only=scored)[0]


def _fivo(
    model: VRNN, x: Tensor, step_mask: Tensor | None, particles: int, latent_weight: float,
    threshold: float, generator: torch.Generator | None, actions: Tensor | None = None, scored_only: bool = False,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """The particle filter: the bound (B,) and each step's log p(x_t|.), log p(z_t|.),
    log q(z_t|.) of the particles as they were drawn, each (particles * B, T).

    Two stages, so that only the recurrence runs in the time loop. In the loop, a hook
    (``_Resampler``) scores each step's particles without gradients and picks the ancestors;
    the recurrence gathers its state from them (the fused loop scatters the gradient back).
    After it, the prior, decoder and likelihood run once over all steps with gradients, and
    ``_bound`` accumulates the weights with the resampling the loop chose. ``scored_only``
    (no gradients, no dropout anywhere: the two stages would score alike) returns the bound the
    loop summed, and no terms."""
    batch, steps = x.shape[:2]
    features, maps = model.encode(x, actions)
    reference = model.references(maps, steps)
    noise = model.noise(steps, particles * batch, x, generator)
    embedded = None if actions is None else _repeat(features[..., model.config.feature_dim:], particles).unbind(1)
    uniforms = rand((steps, batch), generator=generator, device=x.device, dtype=x.dtype)
    observed = step_mask if step_mask is not None else x.new_ones(batch, steps)
    xs = _repeat(x, particles)
    hook = _Resampler(model, xs, reference, observed, particles, latent_weight, threshold, uniforms, embedded)
    with _scoring(model.prior, model.decoder):
        filtered = model.filter(features, noise, particles=particles, resample=hook, mask=step_mask)
    if scored_only:
        return hook.bound, None
    terms = _path_terms(model, x, filtered, reference, step_mask, particles, xs=xs)
    log_alpha = (terms[0] + latent_weight * (terms[1] - terms[2])).view(particles, batch, steps)
    return _bound(log_alpha, hook.events), terms


@contextmanager
def _scoring(*blocks: torch.nn.Module) -> Iterator[None]:
    """The blocks in eval mode for the loop's scoring: the resampling decisions see the model
    without dropout (and skip drawing a dropout mask per step, a tenth of a FIVO step with
    dropout 0.2); ``_bound``'s restart ratios keep the estimate unbiased. Restores each
    block's own mode after."""
    modes = [[m.training for m in block.modules()] for block in blocks]
    for block in blocks:
        block.eval()
    try:
        yield
    finally:
        for block, flags in zip(blocks, modes, strict=True):
            for module, flag in zip(block.modules(), flags, strict=True):
                module.training = flag


class _Resampler:
    """The resampling hook of FIVO's time loop: scores each step's particles (no gradients,
    prior and decoder in eval mode: ``_scoring``),
    and where the effective sample size of a sequence's weights falls below ``threshold * K``
    draws ancestors by systematic resampling and returns the rows to gather the state from.
    ``events`` keeps, per step, None or (resampled (B,), ancestors (K, B), the log weights the
    ancestors were drawn with (K, B)); ``bound`` (B,) sums the estimate from these scores, which
    is the bound itself when the scores are the model's (``fivo_bound`` in evaluation)."""

    def __init__(self, model: VRNN, xs: Tensor, reference: list[Tensor] | None, observed: Tensor, particles: int,
                 latent_weight: float, threshold: float, uniforms: Tensor, actions: tuple[Tensor, ...] | None = None) -> None:
        self.model, self.particles, self.latent_weight, self.threshold, self.uniforms = model, particles, latent_weight, threshold, uniforms
        batch, steps = observed.shape
        self.frames = xs.unbind(1)  # the frames repeated per particle (particles * B, T, ...)
        self.reference = _per_step(skips.repeat(reference, particles), particles * batch, steps)
        self.observed = observed > 0
        self.actions = actions  # each step's a_t of every row, for a model with inputs
        self.log_weights = xs.new_zeros(particles, batch)
        self.bound = xs.new_zeros(batch)
        self.events: list[tuple[Tensor, Tensor, Tensor] | None] = []

    @torch.no_grad()
    def __call__(self, t: int, h: Tensor, mean: Tensor, std: Tensor, z: Tensor, f: Tensor) -> Tensor | None:
        model, (particles, batch) = self.model, self.log_weights.shape
        a = None if self.actions is None else self.actions[t]
        prior_mean, prior_std = model.prior_step(h, a)
        params = model.decode(f, h, self.reference[t] if self.reference else None, a)
        latent = normal_log_prob(z, prior_mean, prior_std).sum(-1) - normal_log_prob(z, mean, std).sum(-1)
        increment = model.likelihood.log_prob(params, self.frames[t]) + self.latent_weight * latent
        observed = self.observed[:, t]
        updated = self.log_weights + torch.where(observed, increment.view(particles, batch), 0.0)
        self.bound += torch.logsumexp(updated, 0) - torch.logsumexp(self.log_weights, 0)
        log_ess = 2 * torch.logsumexp(updated, 0) - torch.logsumexp(2 * updated, 0)
        limit = math.log(self.threshold * particles) if self.threshold > 0 else -math.inf  # 0: never resample
        resample = (log_ess < limit) & observed
        if t + 1 == len(self.frames) or not bool(resample.any()):
            self.log_weights = updated
            self.events.append(None)
            return None
        identity = torch.arange(particles, device=h.device).unsqueeze(1).expand(particles, batch)
        ancestors = torch.where(resample.unsqueeze(0), systematic_ancestors(updated, self.uniforms[t]), identity)
        self.events.append((resample, ancestors, updated))
        self.log_weights = torch.where(resample.unsqueeze(0), 0.0, updated)
        return (ancestors * batch + torch.arange(batch, device=h.device)).flatten()


def _bound(log_alpha: Tensor, events: list[tuple[Tensor, Tensor, Tensor] | None]) -> Tensor:
    """FIVO's estimate from the incremental log weights (K, B, T) and the loop's resampling:
    the sum over steps of the log of the weighted mean of the increments. A resampled
    particle's weight restarts at w / v of its ancestor (v: the weights the ancestor was drawn
    with): 1 when the loop scored exactly as here; otherwise (the loop scores without dropout,
    this pass with it) the ratio keeps the estimate unbiased. No gradient flows through it, as in FIVO."""
    log_weights = torch.zeros_like(log_alpha[..., 0])
    bound = torch.zeros_like(log_alpha[0, :, 0])
    for t, event in enumerate(events):
        updated = log_weights + log_alpha[..., t]
        bound = bound + torch.logsumexp(updated, 0) - torch.logsumexp(log_weights, 0)
        if event is None:
            log_weights = updated
            continue
        resampled, ancestors, drawn_with = event
        restart = (updated.detach().gather(0, ancestors) - drawn_with.gather(0, ancestors))
        log_weights = torch.where(resampled.unsqueeze(0), restart, updated)
    return bound


def _per_step(reference: list[Tensor] | None, rows: int, steps: int) -> list[list[Tensor]] | None:
    """Each step's skip reference, (rows, ...) per level, from ``skips.gather``'s layout."""
    if reference is None:
        return None
    levels = [level.view(rows, steps, *level.shape[1:]).unbind(1) for level in reference]
    return [list(step) for step in zip(*levels, strict=True)]


def systematic_ancestors(log_weights: Tensor, uniform: Tensor) -> Tensor:
    """Systematic resampling of each column of ``log_weights`` (K, B) with one uniform in
    [0, 1) per column: ancestor indices (K, B). Particle k takes the ancestor whose cumulative
    normalised weight first exceeds ``(k + u) / K``."""
    particles = log_weights.shape[0]
    cumulative = torch.softmax(log_weights, 0).cumsum(0).T.contiguous()  # (B, K)
    positions = (torch.arange(particles, device=log_weights.device, dtype=log_weights.dtype) + uniform.unsqueeze(1)) / particles
    ancestors = torch.searchsorted(cumulative, positions.contiguous(), right=True)
    return ancestors.clamp_(max=particles - 1).T


def parse_bounds(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"elbo,iwae,fivo"`` (or a sequence of names) as a tuple of known bound names."""
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    unknown = [n for n in names if n not in BOUNDS]
    if unknown or not names:
        raise ConfigError(f"bound must be a comma-separated list of {', '.join(BOUNDS)}, got {value!r}")
    return tuple(dict.fromkeys(names))


@torch.no_grad()
def fivo_log_likelihood(
    model: VRNN, x: Tensor, particles: int, *, mask: Tensor | None = None,
    generator: torch.Generator | None = None, threshold: float = DEFAULT_THRESHOLD, actions: Tensor | None = None,
) -> Tensor:
    """The FIVO bound of each sequence of ``x`` (B, T, ...) with ``particles`` particles, (B,),
    for evaluation: sequences run a few at a time so that a step's K * rows frames stay near
    2**21 values (the particles of one sequence cannot be split: they are resampled together)."""
    x, step_mask = model.checked_batch(x, mask)
    actions = model.checked_actions(actions, *x.shape[:2], step_mask, x)
    batch = x.shape[0]
    rows = max(1, 2**21 // (particles * math.prod(model.config.frame_shape)))
    parts = []
    for start in range(0, batch, rows):
        part_mask = None if step_mask is None else step_mask[start : start + rows]
        part_actions = None if actions is None else actions[start : start + rows]
        parts.append(fivo_bound(model, x[start : start + rows], part_mask, particles, generator, threshold=threshold,
                                actions=part_actions))
    return torch.cat(parts)


register_objective("elbo", Objective(output=elbo_output))
register_objective("iwae", Objective(output=partial(particle_output, objective="iwae"), gradients=GRADIENTS,
                                     log_likelihood=iwae_log_likelihood))
register_objective("fivo", Objective(output=partial(particle_output, objective="fivo"), log_likelihood=fivo_log_likelihood))
