"""Training on frames with actions (``vrnnkit.data.actions``): windows that carry their inputs.

A window of ``seq_len`` steps cuts the frames and the actions at the same steps, so u_t stays
with frame t (the alignment of ``vrnnkit.data.actions``). Sequences of different lengths
(``lengths``) give windows that start at an observed step, with a mask over the steps past the
sequence's end; the model ignores frames and actions there. Whole sequences go to either the
training or the validation side (``train_val_split``), as for frames alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vrnnkit.data.actions import ActionSequences, load_action_data
from vrnnkit.data.checks import to_float32
from vrnnkit.data.datasets import train_val_split
from vrnnkit.errors import ConfigError, DataError


class ActionWindows(Dataset):
    """Windows of ``seq_len`` steps (every ``seq_len`` steps, no overlap) of the sequences
    ``indices``: items ``{"frames": (T, *frame), "actions": (T, A)}`` as float32 tensors, plus
    ``"mask"`` (T,) when the data has lengths (1 at observed steps)."""

    def __init__(self, data: ActionSequences, seq_len: int, indices: Sequence[int] | np.ndarray) -> None:
        steps = data.frames.shape[1]
        if not 1 <= seq_len <= steps:
            raise DataError(f"expected a window (--seq-len) from 1 to the {steps} steps of each sequence, found {seq_len}")
        self.data, self.seq_len = data, seq_len
        lengths = data.lengths if data.lengths is not None else np.full(len(data.frames), steps)
        self.windows = [(int(i), start) for i in indices for start in range(0, steps - seq_len + 1, seq_len)
                        if start < lengths[i]]
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        sequence, start = self.windows[item]
        cut = slice(start, start + self.seq_len)
        window = {"frames": torch.from_numpy(to_float32(self.data.frames[sequence, cut])),
                  "actions": torch.from_numpy(np.array(self.data.actions[sequence, cut], dtype=np.float32))}
        if self.data.lengths is not None:
            observed = np.arange(start, start + self.seq_len) < self.lengths[sequence]
            window["mask"] = torch.from_numpy(observed.astype(np.float32))
        return window


def action_windows(
    path: str, *, seq_len: int, val_fraction: float, seed: int, action_classes: int | None = None,
    layout: str | None = None, unit_interval: bool = False,
) -> tuple[ActionWindows, ActionWindows | None, tuple[int, ...], int]:
    """The training and validation windows of a ``.npz`` with actions (or a folder of them),
    the frame shape and the action width A. ``seq_len`` 0 takes whole sequences; with
    ``unit_interval`` (a likelihood on [0, 1]) float frames are checked to lie there."""
    data = load_action_data(path, action_classes=action_classes, layout=layout)
    if unit_interval and data.frames.dtype != np.uint8 and (data.frames.min() < 0 or data.frames.max() > 1):
        raise ConfigError(f"{path}: the frames have values outside [0, 1], which the Bernoulli likelihood needs; "
                          "choose --likelihood gaussian")
    seq_len = seq_len or data.frames.shape[1]
    count = len(data.frames)
    if val_fraction > 0 and count >= 2:
        train_ids, val_ids = train_val_split(count, val_fraction, seed=seed)
        training, validation = ActionWindows(data, seq_len, train_ids), ActionWindows(data, seq_len, val_ids)
    else:
        training, validation = ActionWindows(data, seq_len, np.arange(count)), None
    return training, validation, data.frame_shape, data.action_dim
