"""What a run trains on: its data sets and the order of their batches.

Equal-length data (generated data sets, video and array files) train on windows of
``seq_len`` frames in plain batches. Sequences of different lengths (a note-list JSON file, a
``.npz`` of several arrays or with ``lengths``, a folder of ``.npy`` / ``.mid`` files) train on
padded batches with a mask, ``(x, mask)``, whole (``seq_len`` 0) or cut into windows of at
most ``seq_len`` steps, items of similar length batched together so that little of a batch is
padding; every loss and figure counts only real steps. Data with actions (a ``.npz`` with
``actions``, or a folder of them: ``vrnnkit.training.actions``) trains on windows that carry
their actions, ``{"frames", "actions"}`` (and ``"mask"`` for sequences of different lengths).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vrnnkit.data.actions import has_actions
from vrnnkit.data.clips import clip_windows, is_clip_folder, read_clips
from vrnnkit.data.download import resolve_builtin
from vrnnkit.data.music import NoteRange
from vrnnkit.data.sources import BUILTIN_DATA, build_dataset
from vrnnkit.data.varlen import LengthBucketSampler, pad_collate
from vrnnkit.data.varlen_source import is_variable_length, open_variable_length
from vrnnkit.errors import ConfigError
from vrnnkit.training.actions import action_windows
from vrnnkit.training.config import TrainConfig
from vrnnkit.training.distributed import World

Batch = Tensor | tuple[Tensor, Tensor] | dict[str, Tensor]
"""A batch: frames (B, T, *frame), or padded frames and their mask (B, T), or frames with
their actions (B, T, A) (and a mask) by name."""
BIAS_ITEMS = 512
"""Equal-length data: the output bias starts at the mean of the first this many windows."""


@dataclass
class TrainingData:
    """The training and validation items of a run, and what the model needs to know of them."""

    training: Dataset
    validation: Dataset | None
    frame_shape: tuple[int, ...]
    padded: bool = False
    """Items of different lengths, batched with a mask."""
    note_range: NoteRange | None = None
    """The notes of a piano roll's dimensions (note-list JSON and MIDI data)."""
    action_dim: int = 0
    """The width of each step's action, for data with actions (the model's ``action_dim``)."""

    def plans(self, count: int, steps: int) -> Tensor | None:
        """Recorded actions (count, steps, A) to sample a model with actions under (the first
        validation windows', else the first training windows', cut or zero-padded to ``steps``);
        None for data without actions."""
        if not self.action_dim:
            return None
        items = self.validation if self.validation is not None and len(self.validation) else self.training  # type: ignore[arg-type]
        plans = torch.zeros(count, steps, self.action_dim)
        for row in range(count):
            recorded = items[row % len(items)]["actions"][:steps]  # type: ignore[arg-type]
            plans[row, : len(recorded)] = recorded
        return plans

    def bias_sequences(self) -> list[np.ndarray]:
        """Training sequences (or windows) for the data-dependent output bias."""
        data = self.training
        count = len(data) if self.padded else min(len(data), BIAS_ITEMS)  # type: ignore[arg-type]
        items = (data[i] for i in range(count))
        return [np.asarray(item["frames"] if isinstance(item, dict) else item) for item in items]


def load_training_data(config: TrainConfig) -> TrainingData:
    """The data ``config`` names, opened and split (frame checks before the run folder exists)."""
    data = _open_training_data(config)
    if config.flip and len(data.frame_shape) != 3:
        raise ConfigError(f"--flip mirrors image frames; {config.data} holds vectors of shape {data.frame_shape}")
    if config.flip and data.action_dim:
        raise ConfigError("--flip mirrors frames but not their actions (a push to the left would show a move to the right); "
                          "drop --flip for data with actions")
    if config.action_classes is not None and not data.action_dim:
        raise ConfigError(f"--action-classes applies to data with actions (a .npz with 'actions'); {config.data} has none")
    if config.transpose and len(data.frame_shape) != 1:
        raise ConfigError(f"--transpose shifts vectors (piano rolls) along their notes; {config.data} holds frames "
                          f"of shape {data.frame_shape}")
    return data


