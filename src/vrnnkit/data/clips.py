"""A folder of video clips as one data source: every clip under it, any size, length and frame
rate, decoded once at the size asked for, and windows that never cross from one clip to the next.

    clips = read_clips("path/to/clips", size=(64, 64), grey=True)   # a ClipSet
    training, validation = clip_windows(clips, seq_len=15, val_fraction=0.1, seed=0)
    evaluation = clips.windows(15, stride=15)                       # non-overlapping windows

Clips are ``.mp4``, ``.avi``, ``.mkv``, ``.mov``, ``.webm``, ``.gif`` and ``.npy`` files (an
array of frames ``(T, H, W)``, ``(T, H, W, C)``, or several clips ``(N, T, ...)``) anywhere
under the folder, read in the natural order of their paths. A video is decoded frame by frame,
each frame resized as it is read (:mod:`vrnnkit.data.video`), and the result is kept in the data
cache (``vrnnkit.data.cache_root() / "decoded"``), so a second run, ``eval`` or ``predict`` on
the same files at the same size reads it back instead of decoding again. Memory holds the
resized frames only, as uint8.
"""

from __future__ import annotations

import hashlib
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vrnnkit.data.catalog import DATA_ENV, cache_root
from vrnnkit.data.datasets import train_val_split
from vrnnkit.data.files import open_sequences
from vrnnkit.data.frames import format_size
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.data.video import read_video
from vrnnkit.errors import DataError, WriteError, WriteWarning
from vrnnkit.io.atomic import atomic_path

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif")
CLIP_SUFFIXES = (*VIDEO_SUFFIXES, ".npy")
CACHE_VERSION = 1
"""Part of every cache key: raise it when decoding changes, so old entries are not read back."""


def clip_files(folder: Path) -> list[Path]:
    """The clip files under ``folder`` (recursively; hidden files and folders left out), in the
    natural order of their paths ("clip2" before "clip10")."""
    found = [
        p for p in folder.rglob("*")
        if p.suffix.lower() in CLIP_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: _natural(str(p.relative_to(folder))))


def is_clip_folder(data: str | Path) -> bool:
    """Whether ``data`` is a folder of clips: it holds a video file, or ``.npy`` arrays of
    frames (three or more axes). A folder of ``(T, D)`` ``.npy`` arrays or MIDI files is a
    folder of vector sequences instead (:mod:`vrnnkit.data.varlen_source`)."""
    path = Path(data)
    if not path.is_dir():
        return False
    files = clip_files(path)
    if any(f.suffix.lower() in VIDEO_SUFFIXES for f in files):
        return True
    return bool(files) and all(len(_npy_shape(f)) >= 3 for f in files)


@dataclass
class ClipSet:
    """The clips of a folder, each a :class:`SequenceArray` of one sequence, all of one frame shape."""

    folder: Path
    clips: list[SequenceArray]
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    """Clips left out (unreadable, with ``skip_unreadable``), each with the reason."""

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.clips[0].frame_shape

    @property
    def lengths(self) -> list[int]:
        return [clip.num_frames for clip in self.clips]

    def windows(self, seq_len: int, *, stride: int | None = None, indices: Sequence[int] | None = None) -> ClipWindows:
        """Windows of ``seq_len`` frames of the clips ``indices`` (default all), starting every
        ``stride`` frames (default ``seq_len``: no overlap)."""
        return ClipWindows(self, seq_len, stride=stride or seq_len, indices=indices)


class ClipWindows(Dataset):
    """Windows of ``seq_len`` consecutive frames within each clip, as float32 ``(T, C, H, W)``
    tensors; ``clip_of[i]`` is the clip of window ``i``. Clips shorter than a window give none."""

    def __init__(self, clips: ClipSet, seq_len: int, *, stride: int, indices: Sequence[int] | None = None) -> None:
        self.clips, self.seq_len = clips, seq_len
        chosen = range(len(clips.clips)) if indices is None else [int(i) for i in indices]
        pairs = [(c, s) for c in chosen for s in range(0, clips.clips[c].num_frames - seq_len + 1, stride)]
        self._windows = np.array(pairs, dtype=np.int64).reshape(-1, 2)

    @property
    def clip_of(self) -> np.ndarray:
        return self._windows[:, 0]

    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, item: int) -> torch.Tensor:
        clip, start = (int(v) for v in self._windows[item])
        return torch.from_numpy(self.clips.clips[clip].window(0, start, self.seq_len))


