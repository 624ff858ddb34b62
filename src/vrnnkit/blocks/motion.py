"""A classical motion estimate with no parameters: coarse-to-fine Lucas-Kanade optical flow.

``lucas_kanade(previous, frame)`` gives, per pixel of ``frame``, the displacement ``d`` (in
pixels, ``(dx, dy)``) with ``previous(x + d) ~ frame(x)``: the backward flow that
``vrnnkit.blocks.warp.warp`` applies. Moved on at constant velocity, the next frame is about
``warp(frame, d)``. A motion-compensated decoder reads it as a starting guess of the motion it
predicts (``convT-warp`` with ``motion = true``); it is a fixed function of two frames, the
observed ones while filtering and the generated ones while predicting, so the probability
model stays exact.

Per level of an image pyramid (coarse first), and a few times per level, the previous frame is
warped by the flow so far, and the remaining displacement solves, in a Gaussian window around
each pixel, the least-squares brightness-constancy system ``grad I . d = I_t`` with a small
ridge ``ridge`` (textureless places keep the coarser level's flow instead of noise). Only
convolutions, pooling, interpolation and the gather-based warp: it runs on any device and
exports to ONNX.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vrnnkit.blocks.warp import warp


def _smoothing_matrix(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(size, size) matrix M with ``x @ M`` a Gaussian smoothing of ``x``'s rows, the border
    value repeated beyond the edge (the weights that fall outside go to the edge pixel). A
    matrix product is many times faster on a CPU than a depthwise convolution at these sizes."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    columns = torch.arange(size, device=device)
    sources = (columns.view(-1, 1) + torch.arange(-radius, radius + 1, device=device).view(1, -1)).clamp(0, size - 1)
    matrix = torch.zeros(size, size, dtype=dtype, device=device)
    matrix.index_put_((sources.flatten(), columns.repeat_interleave(2 * radius + 1)), weights.repeat(size), accumulate=True)
    return matrix


def _smooth(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of (N, C, H, W), borders replicated."""
    height, width = x.shape[-2:]
    across = _smoothing_matrix(width, sigma, x.dtype, x.device)
    down = across if height == width else _smoothing_matrix(height, sigma, x.dtype, x.device)
    return down.t() @ (x @ across)


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences of (N, 1, H, W) along x and y, borders replicated."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2])
    gy = 0.5 * (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1])
    return gx, gy


def _refine(previous: Tensor, frame: Tensor, flow: Tensor, sigma: float, ridge: float) -> Tensor:
    """One Lucas-Kanade update of ``flow`` at one pyramid level."""
    moved = warp(previous, flow)
    gx, gy = _gradients(0.5 * (moved + frame))
    change = frame - moved
    sums = _smooth(torch.cat([gx * gx, gx * gy, gy * gy, gx * change, gy * change], dim=1), sigma)
    xx, xy, yy, xt, yt = sums.split(1, dim=1)
    xx, yy = xx + ridge, yy + ridge
    det = xx * yy - xy * xy
    dx = (yy * xt - xy * yt) / det
    dy = (xx * yt - xy * xt) / det
    return flow + torch.cat([dx, dy], dim=1)


def lucas_kanade(
    previous: Tensor, frame: Tensor, *, levels: int = 3, iterations: int = 1, sigma: float = 2.0, ridge: float = 1e-3,
) -> Tensor:
    """The backward flow (N, 2, H, W) from ``frame`` to ``previous`` (both (N, C, H, W), values
    about in [0, 1]; colour is averaged to grey): ``previous`` sampled at ``x + flow`` is about
    ``frame``. ``levels`` pyramid levels (each half the size; fewer where the frame is small),
    ``iterations`` updates per level, a Gaussian window of ``sigma`` pixels, ``ridge`` the
    regulariser of each pixel's 2x2 system."""
    previous, frame = previous.mean(dim=1, keepdim=True), frame.mean(dim=1, keepdim=True)
    pyramid = [(previous, frame)]
    while len(pyramid) < levels and min(pyramid[-1][1].shape[-2:]) >= 16:
        pyramid.append(tuple(F.avg_pool2d(x, 2, ceil_mode=True) for x in pyramid[-1]))
    flow = frame.new_zeros(frame.shape[0], 2, *pyramid[-1][1].shape[-2:])
    for level, (before, now) in enumerate(reversed(pyramid)):
        if level:
            flow = 2 * F.interpolate(flow, size=now.shape[-2:], mode="bilinear", align_corners=False)
        for _ in range(iterations):
            flow = _refine(before, now, flow, sigma, ridge)
    return flow
