"""The one rule for counts and sizes: a whole number (not a bool) of at least ``minimum``."""

from __future__ import annotations

from typing import Any


def is_count(value: Any, minimum: int = 1) -> bool:
    """Whether ``value`` is an int (a bool is not) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_counts(**counts: Any) -> None:
    """Raise a ValueError naming the first of ``counts`` that is not a positive integer."""
    for name, value in counts.items():
        if not is_count(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
