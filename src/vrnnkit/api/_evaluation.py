"""``vrnnkit eval`` through the API: ``evaluate`` on arrays, files, folders of clips, built-in
data sets and frames with actions (``vrnnkit.api._world``: also scored with the actions
shuffled between clips)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from vrnnkit.api._inference import DEFAULT_HORIZON, _check_writable, clip_windows_input, shape_hint
from vrnnkit.api._music import evaluate_file
from vrnnkit.api._world import evaluate_with_actions, is_action_data, takes_actions
from vrnnkit.data.clips import is_clip_folder
from vrnnkit.data.download import resolve_builtin
from vrnnkit.data.frames import parse_size
from vrnnkit.data.sources import BUILTIN_DATA, open_source
from vrnnkit.data.varlen_source import is_variable_length
from vrnnkit.errors import ConfigError, DataError
from vrnnkit.evaluation.bounds import evaluate as evaluate_sequences
from vrnnkit.io.atomic import write_json
from vrnnkit.model import VRNN


def evaluate(
    model: VRNN, data: str | os.PathLike[str] | Tensor | np.ndarray | Any, *, num_sequences: int = 256,
    mnist_dir: str | None = None, layout: str | None = None, json_out: str | os.PathLike[str] | None = None,
    size: Any = None, grey: bool = False, split: str | None = None, per_sequence: str | os.PathLike[str] | None = None,
    per_step: bool = False, windows: bool = False, **options: Any,
) -> dict[str, Any]:
    """``vrnnkit.evaluation.evaluate`` (whose ``options`` it takes) on test data: an array or
    sequences as there, or a file, or a built-in data set's held-out sequences
    (``num_sequences`` of them where they are generated), whose frames ``size`` (64 or
    "64x48", HEIGHTxWIDTH) and ``grey`` convert as they are read. The report also goes to
    ``json_out``.

    A file of sequences of different lengths (a note-list JSON, whose ``split`` is ``test``
    by default; a .npz of several arrays or with lengths; a folder) is scored per time step
    instead: ``vrnnkit.evaluation.sequences.evaluate_variable_length`` (no prediction metrics), with
    per-sequence scores written to ``per_sequence`` (.csv or .json; ``per_step`` adds each
    step's ELBO term).

    ``windows``: frames with actions are scored on every non-overlapping window of ``context +
    horizon`` steps of each sequence (a long recording gives many test windows) instead of
    once per sequence from its start; a folder of clips is always scored so."""
    if isinstance(data, str):  # jsb-chorales: the cached file; MNIST data: the cached folder
        data, mnist_dir = resolve_builtin(data, mnist_dir)
    if is_action_data(data):
        if split is not None or per_sequence is not None or per_step or size is not None or grey:
            raise ConfigError("--split, --per-sequence, --per-step, --size and --grey do not apply to frames with actions")
        _check_writable(json_out, "--json")
        length = options.get("context", 5) + (options.get("horizon") or DEFAULT_HORIZON)
        report = evaluate_with_actions(model, data, evaluate_sequences, layout=layout, windows=length if windows else None, **options)
        if json_out is not None:
            write_json(Path(json_out), report)
        return report
    clips = isinstance(data, (str, os.PathLike)) and is_clip_folder(data)
    if windows and not clips:
        raise ConfigError("--windows applies to frames with actions (a .npz with 'frames' and 'actions', or a folder "
                          "of them); a folder of clips is always scored window by window")
    if takes_actions(model) and "actions" not in options:
        raise DataError(f"this model takes an action per step (action_dim {model.config.action_dim}); {data} has no "
                        "actions: evaluate it on frames with actions (a .npz with 'frames' and 'actions')")
    if clips:
        _check_writable(json_out, "--json")
        report = evaluate_clips(model, data, size=size, grey=grey, **options)
        if json_out is not None:
            write_json(Path(json_out), report)
        return report
    if isinstance(data, (str, os.PathLike)) and str(data) not in BUILTIN_DATA and is_variable_length(str(data)):
        kept = {k: options[k] for k in ("iwae_samples", "batch_size", "chunk_size", "seed", "bounds", "particles") if k in options}
        return evaluate_file(model, str(data), split=split, per_sequence=per_sequence, per_step=per_step,
                                    json_out=json_out, **kept)
    if split is not None or per_sequence is not None or per_step:
        raise ConfigError("--split, --per-sequence and --per-step apply to sequences of different lengths "
                          "(a note-list .json, a .npz of several arrays or with lengths, a folder)")
    _check_writable(json_out, "--json")
    frame_size = parse_size(size)
    if isinstance(data, (str, os.PathLike)):
        data = _held_out(model, str(data), num_sequences, mnist_dir, layout, (frame_size, grey), options)
    elif frame_size is not None or grey:
        raise ConfigError("size and grey apply to a file or a built-in data set; convert an array before passing it")
    report = evaluate_sequences(model, data, **options)
    if json_out is not None:
        write_json(Path(json_out), report)
    return report


def _held_out(
    model: VRNN, data: str, num_sequences: int, mnist_dir: str | None, layout: str | None,
    conversion: tuple[tuple[int, int] | None, bool], options: dict[str, Any],
) -> Any:
    # Generated test data is as long as the prediction needs: context and horizon.
    length = options.get("context", 5) + (options.get("horizon") or DEFAULT_HORIZON)
    size, grey = conversion
    sequences = open_source(data, count=num_sequences, length=length, seed=options.get("seed", 0),
                            mnist_dir=mnist_dir, layout=layout, held_out=True, size=size, grey=grey)
    found, wanted = tuple(sequences.frame_shape), tuple(model.config.frame_shape)
    if found != wanted:
        raise DataError(f"{data} has frames of shape {found}; the model was trained on {wanted}{shape_hint(found, wanted)}")
    return sequences


def evaluate_clips(
    model: VRNN, folder: str | os.PathLike[str], *, size: Any = None, grey: bool = False, **options: Any,
) -> dict[str, Any]:
    """``evaluate`` on a folder of clips: every window of ``context + horizon`` frames of every
    clip (no overlap; a clip shorter than one window gives none), the prediction figures also
    per clip (``prediction.per_group``)."""
    length = options.get("context", 5) + (options.get("horizon") or DEFAULT_HORIZON)
    windows, names = clip_windows_input(model, folder, length, size=size, grey=grey)
    options["horizon"] = length - options.get("context", 5)
    return evaluate_sequences(model, windows, groups=names, **options)
