"""Using a trained model: ``load_model``, ``sample``, ``predict`` (arrays) and
``predict_file`` (files), ``evaluate``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vrnnkit.api._music import (
    MUSIC_SUFFIXES,
    check_music_output,
    is_music_output,
    model_note_range,
    read_sequences_input,
    write_rolls,
)
from vrnnkit.api._world import (
    NO_ACTIONS,
    check_clip_actions,
    is_action_data,
    read_action_input,
    read_plans,
    recorded_future,
    sample_plans,
    takes_actions,
    under_plans,
)
from vrnnkit.data import check_unit_range, load_sequences
from vrnnkit.data.clips import is_clip_folder, read_clips
from vrnnkit.data.files import VIDEO_SUFFIXES
from vrnnkit.data.frames import format_size, parse_size
from vrnnkit.data.music import NoteRange
from vrnnkit.data.varlen_source import is_variable_length
from vrnnkit.data.video import frame_size
from vrnnkit.errors import CheckpointError, ConfigError, DataError, output_problem, pickle_hint
from vrnnkit.evaluation.bounds import per_group
from vrnnkit.evaluation.metrics import prediction_curves, prediction_metrics
from vrnnkit.io.atomic import write_json
from vrnnkit.io.checkpoint import find_checkpoint, load
from vrnnkit.io.render import check_output, prediction_borders, write_clips
from vrnnkit.model import VRNN
from vrnnkit.model.inputs import check_feedback, sample_feedback
from vrnnkit.resources.budget import require_memory

DEFAULT_HORIZON = 10
"""Frames predicted when the data has none after the context (and generated test data's)."""
DEFAULT_SAMPLES = {True: "samples.gif", False: "samples.npy"}
"""What ``vrnnkit sample`` writes, in the current folder, without ``--out`` (image, vector models)."""
PREDICTED_SUFFIX = "-predicted"
"""``vrnnkit predict clip.npy`` without ``--out`` writes ``clip-predicted.gif`` (vector models
``.npy``) in the current folder."""


def load_model(ckpt: str | os.PathLike[str] | None = None) -> tuple[VRNN, Path]:
    """The model of a .safetensors checkpoint or a run folder (default: the newest run in
    ./runs), in eval mode, and the file it came from."""
    path = find_checkpoint(ckpt)
    foreign = pickle_hint(path)
    if foreign:
        raise CheckpointError(f"{path} is {foreign}; --ckpt takes a .safetensors file written by vrnnkit")
    return load(path).eval(), path


def sample(
    model: VRNN, num: int = 8, steps: int | None = None, *, seed: int = 0, mean: bool | None = None,
    out: str | os.PathLike[str] | None = None, note_range: NoteRange | None = None, feedback: str | None = None,
    actions: Any = None,
) -> Tensor:
    """``num`` clips of ``steps`` frames from the prior (``VRNN.sample``), also written to
    ``out`` (.gif, .png, .mp4, .npy; vector models .npy, .csv, .png) when given. A piano-roll
    model (88 notes, or ``note_range``) also writes ``.mid`` (one file per clip) and draws a
    ``.png`` as a piano roll. ``mean`` (frames are the likelihood's mean, not draws from it)
    defaults to True, except for MIDI, whose notes are drawn; ``feedback`` ("mean" or "draw":
    what each step feeds back into the state, as in ``VRNN.sample``) defaults to the
    likelihood's ``sample_feedback``: draws for the Bernoulli likelihoods (ancestral sampling),
    the frame shown for the others. ``actions``: what a model with actions is steered by, a
    plan file or array ``(T, A)`` or ``(K, T, A)``, whose K plans give ``num`` clips each;
    ``steps`` None: the plan's length (20 without one)."""
    check_feedback(feedback)
    plans, num, steps = sample_plans(model, actions, num, steps)
    if feedback is None:
        feedback = sample_feedback(model)
    music = is_music_output(out, model, note_range)
    if out is not None:
        (check_music_output if music else partial(check_output, image=model.config.is_image))(Path(out))
    if mean is None:
        mean = not (out is not None and Path(out).suffix.lower() in MUSIC_SUFFIXES)
    _check_output_memory(model, num * steps, f"{num:,} clips of {steps:,} frames", "lower --num or --steps")
    clips = model.sample(num, steps, generator=torch.Generator().manual_seed(seed), mean=mean, feedback=feedback, actions=plans)
    if out is not None and music:
        write_rolls(Path(out), clips, model_note_range(model, note_range))
    elif out is not None:
        write_clips(Path(out), clips)
    return clips


@dataclass
class Prediction:
    """What ``predict`` returns: the futures of each sequence, and what they are judged by."""

    context: Tensor
    """(B, context, *frame): the real frames the model saw."""
    futures: Tensor
    """(B, samples, horizon, *frame): the predicted frames."""
    truth: Tensor | None
    """(B, horizon, *frame): the real frames after the context, when the data has them."""
    metrics: dict[str, Any] | None = None
    """PSNR and SSIM against ``truth`` (``vrnnkit.evaluation.prediction_metrics``) for image models."""
    no_metrics: str | None = None
    """Why the metrics could not be computed on data that has a truth (frames too small for SSIM)."""
    path: Path | None = None
    """The file ``predict_file`` wrote."""

    @property
    def horizon(self) -> int:
        return self.futures.shape[2]


def predict(
    model: VRNN, videos: Tensor, *, context: int = 5, horizon: int | None = None, samples: int = 3,
    seed: int = 0, mean: bool | None = True, require_metrics: bool = False, source: str = "the input",
    feedback: str | None = None, actions: Tensor | None = None,
) -> Prediction:
    """Predict ``samples`` futures of each sequence in ``videos`` (B, T, *frame) from its
    first ``context`` frames, and score them against the real frames that follow.

    ``horizon`` defaults to the frames after the context, or 10 when there are none. With
    ``require_metrics`` a prediction that cannot be scored (vector frames, no truth) is a
    DataError before any work. ``source`` names the data in messages. ``feedback`` as in ``sample``.
    ``actions`` (B, T, A): a model with actions predicts under the recorded ones (``vrnnkit.api._world``)."""
    check_feedback(feedback)
    length = videos.shape[1]
    if context > length:
        raise DataError(f"--context {context} is longer than the {length} frames of {source}")
    if horizon is None:
        horizon = length - context if context < length else DEFAULT_HORIZON
    truth = videos[:, context : context + horizon]
    has_truth = truth.shape[1] == horizon
    image = model.config.is_image
    if require_metrics and not (has_truth and image):
        reason = "PSNR and SSIM apply to image frames" if not image else f"{source} has no {horizon} frames after the context to compare with"
        raise DataError(f"--json needs metrics: {reason}")
    _check_output_memory(model, len(videos) * samples * horizon, f"{samples:,} futures of {horizon:,} frames for each of "
                         f"{len(videos):,} sequences", "lower --samples or --horizon")
    if actions is not None:
        actions = recorded_future(actions, context, horizon, source)
    futures = model.predict(videos[:, :context], horizon, samples, generator=torch.Generator().manual_seed(seed), mean=mean is not False,
                            feedback=feedback, actions=actions)
    result = Prediction(videos[:, :context], futures, truth if has_truth else None)
    if has_truth and image:
        try:
            result.metrics = prediction_metrics(futures, truth, videos[:, context - 1])
        except DataError as error:  # e.g. frames too small for SSIM's window
            result.no_metrics = str(error)
    return result


def default_prediction_path(path: str | os.PathLike[str], *, image: bool = True) -> Path:
    """Where ``predict`` writes without ``--out``: ``<input stem>-predicted.gif`` (vector
    models ``.npy``) in the current folder, never the input itself."""
    path = Path(path)
    out = Path(f"{path.stem}{PREDICTED_SUFFIX}{'.gif' if image else '.npy'}")
    while out.resolve() == path.resolve():
        out = Path(f"{out.stem}{PREDICTED_SUFFIX}{out.suffix}")
    return out


def predict_file(
    model: VRNN, path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
    json_out: str | os.PathLike[str] | None = None, layout: str | None = None, resize: bool = False,
    size: Any = None, grey: bool = False, split: str | None = None, note_range: NoteRange | None = None,
    actions: Any = None, **options: Any,
) -> Prediction:
    """``predict`` on the sequences of a file (``read_input``, which takes ``layout``,
    ``resize``, ``size`` and ``grey``), written to ``out`` (default
    ``default_prediction_path``; never the input): image models as rows of [context, truth]
    and [context, future] clips with coloured borders (.npy: the raw futures), vector models
    as the futures. The metrics go to ``json_out`` when given. ``options`` are ``predict``'s.

    Sequences of different lengths (a note-list JSON, whose ``split`` is ``test`` by default;
    a .npz of several arrays; a folder) give their first ``context`` steps. A piano-roll model
    (88 notes, or ``note_range``) writes ``.mid`` (context then future, one file per sequence
    and sample) or draws a ``.png`` piano roll.

    A model with actions reads a file with them (a .npz with ``frames`` and ``actions``) and
    predicts under its recorded actions, or under the plans of ``actions`` (a file or array
    ``(H, A)`` or ``(K, H, A)``: rows of futures per plan, no metrics)."""
    path = Path(path)
    out = default_prediction_path(path, image=model.config.is_image) if out is None else Path(out)
    music = is_music_output(out, model, note_range)
    (check_music_output if music else partial(check_output, image=model.config.is_image))(out)
    if out.resolve() == path.resolve():
        raise ConfigError(f"cannot write {out} (--out): it is the input file; choose another name")
    if takes_actions(model) or actions is not None or is_action_data(path):
        return _predict_world(model, path, out, json_out, actions, layout=layout, **options)
    if is_clip_folder(path):
        if split is not None or layout is not None or resize:
            raise ConfigError("--split, --layout and --resize do not apply to a folder of clips; use --size and --grey")
        return _predict_clips(model, path, out, json_out, size=size, grey=grey, **options)
    if is_variable_length(str(path)):
        videos = read_sequences_input(model, path, split, options.get("context", 5))
    elif split is not None:
        raise ConfigError(f"--split applies to note-list JSON files; {path} holds one set of sequences")
    else:
        videos = read_input(model, path, layout=layout, resize=resize, size=size, grey=grey)
    if music:
        return _predict_music(model, videos, out, note_range, source=str(path), **options)
    _check_writable(json_out, "--json")
    prediction = predict(model, videos, require_metrics=json_out is not None, source=str(path), **options)
    if not model.config.is_image and out.suffix.lower() != ".npy":
        write_clips(out, prediction.futures.flatten(0, 1))
        prediction.path = out
        return prediction
    return _write_prediction(prediction, prediction, out, json_out)


def _write_prediction(prediction: Prediction, shown: Prediction, out: Path, json_out: str | os.PathLike[str] | None) -> Prediction:
    """Write ``shown`` to ``out`` (.npy: the raw futures; otherwise rows of context and futures)
    and ``prediction``'s metrics to ``json_out``; ``prediction`` with its path."""
    if out.suffix.lower() == ".npy":
        write_clips(out, shown.futures)
    else:
        write_clips(out, *_prediction_rows(shown))
    if json_out is not None and prediction.metrics is not None:
        write_json(Path(json_out), prediction.metrics)
    prediction.path = out
    return prediction


def _predict_clips(
    model: VRNN, folder: Path, out: Path, json_out: str | os.PathLike[str] | None, *, size: Any, grey: bool,
    **options: Any,
) -> Prediction:
    """``predict`` on every window of context + horizon frames of every clip under ``folder``;
    the figures cover every window (also per clip, ``metrics.per_group``), the picture shows the
    first window of each clip."""
    _check_writable(json_out, "--json")
    options["horizon"] = options.get("horizon") or DEFAULT_HORIZON
    length = options.get("context", 5) + options["horizon"]
    windows, names = clip_windows_input(model, folder, length, size=size, grey=grey)
    _check_output_memory(model, len(windows) * length, f"{len(windows):,} windows of {length} frames", "lower --horizon")
    videos = torch.stack([windows[i] for i in range(len(windows))])
    prediction = predict(model, videos, require_metrics=True, source=str(folder), **options)
    if prediction.metrics is not None:
        curves = prediction_curves(prediction.futures, prediction.truth, prediction.context[:, -1])
        prediction.metrics["per_group"] = per_group(curves, names)
    first = [names.index(name) for name in dict.fromkeys(names)]
    shown = Prediction(prediction.context[first], prediction.futures[first], prediction.truth[first])
    return _write_prediction(prediction, shown, out, json_out)


def _predict_world(model: VRNN, path: Path, out: Path, json_out: Any, plan: Any, *, layout: str | None, **options: Any) -> Prediction:
    """``predict_file`` for a model with actions (or a plan, or a file with actions): the
    clip's recorded actions steer the context, and then ``plan`` or the recorded ones the future."""
    if plan is not None and not takes_actions(model):
        raise ConfigError(NO_ACTIONS.format(what="--actions"))
    videos, recorded = read_action_input(model, path, layout=layout) if is_action_data(path) else (read_input(model, path, layout=layout), None)
    check_clip_actions(model, path, recorded)
    recorded = recorded if takes_actions(model) else None
    if plan is None:
        _check_writable(json_out, "--json")
        prediction = predict(model, videos, require_metrics=json_out is not None, source=str(path), actions=recorded, **options)
        return _write_prediction(prediction, prediction, out, json_out)
    if json_out is not None:
        raise ConfigError("--json: futures under a plan have no truth to score; leave out --actions to score the recorded ones")
    context, samples = options.get("context", 5), options.get("samples", 3)
    plans = read_plans(model, plan, steps=options.get("horizon"))
    if context > videos.shape[1] or recorded.shape[1] < context:
        raise DataError(f"--context {context} is longer than the {videos.shape[1]} frames of {path}")
    _check_output_memory(model, len(videos) * samples * plans.numel() // model.config.action_dim, "the futures", "lower --samples")
    futures = under_plans(model, videos, recorded, plans, context=context, samples=samples, seed=options.get("seed", 0),
                          mean=options.get("mean") is not False, feedback=options.get("feedback"))
    prediction = Prediction(videos[:, :context], futures, None)
    if not model.config.is_image and out.suffix.lower() != ".npy":
        write_clips(out, futures.flatten(0, 1))
        prediction.path = out
        return prediction
    return _write_prediction(prediction, prediction, out, None)


def _predict_music(model: VRNN, videos: Tensor, out: Path, note_range: NoteRange | None, **options: Any) -> Prediction:
    """``predict``, written as piano rolls: each sequence's context then each sampled future."""
    if options.get("mean") is None:
        options["mean"] = False  # notes are drawn, as in sample
    prediction = predict(model, videos, **options)
    rolls = torch.cat([prediction.context[:, None].expand(-1, prediction.futures.shape[1], -1, -1), prediction.futures], 2)
    write_rolls(out, rolls.flatten(0, 1), model_note_range(model, note_range))
    prediction.path = out
    return prediction


def read_input(
    model: VRNN, path: str | os.PathLike[str], *, layout: str | None = None, resize: bool = False,
    size: Any = None, grey: bool = False,
) -> Tensor:
    """The sequences of a file as the model takes them (B, T, *frame), values checked against
    the likelihood's support. ``size`` (``--size``: 64 or "64x48", HEIGHTxWIDTH) and ``grey``
    convert frames as they are read; ``resize`` (``--resize``) takes both from the model's
    frame shape and also repeats a grey channel for a colour model. Frames that still do not
    fit the model are a DataError naming both shapes and the options that convert them."""
    shape = tuple(model.config.frame_shape)
    image = model.config.is_image
    if resize and size is not None:
        raise ConfigError("--resize takes the size from the model; give --size or --resize, not both")
    if resize and image:
        size, grey = shape[1:], grey or shape[0] == 1
    _check_video_size(Path(path), shape, parse_size(size), grey)
    data = load_sequences(path, layout=layout, resize=parse_size(size), grey=True if grey else None)
    if model.config.likelihood_support == "unit-interval":
        check_unit_range(data, str(path))
    videos = torch.from_numpy(data)
    if resize and image and videos.dim() == 5 and videos.shape[2] == 1 != shape[0]:
        videos = videos.expand(-1, -1, shape[0], -1, -1)  # grey to colour
    if tuple(videos.shape[2:]) != shape:
        raise DataError(f"{path} has frames of shape {tuple(videos.shape[2:])}; the model was trained on {shape}"
                        f"{shape_hint(tuple(videos.shape[2:]), shape, resize_option=True)}")
    return videos.contiguous()


def _check_output_memory(model: VRNN, frames: int, what: str, fix: str) -> None:
    """Refuse (ConfigError) to generate ``frames`` frames that cannot fit in memory (float32,
    twice: the frames and what is rendered from them)."""
    size = math.prod(model.config.frame_shape) * 4 * 2
    require_memory(frames * size, what, purpose="in memory", fix=fix)


def _check_video_size(path: Path, shape: tuple[int, ...], size: tuple[int, int] | None, grey: bool) -> None:
    """Refuse a video whose frames cannot fit the model, from its metadata, before decoding it
    (its channels are known only once decoded: 3, or 1 with ``grey``)."""
    if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
        return
    found = frame_size(path, size)
    if found is not None and len(shape) == 3 and tuple(found) != tuple(shape[1:]):
        frames = (1 if grey else 3, *found)
        raise DataError(f"{path} has frames of shape {frames} (from its metadata); the model was trained on {shape}"
                        f"{shape_hint(frames, shape, resize_option=True)}")


def shape_hint(found: tuple[int, ...], wanted: tuple[int, ...], *, resize_option: bool = False) -> str:
    """The options that turn frames of shape ``found`` into ``wanted`` (C, H, W), as the end of
    a message: "; pass --size 64x48 --grey" (empty for vector frames)."""
    if len(found) != 3 or len(wanted) != 3:
        return ""
    grey_for_colour = wanted[0] != 1 and found[0] == 1
    if grey_for_colour and resize_option:
        return "; pass --resize, which resizes the frames and repeats the grey channel"
    options = [f"--size {format_size(wanted[1:])}"] if found[1:] != wanted[1:] else []
    if wanted[0] == 1 and found[0] != 1:
        options.append("--grey")
    parts = [f"pass {' '.join(options)}" + (" (or --resize, which takes both from the model)" if resize_option else "")] if options else []
    if grey_for_colour:
        parts.append(f"the model takes colour frames ({wanted[0]} channels) and these are grey (read without --grey)")
    return "".join(f"; {part}" for part in parts)


def _prediction_rows(prediction: Prediction) -> tuple[Tensor, Tensor]:
    """Rows of [context, future] clips per sequence, ground truth first where there is one,
    and their borders."""
    context, truth, futures = prediction.context, prediction.truth, prediction.futures
    batch, samples, horizon = futures.shape[:3]
    rows = []
    for b in range(batch):
        if truth is not None:
            rows.append(torch.cat([context[b], truth[b]]))
        rows.extend(torch.cat([context[b], futures[b, s]]) for s in range(samples))
    truth_rows = 1 if truth is not None else 0
    per_sequence = prediction_borders(samples + truth_rows, context.shape[1], horizon, truth_rows)
    return torch.stack(rows), per_sequence.repeat(batch, 1, 1)


def _check_writable(path: str | os.PathLike[str] | None, option: str) -> None:
    problem = None if path is None else output_problem(Path(path))
    if problem:
        raise ConfigError(f"cannot write {path} ({option}): {problem}")


def clip_windows_input(
    model: VRNN, folder: str | os.PathLike[str], length: int, *, size: Any = None, grey: bool = False,
) -> tuple[Any, list[str]]:
    """The non-overlapping windows of ``length`` frames of every clip under ``folder`` (frames
    converted as ``size`` and ``grey`` say, checked against the model), and the clip of each."""
    clips = read_clips(folder, size=parse_size(size), grey=True if grey else None)
    found, wanted = tuple(clips.frame_shape), tuple(model.config.frame_shape)
    if found != wanted:
        raise DataError(f"{folder}: clips with frames of shape {found}; the model was trained on {wanted}"
                        f"{shape_hint(found, wanted)}")
    windows = clips.windows(length)
    if len(windows) == 0:
        raise DataError(f"{folder}: no clip has the {length} frames of a window (the longest has "
                        f"{max(clips.lengths)}); lower --context or --horizon")
    return windows, [clips.names[int(i)] for i in windows.clip_of]
