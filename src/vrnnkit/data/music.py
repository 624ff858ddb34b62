"""Polyphonic music as binary piano rolls: the note-list JSON of the music benchmarks, MIDI
files in and out, and a piano-roll picture.

A piano roll is a float32 array ``(T, D)`` of 0 and 1: step ``t`` sounds note
``note_range.low + d`` where ``roll[t, d] == 1``. The default range is the 88 keys of a piano,
MIDI notes 21 (A0) to 108 (C8), the range of the JSB Chorales, Nottingham, MuseData and
Piano-midi.de benchmarks; keep the range with a model (``NoteRange.to_dict``) so that its
frames can be turned back into notes.

MIDI goes through ``mido`` (the ``vrnnkit[midi]`` extra), imported only when a MIDI file is
read or written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrnnkit.data.checks import require_file
from vrnnkit.errors import ConfigError, DataError
from vrnnkit.io.atomic import atomic_path, write_bytes

MIDI_INSTALL_HINT = "pip install 'vrnnkit[midi]'  (mido)"
_MIDI_NOTES = range(128)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class NoteRange:
    """The MIDI notes ``low .. high`` (inclusive) that the dimensions of a piano roll stand for."""

    low: int = 21
    high: int = 108

    def __post_init__(self) -> None:
        if not (_is_int(self.low) and _is_int(self.high) and 0 <= self.low <= self.high <= 127):
            raise ConfigError(f"a note range needs 0 <= low <= high <= 127, got {self.low}..{self.high}")

    @property
    def dims(self) -> int:
        """The number of piano-roll dimensions (88 for a piano)."""
        return self.high - self.low + 1

    def to_dict(self) -> dict[str, int]:
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoteRange:
        return cls(int(data["low"]), int(data["high"]))


PIANO_KEYS = NoteRange()
"""The 88 keys of a piano, MIDI notes 21..108: the default range."""


def notes_to_roll(steps: Any, note_range: NoteRange = PIANO_KEYS, *, where: str = "sequence") -> np.ndarray:
    """One sequence given as a list of steps, each a list of MIDI note numbers, as a piano
    roll ``(T, note_range.dims)``. ``where`` names the sequence in error messages."""
    if not isinstance(steps, list):
        raise DataError(f"{where}: expected a list of time steps, found {type(steps).__name__}")
    roll = np.zeros((len(steps), note_range.dims), np.float32)
    for t, notes in enumerate(steps):
        if not isinstance(notes, list):
            raise DataError(
                f"{where}, step {t}: expected a list of MIDI note numbers, found {type(notes).__name__}"
            )
        for note in notes:
            if not _is_int(note) or note not in _MIDI_NOTES:
                raise DataError(f"{where}, step {t}: expected MIDI note numbers 0..127, found {note!r}")
            if not note_range.low <= note <= note_range.high:
                raise DataError(
                    f"{where}, step {t}: note {note} lies outside the note range "
                    f"{note_range.low}..{note_range.high}; give a wider note range"
                )
            roll[t, note - note_range.low] = 1.0
    return roll


def roll_to_notes(roll: np.ndarray, note_range: NoteRange = PIANO_KEYS) -> list[list[int]]:
    """The inverse of :func:`notes_to_roll`: each step's sounding notes (values >= 0.5)."""
    roll = _check_roll(roll, note_range)
    return [[int(d) + note_range.low for d in np.flatnonzero(step >= 0.5)] for step in roll]


def load_piano_roll_json(
    path: str | os.PathLike[str], split: str, *, note_range: NoteRange = PIANO_KEYS
) -> list[np.ndarray]:
    """The sequences of one split of a note-list JSON file, ``{"train": [...], "valid": [...],
    "test": [...]}``, as piano rolls ``(T_i, note_range.dims)`` of their own lengths.

    Raises:
        DataError: the file is not JSON of this form (the message names the key or the index),
            lacks ``split``, the split is empty, a sequence has no steps (refused rather than
            skipped, so that per-sequence figures keep their count and order), or a note is not
            in 0..127 or outside ``note_range`` (named by sequence and step).
    """
    path = Path(path)
    require_file(path)
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: expected a JSON file of note lists, found unreadable JSON ({err})") from err
    if not isinstance(data, dict):
        raise DataError(
            f'{path}: expected a JSON object {{"train": [...], "valid": [...], "test": [...]}}, '
            f"found a {type(data).__name__}"
        )
    if split not in data:
        raise DataError(f"{path}: expected a split named {split!r}, found {', '.join(map(repr, data)) or 'none'}")
    sequences = data[split]
    if not isinstance(sequences, list):
        raise DataError(f"{path}: [{split!r}] expected a list of sequences, found {type(sequences).__name__}")
    if not sequences:
        raise DataError(f"{path}: [{split!r}] expected at least one sequence, found an empty list")
    rolls = []
    for index, steps in enumerate(sequences):
        where = f"{path}: [{split!r}] sequence {index}"
        if isinstance(steps, list) and not steps:
            raise DataError(f"{where}: expected at least one time step, found none; remove the sequence")
        rolls.append(notes_to_roll(steps, note_range, where=where))
    return rolls


