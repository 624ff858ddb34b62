"""Experiment trackers: where ``vrnnkit train --log NAME`` sends its figures and samples,
besides ``metrics.jsonl``.

A tracker is one module in this package (its file name is the ``--log`` name) with a
``create(run_dir)`` function returning an object with these three methods:

    log_scalars(step, scalars)   # the numbers of a metrics.jsonl record, each as a float
    log_samples(step, clips)     # clips sampled at a validation: (N, T, *frame) in [0, 1] for images
    close()

``create`` imports the tracker's own package and raises ``ConfigError`` with the install
command when it is missing. Adding a tracker is adding one file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from vrnnkit.errors import ConfigError


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
    """The tracker ``name`` writing into ``run_dir``."""
    check_tracker(name)
    return importlib.import_module(f"{__name__}.{name}").create(run_dir)


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The figures of a metrics record, named as in metrics.jsonl ("step" is the x axis)."""
    return {key: float(value) for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
