"""Masks of padded sequences: padding may hold anything (NaN, inf) and must change nothing."""

from __future__ import annotations

import torch
from torch import Tensor


def zero_padding(x: Tensor, step_mask: Tensor | None) -> Tensor:
    """``x`` with the frames of padded steps set to 0. Padding may hold anything (NaN, inf);
    zeroed, it cannot reach a real step's value nor, through 0 * NaN in a weight gradient,
    the gradients."""
    if step_mask is None:
        return x
    keep = step_mask.view(*step_mask.shape, *([1] * (x.dim() - 2))) > 0
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked(values: Tensor, step_mask: Tensor) -> Tensor:
    """Per-step values (B, T) with padded steps set to 0: a select, not a product, so that a
    non-finite value behind the mask stays out (NaN * 0 is NaN)."""
    return torch.where(step_mask > 0, values, torch.zeros((), dtype=values.dtype, device=values.device))