def _open_training_data(config: TrainConfig) -> TrainingData:
    name, mnist_dir = resolve_builtin(config.data, config.mnist_dir)  # downloads what is missing
    if name not in BUILTIN_DATA and has_actions(name):
        training, validation, frame_shape, action_dim = action_windows(
            name, seq_len=int(config.seq_len), val_fraction=config.val_fraction, seed=config.seed,
            action_classes=config.action_classes, layout=config.layout,
            unit_interval=config.model.likelihood_support == "unit-interval")
        return TrainingData(training, validation, frame_shape, action_dim=action_dim)
    if name not in BUILTIN_DATA and is_clip_folder(name):
        return _clip_data(name, config)
    if name not in BUILTIN_DATA and is_variable_length(name):
        data = open_variable_length(name, seq_len=config.seq_len, val_fraction=config.val_fraction,
                                    seed=config.seed, fps=config.fps)
        if config.model.likelihood_support == "unit-interval":
            bad = next((i for i, s in enumerate(data.sequences) if s.min() < 0 or s.max() > 1), None)
            if bad is not None:
                raise ConfigError(f"{config.data}: sequence {bad} has values outside [0, 1], which the "
                                  f"{config.model.likelihood} likelihood needs; choose --likelihood gaussian")
        return TrainingData(data.train, data.valid, data.frame_shape, padded=True, note_range=data.note_range)
    if config.seq_len == 0:
        raise ConfigError("--seq-len 0 (whole sequences) applies to sequences of different lengths "
                          "(a note-list .json, a .npz of several arrays, a folder); give a window length")
    training, validation, frame_shape = build_dataset(
        name, count=config.num_sequences, seq_len=config.seq_len, seed=config.seed,
        val_fraction=config.val_fraction, mnist_dir=mnist_dir, layout=config.layout,
        unit_interval=config.model.likelihood_support == "unit-interval", size=config.frame_size, grey=config.grey,
    )
    return TrainingData(training, validation, frame_shape)


def _clip_data(folder: str, config: TrainConfig) -> TrainingData:
    """A folder of clips: windows within each clip, whole clips held out for validation."""
    if config.seq_len == 0:
        raise ConfigError("--seq-len 0 (whole sequences) does not apply to a folder of clips; give a window length")
    clips = read_clips(folder, size=config.frame_size, grey=config.grey or None, skip_unreadable=config.skip_unreadable)
    training, validation = clip_windows(clips, int(config.seq_len), val_fraction=config.val_fraction, seed=config.seed,
                                        say=lambda line: print(line, file=sys.stderr))
    return TrainingData(training, validation, tuple(clips.frame_shape))


def batches_per_epoch(data: TrainingData, config: TrainConfig, world: World) -> int:
    """Optimizer steps in an epoch (each process's share)."""
    size, count = world.size, len(data.training)  # type: ignore[arg-type]
    if data.padded:
        per_epoch = len(LengthBucketSampler(_lengths(data.training), config.batch_size)) // size
    else:
        per_epoch = count // size // config.batch_size
    if per_epoch == 0:
        share = f" (of which each of the {size} processes gets {count // size})" if world.distributed else ""
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the {count} training windows{share}; lower --batch-size"
        )
    return per_epoch


