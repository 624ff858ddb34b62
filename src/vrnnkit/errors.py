"""Exceptions that vrnnkit raises for problems a user can fix, and the checks every layer shares.

Every error here carries a message meant for a person: what was wrong, where, and what was
expected. The command line turns them into a short message and an exit code, never a traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any


class VRNNKitError(Exception):
    """Base class of every error vrnnkit raises on purpose."""


class RunError(VRNNKitError):
    """A failure while running (not bad input): a non-finite loss, a failed export check."""


class TrainingError(RunError):
    """Training cannot go on: a non-finite loss, a device that is not there, a broken run folder."""


class DownloadError(RunError):
    """A data set could not be downloaded: no network, a server error, a broken-off transfer,
    or a file whose checksum is not the expected one."""


# What an OS error means for a file being written, and what to do about it: (cause, fix).
_WRITE_CAUSES = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or raise the quota"),
    errno.EFBIG: ("the file is larger than the file system or the file-size limit (ulimit -f) allows",
                  "raise the limit or write to another file system"),
    errno.EROFS: ("the file system is read-only", "write to another folder, or make this one writable"),
    errno.EACCES: ("permission denied", "write to another folder, or make this one writable"),
    errno.EPERM: ("permission denied", "write to another folder, or make this one writable"),
    errno.EISDIR: ("it is a folder, not a file", "move the folder away or choose another name"),
    errno.ENOTDIR: ("a part of its path is a file, not a folder", "choose another path"),
    errno.EEXIST: ("a file is in the way where a folder is needed", "move the file away or choose another path"),
    errno.ENOENT: ("its folder does not exist (was it moved or deleted?)", "create the folder or choose another path"),
    errno.EIO: ("an input/output error (the disk may be failing or disconnected)", "check the disk"),
}
SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The errors of a file system that has no room for a file: free space (or a larger limit) fixes them."""


class WriteError(RunError, OSError):
    """A file could not be written: no space left, a read-only file system, no permission, a
    folder where the file should be. Nothing half-written is left: the previous file, if there
    was one, is intact. ``path`` is the file, ``cause`` what went wrong in words (``detail``
    adds to it), ``fix`` what to do (a phrase: "free some space"); ``errno`` the OS error number.

    It is an ``OSError`` too, so code that catches OS errors around a write still catches it."""

    def __init__(self, path: os.PathLike[str] | str, code: int | None, *, detail: str | None = None,
                 fix: str | None = None) -> None:
        known_cause, known_fix = _WRITE_CAUSES.get(code or -1, (None, "check the disk and the folder"))
        cause = known_cause or (os.strerror(code).lower() if code else "the write failed")
        self.path, self.detail, self.fix = Path(path), detail, fix or known_fix
        self.cause = cause + (f" ({detail})" if detail else "")
        super().__init__(f"cannot write {path}: {self.cause}. Nothing was written; {self.fix}, then try again")
        self.errno, self.strerror, self.filename = code, cause, str(path)

    def __str__(self) -> str:  # OSError would print "[Errno 28] ..." from its attributes
        return str(self.args[0])

    def __reduce__(self) -> Any:  # picklable with its own arguments (OSError's would not fit them)
        return (_rebuild_write_error, (str(self.path), self.errno, self.detail, self.fix))

    @property
    def out_of_space(self) -> bool:
        """Whether freeing space (or raising a size limit) fixes it."""
        return self.errno in SPACE_ERRORS


def _rebuild_write_error(path: str, code: int | None, detail: str | None, fix: str) -> WriteError:
    return WriteError(path, code, detail=detail, fix=fix)


class WriteWarning(UserWarning):
    """An optional file (a sample GIF, TensorBoard events, a decode cache) could not be written;
    the work goes on without it."""


class ConfigError(VRNNKitError, ValueError):
    """A model or training configuration is invalid (a size, a block name, a frame shape)."""


class RegistryError(VRNNKitError, KeyError):
    """A block name is unknown for its kind, or a name is registered twice."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(VRNNKitError):
    """A checkpoint file is missing, is not a vrnnkit checkpoint, or is truncated or corrupt."""


class DataError(VRNNKitError, ValueError):
    """A data file or array cannot be used: wrong path, format, shape, dtype or values."""


def file_problem(path: os.PathLike[str] | str) -> str | None:
    """Why ``path`` cannot be read as a file, as a phrase ("no such file or directory", "a
    directory", "an empty (0-byte) file"), or None when it is a non-empty file."""
    path = Path(path)
    if not path.exists():
        return "no such file or directory"
    if path.is_dir():
        return "a directory"
    if path.stat().st_size == 0:
        return "an empty (0-byte) file"
    return None


def output_problem(path: os.PathLike[str] | str) -> str | None:
    """Why a file cannot be written at ``path``, as a phrase ("folder runs/x does not exist",
    "runs/x is a file, not a folder", "it is a folder"), or None when it can be."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        return "it is a folder; expected a file name"
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            break
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    return None


_PICKLE_PROTOCOL_BYTE = 0x80
_ZIP_MAGIC = b"PK\x03\x04"


def pickle_hint(path: os.PathLike[str] | str) -> str | None:
    """A phrase when a file that should be a checkpoint or a .npy array looks like a Python
    pickle or a ``torch.save`` archive (judged from its first bytes, never unpickled), or None."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return None
    if len(head) >= 2 and head[0] == _PICKLE_PROTOCOL_BYTE and 2 <= head[1] <= 5:
        return "a Python pickle (written by pickle.dump or torch.save), which vrnnkit never unpickles: it could run code"
    if head == _ZIP_MAGIC:
        return "a zip archive (torch.save writes these), not a safetensors file; vrnnkit never unpickles"
    return None


def is_count(value: Any, minimum: int = 1) -> bool:
    """Whether ``value`` is an int (a bool is not) of at least ``minimum``: the one rule for
    counts and sizes."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_counts(**counts: Any) -> None:
    """Raise a ValueError naming the first of ``counts`` that is not a positive integer."""
    for name, value in counts.items():
        if not is_count(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def moved_module(old: str, new: str) -> ModuleType:
    """The module ``new``, for the deprecated alias module ``old`` that stands for it (the alias
    puts it in ``sys.modules`` in its own place, so both names are one module). Warns with a
    DeprecationWarning that points at the import of the alias (``warnings`` skips the import
    machinery's frames when it counts the stack level)."""
    warnings.warn(f"{old} moved to {new}; import it from there ({old} will be removed)", DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)
