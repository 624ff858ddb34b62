"""``--log tensorboard``: TensorBoard event files in ``<run>/tensorboard`` (``tensorboard --logdir runs``).

Scalars keep their metrics.jsonl names, grouped as ``train/<name>`` and ``validation/<name>``
(``val_loss`` -> ``validation/val_loss``); the clips sampled at each validation are one image
per validation, a row per clip and a column per frame (vector sequences: a row per clip,
dimensions down, time across). Needs ``pip install 'vrnnkit[tensorboard]'``.
"""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vrnnkit.errors import ConfigError
from vrnnkit.io.atomic import append_bytes, reported_as
from vrnnkit.tracking import scalars_of

FOLDER = "tensorboard"


def create(run_dir: Path) -> TensorBoardTracker:
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter
        from torch.utils.tensorboard import summary
    except ImportError:
        raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'vrnnkit[tensorboard]'") from None
    return TensorBoardTracker(run_dir / FOLDER, _Summaries(Event, RecordWriter, summary.scalar, summary.image))


class _Summaries:
    """TensorBoard's own pieces: the event, its framing as a record, the summaries."""

    def __init__(self, event: Any, record_writer: Any, scalar: Any, image: Any) -> None:
        self.event, self.record_writer, self.scalar, self.image = event, record_writer, scalar, image

    def record(self, **fields: Any) -> bytes:
        """One event, framed as TensorBoard's record writer frames it (length, CRCs)."""
        buffer = io.BytesIO()
        self.record_writer(buffer).write(self.event(wall_time=time.time(), **fields).SerializeToString())
        return buffer.getvalue()


class TensorBoardTracker:
    """Writes the event file itself, each event at once and whole (``append_bytes``): no
    writer thread, so a full disk is an error here (``vrnnkit.tracking`` turns it into one
    warning), never a traceback from a thread, and never a half-written event."""

    def __init__(self, folder: Path, summaries: _Summaries) -> None:
        self.folder, self.summaries = folder, summaries
        self.path = folder / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.0"
        self.started = False

    def _write(self, **fields: Any) -> None:
        if not self.started:  # the folder and the file's first event, at the first figures
            with reported_as(self.folder):
                self.folder.mkdir(parents=True, exist_ok=True)
            append_bytes(self.path, self.summaries.record(file_version="brain.Event:2"))
            self.started = True
        append_bytes(self.path, self.summaries.record(**fields))

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars_of({"step": step, **scalars}).items():
            group = "validation" if key.startswith("val_") else "train"
            self._write(step=step, summary=self.summaries.scalar(f"{group}/{key}", value))

    def log_samples(self, step: int, clips: Tensor) -> None:
        self._write(step=step, summary=self.summaries.image("samples", clip_grid(clips), dataformats="CHW"))

    def close(self) -> None:
        """Nothing to flush: every event is on disk when its call returns."""


def clip_grid(clips: Tensor, gap: int = 1) -> Tensor:
    """One (C, H, W) image in [0, 1] of clips (N, T, C, H, W): a row per clip, a column per
    frame; or of vector sequences (N, T, D): a row per clip, D down and T across."""
    clips = clips.detach().float().cpu()
    if clips.dim() == 3:  # vectors: each clip an image of (1, D, T), scaled to [0, 1]
        low, high = clips.min(), clips.max()
        clips = ((clips - low) / (high - low).clamp_min(1e-8)).transpose(1, 2).unsqueeze(1).unsqueeze(1)
    count, length, channels, height, width = clips.shape
    grid = torch.ones(channels, count * (height + gap) - gap, length * (width + gap) - gap)
    for n in range(count):
        for t in range(length):
            top, left = n * (height + gap), t * (width + gap)
            grid[:, top : top + height, left : left + width] = clips[n, t].clamp(0, 1)
    return grid
