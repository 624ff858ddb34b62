"""Data sources of sequences of different lengths, as training and evaluation read them.

    is_variable_length("music.json")                 # True: note-list JSON, .npz of several arrays
    data = open_variable_length("music.json", seq_len=0, val_fraction=0.1, seed=0)
    data.train, data.valid                           # VariableLengthDataset (valid may be None)
    read_split("music.json", "test")                 # the sequences of one split, and the note range

A note-list JSON file trains on its ``train`` split and validates on ``valid`` (or on a
``val_fraction`` share of ``train`` when it has none); a ``.npz`` (one array per sequence, or a
padded array with ``lengths``) and a folder of ``.npy`` / ``.mid`` files split their sequences
by ``val_fraction``. MIDI is sampled ``fps`` times a second, or once per quarter note (the JSB
Chorales' rate) when ``fps`` is not given.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrnnkit.data.datasets import train_val_split
from vrnnkit.data.music import PIANO_KEYS, NoteRange
from vrnnkit.data.varlen import FOLDER_SUFFIXES, VariableLengthDataset, load_variable_length
from vrnnkit.errors import DataError

DEFAULT_SPLIT = "test"
"""The split that evaluation and prediction read from a note-list JSON file by default."""


def is_variable_length(data: str) -> bool:
    """Whether ``data`` names sequences of their own lengths: a ``.json`` note-list file, a
    folder, or a ``.npz`` holding ``lengths`` or several arrays."""
    path = Path(data)
    if path.is_dir():  # a folder of sequence files (an empty one gets the equal-length reader's message)
        return any(f.suffix.lower() in FOLDER_SUFFIXES for f in path.iterdir())
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith(".npy")]
            if "lengths.npy" in names:
                return True
            return len(names) > 1 and all(_ndim(archive, name) in (1, 2) for name in names)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False  # the equal-length reader gives the message


def _ndim(archive: zipfile.ZipFile, name: str) -> int:
    """The number of axes of a member of a .npz, from its header alone."""
    with archive.open(name) as member:
        major, _ = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read(member)
    return len(shape)


def note_range_of(path: Path, fps: float | None = None) -> NoteRange | None:
    """The note range of a piano-roll source (JSON, or a folder with MIDI files); None otherwise."""
    if path.suffix.lower() == ".json":
        return PIANO_KEYS
    if path.is_dir() and any(f.suffix.lower() in (".mid", ".midi") for f in path.iterdir()):
        return PIANO_KEYS
    return None


def read_split(data: str, split: str | None = None, *, fps: float | None = None) -> tuple[list[np.ndarray], NoteRange | None]:
    """The sequences of ``data`` (one ``split`` of a JSON file: ``test`` by default) and their
    note range (None for data that are not piano rolls)."""
    path = Path(data)
    if path.suffix.lower() == ".json":
        split = split or DEFAULT_SPLIT
    elif split is not None:
        raise DataError(f"{path}: --split applies to note-list JSON files, which hold several splits")
    rate = {"fps": fps} if fps is not None else {"steps_per_beat": 1.0}
    sequences = load_variable_length(path, split=split, **(rate if path.is_dir() else {}))
    return sequences, note_range_of(path, fps)


@dataclass
class VariableLengthData:
    """The training and validation items of a variable-length source."""

    train: VariableLengthDataset
    valid: VariableLengthDataset | None
    sequences: list[np.ndarray]
    """The training sequences, whole (for data-dependent initialisation)."""
    note_range: NoteRange | None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.sequences[0].shape[1:])


def open_variable_length(
    data: str, *, seq_len: int, val_fraction: float, seed: int, fps: float | None = None
) -> VariableLengthData:
    """Training items of at most ``seq_len`` steps (0: whole sequences) and validation items
    (whole sequences) of ``data``."""
    path = Path(data)
    valid: list[np.ndarray] | None = None
    if path.suffix.lower() == ".json":
        train, note_range = read_split(data, "train")
        try:
            valid, _ = read_split(data, "valid")
        except DataError as error:
            if "expected a split named" not in str(error):
                raise
    else:
        train, note_range = read_split(data, fps=fps)
    if valid is None and val_fraction > 0 and len(train) >= 2:
        train_ids, val_ids = train_val_split(len(train), val_fraction, seed=seed)
        train, valid = [train[i] for i in train_ids], [train[i] for i in val_ids]
    if valid is not None and valid[0].shape[1:] != train[0].shape[1:]:
        raise DataError(f"{path}: the valid split has frames of {valid[0].shape[1:]}, the train split {train[0].shape[1:]}")
    return VariableLengthData(
        VariableLengthDataset(train, seq_len), VariableLengthDataset(valid) if valid else None, train, note_range,
    )
