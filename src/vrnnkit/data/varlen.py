"""Sequences of different lengths: reading them, cutting windows, and padded batches with a mask.

A collection is a plain list of float32 arrays ``(T_i, D)``. :func:`load_variable_length` reads
one from a note-list JSON file (one split), a ``.npz`` (one array per sequence, or a padded
array with ``lengths``) or a folder of ``.npy`` / ``.mid`` files. :class:`VariableLengthDataset`
serves whole sequences (``seq_len=0``) or windows of at most ``seq_len`` steps, which keeps the
memory of a step bounded for sequences thousands of steps long; :func:`pad_collate` stacks
items into a zero-padded batch ``(B, T_max, D)`` and a ``(B, T_max)`` mask of real steps, which
``VRNN.forward(x, mask=mask)`` and ``VRNN.log_likelihood(x, mask=mask)`` take.
:class:`LengthBucketSampler` batches items of similar length together so that less of a batch
is padding.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from vrnnkit.data.checks import check_finite, check_numeric_dtype, to_float32
from vrnnkit.data.music import PIANO_KEYS, NoteRange, load_piano_roll_json, read_midi
from vrnnkit.errors import DataError

FOLDER_SUFFIXES = (".npy", ".mid", ".midi")


def load_variable_length(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    note_range: NoteRange = PIANO_KEYS,
    fps: float | None = None,
    steps_per_beat: float | None = None,
) -> list[np.ndarray]:
    """Read sequences of their own lengths as float32 arrays ``(T_i, D)``.

    Args:
        path: a note-list ``.json`` file (``split`` names the part to read), a ``.npz`` holding
            one array ``(T_i, D)`` per sequence (read in natural order of their names:
            ``seq2`` before ``seq10``) or a padded array ``(N, T, D)`` beside a ``lengths``
            array ``(N,)``, or a folder of ``.npy`` arrays ``(T_i, D)`` and ``.mid`` files
            (read in natural order of the file names).
        split: the JSON split (``"train"``, ``"valid"``, ``"test"``).
        note_range: the notes of the piano-roll dimensions, for JSON and MIDI.
        fps, steps_per_beat: the sampling rate of MIDI files (give one).

    Raises:
        DataError: see :func:`~vrnnkit.data.music.load_piano_roll_json`; also a ``.npz`` whose
            ``lengths`` disagree with its array, a sequence with no steps (refused, never
            skipped), sequences of different frame sizes, an empty folder, a pickle.
    """
    path = Path(path)
    if path.is_dir():
        sequences = _read_folder(path, note_range, fps, steps_per_beat)
    elif path.suffix.lower() == ".json":
        if split is None:
            raise DataError(f"{path}: a note-list JSON file holds splits; name one (e.g. split='train')")
        return load_piano_roll_json(path, split, note_range=note_range)
    elif path.suffix.lower() == ".npz":
        sequences = _read_npz(path)
    else:
        raise DataError(f"{path}: expected a .json or .npz file or a folder of .npy / .mid files")
    if split is not None:
        raise DataError(f"{path}: split= applies to note-list JSON files, which hold several splits")
    sizes = sorted({s.shape[1:] for s in sequences})
    if len(sizes) > 1:
        raise DataError(f"{path}: expected one frame size for every sequence, found {', '.join(map(str, sizes))}")
    return sequences


def _read_npz(path: Path) -> list[np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, NotImplementedError) as err:
        raise DataError(f"{path}: expected a NumPy .npz archive, found an unreadable file ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected a .npz archive, found a single .npy array")
    with archive:
        try:
            arrays = {key: archive[key] for key in archive.files}
        except ValueError as err:  # an object array, which would need unpickling
            raise DataError(f"{path}: expected numeric arrays, found one that needs unpickling, which vrnnkit never does ({err})") from err
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as err:
            raise DataError(f"{path}: a member of the archive is damaged ({err})") from err
    if not arrays:
        raise DataError(f"{path}: expected at least one array, found an empty archive")
    if "lengths" in arrays:
        return _unpad(path, arrays)
    return [_sequence(arrays[key], f"{path}[{key!r}]") for key in sorted(arrays, key=_natural)]


def _unpad(path: Path, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Sequences from a padded array ``(N, T, D)`` and its ``lengths`` ``(N,)``."""
    lengths = arrays.pop("lengths")
    if len(arrays) != 1:
        raise DataError(f"{path}: expected one padded array beside 'lengths', found {', '.join(arrays) or 'none'}")
    (key, padded), = arrays.items()
    if padded.ndim != 3:
        raise DataError(f"{path}: expected {key!r} as a padded array (N, T, D), found shape {padded.shape}")
    if lengths.shape != (padded.shape[0],) or lengths.dtype.kind not in "iu":
        raise DataError(
            f"{path}: expected 'lengths' as {padded.shape[0]} integers, one per sequence of {key!r}, "
            f"found {lengths.dtype} of shape {lengths.shape}"
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > padded.shape[1]))
    if bad.size:
        raise DataError(
            f"{path}: expected lengths from 1 to the {padded.shape[1]} steps of {key!r}, "
            f"found {lengths[bad[0]]} for sequence {bad[0]}"
        )
    return [_sequence(padded[i, :length], f"{path}[{key!r}][{i}]") for i, length in enumerate(lengths.tolist())]


