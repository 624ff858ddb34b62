"""Closed-form pieces of diagonal Gaussians, written for numerical safety.

Standard deviations are produced with ``positive_std`` (softplus plus a floor) so they never
reach zero; densities and the KL work from log-standard-deviations so that no ratio of small
numbers is ever formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def positive_std(raw: Tensor, min_std: float) -> Tensor:
    """Map an unconstrained tensor to a standard deviation >= ``min_std``.

    Softplus grows linearly, unlike exp, so a large raw value cannot overflow; the floor keeps
    log-densities finite when a block is very sure of itself.
    """
    return F.softplus(raw) + min_std


def normal_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Elementwise log N(x; mean, std^2)."""
    return -0.5 * ((x - mean) / std).square() - std.log() - 0.5 * LOG_2PI


def normal_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """Elementwise KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)), in nats.

    Written with the difference of log-standard-deviations, so it is exactly 0 for identical
    distributions and never divides two tiny standard deviations.
    """
    log_ratio = std_q.log() - std_p.log()
    return 0.5 * (torch.exp(2.0 * log_ratio) + ((mean_q - mean_p) / std_p).square() - 1.0) - log_ratio


def randn(
    shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard-normal noise, drawn on the generator's own device and then moved.

    A CPU generator therefore drives a CUDA model too, and a seed gives the same draws on
    every device.
    """
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(
    shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Uniform [0, 1) noise, drawn like ``randn``."""
    return _draw(torch.rand, shape, generator, device, dtype)


def _draw(
    sampler: Callable[..., Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    source = generator.device if generator is not None else device
    return sampler(shape, generator=generator, device=source, dtype=dtype).to(device)
