"""A collection of sequences read one at a time, whatever layout they are stored in.

:class:`SequenceArray` keeps the raw array (uint8 video stays uint8) and converts only what is
read: a whole sequence or a window of frames becomes float32, channels-first, optionally grey
and resized (:mod:`vrnnkit.data.frames`).
An array that lives in a ``.npy`` file is opened memory-mapped for each read and let go after it,
so that pages read once do not stay resident: iterating a file larger than memory keeps the
process small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vrnnkit.data.checks import check_finite, check_numeric_dtype, to_float32
from vrnnkit.data.frames import grey_frames, resize_frames
from vrnnkit.data.layout import check_layout, guess_layout, is_image_layout
from vrnnkit.errors import DataError

_SCAN_CHUNK_BYTES = 64 * 2**20  # finiteness is checked this much at a time to bound memory


class SequenceArray:
    """Sequences stored in any layout, read as float32 ``(T, C, H, W)`` or ``(T, D)`` arrays.

    Wrap an array in memory (e.g. a generator's output) with ``SequenceArray(array,
    layout="NTHW")``; open a file with :func:`vrnnkit.data.open_sequences`. ``len()`` is the
    number of sequences, indexing returns one whole sequence, :meth:`window` part of one.

    Args:
        array: the stored values, in memory (or give ``npy_path``).
        npy_path: a ``.npy`` file to read memory-mapped instead of ``array``.
        layout: the axes of the stored array (see :mod:`vrnnkit.data.layout`); guessed from the
            shape when omitted, with a :class:`~vrnnkit.data.layout.LayoutWarning` when ambiguous.
        source: how error messages name the data (the file path by default).
        resize: a target ``(height, width)`` for frames: area averaging when shrinking,
            bilinear when enlarging.
        grey: convert colour frames to grey (BT.601 luma) as they are read.

    Raises:
        DataError: a non-numeric dtype, NaN or infinity, or a layout that does not fit.
    """

    def __init__(
        self,
        array: np.ndarray | None = None,
        *,
        npy_path: Path | None = None,
        layout: str | None = None,
        source: str | None = None,
        resize: tuple[int, int] | None = None,
        grey: bool = False,
    ) -> None:
        if (array is None) == (npy_path is None):
            raise ValueError("give exactly one of array= and npy_path=")
        self._array = None if array is None else np.asarray(array)
        self._npy_path = npy_path
        self.source = source or (str(npy_path) if npy_path is not None else "array")
        raw = self._open()
        check_numeric_dtype(raw.dtype, self.source)
        self.raw_shape: tuple[int, ...] = tuple(raw.shape)
        self.dtype: np.dtype = raw.dtype
        del raw  # let a memory map go before the value scan below
        if layout is None:
            layout = guess_layout(self.raw_shape, self.source)
        self.layout = check_layout(layout, self.raw_shape, self.source)
        for option, given in (("resize", resize is not None), ("grey", grey)):
            if given and not is_image_layout(self.layout):
                raise DataError(
                    f"{self.source}: {option} applies to frames, but layout {self.layout!r} holds vectors"
                )
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise DataError(f"{self.source}: expected resize=(height, width) >= 1, found {resize}")
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))
        self.grey = bool(grey)
        self.check_values()

    @property
    def num_sequences(self) -> int:
        """How many sequences there are (1 when the layout has no N axis)."""
        return self.raw_shape[self.layout.index("N")] if "N" in self.layout else 1

    @property
    def num_frames(self) -> int:
        """How many time steps each sequence has."""
        return self.raw_shape[self.layout.index("T")]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one converted frame: ``(C, H, W)`` or ``(D,)``."""
        if not is_image_layout(self.layout):
            return (self.raw_shape[self.layout.index("D")],)
        channels = self.raw_shape[self.layout.index("C")] if "C" in self.layout and not self.grey else 1
        height, width = self.resize or (
            self.raw_shape[self.layout.index("H")],
            self.raw_shape[self.layout.index("W")],
        )
        return (channels, height, width)

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> np.ndarray:
        return self.window(index, 0, self.num_frames)

    def window(self, index: int, start: int, length: int) -> np.ndarray:
        """Frames ``start .. start+length-1`` of sequence ``index`` as float32, channels-first."""
        if not -self.num_sequences <= index < self.num_sequences:
            raise IndexError(f"sequence {index} out of range for {self.num_sequences} sequences")
        if start < 0 or length < 1 or start + length > self.num_frames:
            raise IndexError(
                f"frames {start}..{start + length - 1} out of range for {self.num_frames} frames"
            )
        key = tuple(
            index % self.num_sequences
            if axis == "N"
            else slice(start, start + length)
            if axis == "T"
            else slice(None)
            for axis in self.layout
        )
        kept_axes = self.layout.replace("N", "")
        canonical = "TCHW" if is_image_layout(self.layout) else "TD"
        frames = np.asarray(self._open()[key])
        frames = frames.transpose(
            [kept_axes.index(axis) for axis in canonical if axis in kept_axes]
        )
        if is_image_layout(self.layout) and "C" not in self.layout:
            frames = frames[:, None]
        frames = to_float32(np.ascontiguousarray(frames))
        if self.grey:
            frames = grey_frames(frames)
        return frames if self.resize is None else resize_frames(frames, self.resize)

    def to_numpy(self) -> np.ndarray:
        """All sequences as one float32 array ``(N, T, C, H, W)`` or ``(N, T, D)``."""
        out = np.empty((self.num_sequences, self.num_frames, *self.frame_shape), np.float32)
        for index in range(self.num_sequences):
            out[index] = self[index]
        return out

    def check_values(self) -> None:
        """Raise DataError if the stored values hold NaN or infinity (read in bounded chunks)."""
        if self.dtype.kind != "f":
            return
        row_bytes = max(1, int(np.prod(self.raw_shape[1:])) * self.dtype.itemsize)
        rows_per_chunk = max(1, _SCAN_CHUNK_BYTES // row_bytes)
        for first in range(0, self.raw_shape[0], rows_per_chunk):
            check_finite(np.asarray(self._open()[first : first + rows_per_chunk]), self.source)

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest value after conversion (uint8 as /255), read in bounded chunks."""
        scale = 255.0 if self.dtype == np.uint8 else 1.0
        low, high = np.inf, -np.inf
        row_bytes = max(1, int(np.prod(self.raw_shape[1:])) * self.dtype.itemsize)
        rows_per_chunk = max(1, _SCAN_CHUNK_BYTES // row_bytes)
        for first in range(0, self.raw_shape[0], rows_per_chunk):
            chunk = np.asarray(self._open()[first : first + rows_per_chunk])
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
        return low / scale, high / scale

    def check_unit_range(self) -> None:
        """Raise DataError unless every value lies in [0, 1], as a Bernoulli likelihood needs."""
        low, high = self.value_range()
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"{self.source}: expected values in [0, 1] (a Bernoulli likelihood needs them), "
                f"found values from {low:g} to {high:g}; rescale the data or use a Gaussian likelihood"
            )

    def _open(self) -> np.ndarray:
        if self._npy_path is None:
            return self._array
        return np.load(self._npy_path, mmap_mode="r", allow_pickle=False)

    def __repr__(self) -> str:
        return (
            f"SequenceArray({self.source!r}, layout={self.layout!r}, shape={self.raw_shape}, "
            f"dtype={self.dtype}, sequences={self.num_sequences}, frames={self.num_frames}, "
            f"frame_shape={self.frame_shape})"
        )

