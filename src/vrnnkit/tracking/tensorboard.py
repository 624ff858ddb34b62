"""``--log tensorboard``: TensorBoard event files in ``<run>/tensorboard`` (``tensorboard --logdir runs``).

Scalars keep their metrics.jsonl names, grouped as ``train/<name>`` and ``validation/<name>``
(``val_loss`` -> ``validation/val_loss``); the clips sampled at each validation are one image
per validation, a row per clip and a column per frame (vector sequences: a row per clip,
dimensions down, time across). Needs ``pip install 'vrnnkit[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vrnnkit.errors import ConfigError
from vrnnkit.tracking import scalars_of

FOLDER = "tensorboard"


def create(run_dir: Path) -> TensorBoardTracker:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'vrnnkit[tensorboard]'") from None
    return TensorBoardTracker(SummaryWriter(log_dir=str(run_dir / FOLDER)))


class TensorBoardTracker:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars_of({"step": step, **scalars}).items():
            group = "validation" if key.startswith("val_") else "train"
            self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def log_samples(self, step: int, clips: Tensor) -> None:
        self.writer.add_image("samples", clip_grid(clips), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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
