"""Array layouts: which axis of a stored array is which.

A layout is a string with one letter per axis: ``N`` sequences, ``T`` time, ``H`` and ``W`` the
frame's height and width, ``C`` channels, ``D`` the features of a vector sequence. Examples:
``"THW"``, ``"THWC"``, ``"NTHW"``, ``"NTHWC"``, ``"TNHW"`` (the published Moving MNIST file),
``"NTCHW"``, ``"TD"``, ``"NTD"``.

When no layout is given it is guessed from the shape. Where more than one layout fits, the first
one of :data:`GUESS_ORDER` is chosen and a :class:`LayoutWarning` names the others, so a user
sees the guess and knows which ``layout=`` to pass instead.
"""

from __future__ import annotations

import warnings

from vrnnkit.errors import DataError

MAX_CHANNELS = 4  # grey, grey+alpha, RGB, RGBA: a larger "channel" axis is a misread layout

# Tried in this order for a shape of each rank; a channel axis only fits when it holds 1-4 values.
GUESS_ORDER: dict[int, tuple[str, ...]] = {
    2: ("TD",),
    3: ("THW", "NTD"),
    4: ("THWC", "NTHW", "TNHW"),
    5: ("NTHWC", "NTCHW"),
}


class LayoutWarning(UserWarning):
    """The layout of an array was guessed from its shape and another layout would also fit."""


def is_image_layout(layout: str) -> bool:
    """True for frame layouts (with H and W), False for vector sequences (with D)."""
    return "H" in layout


def check_layout(layout: str, shape: tuple[int, ...], source: str) -> str:
    """Return ``layout`` in upper case after checking it is well formed and fits ``shape``."""
    layout = layout.upper()
    letters = set(layout)
    well_formed = (
        len(letters) == len(layout)
        and letters <= set("NTHWCD")
        and "T" in letters
        and (letters >= {"H", "W"}) != ("D" in letters)
        and not ("D" in letters and "C" in letters)
        and ("H" in letters) == ("W" in letters)
    )
    if not well_formed:
        raise DataError(
            f"{source}: layout {layout!r} is not valid; expected one letter per axis from N, T, "
            "H, W, C (frames) or N, T, D (vectors), each at most once, with T, e.g. 'NTHW', "
            "'THWC', 'TNHW' or 'NTD'"
        )
    if len(layout) != len(shape):
        raise DataError(
            f"{source}: layout {layout!r} expects a {len(layout)}-D array, "
            f"found a {len(shape)}-D array of shape {shape}"
        )
    if "C" in layout and shape[layout.index("C")] > MAX_CHANNELS:
        raise DataError(
            f"{source}: layout {layout!r} puts {shape[layout.index('C')]} channels on axis "
            f"{layout.index('C')} of shape {shape}; expected 1 to {MAX_CHANNELS} channels"
        )
    if 0 in shape:
        raise DataError(f"{source}: expected a non-empty array, found shape {shape}")
    return layout


def guess_layout(shape: tuple[int, ...], source: str) -> str:
    """Guess the layout of an array from its shape, warning when the guess is ambiguous."""
    candidates = GUESS_ORDER.get(len(shape))
    if candidates is None:
        raise DataError(
            f"{source}: expected a 2-D to 5-D array (e.g. (T, D), (T, H, W), (N, T, H, W), "
            f"(N, T, H, W, C)), found a {len(shape)}-D array of shape {shape}"
        )
    fitting = [layout for layout in candidates if _fits(layout, shape)]
    if not fitting:
        raise DataError(
            f"{source}: no known layout fits shape {shape}; tried {', '.join(candidates)}; "
            "pass layout= (--layout on the command line) to name the axes"
        )
    chosen = fitting[0]
    if len(fitting) > 1:
        warnings.warn(
            f"{source}: shape {shape} could be {' or '.join(fitting)}; read it as {chosen}. "
            f"Pass layout= (e.g. layout={fitting[1]!r}; --layout {fitting[1]} on the command line) to choose another reading.",
            LayoutWarning,
            stacklevel=3,
        )
    return chosen


def _fits(layout: str, shape: tuple[int, ...]) -> bool:
    return "C" not in layout or shape[layout.index("C")] in (1, 3, 4)
