"""Bouncing balls, the generator of Sutskever, Hinton and Taylor (2009), vectorised over sequences.

The physics runs in a 10x10 box: balls of radius 1.2 start uniformly in [2, 10]^2, redrawn until
no ball overlaps a wall or another ball; Gaussian initial velocities are scaled so that the whole
velocity matrix of a sequence has norm 0.5; each frame advances two sub-steps of 0.5. After each
sub-step a ball past a wall gets the velocity component pointing back inside, and overlapping
balls exchange the velocity components along their line of centres (an elastic collision of
equal masses). Each pixel is the sum over balls of exp(-(d^2/r^2)^4), clipped at 1.
"""

from __future__ import annotations

import numpy as np

from vrnnkit.data.trajectories import Trajectories
from vrnnkit.errors import DataError

BOX = 10.0
RADIUS = 1.2
SPEED = 0.5  # norm of the (balls x 2) velocity matrix of one sequence
SUBSTEPS = 2
_RENDER_CHUNK_VALUES = 2**24  # float32 values per rendering chunk (64 MB per temporary)


def bouncing_balls(
    count: int,
    *,
    length: int = 100,
    n_balls: int = 3,
    size: int = 32,
    seed: int | np.random.Generator | None = None,
    return_trajectories: bool = False,
) -> np.ndarray | tuple[np.ndarray, Trajectories]:
    """Generate ``count`` bouncing-ball videos as float32 ``(N, T, H, W)`` in [0, 1].

    Add the channel axis with ``videos[:, :, None]`` to get the ``(N, T, 1, H, W)`` batch the
    model takes. With ``return_trajectories=True`` also return the ball centres and velocities
    in box units (the box is ``[0, 10]^2``, pixel ``(row, col)`` sits at ``(col, row) * 10 / size``).

    Args:
        count: number of sequences.
        length: frames per sequence (100 in the classic data set).
        n_balls: balls per sequence (3 in the classic data set).
        size: frame side in pixels (30 or 32 in the literature).
        seed: an integer seed or a ``numpy.random.Generator``; the same seed gives the same videos.
        return_trajectories: also return the :class:`Trajectories`.
    """
    for name, value in (("count", count), ("length", length), ("n_balls", n_balls), ("size", size)):
        if value < 1:
            raise DataError(f"bouncing_balls: expected {name} >= 1, found {value}")
    rng = np.random.default_rng(seed)
    positions = _initial_positions(rng, count, n_balls)
    velocities = rng.standard_normal((count, n_balls, 2))
    velocities *= SPEED / np.linalg.norm(velocities, axis=(1, 2), keepdims=True)

    path = np.empty((count, length, n_balls, 2))
    path_velocities = np.empty_like(path)
    for t in range(length):
        path[:, t] = positions
        path_velocities[:, t] = velocities
        for _ in range(SUBSTEPS):
            positions += velocities / SUBSTEPS
            _bounce_off_walls(positions, velocities)
            _collide(positions, velocities)

    videos = _render(path, size)
    if return_trajectories:
        return videos, Trajectories(path, path_velocities)
    return videos


def _initial_positions(rng: np.random.Generator, count: int, n_balls: int) -> np.ndarray:
    positions = np.empty((count, n_balls, 2))
    redraw = np.arange(count)
    while redraw.size:
        positions[redraw] = 2.0 + rng.random((redraw.size, n_balls, 2)) * (BOX - 2.0)
        redraw = redraw[~_valid_start(positions[redraw])]
    return positions


def _valid_start(positions: np.ndarray) -> np.ndarray:
    """True for configurations where every ball is inside the box and no two overlap."""
    inside = ((positions >= RADIUS) & (positions <= BOX - RADIUS)).all(axis=(1, 2))
    gaps = positions[:, :, None] - positions[:, None, :]
    distance = np.linalg.norm(gaps, axis=-1)
    n_balls = positions.shape[1]
    distance[:, np.arange(n_balls), np.arange(n_balls)] = np.inf
    return inside & (distance >= 2 * RADIUS).all(axis=(1, 2))


def _bounce_off_walls(positions: np.ndarray, velocities: np.ndarray) -> None:
    # abs() rather than a sign flip: a ball still past the wall on the next sub-step must not
    # be turned back out of the box.
    below, above = positions < RADIUS, positions > BOX - RADIUS
    velocities[below] = np.abs(velocities[below])
    velocities[above] = -np.abs(velocities[above])


def _collide(positions: np.ndarray, velocities: np.ndarray) -> None:
    """Exchange the velocity components along the line of centres of overlapping pairs."""
    n_balls = positions.shape[1]
    for i in range(n_balls):
        for j in range(i):
            gap = positions[:, i] - positions[:, j]
            distance = np.linalg.norm(gap, axis=-1, keepdims=True)
            touching = distance < 2 * RADIUS
            normal = gap / np.maximum(distance, 1e-12)
            along_i = (normal * velocities[:, i]).sum(axis=-1, keepdims=True)
            along_j = (normal * velocities[:, j]).sum(axis=-1, keepdims=True)
            exchange = np.where(touching, normal * (along_j - along_i), 0.0)
            velocities[:, i] += exchange
            velocities[:, j] -= exchange


def _render(path: np.ndarray, size: int) -> np.ndarray:
    """Draw ``(N, T, balls, 2)`` centres as ``(N, T, size, size)`` float32 frames."""
    count, length, n_balls, _ = path.shape
    grid = (np.arange(size) * (BOX / size)).astype(np.float32)
    videos = np.empty((count, length, size, size), np.float32)
    chunk = max(1, _RENDER_CHUNK_VALUES // (length * n_balls * size * size))
    for first in range(0, count, chunk):
        centres = path[first : first + chunk].astype(np.float32)
        # (d^2 / r^2) splits into a column part and a row part, each only (..., size) long.
        across = ((grid - centres[..., 0:1]) / RADIUS) ** 2
        down = ((grid - centres[..., 1:2]) / RADIUS) ** 2
        scaled = down[..., :, None] + across[..., None, :]
        np.square(scaled, out=scaled)
        np.square(scaled, out=scaled)
        np.negative(scaled, out=scaled)
        np.exp(scaled, out=scaled)
        np.minimum(scaled.sum(axis=2), 1.0, out=videos[first : first + chunk])
    return videos
