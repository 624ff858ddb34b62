"""Every file vrnnkit writes goes through here, so that a failed write leaves nothing behind and
says why in words.

    with atomic_path("model.safetensors") as tmp:   # any writer, into a temporary file beside it
        save_file(tensors, str(tmp))
    write_bytes(path, data); write_json(path, record)   # whole files
    append_bytes("metrics.jsonl", line)                # one record at the end of a log

A whole file is written to a temporary file, flushed to disk and renamed over the target: a
crash or an error at any moment leaves either the old file or the new one, never a partial one,
and no temporary file. A record appended to a log is cut off again when its write fails. An OS
error on the way (no space left, a read-only file system, no permission, a folder in the way)
becomes a :class:`~vrnnkit.errors.WriteError` naming the file, the cause and what to do; so does
a library's report of one (safetensors says "No space left on device (os error 28)").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vrnnkit.errors import SPACE_ERRORS, WriteError

_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (safetensors) name an OS error
_LOW_SPACE = 1 << 20  # a write that fails with less free than this ran out of space


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    A crash or an error at any moment leaves either the old file or the new one, never a
    partial one: the temporary file is flushed to disk, then renamed over the target, and
    removed on any error. An OS error (of the writer in the block too) raises WriteError."""
    target = Path(path)
    with atomic_paths(target) as (tmp,), reported_as(target, tmp):
        yield tmp


@contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """``atomic_path`` for several files written as one: a temporary file for each, made in
    the order given, and renamed over its target in that order once the block has written them
    all; an error anywhere removes every temporary file and replaces nothing. (The block's own
    errors are its to name: ``reported_as`` each file's writer.)"""
    targets = [Path(path) for path in paths]
    temporary: list[Path] = []
    try:
        for target in targets:
            temporary.append(_temporary(target))
        yield temporary
        for target, tmp in zip(targets, temporary, strict=True):
            with reported_as(target, tmp):
                # mkstemp (and some writers) make the file private; give it a normal file's mode.
                os.chmod(tmp, 0o666 & ~_umask())
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
    finally:
        for tmp in temporary:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    for folder in dict.fromkeys(target.parent for target in targets):
        fsync_directory(folder)


def _temporary(target: Path) -> Path:
    """An empty temporary file beside ``target``, named after it: ``.NAME.XXXX.tmp.EXT``."""
    if target.is_dir():  # os.replace would fail only after the whole file was written
        raise WriteError(target, errno.EISDIR)
    try:
        # The temporary name keeps the extension, for writers that pick a format by it (ffmpeg).
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
        os.close(fd)
    except OSError as error:
        raise WriteError(target, error.errno) from error
    return Path(tmp_name)


@contextmanager
def reported_as(target: str | os.PathLike[str], tmp: Path | None = None) -> Iterator[None]:
    """The errors of the block are failed writes of ``target`` (through ``tmp``): WriteError.
    For the writes of several files at once, each under its own name."""
    try:
        yield
    except Exception as error:
        failure = write_error(error, Path(target), tmp)
        if failure is None or failure is error:
            raise
        raise failure from error


def write_error(error: BaseException, target: Path, tmp: Path | None = None) -> WriteError | None:
    """The WriteError that ``error``, raised while writing ``target`` (through ``tmp``), stands
    for: an OSError, or a library's error that names one ("(os error 28)"). None when it is
    not a failed write: a bug, or another file's read error (which keeps its own message)."""
    if isinstance(error, WriteError):
        return error
    if isinstance(error, OSError):
        code, name = error.errno, error.filename
    else:
        found = _OS_ERROR_NUMBER.search(str(error))
        if found is None:
            return None
        code, name = int(found.group(1)), None
    ours = name is None or os.fsdecode(name) in {str(target), str(tmp)}
    if not ours and code not in SPACE_ERRORS | {errno.EROFS}:
        return None
    if code is None:
        code = unknown_cause(tmp or target)
    return WriteError(target if ours else os.fsdecode(name), code)


def unknown_cause(path: Path) -> int | None:
    """The likely error number of a write to ``path`` that failed without one (numpy's
    "Not enough free space", ffmpeg): no space, a file-size limit reached, or None."""
    with contextlib.suppress(OSError, AttributeError):  # no statvfs on Windows
        stats = os.statvfs(path.parent)
        if stats.f_bavail * stats.f_frsize < _LOW_SPACE:
            return errno.ENOSPC
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and path.stat().st_size + _LOW_SPACE > limit:
            return errno.EFBIG
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_directory(folder: Path) -> None:
    """Make a rename into ``folder`` durable (where the platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` as the whole of ``path``, atomically."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def append_bytes(path: str | os.PathLike[str], data: bytes) -> int:
    """Add ``data`` at the end of ``path`` (created when missing), whole or not at all: a write
    that fails is cut off again, so the file ends where it did. Returns where ``data`` begins
    (``truncate`` takes the file back there)."""
    target = Path(path)
    if target.is_dir():
        raise WriteError(target, errno.EISDIR)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise WriteError(target, error.errno) from error
    try:
        end = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise WriteError(target, error.errno or unknown_cause(target)) from error
    finally:
        os.close(fd)
    return end


def truncate(path: str | os.PathLike[str], size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (undoing ``append_bytes``), where it can be."""
    with contextlib.suppress(OSError):
        os.truncate(path, size)
