"""Evaluation: the likelihood bounds and the video prediction metrics of the SRVP protocol.

    from vrnnkit.evaluation import evaluate, prediction_metrics, psnr, ssim
    report = evaluate(model, test_videos, iwae_samples=100, context=5, samples=100)
    json.dumps(report)        # the schema of ``vrnnkit eval --json``, below

Frame metrics, on pixels in [0, 1] (data range 1), one value per frame:

- ``psnr``: ``10 log10(1 / MSE)``, the MSE taken over the whole frame (C, H, W); the MSE is
  floored at :data:`MSE_FLOOR`, so identical frames score :data:`PSNR_MAX` = 100 dB, not inf.
- ``ssim``: an 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, per channel, averaged
  over the channels and over the *valid* window positions only (no padding: a 64x64 frame gives
  a 54x54 SSIM map). This is the convention of SRVP's and SVG's evaluation code, which the
  published Moving MNIST figures use; padded variants (torchmetrics pads by reflection and
  averages the full map) give other numbers.

The schema of ``evaluate`` (and of ``vrnnkit eval --json``). Nats are natural-log units; a
"sequence" figure is a sum over its time steps; "mean" is over the test sequences::

    {
      "vrnnkit_version": "0.1.0",       # the version that computed the figures
      "num_sequences": 256,             # test sequences
      "sequence_length": 25,            # frames per sequence (T)
      "frame_shape": [1, 64, 64],       # (C, H, W) or (D,)
      "dims_per_sequence": 102400,      # T x frame size: the "dim" of per-dim figures
      "seed": 0,
      "likelihood": {                   # over whole sequences
        "elbo": -812.3,                 # mean ELBO, nats per sequence (higher is better)
        "nll": 790.1,                   # mean reconstruction term -log p(x | z), nats per sequence
        "kl": 22.2,                     # mean KL(q || p), nats per sequence; elbo = -(nll + kl)
        "nats_per_dim": 0.00793,        # mean of -ELBO / dims_per_sequence (lower is better)
        "bits_per_dim": 0.01144,        # the same in bits
        "iwae": {                       # the importance-weighted bound on log p(x)
          "K": 100,                     # importance samples per sequence
          "bound": -805.9,              # mean bound, nats per sequence (>= elbo on average)
          "nats_per_dim": 0.00787,
          "bits_per_dim": 0.01135
        }
      },
      "prediction": {
        "skipped": null,                # or a sentence saying why prediction was not run
        "context": 5,                   # real frames given, 0 .. context-1
        "horizon": 20,                  # frames predicted after them (null when skipped)
        "samples": 100,                 # N, predictions per sequence
        "num_sequences": 256,
        "psnr": {                       # dB
          "best_of_n": {"mean": 16.9, "ci95": 0.1, "per_step": [25.1, ...]},
          "mean_of_n": {"mean": 14.2, "ci95": 0.1, "per_step": [...]}
        },
        "ssim": {"best_of_n": {...}, "mean_of_n": {...}},    # unitless, 1 = identical
        "baseline": {                   # copy-last: the last context frame, repeated
          "psnr": {"mean": 12.1, "ci95": 0.1, "per_step": [...]},
          "ssim": {"mean": 0.61, "ci95": 0.01, "per_step": [...]}
        }
      }
    }

A ``{"mean", "ci95", "per_step"}`` entry: ``per_step`` is the metric at each predicted step
averaged over sequences (``horizon`` values; for ``best_of_n``, of the sample chosen on its
average over the steps, so one step may fall below ``mean_of_n``); ``mean`` is the average of each sequence's
metric over the predicted steps, averaged over sequences; ``ci95`` is 1.96 x the standard
deviation of those per-sequence averages / sqrt(num_sequences) (the population standard
deviation, as SRVP's ``numpy.std``). A skipped ``prediction`` holds only ``skipped``,
``context``, ``horizon`` and ``samples``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vrnnkit._version import __version__
from vrnnkit.data.checks import check_unit_range
from vrnnkit.errors import DataError
from vrnnkit.model import VRNN

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
        samples; ``baseline`` scores the repeated last context frame.

    Raises:
        DataError: shapes that do not fit together, frames under 11x11, or truth outside [0, 1].
    """
    curves = _prediction_curves(predictions, truth, last_context)
    return _summarise(curves)


def _prediction_curves(predictions: Tensor, truth: Tensor, last_context: Tensor) -> dict[str, Tensor]:
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
    return curves


def _summarise(curves: dict[str, Tensor]) -> dict[str, Any]:
    report: dict[str, Any] = {"num_sequences": next(iter(curves.values())).shape[0]}
    for key, curve in curves.items():
        group, name = key.split("/")
        report.setdefault(group, {})[name] = _interval(curve)
    return report