def epoch_batches(data: TrainingData, config: TrainConfig, world: World, epoch: int, per_epoch: int) -> list[list[int]]:
    """The item indices of each of this process's batches in ``epoch``, from (seed, epoch)."""
    if data.padded:
        sampler = LengthBucketSampler(_lengths(data.training), config.batch_size, seed=np.random.SeedSequence([config.seed, epoch]))
        batches = list(sampler)
        return batches[world.rank : per_epoch * world.size : world.size]
    sampler = DistributedSampler(
        data.training, num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    size = config.batch_size
    return [indices[i : i + size] for i in range(0, per_epoch * size, size)]


def iterate_batches(
    data: TrainingData, config: TrainConfig, world: World, step: int, per_epoch: int, total: int
) -> Iterator[tuple[int, Batch]]:
    """(epoch, batch) from global step ``step`` up to ``total``, in the seed's order.

    Each epoch's order comes from (seed, epoch) alone, each process taking its own share, so a
    resumed run skips exactly the batches it has already trained on."""
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        batches = epoch_batches(data, config, world, epoch, per_epoch)[offset:][: total - step]
        collate = pad_collate if data.padded else None
        loader = DataLoader(data.training, batch_sampler=batches, num_workers=config.workers,
                            persistent_workers=False, collate_fn=collate)
        for batch in loader:
            yield epoch, batch
            step += 1


def validation_batches(data: Dataset, batch_size: int, padded: bool, max_batches: int) -> Iterator[Batch]:
    """Validation batches: every item, sorted by length, for padded data; otherwise the first
    ``max_batches`` batches."""
    if not padded:
        for index, batch in enumerate(DataLoader(data, batch_size=batch_size, shuffle=False)):
            if index == max_batches:
                return
            yield batch
        return
    order = np.argsort(_lengths(data), kind="stable")
    for start in range(0, len(order), batch_size):
        yield pad_collate([data[int(i)] for i in order[start : start + batch_size]])


def to_device(
    batch: Batch, device: torch.device, *, flip: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A batch on ``device`` as (frames, mask or None, actions or None); with ``flip``
    (``--flip``), a random half of its windows mirrored, drawn from that generator (``mirror_half``)."""
    actions = None
    if isinstance(batch, dict):
        x, mask, actions = (batch[k].to(device, non_blocking=True) if k in batch else None for k in ("frames", "mask", "actions"))
    elif isinstance(batch, (tuple, list)):
        x, mask = batch
        x, mask = x.to(device, non_blocking=True), mask.to(device, non_blocking=True)
    else:
        x, mask = batch.to(device, non_blocking=True), None
    return (x if flip is None else mirror_half(x, flip)), mask, actions


def augmented(
    batch: tuple[Tensor, Tensor | None, Tensor | None], config: TrainConfig, generator: torch.Generator,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A training batch (frames, mask, actions) with the run's augmentations (``--flip``,
    ``--transpose``), drawn from ``generator`` (the run's own, so a resumed run draws on)."""
    x, mask, actions = batch
    if config.flip:
        x = mirror_half(x, generator)
    if config.transpose:
        x = transpose_rolls(x, config.transpose, generator, mask)
    return x, mask, actions


def transpose_rolls(rolls: Tensor, most: int, generator: torch.Generator, mask: Tensor | None = None) -> Tensor:
    """``--transpose``: each window of a batch of piano rolls (B, T, D) shifted by a whole
    number of steps k along D (semitones, for notes), drawn uniformly from those in
    [-most, most] that keep every note of the window's real steps on the keyboard, so that no
    note is lost and the window's intervals are unchanged. Dimension d of the result is
    dimension d - k of the window; what enters at the edge is silence (0)."""
    batch, _, width = rolls.shape
    real = rolls != 0 if mask is None else (rolls != 0) & (mask[..., None] > 0)
    sounding = real.any(dim=1).cpu()  # (B, D): the notes each window uses
    index = torch.arange(width)
    low = torch.where(sounding, index, width).amin(dim=1)  # lowest note; D if silent
    high = torch.where(sounding, index, -1).amax(dim=1)  # highest note; -1 if silent
    down, up = low.clamp(max=most), (width - 1 - high).clamp(max=most)  # how far each may move
    silent = ~sounding.any(dim=1)
    down, up = torch.where(silent, 0, down), torch.where(silent, 0, up)
    shift = (torch.rand(batch, generator=generator) * (down + up + 1)).floor().long() - down
    source = index[None, :] - shift[:, None]  # (B, D)
    inside = (source >= 0) & (source < width)
    source = source.clamp(0, width - 1).to(rolls.device)
    moved = rolls.gather(2, source[:, None, :].expand_as(rolls))
    return moved * inside.to(rolls.device, rolls.dtype)[:, None, :]


def _lengths(dataset: Any) -> list[int]:
    return list(dataset.lengths)


def mirror_half(frames: Tensor, generator: torch.Generator) -> Tensor:
    """``--flip``: each window of a batch (B, T, C, H, W) mirrored left to right with
    probability 1/2, drawn from ``generator`` (the run's own, so a resumed run draws on)."""
    flipped = torch.rand(frames.shape[0], generator=generator) < 0.5
    if not flipped.any():
        return frames
    flipped = flipped.to(frames.device).view(-1, *([1] * (frames.dim() - 1)))
    return torch.where(flipped, frames.flip(-1), frames)
