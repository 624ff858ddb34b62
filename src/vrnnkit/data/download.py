"""Fetch a data set into the cache: download, verify the SHA-256, then move into place.

    fetch("mnist")                   # <cache>/mnist with the IDX files, downloaded if missing
    resolve_builtin("jsb-chorales")  # the cached JSON file's path, for `vrnnkit train jsb-chorales`

A file is written as ``.<name>.part`` beside its final name and renamed only once its whole
content has the expected checksum: the cache never holds a partial or corrupt file under the
real name. A transfer that breaks off leaves the ``.part`` file, and the next attempt asks
the server for the rest (an HTTP range request); a server that answers with the whole file
instead restarts it from the first byte. A file that fails its checksum is deleted, and so is
the ``.part`` file of a write that fails (a full disk: ``WriteError``, nothing left behind).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from vrnnkit._version import __version__
from vrnnkit.data.catalog import (
    BUILTIN_FILE_DATA,
    DATA_ENV,
    MNIST_DATA,
    Dataset,
    RemoteFile,
    get_dataset,
)
from vrnnkit.errors import ConfigError, DownloadError, WriteError
from vrnnkit.io.atomic import fsync_directory as _fsync_directory
from vrnnkit.io.atomic import reported_as

Progress = Callable[[str, int, "int | None"], None]
"""``on_progress(file name, bytes so far, total bytes or None)``."""
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 30.0


def fetch(name: str, cache: str | os.PathLike[str] | None = None, *, on_progress: Progress | None = None) -> Path:
    """The cache folder of data set ``name`` holding its verified files; downloads those that
    are missing or corrupt. ``cache`` defaults to :func:`vrnnkit.data.catalog.cache_root`.

    Raises:
        ConfigError: an unknown name, or a cache folder that cannot be written.
        DownloadError: a network failure or a checksum mismatch (nothing is kept).
    """
    dataset = get_dataset(name)
    folder = dataset.folder(cache)
    missing = [file for file in dataset.files if not _verified(folder / file.name, file)]
    if not missing:
        return folder
    check_writable(folder)
    if on_progress is not None:
        for file in missing:
            download_file(dataset, file, folder, on_progress)
        return folder
    with _Bar() as report:
        for file in missing:
            download_file(dataset, file, folder, report)
    return folder


def resolve_builtin(data: str, mnist_dir: str | None = None) -> tuple[str, str | None]:
    """``(data, mnist_dir)`` with the built-in names that need downloaded files pointed at the
    cache: ``jsb-chorales`` becomes the cached JSON file; ``moving-mnist`` and ``seq-mnist``
    without ``mnist_dir`` get the cached MNIST folder. Anything else is returned as it is."""
    if data in BUILTIN_FILE_DATA:
        name, file_name = BUILTIN_FILE_DATA[data]
        return str(fetch(name) / file_name), mnist_dir
    if data in MNIST_DATA and mnist_dir is None:
        return data, str(fetch("mnist"))
    return data, mnist_dir


def check_writable(folder: Path) -> None:
    """Create ``folder`` and make sure a file can be written in it, or say how to choose another."""
    how = f"choose another folder with {DATA_ENV}=PATH (or --cache-dir PATH)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot use the data cache {folder}: a file is in the way of the folder; {how}") from None
    except OSError as error:
        raise WriteError(folder, error.errno, fix=how) from None


def download_file(dataset: Dataset, file: RemoteFile, folder: Path, on_progress: Progress) -> Path:
    """Download one file into ``folder`` (resuming a ``.part`` file left by an earlier
    attempt), verify it, and move it to its name; returns the final path."""
    url = dataset.url(file)
    target, part = folder / file.name, folder / f".{file.name}.part"
    _transfer(url, part, file, on_progress)
    if not _verified(part, file):
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: the downloaded file does not have the expected SHA-256 ({file.sha256[:16]}...), so it was "
            f"not kept (the server or a proxy sent other content). {_by_hand(url, target)}"
        )
    with _removed_on_failure(part), reported_as(target, part):
        with open(part, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(part, target)
    _fsync_directory(folder)
    return target


def _transfer(url: str, part: Path, file: RemoteFile, on_progress: Progress) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"vrnnkit/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    received = 0
    try:
        with urlopen(Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            if offset and not _resumes(response, offset):
                offset = 0  # the server sent the whole file: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with _open_part(part, append=offset > 0) as out:
                while chunk := response.read(CHUNK_BYTES):
                    _write(out, chunk, part)
                    received += len(chunk)
                    on_progress(file.name, offset + received, total or file.size)
            if total is not None and offset + received < total:
                raise http.client.IncompleteRead(b"", total - offset - received)
    except HTTPError as error:
        if error.code == 416 and offset:  # asked past the end: the .part file is not a prefix
            part.unlink(missing_ok=True)
            return _transfer(url, part, file, on_progress)
        raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}. {_by_hand(url, part.parent / file.name)}") from None
    except (URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as error:
        if isinstance(error, WriteError):
            raise
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"cannot download {url}: the transfer failed after {offset + received:,} bytes ({_words(reason)}); "
            f"run the command again to resume. {_by_hand(url, part.parent / file.name)}"
        ) from None
    return None


def _disk_error(error: OSError, part: Path) -> WriteError:
    """A write of the downloaded bytes that failed (a full disk): the part is removed, so
    nothing is left behind, and the message names the file it was for."""
    part.unlink(missing_ok=True)
    target = part.with_name(part.name[1:].removesuffix(".part"))
    return WriteError(target, error.errno, fix=f"free some space, or choose another folder with {DATA_ENV}=PATH")


@contextlib.contextmanager
def _removed_on_failure(part: Path) -> Iterator[None]:
    try:
        yield
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise


def _open_part(part: Path, *, append: bool):
    try:
        # Unbuffered: a full disk is found by the write of a chunk, never by a flush at close.
        return open(part, "ab" if append else "wb", buffering=0)
    except OSError as error:
        raise _disk_error(error, part) from None


def _write(out, chunk: bytes, part: Path) -> None:
    view = memoryview(chunk)
    try:
        while view:
            view = view[out.write(view):]
    except OSError as error:
        raise _disk_error(error, part) from None


def _resumes(response: http.client.HTTPResponse, offset: int) -> bool:
    """Whether the server answered a range request with the bytes from ``offset`` on."""
    content_range = response.headers.get("Content-Range", "")
    return response.status == 206 and content_range.startswith(f"bytes {offset}-")


def _words(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = str(reason).strip()
    return text or type(reason).__name__


def _by_hand(url: str, target: Path) -> str:
    return f"Offline? Download {url} by hand and put it in {target.parent} as {target.name}."


def _verified(path: Path, file: RemoteFile) -> bool:
    """Whether ``path`` is a file whose content has ``file``'s SHA-256 (gzip decompressed)."""
    if not path.is_file():
        return False
    digest = hashlib.sha256()
    try:
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return digest.hexdigest() == file.sha256


class _Bar:
    """A Rich progress bar on stderr, one task per file; a plain line per file elsewhere."""

    def __enter__(self) -> Progress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True, markup=False)
        self.progress = Progress(TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=console, disable=not console.is_terminal)
        self.progress.__enter__()
        tasks: dict[str, object] = {}

        def report(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = self.progress.add_task(name, total=total)
                if not console.is_terminal:
                    console.print(f"downloading {name}" + (f" ({total / 1e6:.1f} MB)" if total else ""), highlight=False)
            self.progress.update(tasks[name], completed=done, total=total)  # type: ignore[arg-type]

        return report

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)
