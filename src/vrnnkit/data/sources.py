"""Where sequences come from: a named built-in data set or a file, and the windows training
draws from them.

    open_source("bouncing-balls", count=2000, length=10, seed=0)     # generated
    open_source("clips.npy", count=0, length=0, seed=0)              # a file (count, length unused)
    generate_dataset("bouncing-balls", 1000, length=20, seed=3)      # = `vrnnkit data bouncing-balls --seed 3`
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vrnnkit.data.balls import bouncing_balls
from vrnnkit.data.catalog import BUILTIN_FILE_DATA
from vrnnkit.data.clips import is_clip_folder, read_clips
from vrnnkit.data.datasets import WindowDataset, train_val_split
from vrnnkit.data.download import fetch
from vrnnkit.data.files import open_sequences
from vrnnkit.data.mnist import load_mnist, sequential_mnist
from vrnnkit.data.moving_mnist import moving_mnist
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.errors import ConfigError, is_count
from vrnnkit.resources.budget import require_memory

BUILTIN_DATA = ("bouncing-balls", "moving-mnist", "seq-mnist")
GENERATED_DATA = ("bouncing-balls", "moving-mnist")
MNIST_TRAIN_DIGITS = 8000  # of the 10,000 test digits: the first for training, the rest held out
CHUNK = 500  # sequences per generator call: part of what a seed means for a generated data set
GENERATION_BYTES = {"bouncing-balls": 9, "moving-mnist": 3}
"""Bytes per pixel that generating a data set in memory takes at its peak (bouncing balls: two
float32 arrays and the uint8 result), besides ``TRAJECTORY_BYTES`` per frame."""
TRAJECTORY_BYTES = 128


def open_source(
    data: str,
    *,
    count: int,
    length: int,
    seed: int,
    mnist_dir: str | None = None,
    layout: str | None = None,
    held_out: bool = False,
    size: tuple[int, int] | None = None,
    grey: bool = False,
) -> SequenceArray:
    """The sequences a data argument names, their frames resized to ``size`` (HEIGHTxWIDTH)
    and converted to grey (``grey``) as they are read.

    Built-in datasets are generated (``count`` sequences of ``length`` frames; bouncing balls
    at a square ``size`` are drawn at that size); the MNIST ones read ``mnist_dir``, by default
    the MNIST test set in the data cache (downloaded when missing); ``held_out`` gives evaluation data that
    training never sees: other random draws for bouncing balls, the last 2,000 MNIST digits for
    the MNIST datasets. Anything else is a file (:func:`vrnnkit.data.open_sequences`).
    """
    rng = np.random.default_rng([seed, 1] if held_out else seed)
    if data == "bouncing-balls":
        side = size[0] if size is not None and size[0] == size[1] else 32
        check_generation_memory(data, count, length, (side, side))
        videos = np.rint(bouncing_balls(count, length=length, size=side, seed=rng) * 255).astype(np.uint8)
        return SequenceArray(videos, layout="NTHW", source="bouncing-balls", resize=size, grey=grey)
    if data in ("moving-mnist", "seq-mnist"):
        if mnist_dir is None:  # the MNIST test set, from the cache (downloaded when missing)
            mnist_dir = str(fetch("mnist"))
        images, _ = load_mnist(mnist_dir, split="test")
        digits = np.arange(MNIST_TRAIN_DIGITS, len(images)) if held_out else np.arange(min(MNIST_TRAIN_DIGITS, len(images)))
        if data == "moving-mnist":
            check_generation_memory(data, count, length, (64, 64))
            videos = moving_mnist(images, count, length=length, stochastic=True, indices=digits, seed=rng)
            return SequenceArray(videos, layout="NTHW", source="moving-mnist", resize=size, grey=grey)
        return SequenceArray(sequential_mnist(images[digits]), layout="NTD", source="seq-mnist", resize=size, grey=grey)
    path = Path(data)
    if not path.exists() and "." not in path.name:
        known = ", ".join((*BUILTIN_DATA, *BUILTIN_FILE_DATA))
        raise ConfigError(f"data {data!r} is neither a file nor a built-in dataset ({known})")
    return open_sequences(path, layout=layout, resize=size, grey=grey or None)


def check_generation_memory(
    name: str, count: int, length: int, frame: tuple[int, ...], per_pixel: int | None = None,
) -> None:
    """Refuse (ConfigError) to generate ``count`` sequences in memory that cannot fit there;
    ``per_pixel`` bytes at the peak (default: ``GENERATION_BYTES``, all generated at once)."""
    per_pixel = GENERATION_BYTES[name] if per_pixel is None else per_pixel
    needed = count * length * (frame[0] * frame[1] * per_pixel + TRAJECTORY_BYTES)
    require_memory(needed, f"generating {count:,} {name} sequences of {length} frames of {frame[0]}x{frame[1]}",
                   purpose="in memory", fix="lower --num-sequences (or the frames per sequence)")


def check_source(data: str, layout: str | None = None, size: tuple[int, int] | None = None, grey: bool = False) -> None:
    """Open a data file once to check it (a built-in name needs no check); a folder of clips is
    decoded once (into the data cache, which training then reads)."""
    if is_clip_folder(data):
        read_clips(data, size=size, grey=grey or None)
    elif data not in BUILTIN_DATA and data not in BUILTIN_FILE_DATA:
        open_source(data, count=1, length=1, seed=0, layout=layout, size=size, grey=grey)


def split_windows(
    sequences: SequenceArray, seq_len: int, *, val_fraction: float, seed: int
) -> tuple[WindowDataset, WindowDataset | None]:
    """Training and validation windows of ``seq_len`` frames; the validation sequences are a
    ``val_fraction`` share drawn from ``seed`` (none with fewer than two sequences)."""
    if val_fraction > 0 and len(sequences) >= 2:
        train_ids, val_ids = train_val_split(len(sequences), val_fraction, seed=seed)
        return WindowDataset(sequences, seq_len, indices=train_ids), WindowDataset(sequences, seq_len, indices=val_ids)
    return WindowDataset(sequences, seq_len), None


def build_dataset(
    data: str,
    *,
    count: int,
    seq_len: int,
    seed: int,
    val_fraction: float,
    mnist_dir: str | None = None,
    layout: str | None = None,
    unit_interval: bool = False,
    size: tuple[int, int] | None = None,
    grey: bool = False,
) -> tuple[WindowDataset, WindowDataset | None, tuple[int, ...]]:
    """The training and validation windows of ``data`` and its frame shape (after ``size``
    and ``grey``, as ``open_source``); with ``unit_interval`` (a likelihood on [0, 1]) the
    values are checked first."""
    sequences = open_source(data, count=count, length=seq_len, seed=seed, mnist_dir=mnist_dir, layout=layout,
                            size=size, grey=grey)
    if unit_interval and sequences.dtype not in (np.uint8, np.bool_):
        sequences.check_unit_range()
    training, validation = split_windows(sequences, seq_len, val_fraction=val_fraction, seed=seed)
    return training, validation, tuple(sequences.frame_shape)


# ----------------------------------------------------------------------------- generation


def dataset_generator(
    name: str,
    *,
    length: int = 20,
    balls: int = 3,
    size: int = 32,
    mnist_dir: str | Path | None = None,
    split: str = "test",
    digit_start: int = 0,
    digit_stop: int | None = None,
    stochastic: bool = False,
    digits: int = 2,
    canvas: int = 64,
) -> tuple[tuple[int, ...], Callable[[int, np.random.Generator], np.ndarray]]:
    """The frame shape (T, H, W) of a generated data set and a function drawing ``n`` uint8
    sequences of it from a random generator. ``balls`` and ``size`` are bouncing balls'; the
    rest, moving MNIST's (``digit_start:digit_stop`` picks the digit images)."""
    if name == "bouncing-balls":
        def draw_balls(n: int, rng: np.random.Generator) -> np.ndarray:
            return np.rint(bouncing_balls(n, length=length, n_balls=balls, size=size, seed=rng) * 255).astype(np.uint8)

        return (length, size, size), draw_balls
    if name != "moving-mnist":
        raise ConfigError(f"unknown generated data set {name!r}; expected one of {', '.join(GENERATED_DATA)}")
    if mnist_dir is None:  # the cached MNIST download holds the test split only
        if split != "test":
            raise ConfigError("the MNIST download holds the test split only; pass --mnist-dir with your own "
                              "copy of the training files for --split train")
        mnist_dir = fetch("mnist")
    images, _ = load_mnist(mnist_dir, split=split)
    stop = len(images) if digit_stop is None else digit_stop
    if not digit_start < stop <= len(images):
        raise ConfigError(
            f"the digit range {digit_start}:{stop} (--digit-start/--digit-stop) must be non-empty and "
            f"within the {len(images)} images"
        )
    indices = np.arange(digit_start, stop)

    def draw_digits(n: int, rng: np.random.Generator) -> np.ndarray:
        return moving_mnist(images, n, length=length, num_digits=digits, canvas_size=canvas,
                            stochastic=stochastic, indices=indices, seed=rng)

    return (length, canvas, canvas), draw_digits


def generate_chunks(name: str, count: int, *, seed: int = 0, **options: Any) -> tuple[tuple[int, ...], Iterator[np.ndarray]]:
    """The frame shape and the ``count`` sequences of a generated data set, ``CHUNK`` at a
    time, all drawn from one generator seeded with ``seed`` (``dataset_generator`` takes the
    ``options``)."""
    if not is_count(count):
        raise ConfigError(f"count must be a positive whole number, got {count!r}")
    shape, draw = dataset_generator(name, **options)
    rng = np.random.default_rng(seed)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, count, CHUNK):
            yield draw(min(CHUNK, count - start), rng)

    return shape, chunks()


def generate_dataset(name: str, count: int, *, seed: int = 0, **options: Any) -> np.ndarray:
    """``count`` sequences of a generated data set as uint8 (count, T, H, W): the array that
    ``vrnnkit data NAME --seed SEED`` writes."""
    shape, chunks = generate_chunks(name, count, seed=seed, **options)
    check_generation_memory(name, count, shape[0], shape[1:], per_pixel=2)  # the chunks and their concatenation
    return np.concatenate(list(chunks))
