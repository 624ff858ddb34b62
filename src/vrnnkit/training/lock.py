"""One process at a time in a run folder: ``vrnnkit train --resume RUN`` holds a lock on it.

    with run_lock(Path("runs/latest")):
        ...   # a second `vrnnkit train --resume runs/latest` says who holds the folder

The lock is an advisory ``flock`` on ``RUN/.vrnnkit.lock``, which also records who holds it
(process id, host, start time). The OS releases it when the process ends, however it ends,
so a lock file left by a killed process is stale and the next run takes it over. Platforms
without ``fcntl`` (Windows) run without the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from vrnnkit.errors import TrainingError, WriteError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".vrnnkit.lock"
HELD_ENV = "VRNNKIT_RUN_LOCK_HELD"
"""Set by ``vrnnkit train --nproc`` for its processes: the run folder whose lock it holds for them."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; TrainingError names the holder when another
    process has it. A folder that does not exist yet needs no lock (nothing to interleave)."""
    if fcntl is None or not run_dir.is_dir() or os.environ.get(HELD_ENV) == str(run_dir.resolve()):
        yield
        return
    path = run_dir / LOCK_NAME
    try:
        # Unbuffered, so that closing it has nothing left to write (a full disk would refuse it).
        handle = open(path, "a+b", buffering=0)  # noqa: SIM115 (held for the whole block)
    except OSError as error:  # a read-only folder
        raise WriteError(path, error.errno) from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(
                f"run folder {run_dir} is in use by another vrnnkit train ({_holder(path)}); "
                "wait for it to finish, or stop it (it saves its state on Ctrl-C)"
            ) from None
        with contextlib.suppress(OSError):  # who holds it is a courtesy; a full disk may refuse it
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode("utf-8"))
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        handle.close()  # closing releases the lock


def _holder(path: Path) -> str:
    """Who holds the lock, from what it wrote: "process 123 on host, since 2026-01-01 12:00:00"."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"process {record['pid']} on {record['host']}, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"
