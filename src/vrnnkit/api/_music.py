"""Sequences of different lengths and piano rolls in the API: evaluation per time step, the
per-sequence scores file, and MIDI / piano-roll pictures out of ``sample`` and ``predict``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vrnnkit.data.music import PIANO_KEYS, NoteRange, plot_piano_roll, write_midi
from vrnnkit.data.varlen_source import read_split
from vrnnkit.errors import ConfigError, DataError, output_problem
from vrnnkit.evaluation.sequences import evaluate_variable_length
from vrnnkit.io.atomic import atomic_path, write_json
from vrnnkit.io.checkpoint import read_metadata
from vrnnkit.model import VRNN
from vrnnkit.training.run_dir import NOTE_RANGE_KEY

MUSIC_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".csv", ".json")


def checkpoint_note_range(path: str | os.PathLike[str] | None) -> NoteRange | None:
    """The note range a checkpoint's header records (models trained on piano rolls), or None."""
    if path is None:
        return None
    text = read_metadata(path).get(NOTE_RANGE_KEY)
    return NoteRange.from_dict(json.loads(text)) if text else None


def model_note_range(model: VRNN, note_range: NoteRange | None) -> NoteRange:
    """The notes of a model's frames: ``note_range``, else the 88 piano keys for an 88-dim
    model; any other model cannot be written as MIDI."""
    shape = tuple(model.config.frame_shape)
    if note_range is not None and shape == (note_range.dims,):
        return note_range
    if shape == (PIANO_KEYS.dims,):
        return PIANO_KEYS
    raise ConfigError(
        f"MIDI and piano-roll pictures need a piano-roll model (frames of {PIANO_KEYS.dims} notes, or a note range "
        f"in the checkpoint); this model's frames are {shape}"
    )


def is_music_output(path: str | os.PathLike[str] | None, model: VRNN, note_range: NoteRange | None) -> bool:
    """Whether ``path`` is written as music: a .mid file, or a .png of a piano-roll model."""
    if path is None:
        return False
    suffix = Path(path).suffix.lower()
    if suffix in MUSIC_SUFFIXES:
        model_note_range(model, note_range)  # raises for a model that is not a piano roll
        return True
    return suffix == ".png" and not model.config.is_image and (note_range is not None or tuple(model.config.frame_shape) == (88,))


def check_music_output(path: Path) -> None:
    problem = output_problem(path)
    if problem:
        raise ConfigError(f"cannot write {path} (--out): {problem}")


def write_rolls(path: Path, rolls: Tensor, note_range: NoteRange, *, steps_per_beat: float = 1.0) -> list[Path]:
    """Piano rolls ``(N, T, D)`` as MIDI (one file per roll: ``piece.mid``, or ``piece-1.mid``
    ... for several) or one PNG (the rolls side by side, a gap between them); values >= 0.5
    sound in MIDI. Returns the files written."""
    arrays = [r.detach().float().cpu().numpy() for r in rolls]
    if path.suffix.lower() == ".png":
        gap = np.zeros((2, note_range.dims), np.float32)
        joined = np.concatenate([part for roll in arrays for part in (roll, gap)][:-1])
        plot_piano_roll(joined, path, note_range=note_range, steps_per_beat=steps_per_beat,
                        title=f"{len(arrays)} piano roll(s) of {arrays[0].shape[0]} steps")
        return [path]
    paths = [path] if len(arrays) == 1 else [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(len(arrays))]
    for roll, out in zip(arrays, paths, strict=True):
        write_midi(roll, out, steps_per_beat=steps_per_beat, note_range=note_range)
    return paths


def read_sequences_input(model: VRNN, path: Path, split: str | None, context: int) -> Tensor:
    """Sequences of different lengths (a note-list JSON split, ``test`` by default, a .npz, a
    folder) for prediction: the first ``context`` steps of each, (B, context, *frame)."""
    sequences, _ = read_split(str(path), split)
    shape = tuple(model.config.frame_shape)
    if tuple(sequences[0].shape[1:]) != shape:
        raise DataError(f"{path} has frames of shape {tuple(sequences[0].shape[1:])}; the model was trained on {shape}")
    short = [i for i, s in enumerate(sequences) if len(s) < context]
    if short:
        raise DataError(f"--context {context} is longer than sequence {short[0]} of {path} ({len(sequences[short[0]])} steps)")
    return torch.from_numpy(np.stack([s[:context] for s in sequences]))


def evaluate_file(
    model: VRNN, data: str, *, split: str | None = None, per_sequence: str | os.PathLike[str] | None = None,
    per_step: bool = False, json_out: str | os.PathLike[str] | None = None, iwae_samples: int = 100,
    batch_size: int = 16, chunk_size: int | None = None, seed: int = 0,
    bounds: str | tuple[str, ...] = ("elbo", "iwae"), particles: int | None = None,
) -> dict[str, Any]:
    """``evaluate_variable_length`` on a file of sequences of different lengths (a split of a
    note-list JSON: ``test`` by default); per-sequence scores to ``per_sequence`` (.csv or
    .json; ``per_step`` adds each step's ELBO term), the report to ``json_out``."""
    for out, option in ((per_sequence, "--per-sequence"), (json_out, "--json")):
        problem = None if out is None else output_problem(Path(out))
        if problem:
            raise ConfigError(f"cannot write {out} ({option}): {problem}")
    if per_sequence is not None and Path(per_sequence).suffix.lower() not in SCORE_SUFFIXES:
        raise ConfigError(f"cannot write {per_sequence} (--per-sequence): expected a path ending in .csv or .json")
    if per_step and per_sequence is None:
        raise ConfigError("--per-step adds to the --per-sequence file; give --per-sequence out.csv (or .json)")
    sequences, _ = read_split(data, split)
    report = evaluate_variable_length(model, sequences, iwae_samples=iwae_samples, batch_size=batch_size,
                                      chunk_size=chunk_size, seed=seed, per_step=per_step, bounds=bounds,
                                      particles=particles)
    report["data"], report["split"] = data, split or ("test" if data.lower().endswith(".json") else None)
    if per_sequence is not None:
        write_scores(Path(per_sequence), report["sequences"])
    if json_out is not None:
        write_json(Path(json_out), report)
    return report


def write_scores(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-sequence scores as JSON (a list of objects) or CSV (one row per sequence; with
    per-step values, one row per step: sequence, step, step_elbo, then the sequence's figures)."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".json":
            Path(tmp).write_text(json.dumps(rows, indent=1), encoding="utf-8")
            return
        names = ["elbo", *(name for name in ("iwae", "fivo") if name in rows[0])]
        columns = ["sequence", "steps", *names, *(f"{name}_per_step" for name in names)]
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            per_step = "step_elbo" in rows[0]
            writer.writerow(["sequence", "step", "step_elbo", *columns[1:]] if per_step else columns)
            for row in rows:
                figures = [row[c] for c in columns[1:]]
                if per_step:
                    writer.writerows([row["sequence"], t, value, *figures] for t, value in enumerate(row["step_elbo"]))
                else:
                    writer.writerow([row["sequence"], *figures])
