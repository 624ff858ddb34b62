"""MNIST from a user's folder of IDX files, and sequential MNIST.

The IDX format is a 4-byte magic number (two zero bytes, a
type code, the number of dimensions), one big-endian int32 per dimension, then the values. Files
may be gzip-compressed. vrnnkit downloads nothing: point it at a folder that holds the files.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from vrnnkit.data.checks import require_file
from vrnnkit.errors import DataError

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # uint8 with 3 dimensions, uint8 with 1


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian numpy array.

    Args:
        path: the file.
        magic: the magic number the file must carry (2051 for MNIST images, 2049 for labels);
            any valid IDX type when omitted.

    Raises:
        DataError: the file is missing, empty, not gzip or IDX, carries another magic number,
            or holds more or fewer bytes than its header announces.
    """
    path = Path(path)
    require_file(path)
    content = path.read_bytes()
    if content.startswith(_GZIP_MAGIC):
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{path}: expected a readable gzip file, found a corrupt one ({err})"
            ) from err
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] not in _IDX_TYPES:
        raise DataError(
            f"{path}: expected an IDX header (two zero bytes, a type code in "
            f"{sorted(_IDX_TYPES)}, a rank), found the bytes {content[:4].hex(' ') or '(none)'}"
        )
    found_magic = int.from_bytes(content[:4], "big")
    if magic is not None and found_magic != magic:
        raise DataError(f"{path}: expected IDX magic number {magic}, found {found_magic}")
    dtype, rank = _IDX_TYPES[content[2]], content[3]
    header_size = 4 + 4 * rank
    if rank == 0 or len(content) < header_size:
        raise DataError(
            f"{path}: expected {rank} dimension sizes after the magic number, found a truncated header"
        )
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", count=rank, offset=4))
    expected = header_size + math.prod(shape) * dtype.itemsize  # exact: np.prod could overflow
    if len(content) != expected:
        raise DataError(
            f"{path}: expected {expected} bytes for a {dtype} array of shape {shape}, "
            f"found {len(content)} bytes"
        )
    values = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_mnist(folder: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8 from a folder.

    The folder holds the original files, gzip-compressed or not, e.g.
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` for ``split="test"``.

    Raises:
        DataError: the folder or a file is missing, a file is not valid IDX, or the images and
            labels do not match (shape, count, labels outside 0-9).
    """
    if split not in MNIST_FILES:
        raise DataError(f"load_mnist: expected split 'train' or 'test', found {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        found = "a file" if folder.exists() else "no such folder"
        raise DataError(f"{folder}: expected a folder holding the MNIST files, found {found}")
    images_name, labels_name = MNIST_FILES[split]
    images = read_idx(_find(folder, images_name), magic=IMAGES_MAGIC)
    labels = read_idx(_find(folder, labels_name), magic=LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{folder / images_name}: expected 28x28 images, found shape {images.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{folder}: expected as many labels as images, found {len(images)} images and "
            f"{len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{folder / labels_name}: expected labels 0-9, found {labels.max()}")
    return images, labels


def sequential_mnist(images: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Read each 28x28 image as 28 steps of 28 pixels: float32 ``(N, 28, 28)`` in [0, 1].

    Grey values by default (x / 255); with ``threshold`` (in [0, 1)) pixels above it become 1
    and the rest 0, which a Bernoulli likelihood models properly.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"sequential_mnist: expected uint8 images of shape (N, 28, 28), "
            f"found {images.dtype} of shape {images.shape}"
        )
    grey = images.astype(np.float32) / np.float32(255.0)
    if threshold is None:
        return grey
    if not 0.0 <= threshold < 1.0:
        raise DataError(f"sequential_mnist: expected a threshold in [0, 1), found {threshold}")
    return (grey > threshold).astype(np.float32)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: expected {name}.gz or {name}, found neither")