def clip_windows(
    clips: ClipSet, seq_len: int, *, val_fraction: float, seed: int, say: Callable[[str], None] | None = None,
) -> tuple[ClipWindows, ClipWindows | None]:
    """Training windows (every start) and validation windows (no overlap) of ``seq_len`` frames.

    Validation holds out whole clips, a ``val_fraction`` share drawn from ``seed`` among the
    clips long enough for a window, so no validation frame was trained on. Clips shorter than a
    window are left out with one line each through ``say``."""
    long_enough = [i for i, n in enumerate(clips.lengths) if n >= seq_len]
    for i, n in enumerate(clips.lengths):
        if n < seq_len and say is not None:
            say(f"{clips.names[i]}: {n} frames, fewer than a window of {seq_len}; left out")
    if not long_enough:
        raise DataError(
            f"{clips.folder}: no clip has the {seq_len} frames of a window (the longest has {max(clips.lengths)}); "
            "lower --seq-len"
        )
    train_ids, val_ids = np.array(long_enough), np.array([], dtype=np.int64)
    if val_fraction > 0 and len(long_enough) >= 2:
        train_pos, val_pos = train_val_split(len(long_enough), val_fraction, seed=seed)
        train_ids, val_ids = train_ids[train_pos], train_ids[val_pos]
    training = clips.windows(seq_len, stride=1, indices=train_ids)
    validation = clips.windows(seq_len, indices=val_ids) if len(val_ids) else None
    return training, validation


def read_clips(
    folder: str | Path,
    *,
    size: tuple[int, int] | None = None,
    grey: bool | None = None,
    skip_unreadable: bool = False,
    cache: bool = True,
    progress: bool | None = None,
) -> ClipSet:
    """Every clip under ``folder``, decoded at ``size`` (HEIGHTxWIDTH; required when the clips
    differ in size) and read as grey (``grey`` True), colour (False), or as stored (None:
    colour unless every clip is grey). ``skip_unreadable`` leaves out (with a warning) a clip
    that cannot be read instead of stopping; ``progress`` shows a bar (default: on a terminal).

    Raises:
        DataError: no clips, a clip that cannot be read (named), or clips of different sizes.
    """
    folder = Path(folder)
    files = clip_files(folder) if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder}: expected a folder of clips ({', '.join(CLIP_SUFFIXES)}), found none")
    arrays: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    with _progress_bar(len(files), folder, progress) as advance:
        for path in files:
            name = str(path.relative_to(folder))
            try:
                found = _read_clip(path, size, grey, cache)
            except DataError as error:
                if not skip_unreadable:
                    raise DataError(f"{error} (pass --skip-unreadable to leave such clips out)") from None
                warnings.warn(f"left out {error}", stacklevel=2)
                skipped.append(f"{name}: {error}")
                found = []
            for i, array in enumerate(found):
                arrays.append(array)
                names.append(name if len(found) == 1 else f"{name}#{i}")
            advance()
    if not arrays:
        raise DataError(f"{folder}: none of its {len(files)} clips could be read")
    clips = _as_sequences(arrays, names, folder, grey)
    return ClipSet(folder, clips, names, skipped)


def _read_clip(path: Path, size: tuple[int, int] | None, grey: bool | None, cache: bool) -> list[np.ndarray]:
    """The clips of one file as arrays ``(T, H, W)`` or ``(T, H, W, C)`` at ``size``."""
    if path.suffix.lower() == ".npy":
        return _read_npy_clips(path, size, grey)
    entry = _cache_entry(path, size, grey) if cache else None
    if entry is not None and entry.is_file():
        try:
            return [np.load(entry, allow_pickle=False)]
        except (OSError, ValueError):
            pass  # a damaged cache entry: decode again and replace it
    video = read_video(path, grey=grey, size=size)
    if entry is not None:
        _write_cache(entry, video)
    return [video]


_CACHE_WARNED: set[Path] = set()