def save_piano_roll_json(
    path: str | os.PathLike[str], splits: dict[str, list[np.ndarray]], *, note_range: NoteRange = PIANO_KEYS
) -> None:
    """Write piano rolls as a note-list JSON file, ``{split: [sequence, ...]}``."""
    data = {name: [roll_to_notes(roll, note_range) for roll in rolls] for name, rolls in splits.items()}
    write_bytes(path, json.dumps(data).encode("utf-8"))


# ---------------------------------------------------------------------------------- MIDI


def _mido() -> Any:
    try:
        import mido
    except ImportError:
        raise ConfigError(f"reading and writing MIDI needs the midi extra: {MIDI_INSTALL_HINT}") from None
    return mido


def read_midi(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    steps_per_beat: float | None = None,
    note_range: NoteRange = PIANO_KEYS,
) -> np.ndarray:
    """A MIDI file as a piano roll ``(T, note_range.dims)``, sampled ``fps`` times a second or
    ``steps_per_beat`` times a quarter note (give one; per beat ignores tempo changes).

    A step holds every note sounding at its start; all tracks and channels are merged, drums
    (channel 10) excluded. Notes outside ``note_range`` are an error, as in the JSON reader.

    Raises:
        DataError: the file cannot be parsed, holds no notes, or has a note outside the range.
        ConfigError: ``mido`` is not installed, or neither or both of fps / steps_per_beat.
    """
    path = Path(path)
    rate = _check_rate(fps, steps_per_beat)
    require_file(path)
    mido = _mido()
    try:
        midi = mido.MidiFile(path)
        notes = _midi_notes(midi, seconds=fps is not None)
    except DataError:
        raise
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError on bad files
        raise DataError(f"{path}: expected a readable MIDI file, found a corrupt one ({type(err).__name__}: {err})") from err
    if not notes:
        raise DataError(f"{path}: expected notes, found a MIDI file without any")
    scale = rate if fps is not None else rate / midi.ticks_per_beat
    end = max(stop for _, _, stop in notes)
    roll = np.zeros((max(1, int(np.ceil(end * scale - 1e-9))), note_range.dims), np.float32)
    for note, start, stop in notes:
        if not note_range.low <= note <= note_range.high:
            raise DataError(
                f"{path}: note {note} at {start:g} {'s' if fps else 'ticks'} lies outside the note "
                f"range {note_range.low}..{note_range.high}; give a wider note range"
            )
        first = int(np.ceil(start * scale - 1e-9))
        last = max(first + 1, int(np.ceil(stop * scale - 1e-9)))  # a short note keeps one step
        roll[first : min(last, len(roll)), note - note_range.low] = 1.0
    return roll


def _midi_notes(midi: Any, *, seconds: bool) -> list[tuple[int, float, float]]:
    """(note, start, end) of every note, in seconds (tempo map applied) or in ticks."""
    notes, sounding = [], {}
    clock = 0.0
    if seconds:
        events = iter(midi)  # mido merges the tracks and converts delta times to seconds
    else:
        import mido

        events = mido.merge_tracks(midi.tracks)
    for message in events:
        clock += message.time
        if message.type not in ("note_on", "note_off") or message.channel == 9:
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            sounding.setdefault(key, clock)
        elif key in sounding:
            notes.append((message.note, sounding.pop(key), clock))
    notes.extend((note, start, clock) for (_, note), start in sounding.items())  # never released
    return notes


