"""The paths of the objects (balls, digits) in generated videos, for checks and analysis."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Trajectories(NamedTuple):
    """Per-frame object states of generated videos.

    Both arrays are float64 of shape ``(N, T, objects, 2)``, the last axis ``(x, y)`` with x
    along the frame's width (columns) and y along its height (rows). ``velocities[:, t]`` is
    the velocity in effect when frame ``t`` is drawn, i.e. the one that moves it towards ``t+1``.
    """

    positions: np.ndarray
    velocities: np.ndarray
