"""Read video and sequence files: ``.npy``, ``.npz``, ``.gif`` and ``.mp4``.

``.npy`` files are memory-mapped and read one sequence at a time; ``.npz`` members are read into
memory (they may be compressed); ``.gif`` and ``.mp4`` are decoded frame by frame, each frame
resized and converted as it is read (:mod:`vrnnkit.data.video`), so only the frames at the size
asked for are kept. Nothing is ever unpickled. Layouts follow :mod:`vrnnkit.data.layout`: pass ``layout=`` where a shape is
ambiguous (the published Moving MNIST file ``mnist_test_seq.npy`` needs ``layout="TNHW"``).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vrnnkit.data.checks import require_file
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.data.video import read_video
from vrnnkit.errors import DataError, pickle_hint
from vrnnkit.resources.budget import require_memory

VIDEO_SUFFIXES = (".gif", ".mp4")
SUFFIXES = (".npy", ".npz", *VIDEO_SUFFIXES)
_NPY_MAGIC = b"\x93NUMPY"


def open_sequences(
    path: str | Path,
    *,
    layout: str | None = None,
    key: str | None = None,
    resize: tuple[int, int] | None = None,
    grey: bool | None = None,
) -> SequenceArray:
    """Open a sequence or video file as a :class:`SequenceArray`, read lazily per sequence.

    Args:
        path: a ``.npy``, ``.npz``, ``.gif`` or ``.mp4`` file.
        layout: the axes of the stored array (e.g. ``"NTHW"``, ``"TNHW"``, ``"NTD"``); guessed
            from the shape when omitted, with a ``LayoutWarning`` if another layout would fit.
        key: the array to read from a ``.npz`` holding several.
        resize: a target ``(height, width)`` for frames (``--size``): area averaging when
            shrinking, bilinear when enlarging (:func:`vrnnkit.data.frames.resize_frames`);
            video frames are resized as they are decoded.
        grey: True converts colour frames to grey (BT.601 luma, ``--grey``), False keeps them;
            None (default) keeps arrays as they are and reads a ``.gif`` / ``.mp4`` as grey
            when its three channels agree (within 3/255 for lossy mp4).

    Raises:
        DataError: the path is missing or not a file, the file is empty, corrupt or of an
            unknown format, or its array is not a numeric, finite array that fits the layout.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if key is not None and suffix != ".npz":
        raise DataError(f"{path}: key= applies to .npz files, found a {suffix} file")
    if suffix == ".npy":
        _check_npy(path)
        return SequenceArray(npy_path=path, layout=layout, resize=resize, grey=bool(grey))
    if suffix == ".npz":
        return SequenceArray(_read_npz(path, key), layout=layout, source=str(path), resize=resize, grey=bool(grey))
    array = read_video(path, grey=grey, size=None if resize is None else (int(resize[0]), int(resize[1])))
    return SequenceArray(array, layout=layout or ("THW" if array.ndim == 3 else "THWC"), source=str(path))


def load_sequences(
    path: str | Path,
    *,
    layout: str | None = None,
    key: str | None = None,
    resize: tuple[int, int] | None = None,
    grey: bool | None = None,
) -> np.ndarray:
    """Read a whole file as float32 ``(N, T, C, H, W)`` frames in [0, 1] or ``(N, T, D)`` vectors.

    uint8 values map to [0, 1] by /255; other dtypes keep their values. Same arguments and
    errors as :func:`open_sequences`, which reads one sequence at a time instead.
    """
    return open_sequences(path, layout=layout, key=key, resize=resize, grey=grey).to_numpy()


def _check_file(path: Path) -> None:
    require_file(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: expected one of {', '.join(SUFFIXES)}, found suffix {path.suffix!r}"
        )


