"""``write_pushed_ball`` and ``record_gym``: ``vrnnkit data pushed-ball`` and ``vrnnkit data gym``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vrnnkit.api._datasets import check_output_file
from vrnnkit.data.actions import ActionSequences, save_action_data
from vrnnkit.data.pushed_ball import pushed_ball
from vrnnkit.data.sources import CHUNK, check_generation_memory
from vrnnkit.errors import ConfigError, is_count

__all__ = ["check_npz_output", "record_gym", "write_pushed_ball"]


def write_pushed_ball(
    out: str | os.PathLike[str],
    count: int,
    *,
    steps: int = 20,
    size: int = 32,
    balls: int = 1,
    walls: str = "bounce",
    hold: float = 0.6,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, ...]:
    """Write ``count`` pushed-ball sequences (:func:`vrnnkit.data.pushed_ball.pushed_ball`) with
    their actions to the ``.npz`` file ``out``, atomically: uint8 frames ``(N, T, 1, H, W)``, float32
    actions ``(N, T, 2 * balls)``. Drawn ``CHUNK`` sequences at a time from one generator seeded
    with ``seed`` (the same seed gives the same file); ``on_progress(done, total)`` after each
    chunk. Returns the frames' shape."""
    out = check_npz_output(out)
    for name, value in (("count", count), ("steps", steps), ("size", size), ("balls", balls)):
        if not is_count(value):
            raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
    check_generation_memory("pushed-ball", count, steps, (size, size), per_pixel=2)
    rng = np.random.default_rng(seed)
    frames = np.empty((count, steps, 1, size, size), np.uint8)
    actions = np.empty((count, steps, 2 * balls), np.float32)
    names: tuple[str, ...] | None = None
    for start in range(0, count, CHUNK):
        part = pushed_ball(min(CHUNK, count - start), steps, size=size, balls=balls, walls=walls, hold=hold, seed=rng)
        frames[start : start + len(part.frames)] = np.rint(part.frames * 255.0)
        actions[start : start + len(part.frames)] = part.actions
        names = part.action_names
        if on_progress is not None:
            on_progress(start + len(part.frames), count)
    save_action_data(out, ActionSequences(frames, actions, None, names))
    return frames.shape


def record_gym(out: str | os.PathLike[str], env_id: str, episodes: int, **options: Any) -> dict[str, Any]:
    """Record ``episodes`` episodes of the gymnasium environment ``env_id`` into the ``.npz`` file
    ``out`` (:func:`vrnnkit.data.gym.record`, which takes the ``options``); needs the ``gym``
    extra (``pip install 'vrnnkit[gym]'``). Returns what was recorded."""
    from vrnnkit.data.gym import record

    return record(check_npz_output(out), env_id, episodes, **options)


def check_npz_output(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path after checking it names a ``.npz`` file that can be written."""
    return check_output_file(out, ".npz", "frames with their actions")
