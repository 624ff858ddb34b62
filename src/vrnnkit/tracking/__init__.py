"""Experiment trackers: where ``vrnnkit train --log NAME`` sends its figures and samples,
besides ``metrics.jsonl``.

A tracker is one module in this package (its file name is the ``--log`` name) with a
``create(run_dir)`` function returning an object with these three methods:

    log_scalars(step, scalars)   # the numbers of a metrics.jsonl record, each as a float
    log_samples(step, clips)     # clips sampled at a validation: (N, T, *frame) in [0, 1] for images
    close()

``create`` imports the tracker's own package and raises ``ConfigError`` with the install
command when it is missing. Adding a tracker is adding one file here.

Its figures are optional: ``open_tracker`` wraps a tracker so that a write that fails (a full
disk, a read-only folder) is one warning, after which the tracker is left alone and training
goes on (``metrics.jsonl`` keeps every record).
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from vrnnkit.errors import ConfigError, WriteError, WriteWarning


class Tracker(Protocol):
    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_samples(self, step: int, clips: Tensor) -> None: ...

    def close(self) -> None: ...


def known_trackers() -> list[str]:
    """The ``--log`` names: the modules of this package."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_"))


def check_tracker(name: str) -> None:
    """An unknown ``--log`` name lists the known ones."""
    if name not in known_trackers():
        raise ConfigError(f"unknown --log {name!r}; known: {', '.join(known_trackers())}")


def open_tracker(name: str, run_dir: Path) -> Any:
    """The tracker ``name`` writing into ``run_dir``, whose failed writes are one warning."""
    check_tracker(name)
    return OptionalTracker(importlib.import_module(f"{__name__}.{name}").create(run_dir), name)


class OptionalTracker:
    """A tracker whose first failed write (an OSError: a full disk, a read-only folder) is one
    warning; it is not called again, and the run goes on."""

    def __init__(self, tracker: Tracker, name: str) -> None:
        self.tracker, self.name, self.failed = tracker, name, False

    def _call(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        try:
            getattr(self.tracker, method)(*args)
        except OSError as error:
            self.failed = True
            what = (f"cannot write {error.path}: {error.cause}" if isinstance(error, WriteError)
                    else f"{error.strerror or error}")
            warnings.warn(f"--log {self.name} stopped: {what}. Training goes on; metrics.jsonl keeps every record",
                          WriteWarning, stacklevel=3)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._call("log_scalars", step, scalars)

    def log_samples(self, step: int, clips: Tensor) -> None:
        self._call("log_samples", step, clips)

    def close(self) -> None:
        self._call("close")


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The figures of a metrics record, named as in metrics.jsonl ("step" is the x axis)."""
    return {key: float(value) for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