def _check_npy(path: Path) -> None:
    """Read the header of a .npy file, so that a wrong or truncated file gets a clear message."""
    with path.open("rb") as file:
        if file.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            foreign = pickle_hint(path)
            if foreign:
                raise DataError(f"{path}: expected a NumPy .npy file, found {foreign}")
            raise DataError(
                f"{path}: expected a NumPy .npy file, found a file that does not start with the "
                "NumPy magic bytes (text or another format renamed to .npy?)"
            )
        file.seek(0)
        try:
            version = np.lib.format.read_magic(file)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(file)
        except Exception as err:  # numpy's header parser raises ValueError, SyntaxError, TokenError...
            raise DataError(
                f"{path}: expected a valid .npy header, found a damaged one ({type(err).__name__}: {err})"
            ) from err
        data_start = file.tell()
    if dtype.hasobject:
        raise DataError(
            f"{path}: expected a numeric array, found an array of Python objects "
            "(it would need unpickling, which vrnnkit never does)"
        )
    expected = data_start + math.prod(shape) * dtype.itemsize  # exact: np.prod could overflow
    found = path.stat().st_size
    if found < expected:
        raise DataError(
            f"{path}: expected {expected} bytes for a {dtype} array of shape {shape}, "
            f"found {found} bytes (the file is truncated)"
        )


def _check_npz_member(path: Path, archive: zipfile.ZipFile, key: str) -> None:
    """Refuse, before any allocation, an array whose header claims more bytes than its member
    of the archive holds, or more than the memory available."""
    info = archive.getinfo(f"{key}.npy" if f"{key}.npy" in archive.namelist() else key)
    try:
        member = archive.open(info)
    except (OSError, zipfile.BadZipFile, NotImplementedError) as err:
        raise DataError(f"{path}: the array {key!r} is damaged ({err})") from err
    with member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
        except zipfile.BadZipFile as err:  # a small member is read whole, and its CRC checked, at once
            raise DataError(f"{path}: the array {key!r} is damaged ({err})") from err
        except Exception as err:  # numpy's header parser raises ValueError, SyntaxError, TokenError...
            raise DataError(f"{path}: the array {key!r} has a damaged .npy header ({type(err).__name__}: {err})") from err
        start = member.tell()
    if dtype.hasobject:  # its size says nothing: the objects are pickled after the header
        raise DataError(f"{path}: expected a numeric array under {key!r}, found an array of Python objects "
                        "(it would need unpickling, which vrnnkit never does)")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > info.file_size - start:
        raise DataError(
            f"{path}: the array {key!r} claims {claimed:,} bytes ({dtype} of shape {shape}); the archive holds "
            f"{max(0, info.file_size - start):,} bytes of it (the file is truncated or its header is false)"
        )
    require_memory(claimed, f"{path}: the array {key!r} ({dtype} of shape {shape})", DataError, purpose="in memory",
                   fix="store it as a .npy file, which vrnnkit reads one sequence at a time")


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with path.open("rb") as file:
        if file.read(2) != b"PK":
            raise DataError(
                f"{path}: expected a NumPy .npz archive (a zip file), found a file that is not a zip"
            )
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, NotImplementedError) as err:  # NotImplementedError: zip features zipfile lacks
        raise DataError(
            f"{path}: expected a NumPy .npz archive, found an unreadable file ({err})"
        ) from err
    with archive:
        keys = list(archive.files)
        if key is None:
            if len(keys) != 1:
                raise DataError(
                    f"{path}: expected a single array or key=, found {len(keys)} arrays: "
                    f"{', '.join(keys) or '(none)'}"
                )
            key = keys[0]
        if key not in keys:
            raise DataError(f"{path}: expected an array named {key!r}, found {', '.join(keys)}")
        _check_npz_member(path, archive.zip, key)
        try:
            return archive[key]
        except ValueError as err:
            if "allow_pickle" in str(err):  # object arrays refuse to load without pickle
                raise DataError(
                    f"{path}: expected a numeric array under {key!r}, found one that needs "
                    f"unpickling, which vrnnkit never does ({err})"
                ) from err
            raise DataError(f"{path}: the array {key!r} is damaged ({err})") from err
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as err:
            # a corrupt member: bad CRC, truncated deflate stream, an unknown compression
            raise DataError(f"{path}: the array {key!r} is damaged ({err})") from err
