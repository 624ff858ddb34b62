"""Value checks shared by every reader: dtype, finiteness and the [0, 1] range.

Each check raises :class:`~vrnnkit.errors.DataError` with a message that names the source (a file
path or a description such as ``"array"``), what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vrnnkit.errors import DataError, file_problem


def require_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing, non-empty regular file."""
    problem = file_problem(path)
    if problem:
        raise DataError(f"{path}: expected a data file, found {problem}")


def check_numeric_dtype(dtype: np.dtype, source: str) -> None:
    """Raise DataError unless ``dtype`` is boolean, integer or real floating point."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise DataError(
            f"{source}: expected numeric values (bool, integer or real float), "
            f"found dtype {dtype} ({_dtype_kind_name(dtype)})"
        )


def check_finite(values: np.ndarray, source: str) -> None:
    """Raise DataError if a floating-point array holds NaN or infinite values."""
    if values.dtype.kind != "f":
        return
    finite = np.isfinite(values)
    if not finite.all():
        bad = values[~finite]
        raise DataError(
            f"{source}: expected finite values, found {np.isnan(bad).sum()} NaN and "
            f"{np.isinf(bad).sum()} infinite value(s)"
        )
    if values.dtype.itemsize > 4:
        limit = float(np.finfo(np.float32).max)
        too_large = int((np.abs(values) > limit).sum())
        if too_large:
            raise DataError(
                f"{source}: found {too_large} value(s) beyond float32's range (+/-{limit:.3g}), which vrnnkit "
                "computes in; rescale the data"
            )


def check_unit_range(values: np.ndarray | torch.Tensor, source: str) -> None:
    """Raise DataError unless every value is finite and in [0, 1].

    A Bernoulli likelihood needs targets in [0, 1]; the model calls this before training on
    data it did not load itself. Works on numpy arrays and on tensors on any device.
    """
    if isinstance(values, torch.Tensor):
        if values.numel() == 0:
            return
        finite = bool(torch.isfinite(values).all())
        low, high = float(values.min()), float(values.max())
    else:
        values = np.asarray(values)
        check_numeric_dtype(values.dtype, source)
        if values.size == 0:
            return
        finite = bool(np.isfinite(values).all())
        low, high = float(values.min()), float(values.max())
    if not finite:
        raise DataError(f"{source}: expected finite values in [0, 1], found NaN or infinite values")
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"{source}: expected values in [0, 1] (a Bernoulli likelihood needs them), "
            f"found values from {low:g} to {high:g}; rescale the data or use a Gaussian likelihood"
        )


def check_indices(indices: Sequence[int] | np.ndarray | None, size: int, source: str) -> np.ndarray:
    """Return ``indices`` as an integer array after checking each lies in ``[0, size)``.

    ``None`` means every index, ``0 .. size-1``.
    """
    if indices is None:
        return np.arange(size)
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or indices.dtype.kind not in "iu":
        raise DataError(
            f"{source}: expected indices as a non-empty 1-D sequence of integers, "
            f"found {indices.dtype} of shape {indices.shape}"
        )
    if indices.min() < 0 or indices.max() >= size:
        raise DataError(
            f"{source}: expected indices in [0, {size - 1}], "
            f"found values from {indices.min()} to {indices.max()}"
        )
    return indices


def to_float32(values: np.ndarray) -> np.ndarray:
    """Convert raw values to float32: uint8 maps to [0, 1] by /255, other dtypes keep their values."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255.0)
    return values.astype(np.float32, copy=False)


def _dtype_kind_name(dtype: np.dtype) -> str:
    names = {
        "c": "complex",
        "O": "Python objects",
        "U": "text",
        "S": "bytes",
        "V": "raw records",
        "M": "dates",
        "m": "time deltas",
    }
    return names.get(dtype.kind, "not numeric")
