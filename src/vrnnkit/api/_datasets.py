"""``generate_dataset``, ``write_dataset`` and ``convert_file``: ``vrnnkit data``."""

from __future__ import annotations

import errno
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vrnnkit.data.clips import is_clip_folder, read_clips
from vrnnkit.data.files import open_sequences
from vrnnkit.data.frames import parse_size
from vrnnkit.data.sources import generate_chunks, generate_dataset
from vrnnkit.errors import ConfigError, WriteError, output_problem
from vrnnkit.io.atomic import atomic_path
from vrnnkit.resources.budget import format_bytes

__all__ = ["convert_file", "convert_folder", "generate_dataset", "write_dataset"]


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
    out = _check_npy_output(out)
    frame_shape, chunks = generate_chunks(name, count, seed=seed, **options)
    _check_disk(out, count * math.prod(frame_shape))
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


def convert_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    size: Any = None,
    grey: bool = False,
    layout: str | None = None,
    key: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, ...]:
    """Write the sequences of a video or sequence file to the .npy file ``out``, frames resized
    to ``size`` (64 or "64x48", HEIGHTxWIDTH) and converted to grey (``grey``) as they are
    read, one sequence at a time, atomically: ``(N, T, H, W)`` for grey frames, ``(N, T, H, W,
    C)`` for colour, ``(N, T, D)`` for vectors; uint8 when the file holds uint8 (or a video),
    float32 otherwise. A long video converted once reads fast in every later run. Returns the
    array's shape."""
    if is_clip_folder(path):
        return convert_folder(path, out, size=size, grey=grey)
    out, frame_size = _check_npy_output(out), parse_size(size)
    if Path(path).resolve() == out.resolve():
        raise ConfigError(f"cannot write {out} (--out): it is the input file; choose another name")
    sequences = open_sequences(path, layout=layout, key=key, resize=frame_size, grey=True if grey else None)
    frame = tuple(sequences.frame_shape)
    stored = frame if len(frame) == 1 else frame[1:] if frame[0] == 1 else (*frame[1:], frame[0])
    shape = (len(sequences), sequences.num_frames, *stored)
    as_bytes = sequences.dtype in (np.uint8, np.bool_)
    _check_disk(out, math.prod(shape) * (1 if as_bytes else 4))
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8 if as_bytes else np.float32, shape=shape)
        for index in range(len(sequences)):
            values = sequences[index]  # (T, C, H, W) or (T, D), float32
            if len(frame) == 3:
                values = values[:, 0] if frame[0] == 1 else values.transpose(0, 2, 3, 1)
            array[index] = np.clip(np.rint(values * 255), 0, 255) if as_bytes else values
            if on_progress is not None:
                on_progress(index + 1, len(sequences))
        array.flush()
        del array
    return shape


def convert_folder(
    folder: str | os.PathLike[str], out: str | os.PathLike[str], *, size: Any = None, grey: bool = False,
) -> tuple[int, ...]:
    """Write every clip under ``folder``, resized (``size``) and converted (``grey``), as a uint8
    ``.npy`` file ``(T, H, W)`` or ``(T, H, W, C)`` under the folder ``out``, at the same relative
    path: a folder of clips that every command reads without decoding. Each file is written
    atomically. Returns (clips, frames in all, *frame shape)."""
    folder, out = Path(folder), Path(out)
    if out.suffix:
        raise ConfigError(f"cannot write {out} (--out): a folder of clips converts to a folder; give a folder name")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot write {out} (--out): it is a file; a folder of clips converts to a folder")
    if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
        raise ConfigError(f"cannot write {out} (--out): it is inside the folder being converted; choose another")
    clips = read_clips(folder, size=parse_size(size), grey=True if grey else None)
    _check_disk(out if out.exists() else out.parent if out.parent.exists() else Path.cwd(),
                sum(clip.num_frames for clip in clips.clips) * math.prod(clips.frame_shape))
    for name, clip in zip(clips.names, clips.clips, strict=True):
        target = out / Path(name.replace("#", "-")).with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        frames = np.clip(np.rint(clip[0] * 255), 0, 255).astype(np.uint8)  # (T, C, H, W)
        with atomic_path(target) as tmp:
            np.save(tmp, frames[:, 0] if frames.shape[1] == 1 else frames.transpose(0, 2, 3, 1))
    return (len(clips.clips), sum(clips.lengths), *clips.frame_shape)


def _check_disk(out: Path, needed: int) -> None:
    """Refuse (WriteError, before any work) a file of ``needed`` bytes that the disk holding
    ``out`` has no room for."""
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise WriteError(out, errno.ENOSPC, detail=f"{format_bytes(needed)} of sequences, and its folder's disk has "
                                                   f"{format_bytes(free)} free")


def _check_npy_output(out: str | os.PathLike[str]) -> Path:
    return check_output_file(out, ".npy")


def check_output_file(out: str | os.PathLike[str], suffix: str, what: str = "") -> Path:
    """``out`` as a Path after checking it ends in ``suffix`` and can be written; ``what``
    says in the message what such a file holds."""
    out = Path(out)
    if out.suffix != suffix:
        raise ConfigError(f"cannot write {out} (--out): expected a path ending in {suffix}{what and f' ({what})'}")
    problem = output_problem(out)
    if problem:
        raise ConfigError(f"cannot write {out} (--out): {problem}")
    return out
