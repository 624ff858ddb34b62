"""Training data sets: windows of frames cut from sequences, and a split by sequence.

Split first, then cut windows: :func:`train_val_split` divides the *source sequences*, so that two
windows of one sequence never land on both sides, and each side gets its own
:class:`WindowDataset`::

    sequences = open_sequences("videos.npy", layout="NTHW")
    train_ids, val_ids = train_val_split(len(sequences), val_fraction=0.1, seed=0)
    train = WindowDataset(sequences, seq_len=20, indices=train_ids, random_crop=True)
    val = WindowDataset(sequences, seq_len=20, indices=val_ids)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vrnnkit.data.checks import check_indices
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.errors import DataError


class WindowDataset(Dataset):
    """Windows of ``seq_len`` consecutive frames, as float32 tensors ``(T, C, H, W)`` or ``(T, D)``.

    Fixed windows start every ``stride`` frames (``stride=seq_len`` by default: no overlap).
    With ``random_crop=True`` the data set has one item per sequence instead, and each read
    takes a window at a random start, a fresh one every epoch. The start comes from torch's
    random generator, which DataLoader seeds differently in every worker and every epoch, so
    workers draw independent crops; ``torch.manual_seed`` makes a run reproducible.

    Frames are read on demand, so a memory-mapped file is never loaded whole. The data set
    pickles without its data when built on :func:`vrnnkit.data.open_sequences` over a ``.npy``
    file, so DataLoader workers also work with the ``spawn`` start method.
    """

    def __init__(
        self,
        sequences: SequenceArray | np.ndarray,
        seq_len: int,
        *,
        stride: int | None = None,
        random_crop: bool = False,
        indices: Sequence[int] | np.ndarray | None = None,
        layout: str | None = None,
    ) -> None:
        if not isinstance(sequences, SequenceArray):
            sequences = SequenceArray(sequences, layout=layout)
        elif layout is not None:
            raise DataError(
                f"{sequences.source}: layout= applies to arrays; it is already {sequences.layout!r}"
            )
        self.sequences = sequences
        self.seq_len = seq_len
        self.random_crop = random_crop
        self.indices = check_indices(indices, len(sequences), sequences.source)
        if not 1 <= seq_len <= sequences.num_frames:
            raise DataError(
                f"{sequences.source}: expected seq_len from 1 to the {sequences.num_frames} "
                f"frames of each sequence, found seq_len={seq_len}"
            )
        stride = seq_len if stride is None else stride
        if stride < 1:
            raise DataError(f"{sequences.source}: expected stride >= 1, found {stride}")
        starts = np.arange(0, sequences.num_frames - seq_len + 1, stride)
        self._windows = (
            None
            if random_crop
            else np.stack(np.meshgrid(self.indices, starts, indexing="ij"), -1).reshape(-1, 2)
        )

    def __len__(self) -> int:
        return len(self.indices) if self.random_crop else len(self._windows)

    def __getitem__(self, item: int) -> torch.Tensor:
        if self.random_crop:
            sequence = int(self.indices[item])
            start = int(torch.randint(self.sequences.num_frames - self.seq_len + 1, ()))
        else:
            sequence, start = (int(value) for value in self._windows[item])
        window = self.sequences.window(sequence, start, self.seq_len)
        return torch.from_numpy(np.require(window, requirements="W"))  # a read-only map needs a copy


def train_val_split(
    num_sequences: int, val_fraction: float = 0.1, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split sequence indices ``0 .. num_sequences-1`` into sorted train and validation sets.

    The same seed gives the same split. At least one sequence goes to each side.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"train_val_split: expected val_fraction in (0, 1), found {val_fraction}")
    if num_sequences < 2:
        raise DataError(
            f"train_val_split: expected at least 2 sequences to split, found {num_sequences}"
        )
    num_val = min(max(1, round(val_fraction * num_sequences)), num_sequences - 1)
    order = np.random.default_rng(seed).permutation(num_sequences)
    return np.sort(order[num_val:]), np.sort(order[:num_val])