def _interval(curves: Tensor) -> dict[str, Any]:
    """{"mean", "ci95", "per_step"} of per-sequence curves (S, H)."""
    per_sequence = curves.mean(1)
    return {
        "mean": float(per_sequence.mean()),
        "ci95": float(CI95_Z * per_sequence.std(correction=0) / math.sqrt(per_sequence.numel())),
        "per_step": curves.mean(0).tolist(),
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


# ---------------------------------------------------------------------- evaluate


@torch.no_grad()
def evaluate(
    model: VRNN,
    data: Tensor | np.ndarray | Sequence[Any],
    *,
    iwae_samples: int = 100,
    context: int = 5,
    horizon: int | None = None,
    samples: int = 10,
    batch_size: int = 16,
    chunk_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on test sequences: the report described in the module docstring.

    Args:
        model: the VRNN to evaluate; it runs in eval mode (its mode is restored afterwards).
        data: the test sequences, all of the same length T: a tensor or array (S, T, *frame),
            or anything with ``len()`` whose items are (T, *frame) tensors or arrays (a
            :class:`~vrnnkit.data.SequenceArray`, a :class:`~vrnnkit.data.WindowDataset`).
            It is read once, ``batch_size`` sequences at a time.
        iwae_samples: K, the importance samples of the IWAE bound.
        context: real frames the model sees before predicting (frames 0 .. context-1).
        horizon: frames to predict after them; ``None`` predicts the rest of each sequence
            (T - context frames) and skips prediction when nothing is left.
        samples: N, sampled futures per sequence for best-of-N and mean-of-N.
        batch_size: sequences per batch. Prediction runs ``batch_size * samples`` streams at
            once and IWAE ``batch_size * chunk_size``: lower it when memory is short.
        chunk_size: importance samples per chunk of the IWAE bound (``VRNN.log_likelihood``'s
            default when ``None``).
        seed: seeds three independent CPU generators (ELBO, IWAE, prediction), so each part's
            draws stay the same when another part's settings change.
        device: where to compute; ``None`` keeps the model's device. The model is moved there
            (in place, as ``nn.Module.to`` does).

    Prediction runs for image models only; it is skipped, with the reason in
    ``prediction.skipped``, for vector frames, for frames under 11x11 (SSIM's window), and when
    the default horizon leaves no frame to predict.

    Raises:
        ValueError: a count that is not a positive integer (context, horizon, samples,
            iwae_samples, batch_size, chunk_size).
        DataError: data of the wrong shape or type, values outside [0, 1] for a Bernoulli
            likelihood, or an explicit horizon that does not fit: context + horizon > T.
    """
    _check_positive(iwae_samples=iwae_samples, context=context, samples=samples, batch_size=batch_size)
    if horizon is not None:
        _check_positive(horizon=horizon)
    if chunk_size is not None:
        _check_positive(chunk_size=chunk_size)
    frame_shape = tuple(model.config.frame_shape)
    num_sequences, steps = _data_size(data, frame_shape)
    if horizon is not None and context + horizon > steps:
        raise DataError(
            f"context ({context}) + horizon ({horizon}) = {context + horizon} frames, but the "
            f"test sequences have {steps}; lower the context or the horizon"
        )
    checked = _check_bernoulli_targets(model, data)
    skipped = _prediction_skipped(frame_shape, context, steps, horizon)
    if horizon is None and skipped is None:
        horizon = steps - context
    if device is not None:
        model.to(device)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    elbo_generator, iwae_generator, predict_generator = (
        torch.Generator().manual_seed(int(s)) for s in np.random.SeedSequence(seed).generate_state(3)
    )

    was_training = model.training
    model.eval()
    try:
        totals = {"elbo": [], "nll": [], "kl": [], "nats_per_dim": [], "iwae": []}
        curves: dict[str, list[Tensor]] = {}
        for x in _batches(data, batch_size, steps, frame_shape, device, dtype):
            if not checked:
                check_unit_range(x, "data")
            out = model(x, generator=elbo_generator)
            totals["elbo"].append(out.elbo)
            totals["nll"].append(out.nll.expand(len(x)))  # batch means, weighted by batch size
            totals["kl"].append(out.kl.expand(len(x)))
            totals["nats_per_dim"].append(-out.elbo / out.dims)
            totals["iwae"].append(
                model.log_likelihood(x, iwae_samples, chunk_size=chunk_size, generator=iwae_generator)
            )
            if skipped is None:
                futures = model.predict(x[:, :context], horizon, samples, generator=predict_generator)
                batch_curves = _prediction_curves(
                    futures, x[:, context : context + horizon], x[:, context - 1]
                )
                for key, curve in batch_curves.items():
                    curves.setdefault(key, []).append(curve)
    finally:
        model.train(was_training)

    means = {key: float(torch.cat(values).double().mean()) for key, values in totals.items()}
    dims = steps * math.prod(frame_shape)
    prediction: dict[str, Any] = {"skipped": skipped, "context": context, "horizon": horizon, "samples": samples}
    if skipped is None:
        prediction.update(_summarise({key: torch.cat(values) for key, values in curves.items()}))
    return {
        "vrnnkit_version": __version__,
        "num_sequences": num_sequences,
        "sequence_length": steps,
        "frame_shape": list(frame_shape),
        "dims_per_sequence": dims,
        "seed": seed,
        "likelihood": {
            "elbo": means["elbo"],
            "nll": means["nll"],
            "kl": means["kl"],
            "nats_per_dim": means["nats_per_dim"],
            "bits_per_dim": means["nats_per_dim"] / math.log(2.0),
            "iwae": {
                "K": iwae_samples,
                "bound": means["iwae"],
                "nats_per_dim": -means["iwae"] / dims,
                "bits_per_dim": -means["iwae"] / dims / math.log(2.0),
            },
        },
        "prediction": prediction,
    }


def _check_bernoulli_targets(model: VRNN, data: Any) -> bool:
    """Check, before any work, that a Bernoulli model's data lies in [0, 1]; False when the
    data must be checked batch by batch instead (a plain sequence of items)."""
    from vrnnkit.data import SequenceArray

    if model.config.likelihood != "bernoulli":
        return True
    if isinstance(data, SequenceArray):
        data.check_unit_range()
    elif isinstance(data, (Tensor, np.ndarray)):
        check_unit_range(data, "data")
    else:
        return False
    return True


def _prediction_skipped(frame_shape: tuple[int, ...], context: int, steps: int, horizon: int | None) -> str | None:
    """Why prediction cannot run, as a sentence for the report, or None when it can."""
    if len(frame_shape) != 3:
        return f"prediction metrics (PSNR, SSIM) need image frames; this model's frames are vectors of {frame_shape[0]}"
    if min(frame_shape[1:]) < SSIM_WINDOW:
        return (
            f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels; this model's "
            f"are {frame_shape[1]}x{frame_shape[2]}"
        )
    if horizon is None and context >= steps:
        return f"a context of {context} frames leaves nothing to predict in sequences of {steps} frames"
    return None


def _data_size(data: Any, frame_shape: tuple[int, ...]) -> tuple[int, int]:
    """(S, T) of the test data, after checking its frames fit the model."""
    expected = f"(sequences, time, {', '.join(map(str, frame_shape))})"
    if isinstance(data, (Tensor, np.ndarray)):
        shape = tuple(data.shape)
        if len(shape) != 2 + len(frame_shape) or shape[2:] != frame_shape:
            raise DataError(f"data must have shape {expected} for this model, got {shape}")
        num_sequences, steps = shape[:2]
    else:
        if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
            raise DataError(
                f"data must be a tensor or array {expected} or a sequence of (time, *frame) "
                f"items, got {type(data).__name__}"
            )
        num_sequences = len(data)
        steps = len(data[0]) if num_sequences else 0
    if num_sequences < 1 or steps < 1:
        raise DataError(f"data holds no frames: {num_sequences} sequences of {steps} frames")
    return num_sequences, steps


def _batches(
    data: Any, batch_size: int, steps: int, frame_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Iterator[Tensor]:
    """``batch_size`` sequences at a time as a tensor (b, T, *frame) on ``device``."""
    expected = (steps, *frame_shape)
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        if isinstance(data, (Tensor, np.ndarray)):
            batch = _as_tensor(data[start:stop])
        else:
            items = [_as_tensor(data[index]) for index in range(start, stop)]
            for index, item in enumerate(items, start):
                if tuple(item.shape) != expected:
                    raise DataError(
                        f"data item {index} has shape {tuple(item.shape)}; every sequence must be "
                        f"{expected}: the first one's length and the model's frame shape"
                    )
            batch = torch.stack(items)
        if not batch.is_floating_point():
            raise DataError(f"data must hold floating-point frames, got dtype {batch.dtype}")
        yield batch.to(device=device, dtype=dtype)


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, np.ndarray):  # a read-only memory map needs a copy to become a tensor
        return torch.from_numpy(np.require(value, requirements="W"))
    return torch.as_tensor(value)


def _check_positive(**counts: Any) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