def write_midi(
    roll: np.ndarray,
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    steps_per_beat: float | None = None,
    note_range: NoteRange = PIANO_KEYS,
    tempo_bpm: float = 120.0,
    velocity: int = 80,
    program: int = 0,
) -> None:
    """Write a piano roll ``(T, note_range.dims)`` (values >= 0.5 sound) as a one-track MIDI
    file, a step lasting ``1 / fps`` seconds or ``1 / steps_per_beat`` quarter notes at
    ``tempo_bpm``. A note held over consecutive steps is one note."""
    rate = _check_rate(fps, steps_per_beat)
    roll = _check_roll(roll, note_range)
    mido = _mido()
    ticks_per_beat = 480
    tempo = mido.bpm2tempo(tempo_bpm)
    beats_per_step = tempo_bpm / 60.0 / rate if fps is not None else 1.0 / rate
    on = np.pad(roll >= 0.5, ((1, 1), (0, 0)))
    changes = np.diff(on.astype(np.int8), axis=0)  # +1 at a note's first step, -1 after its last
    events = []
    for step, dim in zip(*np.nonzero(changes), strict=True):
        tick = round(step * beats_per_step * ticks_per_beat)
        events.append((tick, changes[step, dim] > 0, int(dim) + note_range.low))
    events.sort(key=lambda event: (event[0], event[1]))  # releases before attacks at one tick
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0), mido.Message("program_change", program=program, time=0)])
    now = 0
    for tick, attack, note in events:
        track.append(mido.Message("note_on" if attack else "note_off", note=note, velocity=velocity if attack else 0, time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    with atomic_path(path) as tmp:
        midi.save(str(tmp))


def plot_piano_roll(
    roll: np.ndarray,
    path: str | os.PathLike[str],
    *,
    note_range: NoteRange = PIANO_KEYS,
    title: str | None = None,
    steps_per_beat: float | None = None,
) -> None:
    """Draw a piano roll as a PNG: time on x, pitch on y (low notes at the bottom), the C of
    each octave labelled and lined; values between 0 and 1 (probabilities) shade grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = _check_roll(roll, note_range, binary=False)
    sounding = np.flatnonzero(roll.max(0) > 0.05)
    low = note_range.low + (int(sounding.min()) if sounding.size else 0)
    high = note_range.low + (int(sounding.max()) if sounding.size else note_range.dims - 1)
    low, high = max(note_range.low, low - 2), min(note_range.high, high + 2)  # a margin of 2 notes
    shown = roll[:, low - note_range.low : high - note_range.low + 1]
    width = min(24.0, max(6.0, 0.08 * len(roll) + 2))
    height = min(12.0, max(3.0, 0.09 * (high - low + 1) + 1.5))
    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    axes.imshow(
        shown.T, origin="lower", aspect="auto", cmap="Greys", vmin=0.0, vmax=1.0,
        interpolation="nearest", extent=(-0.5, len(roll) - 0.5, low - 0.5, high + 0.5),
    )
    octaves = [note for note in range(low, high + 1) if note % 12 == 0]
    axes.set_yticks(octaves, [f"C{note // 12 - 1}" for note in octaves])
    for note in octaves:
        axes.axhline(note - 0.5, color="tab:blue", linewidth=0.4, alpha=0.5)
    if steps_per_beat:
        for beat in np.arange(0, len(roll), 4 * steps_per_beat):  # a bar of 4/4
            axes.axvline(beat - 0.5, color="tab:orange", linewidth=0.4, alpha=0.5)
    axes.set_xlabel("time step")
    axes.set_ylabel("pitch")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(figure)


def _check_rate(fps: float | None, steps_per_beat: float | None) -> float:
    if (fps is None) == (steps_per_beat is None):
        raise ConfigError("give exactly one of fps (steps per second) and steps_per_beat")
    rate = fps if fps is not None else steps_per_beat
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise ConfigError(f"{'fps' if fps is not None else 'steps_per_beat'} must be a positive number, got {rate!r}")
    return float(rate)


def _check_roll(roll: Any, note_range: NoteRange, *, binary: bool = True) -> np.ndarray:
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != note_range.dims or roll.shape[0] < 1:
        raise DataError(
            f"expected a piano roll (steps, {note_range.dims}) for notes "
            f"{note_range.low}..{note_range.high}, found shape {roll.shape}"
        )
    if roll.dtype.kind not in "biuf" or (roll.dtype.kind == "f" and not np.isfinite(roll).all()):
        raise DataError(f"expected finite numeric piano-roll values, found dtype {roll.dtype} or non-finite values")
    if not binary and (roll.min() < 0 or roll.max() > 1):
        raise DataError(f"expected piano-roll values in [0, 1], found {roll.min():g}..{roll.max():g}")
    return roll
