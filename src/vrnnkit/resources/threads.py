"""How many CPU threads PyTorch uses when nobody said.

PyTorch starts one thread per physical core. On a machine that other work keeps busy that is
the wrong choice for vrnnkit's small per-step products: every parallel region waits for its
slowest thread, and a thread that has lost its core to another process holds all the others
(on the 2-core development machine, with one core busy, a sequential-MNIST training step took
5.3 s on 2 threads and 0.12 s on 1; docs/troubleshooting.md). So when ``OMP_NUM_THREADS`` is
not set, the command line caps PyTorch's choice at the cores that are idle now, read from
the one-minute load average. Setting ``OMP_NUM_THREADS`` (or calling ``torch.set_num_threads``
in a program that uses the library) always wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch


def idle_cores(cores: int, load: float) -> int:
    """Cores not taken by runnable work, rounded, at least 1."""
    return max(1, min(cores, int(cores - load + 0.5)))


def choose_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """Cap ``torch.get_num_threads()`` at the idle cores unless ``OMP_NUM_THREADS`` is set;
    the thread count chosen, or None where the choice was left alone."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS"):
        return None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return None
    chosen = min(torch.get_num_threads(), idle_cores(os.cpu_count() or 1, load))
    if chosen < torch.get_num_threads():
        torch.set_num_threads(chosen)
    return chosen
