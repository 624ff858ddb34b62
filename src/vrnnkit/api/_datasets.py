"""``generate_dataset`` and ``write_dataset``: the generated data sets of ``vrnnkit data``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vrnnkit._atomic import atomic_path
from vrnnkit.data.sources import generate_chunks, generate_dataset
from vrnnkit.errors import ConfigError, output_problem

__all__ = ["generate_dataset", "write_dataset"]


def write_dataset(
    out: str | os.PathLike[str],
    name: str,
    count: int,
    *,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> tuple[int, ...]:
    """Write ``generate_dataset(name, count, seed=seed, **options)`` to the .npy file ``out``
    (uint8), chunk by chunk so that memory stays small, atomically; ``on_progress(done,
    total)`` after each chunk. Returns the array's shape."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"cannot write {out} (--out): expected a path ending in .npy")
    problem = output_problem(out)
    if problem:
        raise ConfigError(f"cannot write {out} (--out): {problem}")
    frame_shape, chunks = generate_chunks(name, count, seed=seed, **options)
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, *frame_shape))
        done = 0
        for chunk in chunks:
            array[done : done + len(chunk)] = chunk
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, count)
        array.flush()
        del array
    return (count, *frame_shape)