def _read_folder(path: Path, note_range: NoteRange, fps: float | None, steps_per_beat: float | None) -> list[np.ndarray]:
    files = sorted((f for f in path.iterdir() if f.suffix.lower() in FOLDER_SUFFIXES), key=lambda f: _natural(f.name))
    if not files:
        raise DataError(f"{path}: expected .npy or .mid files in the folder, found none")
    sequences = []
    for file in files:
        if file.suffix.lower() == ".npy":
            sequences.append(_sequence(_load_npy(file), str(file)))
        else:
            sequences.append(read_midi(file, fps=fps, steps_per_beat=steps_per_beat, note_range=note_range))
    return sequences


def _load_npy(path: Path) -> np.ndarray:
    from vrnnkit.data.files import _check_npy  # the header checks of the equal-length reader

    _check_npy(path)
    return np.load(path, allow_pickle=False)


def _sequence(array: np.ndarray, source: str) -> np.ndarray:
    """One sequence as float32 ``(T, D)``; a 1-D array is one value per step."""
    check_numeric_dtype(array.dtype, source)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{source}: expected one sequence (T, D), found shape {array.shape}")
    if array.shape[0] == 0:
        raise DataError(f"{source}: expected at least one time step, found none; remove the sequence")
    check_finite(array, source)
    return to_float32(np.ascontiguousarray(array))


def _natural(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class VariableLengthDataset(Dataset):
    """Items of their own lengths, as float32 tensors ``(L, D)``.

    ``seq_len=0`` serves each sequence whole. ``seq_len > 0`` cuts each into consecutive
    windows of ``seq_len`` steps, the last one shorter when the length is not a multiple, so
    that every real step is served exactly once and no batch holds more than ``seq_len`` steps
    a row, however long a sequence is. Each window starts from a fresh recurrent state.
    """

    def __init__(self, sequences: Sequence[np.ndarray], seq_len: int = 0) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise DataError(f"expected seq_len >= 0 (0: whole sequences), found {seq_len!r}")
        if len(sequences) == 0:
            raise DataError("expected at least one sequence, found none")
        self.sequences = [torch.from_numpy(np.require(s, np.float32, "W")) for s in sequences]
        self.seq_len = seq_len
        self.items: list[tuple[int, int, int]] = []  # (sequence, start, length)
        for index, sequence in enumerate(self.sequences):
            steps = sequence.shape[0]
            window = seq_len or steps
            self.items += [(index, start, min(window, steps - start)) for start in range(0, steps, window)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> Tensor:
        index, start, length = self.items[item]
        return self.sequences[index][start : start + length]

    @property
    def lengths(self) -> list[int]:
        """The number of steps of each item."""
        return [length for _, _, length in self.items]

    @property
    def num_steps(self) -> int:
        """The number of real steps over all items."""
        return sum(self.lengths)


def pad_collate(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """A batch ``(B, T_max, *frame)`` padded with zeros after each item, and its mask
    ``(B, T_max)``: 1.0 on real steps, 0.0 on padding."""
    lengths = torch.tensor([item.shape[0] for item in items])
    batch = items[0].new_zeros(len(items), int(lengths.max()), *items[0].shape[1:])
    for row, item in enumerate(items):
        batch[row, : item.shape[0]] = item
    mask = (torch.arange(batch.shape[1]) < lengths[:, None]).to(batch.dtype)
    return batch, mask


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of item indices of similar lengths, for ``DataLoader(batch_sampler=...)``.

    Each epoch shuffles the items, sorts them by length within pools of ``batch_size *
    pool_batches`` items, cuts each pool into batches and shuffles the batches: a batch holds
    similar lengths (less padding) while the order of batches and their members still changes
    from epoch to epoch. ``pool_batches=1`` is plain shuffled batching.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, pool_batches: int = 50, seed: int = 0) -> None:
        if batch_size < 1 or pool_batches < 1:
            raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size}, {pool_batches}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.pool = batch_size * pool_batches
        self.generator = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.generator.permutation(len(self.lengths))
        batches = []
        for first in range(0, len(order), self.pool):
            pool = order[first : first + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)]
        for index in self.generator.permutation(len(batches)):
            yield batches[index]

    def __len__(self) -> int:
        return sum(-(-min(self.pool, len(self.lengths) - first) // self.batch_size) for first in range(0, len(self.lengths), self.pool))
