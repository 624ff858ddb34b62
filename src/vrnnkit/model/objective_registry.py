"""The training objectives and bounds, by name: what ``VRNN.forward(objective=...)`` and
``VRNN.log_likelihood`` look up.

``vrnnkit.model.objectives`` defines the ELBO, IWAE and FIVO on the model's public step-level
methods and registers them here when ``vrnnkit.model`` is imported. The model depends on this
table, never on the module that fills it, so the objectives can import the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from vrnnkit.model.outputs import VRNNOutput

DEFAULT_THRESHOLD = 0.5
"""FIVO resamples when the effective sample size drops below this share of the particles."""
GRADIENTS = ("reparam", "dreg")
"""Gradient estimators (``--gradient``): ``reparam``, the bound's own; ``dreg``, IWAE's doubly reparameterised."""


class TrainingFigures(Protocol):
    """An objective of a ``VRNN`` over a batch ``x`` (B, T, ...) whose padding is already zeroed,
    ``step_mask`` (B, T) or None: the figures ``VRNN.forward`` returns. ``latent_weight`` is the
    KL weight of KL annealing; an objective ignores the options it has no use for. (``model``
    is typed as a module: this table sits below the model, which imports it.)"""

    def __call__(
        self, model: nn.Module, x: Tensor, step_mask: Tensor | None, *, latent_weight: float, free_bits: float,
        particles: int, threshold: float, generator: torch.Generator | None, gradient: str,
    ) -> VRNNOutput: ...


@dataclass(frozen=True)
class Objective:
    """One registered objective."""

    output: TrainingFigures
    gradients: tuple[str, ...] = ("reparam",)
    """The gradient estimators it takes."""
    log_likelihood: Callable[..., Tensor] | None = None
    """Its bound per sequence for evaluation, when the model offers it as ``VRNN.log_likelihood``."""


_objectives: dict[str, Objective] = {}


def register_objective(name: str, objective: Objective) -> None:
    """Make ``objective`` the one called ``name`` (a later registration replaces it)."""
    _objectives[name] = objective


def objective_names() -> tuple[str, ...]:
    """The registered objectives, in the order they were registered."""
    return tuple(_objectives)


def get_objective(name: str, gradient: str = "reparam") -> Objective:
    """The objective called ``name``, refusing a ``gradient`` it does not take (ValueError)."""
    if name not in _objectives:
        raise ValueError(f"objective must be one of {', '.join(_objectives)}, got {name!r}")
    if gradient not in _objectives[name].gradients:
        takers = {g: [n for n, o in _objectives.items() if g in o.gradients] for g in GRADIENTS}
        which = "; ".join(f"{g} with {', '.join(names)}" for g, names in takers.items())
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)} ({which}), got {gradient!r} with objective {name!r}")
    return _objectives[name]
