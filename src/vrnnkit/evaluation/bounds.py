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
        "iwae": {                       # the importance-weighted bound on log p(x) (bounds: iwae)
          "K": 100,                     # importance samples per sequence
          "bound": -805.9,              # mean bound, nats per sequence (>= elbo on average)
          "nats_per_dim": 0.00787,
          "bits_per_dim": 0.01135
        },
        "fivo": {...}                   # the particle filter's bound, the same keys (bounds: fivo)
      },
      "prediction": {
        "skipped": null,                # or a sentence saying why prediction was not run
        "context": 5,                   # real frames given, 0 .. context-1
        "horizon": 20,                  # frames predicted after them (null when skipped)
        "samples": 100,                 # N, predictions per sequence
        "num_sequences": 256,
        "psnr": {                       # dB
          "best_of_n": {"mean": 16.9, "ci95": 0.1, "per_step": [25.1, ...], "per_step_ci95": [0.2, ...]},
          "mean_of_n": {"mean": 14.2, "ci95": 0.1, "per_step": [...]}
        },
        "ssim": {"best_of_n": {...}, "mean_of_n": {...}},    # unitless, 1 = identical
        "baseline": {                   # copy-last: the last context frame, repeated
          "psnr": {"mean": 12.1, "ci95": 0.1, "per_step": [...]},
          "ssim": {"mean": 0.61, "ci95": 0.01, "per_step": [...]}
        },
        "versus_baseline": {            # model minus copy-last, sequence by sequence (paired)
          "psnr": {"best_of_n": {"mean": 4.8, "ci95": 0.1, "per_step": [...]}, "mean_of_n": {...}},
          "ssim": {"best_of_n": {...}, "mean_of_n": {...}}
        }
      }
    }

