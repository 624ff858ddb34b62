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


def mlp(in_dim: int, widths: list[int], act: str, *, final_activation: bool = True) -> nn.Sequential:
    """Linear layers of the given output ``widths``, each followed by ``act`` (the last one
    only when ``final_activation``)."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Linear(in_dim, width))
        if final_activation or i < len(widths) - 1:
            layers.append(activation(act))
        in_dim = width
    return nn.Sequential(*layers)


def check_positive(**sizes: int) -> None:
    """Raise a ValueError naming every size that is not a positive integer."""
    bad = [f"{k}={v!r}" for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v <= 0]
    if bad:
        raise ValueError(f"sizes must be positive integers, got {', '.join(bad)}")


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
