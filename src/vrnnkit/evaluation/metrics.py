"""Frame and prediction metrics on pixels in [0, 1]: PSNR, SSIM and their best-of-N and
mean-of-N summaries over sampled futures (the conventions are described in
``vrnnkit.evaluation``, whose report they fill)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vrnnkit.errors import DataError

MSE_FLOOR = 1e-10
"""PSNR's MSE is floored here, so that identical frames give a finite PSNR."""
PSNR_MAX = 100.0
"""The PSNR cap in dB, ``-10 log10(MSE_FLOOR)``: the score of identical frames."""

SSIM_WINDOW = 11
"""Side of SSIM's Gaussian window, in pixels; frames must be at least this large."""
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

CI95_Z = 1.96
"""The normal quantile of a two-sided 95% interval."""

_SSIM_CHUNK_ELEMENTS = 2**20  # pixels per SSIM chunk: bounds its float64 temporaries (~100 MB)


# ---------------------------------------------------------------------- frame metrics


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of each frame, for pixels in [0, 1].

    ``pred`` and ``target`` are (..., C, H, W) and broadcast against each other; the result has
    their leading shape (...). The MSE is over the frame's C x H x W pixels and floored at
    :data:`MSE_FLOOR`, so identical frames give exactly :data:`PSNR_MAX` (100 dB). For one
    channel this is SRVP's figure; for colour SRVP averages the PSNRs of the channels instead.
    """
    pred, target = _check_frame_pair(pred, target, "psnr")
    mse = (pred - target).square().mean(dim=(-3, -2, -1))
    return torch.where(mse <= MSE_FLOOR, PSNR_MAX, -10.0 * torch.log10(mse.clamp_min(MSE_FLOOR)))


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Structural similarity of each frame, for pixels in [0, 1].

    ``pred`` and ``target`` are (..., C, H, W) with H, W >= 11, broadcasting against each
    other; the result has their leading shape (...). Gaussian window 11x11 with sigma 1.5, data
    range 1, K1 = 0.01, K2 = 0.03; the SSIM map is computed per channel at the *valid* window
    positions only ((H - 10) x (W - 10), no padding) and averaged over channels and positions,
    as in SRVP's and SVG's evaluation code. Identical frames give 1.0.

    Computed in float64 a chunk of frames at a time; returned in the inputs' dtype.
    """
    pred, target = _check_frame_pair(pred, target, "ssim")
    channels, height, width = pred.shape[-3:]
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise DataError(
            f"ssim: frames must be at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (the Gaussian "
            f"window), got {height}x{width}"
        )
    pred, target = torch.broadcast_tensors(pred, target)
    leading = pred.shape[:-3]
    pred = pred.reshape(-1, channels, height, width)
    target = target.reshape(-1, channels, height, width)
    band_h, band_w = _gaussian_band(height, pred.device), _gaussian_band(width, pred.device)
    chunk = max(1, _SSIM_CHUNK_ELEMENTS // (channels * height * width))
    scores = [
        _ssim_chunk(pred[start : start + chunk], target[start : start + chunk], band_h, band_w)
        for start in range(0, pred.shape[0], chunk)
    ]
    return torch.cat(scores).to(pred.dtype).view(leading)


def _ssim_chunk(x: Tensor, y: Tensor, band_h: Tensor, band_w: Tensor) -> Tensor:
    """SSIM of frames (n, C, H, W), in float64.

    The Gaussian window is separable, so each local mean is two banded matrix products:
    ``band_h @ frame @ band_w.T``, several times faster on a CPU than an 11x11 convolution.
    float64 because the local variances are ``E[x^2] - E[x]^2``: in float32 that cancels in
    flat regions, and SSIM drifts by up to about 1e-5.
    """
    x, y = x.double(), y.double()
    n, _, height, width = x.shape
    moments = torch.stack((x, y, x * x, y * y, x * y)).view(-1, height, width)
    mu_x, mu_y, xx, yy, xy = (band_h @ moments @ band_w.T).view(5, n, -1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K * data range)^2 with a data range of 1
    luminance = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    structure = (2 * (xy - mu_xy) + c2) / (xx - mu_xx + yy - mu_yy + c2)
    return (luminance * structure).mean(-1)


def _gaussian_band(size: int, device: torch.device) -> Tensor:
    """(size - 10, size) float64: row i holds the normalised 1-D Gaussian window at columns
    i .. i+10, so ``band @ v`` is the window's weighted mean at every valid position."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    window = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    window /= window.sum()
    band = torch.zeros(size - SSIM_WINDOW + 1, size, dtype=torch.float64)
    for offset, weight in enumerate(window):
        band.diagonal(offset).fill_(weight)
    return band.to(device)


def _check_frame_pair(pred: Any, target: Any, name: str) -> tuple[Tensor, Tensor]:
    for label, value in (("pred", pred), ("target", target)):
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() < 3:
            got = f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise DataError(f"{name}: {label} must be a floating-point tensor (..., C, H, W), got {got}")
    if pred.shape[-3:] != target.shape[-3:]:
        raise DataError(
            f"{name}: pred and target frames differ in shape: {tuple(pred.shape[-3:])} and "
            f"{tuple(target.shape[-3:])}"
        )
    try:
        torch.broadcast_shapes(pred.shape, target.shape)
    except RuntimeError:
        raise DataError(
            f"{name}: pred {tuple(pred.shape)} and target {tuple(target.shape)} do not broadcast"
        ) from None
    dtype = torch.promote_types(pred.dtype, target.dtype)
    return pred.to(dtype), target.to(dtype)


# ---------------------------------------------------------------------- prediction metrics


def prediction_metrics(predictions: Tensor, truth: Tensor, last_context: Tensor) -> dict[str, Any]:
    """PSNR and SSIM of sampled futures under the SRVP protocol, with the copy-last baseline.

    Args:
        predictions: (B, N, H, C, Hh, W): N sampled futures of H frames for each of B sequences.
            Values are clipped to [0, 1] first, as SRVP does (a Gaussian model's mean can
            leave the range).
        truth: (B, H, C, Hh, W), the frames that followed the context, in [0, 1].
        last_context: (B, C, Hh, W), the last context frame, in [0, 1]: the baseline repeats it.

    Returns:
        ``{"num_sequences", "psnr", "ssim", "baseline"}``, JSON-ready, as the ``prediction``
        entry of the module's schema: for each metric, ``best_of_n`` keeps per sequence the
        sample with the best metric averaged over the H steps, ``mean_of_n`` averages the N
        samples; ``baseline`` scores the repeated last context frame; ``versus_baseline``
        holds each metric's ``best_of_n`` and ``mean_of_n`` minus the baseline, sequence by
        sequence (a paired interval: whether the model beats copy-last on these sequences).

    Raises:
        DataError: shapes that do not fit together, frames under 11x11, or truth outside [0, 1].
    """
    curves = prediction_curves(predictions, truth, last_context)
    return summarise_curves(curves)


def prediction_curves(predictions: Tensor, truth: Tensor, last_context: Tensor) -> dict[str, Tensor]:
    """Per-sequence, per-step metric curves (B, H), float64, for each figure of the report.

    Returning curves rather than summaries lets ``evaluate`` concatenate batches first, so
    the interval is over every test sequence.
    """
    _check_prediction_shapes(predictions, truth, last_context)
    predictions = predictions.clamp(0.0, 1.0)
    baseline = last_context.unsqueeze(1).expand_as(truth)
    metrics = (("psnr", psnr), ("ssim", ssim))
    curves = {}
    for name, metric in metrics:
        per_frame = metric(predictions, truth.unsqueeze(1)).double()  # (B, N, H)
        best = per_frame.mean(-1).argmax(1)  # the best sample of each sequence, on average over steps
        curves[f"{name}/best_of_n"] = per_frame[torch.arange(per_frame.shape[0]), best]
        curves[f"{name}/mean_of_n"] = per_frame.mean(1)
    for name, metric in metrics:
        curves[f"baseline/{name}"] = metric(baseline, truth).double()
        for kind in ("best_of_n", "mean_of_n"):  # paired: the same sequences, so a tighter interval
            curves[f"versus_baseline/{name}/{kind}"] = curves[f"{name}/{kind}"] - curves[f"baseline/{name}"]
    return curves


def summarise_curves(curves: dict[str, Tensor]) -> dict[str, Any]:
    report: dict[str, Any] = {"num_sequences": next(iter(curves.values())).shape[0]}
    for key, curve in curves.items():
        *groups, name = key.split("/")
        entry = report
        for group in groups:
            entry = entry.setdefault(group, {})
        entry[name] = _interval(curve)
    return report


def _interval(curves: Tensor) -> dict[str, Any]:
    """{"mean", "ci95", "per_step", "per_step_ci95"} of per-sequence curves (S, H)."""
    per_sequence = curves.mean(1)
    count = math.sqrt(per_sequence.numel())
    return {
        "mean": float(per_sequence.mean()),
        "ci95": float(CI95_Z * per_sequence.std(correction=0) / count),
        "per_step": curves.mean(0).tolist(),
        "per_step_ci95": (CI95_Z * curves.std(0, correction=0) / count).tolist(),
    }


def _check_prediction_shapes(predictions: Any, truth: Any, last_context: Any) -> None:
    for name, value, dims in (
        ("predictions", predictions, "(B, N, H, C, Hh, W)"),
        ("truth", truth, "(B, H, C, Hh, W)"),
        ("last_context", last_context, "(B, C, Hh, W)"),
    ):
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() != dims.count(",") + 1:
            got = f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise DataError(f"prediction_metrics: {name} must be a floating-point tensor {dims}, got {got}")
    batch, _, horizon, *frame = predictions.shape
    if tuple(truth.shape) != (batch, horizon, *frame) or tuple(last_context.shape) != (batch, *frame):
        raise DataError(
            f"prediction_metrics: predictions {tuple(predictions.shape)} (B, N, H, C, Hh, W) need truth "
            f"{(batch, horizon, *frame)} and last_context {(batch, *frame)}, got "
            f"{tuple(truth.shape)} and {tuple(last_context.shape)}"
        )
    for name, value in (("truth", truth), ("last_context", last_context)):
        low, high = float(value.min()), float(value.max())
        if not (low >= 0.0 and high <= 1.0):  # also catches NaN
            raise DataError(
                f"prediction_metrics: {name} must hold pixels in [0, 1] (PSNR and SSIM assume a "
                f"data range of 1), found values from {low:g} to {high:g}"
            )