A ``{"mean", "ci95", "per_step", "per_step_ci95"}`` entry: ``per_step`` is the metric at each predicted step
averaged over sequences (``horizon`` values; for ``best_of_n``, of the sample chosen on its
average over the steps, so one step may fall below ``mean_of_n``); ``mean`` is the average of each sequence's
metric over the predicted steps, averaged over sequences; ``ci95`` is 1.96 x the standard
deviation of those per-sequence averages / sqrt(num_sequences) (the population standard
deviation, as SRVP's ``numpy.std``); ``per_step_ci95`` is the same interval for each step's
values (the bands of ``vrnnkit eval --plot``). A skipped ``prediction`` holds only ``skipped``,
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
from vrnnkit.errors import DataError, check_counts
from vrnnkit.evaluation.metrics import SSIM_WINDOW, prediction_curves, summarise_curves
from vrnnkit.model import VRNN
from vrnnkit.model.objectives import fivo_log_likelihood, parse_bounds

# ---------------------------------------------------------------------- evaluate


@torch.no_grad()
def evaluate(
    model: VRNN,
    data: Tensor | np.ndarray | Sequence[Any],
    *,
    iwae_samples: int = 100,
    bounds: str | Sequence[str] = ("elbo", "iwae"),
    particles: int | None = None,
    context: int = 5,
    horizon: int | None = None,
    samples: int = 10,
    batch_size: int = 16,
    chunk_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    groups: Sequence[str] | None = None,
    actions: Tensor | np.ndarray | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on test sequences: the report described in the module docstring.

    Args:
        model: the VRNN to evaluate; it runs in eval mode (its mode is restored afterwards).
        data: the test sequences, all of the same length T: a tensor or array (S, T, *frame),
            or anything with ``len()`` whose items are (T, *frame) tensors or arrays (a
            :class:`~vrnnkit.data.SequenceArray`, a :class:`~vrnnkit.data.WindowDataset`).
            It is read once, ``batch_size`` sequences at a time.
        iwae_samples: K, the importance samples of the IWAE bound (``particles`` wins).
        bounds: which bounds on log p(x) to report, of ``elbo``, ``iwae`` and ``fivo``
            (``vrnnkit.model.objectives``); the ELBO is always reported.
        particles: K of the IWAE and FIVO bounds (default ``iwae_samples``).
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
        groups: a name per sequence (the clip a window was cut from, say): the prediction
            report then also holds ``per_group``, the same figures over each group's sequences.
        actions: a model with inputs (``action_dim`` > 0): each sequence's actions (S, T, A),
            u_t the action before frame t; prediction imagines the futures under the recorded ones.

    Prediction runs for image models only; it is skipped, with the reason in
    ``prediction.skipped``, for vector frames, for frames under 11x11 (SSIM's window), and when
    the default horizon leaves no frame to predict.

    Raises:
        ValueError: a count that is not a positive integer (context, horizon, samples,
            iwae_samples, batch_size, chunk_size).
        DataError: data of the wrong shape or type, values outside [0, 1] for a Bernoulli
            likelihood, or an explicit horizon that does not fit: context + horizon > T.
    """
    check_counts(iwae_samples=iwae_samples, context=context, samples=samples, batch_size=batch_size)
    if particles is not None:
        check_counts(particles=particles)
        iwae_samples = particles
    bounds = parse_bounds(bounds)
    if horizon is not None:
        check_counts(horizon=horizon)
    if chunk_size is not None:
        check_counts(chunk_size=chunk_size)
    frame_shape = tuple(model.config.frame_shape)
    num_sequences, steps = _data_size(data, frame_shape)
    if horizon is not None and context + horizon > steps:
        raise DataError(
            f"context ({context}) + horizon ({horizon}) = {context + horizon} frames, but the "
            f"test sequences have {steps}; lower the context or the horizon"
        )
    checked = _check_unit_targets(model, data)
    skipped = _prediction_skipped(frame_shape, context, steps, horizon)
    if horizon is None and skipped is None:
        horizon = steps - context
    if device is not None:
        model.to(device)
    parameter = next(model.parameters())
    batches = _batches(data, batch_size, steps, frame_shape, parameter.device, parameter.dtype)
    batches = _with_actions(batches, actions, batch_size, (num_sequences, steps), parameter)
    was_training = model.training
    model.eval()
    try:
        totals, curves = _accumulate(
            model, batches, checked=checked, iwae_samples=iwae_samples, chunk_size=chunk_size, bounds=bounds,
            prediction=None if skipped else (context, horizon, samples), seed=seed,
        )
    finally:
        model.train(was_training)
    prediction: dict[str, Any] = {"skipped": skipped, "context": context, "horizon": horizon, "samples": samples}
    if skipped is None:
        prediction.update(_prediction_summary(curves, groups))
    report = {
        "vrnnkit_version": __version__, "num_sequences": num_sequences, "sequence_length": steps,
        "frame_shape": list(frame_shape), "dims_per_sequence": steps * math.prod(frame_shape), "seed": seed,
    }
    return {**report, "likelihood": _likelihood_report(totals, iwae_samples, report["dims_per_sequence"], bounds),
            "prediction": prediction}


def _accumulate(
    model: VRNN, batches: Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]], *, checked: bool, iwae_samples: int, chunk_size: int | None,
    bounds: tuple[str, ...], prediction: tuple[int, int, int] | None, seed: int,
) -> tuple[dict[str, list[Tensor]], dict[str, list[Tensor]]]:
    """Per-sequence likelihood figures and prediction curves, batch by batch.

    Independent CPU generators (ELBO, IWAE, prediction, FIVO) come from ``seed``, so each
    part's draws stay the same when another part's settings change."""
    elbo_generator, iwae_generator, predict_generator, fivo_generator = (
        torch.Generator().manual_seed(int(s)) for s in np.random.SeedSequence(seed).generate_state(4)
    )
    totals: dict[str, list[Tensor]] = {"elbo": [], "nll": [], "kl": [], "nats_per_dim": [], "iwae": [], "fivo": []}
    curves: dict[str, list[Tensor]] = {}
    for batch in batches:
        x, u = batch if isinstance(batch, tuple) else (batch, None)
        if not checked:
            check_unit_range(x, "data")
        out = model(x, generator=elbo_generator, actions=u)
        totals["elbo"].append(out.elbo)
        totals["nll"].append(out.nll.expand(len(x)))  # batch means, weighted by batch size
        totals["kl"].append(out.kl.expand(len(x)))
        totals["nats_per_dim"].append(-out.elbo / out.dims)
        if "iwae" in bounds:
            totals["iwae"].append(model.log_likelihood(x, iwae_samples, chunk_size=chunk_size, generator=iwae_generator, actions=u))
        if "fivo" in bounds:
            totals["fivo"].append(fivo_log_likelihood(model, x, iwae_samples, generator=fivo_generator, actions=u))
        if prediction is not None:
            context, horizon, samples = prediction
            plan = None if u is None else u[:, : context + horizon]
            futures = model.predict(x[:, :context], horizon, samples, generator=predict_generator, actions=plan)
            batch_curves = prediction_curves(futures, x[:, context : context + horizon], x[:, context - 1])
            for key, curve in batch_curves.items():
                curves.setdefault(key, []).append(curve)
    return totals, curves


def _prediction_summary(curves: dict[str, list[Tensor]], groups: Sequence[str] | None) -> dict[str, Any]:
    """The prediction figures over every sequence, and over each group's with ``groups``."""
    joined = {key: torch.cat(values) for key, values in curves.items()}
    summary = summarise_curves(joined)
    if groups is not None:
        summary["per_group"] = per_group(joined, groups)
    return summary


def per_group(curves: dict[str, Tensor], groups: Sequence[str]) -> dict[str, Any]:
    """The prediction figures (``summarise_curves``) of each group of sequences, from the
    per-sequence ``curves`` of ``prediction_curves``, in the order the groups first appear."""
    count = next(iter(curves.values())).shape[0]
    if len(groups) != count:
        raise DataError(f"groups names {len(groups)} sequences; the data holds {count}")
    names = list(dict.fromkeys(groups))
    labels = np.asarray(groups, dtype=object)
    report = {}
    for name in names:
        rows = torch.from_numpy(np.flatnonzero(labels == name))
        report[name] = summarise_curves({key: curve.index_select(0, rows) for key, curve in curves.items()})
    return report


def _likelihood_report(totals: dict[str, list[Tensor]], particles: int, dims: int, bounds: tuple[str, ...]) -> dict[str, Any]:
    means = {key: float(torch.cat(values).double().mean()) for key, values in totals.items() if values}
    report: dict[str, Any] = {
        "elbo": means["elbo"],
        "nll": means["nll"],
        "kl": means["kl"],
        "nats_per_dim": means["nats_per_dim"],
        "bits_per_dim": means["nats_per_dim"] / math.log(2.0),
    }
    for name in ("iwae", "fivo"):
        if name in bounds:
            report[name] = {
                "K": particles,
                "bound": means[name],
                "nats_per_dim": -means[name] / dims,
                "bits_per_dim": -means[name] / dims / math.log(2.0),
            }
    return report


def _check_unit_targets(model: VRNN, data: Any) -> bool:
    """Check, before any work, that the data of a likelihood on [0, 1] (Bernoulli) lies in
    [0, 1]; False when the data must be checked batch by batch instead (a plain sequence of
    items)."""
    from vrnnkit.data import SequenceArray

    if model.config.likelihood_support != "unit-interval":
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


def _with_actions(
    batches: Iterator[Tensor], actions: Tensor | np.ndarray | None, batch_size: int, size: tuple[int, int], like: Tensor,
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """Each batch of frames with its sequences' actions (b, T, A), checked against the data's
    (S, T); the batches themselves without actions."""
    if actions is None:
        return batches
    if len(actions) != size[0] or actions.ndim != 3 or actions.shape[1] != size[1]:
        raise DataError(f"actions of shape {tuple(actions.shape)} for {size[0]} sequences of {size[1]} frames; "
                        "expected (sequences, time, action_dim)")
    return zip(batches, _batches(actions, batch_size, size[1], tuple(actions.shape[2:]), like.device, like.dtype), strict=True)


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, np.ndarray):  # a read-only memory map needs a copy to become a tensor
        return torch.from_numpy(np.require(value, requirements="W"))
    return torch.as_tensor(value)