def _write_cache(entry: Path, video: np.ndarray) -> None:
    """Keep the decoded frames for the next reading. A cache that cannot be written (a full
    disk) only costs decoding again: one warning per cache folder, and the reading goes on."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry) as tmp:
            np.save(tmp, video)
    except OSError as failure:  # a WriteError, or the folders' own
        error = failure if isinstance(failure, WriteError) else WriteError(failure.filename or entry.parent, failure.errno)
        if entry.parent not in _CACHE_WARNED:
            _CACHE_WARNED.add(entry.parent)
            warnings.warn(f"cannot write the decode cache {error.path}: {error.cause}; the clips are decoded again "
                          f"next time ({error.fix}, or set {DATA_ENV}=PATH for another cache folder)",
                          WriteWarning, stacklevel=2)


def _read_npy_clips(path: Path, size: tuple[int, int] | None, grey: bool | None) -> list[np.ndarray]:
    """The clips of a ``.npy`` file: ``(T, H, W)``, ``(T, H, W, C)`` with C of 1, 3 or 4, or
    several clips ``(N, T, H, W)`` / ``(N, T, H, W, C)``; uint8 stays uint8."""
    shape = _npy_shape(path)
    ndim = len(shape)
    layout = ("THWC" if shape[-1] in (1, 3, 4) else "NTHW") if ndim == 4 else {3: "THW", 5: "NTHWC"}.get(ndim)
    if layout is None and shape:
        raise DataError(f"{path}: expected frames (T, H, W[, C]) or clips (N, T, H, W[, C]), found an array of {ndim} axes")
    sequences = open_sequences(path, layout=layout, resize=size, grey=bool(grey))
    clips = []
    for i in range(len(sequences)):
        frames = sequences[i]  # float32 (T, C, H, W)
        if sequences.dtype == np.uint8:
            frames = np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)
        clips.append(frames[:, 0] if frames.shape[1] == 1 else frames.transpose(0, 2, 3, 1))
    return clips


def _as_sequences(arrays: list[np.ndarray], names: list[str], folder: Path, grey: bool | None) -> list[SequenceArray]:
    """The clips as sequences of one frame shape; with ``grey`` None, grey clips beside colour
    ones take three equal channels."""
    colour = any(a.ndim == 4 and a.shape[-1] > 1 for a in arrays)
    if colour and grey is None:
        arrays = [np.repeat(a[..., None], 3, -1) if a.ndim == 3 else a for a in arrays]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape[1:]
        other = next(i for i, a in enumerate(arrays) if a.shape[1:] != first)
        raise DataError(
            f"{folder}: the clips differ in frame size ({names[0]}: {_shown(first)}, {names[other]}: "
            f"{_shown(arrays[other].shape[1:])}); pass --size (e.g. --size 64, or HEIGHTxWIDTH) to read them all at one size"
        )
    return [SequenceArray(a, layout="THW" if a.ndim == 3 else "THWC", source=n) for a, n in zip(arrays, names, strict=True)]


def _cache_entry(path: Path, size: tuple[int, int] | None, grey: bool | None) -> Path | None:
    """Where the decoded frames of ``path`` at ``size`` are kept: named by the file's path,
    length and modification time and the reading asked for, so a changed file is decoded anew."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{size}|{grey}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_root() / "decoded" / f"{digest}.npy"


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape of a .npy file's array, from its header (() when it cannot be read)."""
    try:
        with path.open("rb") as file:
            major, _ = np.lib.format.read_magic(file)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read(file)
        return tuple(shape)
    except Exception:  # not a .npy file: open_sequences gives the message when it is read
        return ()


def _natural(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _shown(shape: tuple[int, ...]) -> str:
    size = format_size((shape[0], shape[1]))
    return size if len(shape) == 2 else f"{size}x{shape[2]}"


class _progress_bar:
    """A bar over the clips decoded, on stderr when it is a terminal (or when ``show``)."""

    def __init__(self, total: int, folder: Path, show: bool | None) -> None:
        self.show = sys.stderr.isatty() if show is None else show
        self.total, self.folder = total, folder

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task(f"reading {self.total} clips in {self.folder}", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self._bar.stop()
