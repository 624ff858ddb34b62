"""Small building pieces shared by the registered blocks."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(_ACTIVATIONS))}"
        ) from None


def mlp(
    in_dim: int, widths: list[int], act: str, *, final_activation: bool = True, dropout: float = 0.0
) -> nn.Sequential:
    """Linear layers of the given output ``widths``, each followed by ``act`` (the last one
    only when ``final_activation``) and, when ``dropout`` > 0, by dropout. Without dropout no
    Dropout module is added, so the layer indices (and checkpoint keys) stay as they were."""
    check_dropout(dropout)
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Linear(in_dim, width))
        if final_activation or i < len(widths) - 1:
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers)


def check_dropout(dropout: float) -> None:
    """Raise a ValueError unless ``dropout`` is a probability in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")


def has_active_dropout(module: nn.Module) -> bool:
    """Whether ``module`` holds a Dropout with p > 0 that is in training mode."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 and m.training for m in module.modules())


def check_positive(**sizes: int) -> None:
    """Raise a ValueError naming every size that is not a positive integer."""
    bad = [f"{k}={v!r}" for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v <= 0]
    if bad:
        raise ValueError(f"sizes must be positive integers, got {', '.join(bad)}")


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
