"""Moving MNIST, deterministic and stochastic, following the rules of SRVP (Franceschi et al. 2020).

Digits keep their native size on the canvas. Each starts at a real-valued position uniform in
``[0, canvas - digit]^2`` with an integer velocity uniform in ``[-4, 4]^2``; positions are rounded
only for drawing. A wall hit is resolved exactly: the digit moves to the wall and spends the rest
of the step with its new velocity. The deterministic variant reflects the velocity component;
the stochastic one draws a fresh velocity in ``[-4, 4]^2`` whose component across the wall is
forced away from it (magnitude 1 to 4, so the digit does leave the wall). Overlapping digits add
and clip at 255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vrnnkit.data.checks import check_indices
from vrnnkit.data.trajectories import Trajectories
from vrnnkit.errors import DataError

MAX_SPEED = 4


def moving_mnist(
    images: np.ndarray,
    count: int,
    *,
    length: int = 20,
    num_digits: int = 2,
    canvas_size: int = 64,
    stochastic: bool = False,
    indices: Sequence[int] | np.ndarray | None = None,
    seed: int | np.random.Generator | None = None,
    return_trajectories: bool = False,
) -> np.ndarray | tuple[np.ndarray, Trajectories]:
    """Generate ``count`` Moving MNIST videos as uint8 ``(N, T, canvas, canvas)``.

    Divide by 255 for values in [0, 1] (or pass the result to
    :class:`vrnnkit.data.SequenceArray` with ``layout="NTHW"``, which does it per sequence).

    Args:
        images: digit images, uint8 ``(K, h, w)``, e.g. the first array of
            :func:`vrnnkit.data.load_mnist`.
        count: number of videos.
        length: frames per video.
        num_digits: digits per video.
        canvas_size: side of the square canvas in pixels.
        stochastic: draw a fresh velocity at each wall hit instead of reflecting.
        indices: which of ``images`` to draw digits from (e.g. ``range(8000)`` for training
            videos and ``range(8000, 10000)`` for test videos, so the two never share a digit);
            all images when omitted.
        seed: an integer seed or a ``numpy.random.Generator``; the same seed gives the same videos.
        return_trajectories: also return the :class:`Trajectories`: top-left corners of the
            digits in pixels (real-valued, before rounding) and their velocities.
    """
    images = np.asarray(images)
    pool = _digit_pool(images, indices)
    digit_height, digit_width = images.shape[1:]
    if digit_height >= canvas_size or digit_width >= canvas_size:
        # A digit as large as the canvas has no room to move: every step would be a wall hit.
        raise DataError(
            f"moving_mnist: expected digits smaller than the {canvas_size}x{canvas_size} "
            f"canvas, found {digit_height}x{digit_width} digits"
        )
    for name, value in (("count", count), ("length", length), ("num_digits", num_digits)):
        if value < 1:
            raise DataError(f"moving_mnist: expected {name} >= 1, found {value}")

    rng = np.random.default_rng(seed)
    chosen = rng.choice(pool, size=(count, num_digits))
    limits = np.array([canvas_size - digit_width, canvas_size - digit_height], np.float64)
    positions = rng.uniform(0.0, 1.0, (count * num_digits, 2)) * limits
    velocities = rng.integers(-MAX_SPEED, MAX_SPEED + 1, (count * num_digits, 2)).astype(np.float64)

    path = np.empty((count, length, num_digits, 2))
    path_velocities = np.empty_like(path)
    for t in range(length):
        path[:, t] = positions.reshape(count, num_digits, 2)
        path_velocities[:, t] = velocities.reshape(count, num_digits, 2)
        _step(positions, velocities, limits, stochastic, rng)

    videos = _draw(images[chosen], path, canvas_size)
    if return_trajectories:
        return videos, Trajectories(path, path_velocities)
    return videos


def _digit_pool(images: np.ndarray, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise DataError(
            "moving_mnist: expected digit images as a non-empty uint8 array (K, height, width), "
            f"found {images.dtype} of shape {images.shape}"
        )
    return check_indices(indices, len(images), "moving_mnist")


def _step(
    positions: np.ndarray,
    velocities: np.ndarray,
    limits: np.ndarray,
    stochastic: bool,
    rng: np.random.Generator,
) -> None:
    """Advance every digit by one time step in place, resolving each wall hit exactly."""
    remaining = np.ones(len(positions))
    moving = np.arange(len(positions))
    # A digit may hit several walls within one step (a corner, or both walls of a narrow
    # canvas): handle the earliest hit, then continue with the time left.
    while moving.size:
        start, velocity, left = positions[moving], velocities[moving], remaining[moving]
        end = start + velocity * left[:, None]
        below, above = end < 0.0, end > limits
        with np.errstate(divide="ignore", invalid="ignore"):
            hit_time = np.where(
                below, -start / velocity, np.where(above, (limits - start) / velocity, np.inf)
            )
        first_hit = hit_time.min(axis=1)
        free = np.isinf(first_hit)
        positions[moving[free]] = end[free]

        hits = ~free
        time = first_hit[hits][:, None]
        at_wall = hit_time[hits] == time
        low_wall, high_wall = below[hits] & at_wall, above[hits] & at_wall
        new_positions = start[hits] + velocity[hits] * time
        new_positions[low_wall] = 0.0
        new_positions = np.where(high_wall, limits, new_positions)
        if stochastic:
            fresh = rng.integers(-MAX_SPEED, MAX_SPEED + 1, at_wall.shape).astype(np.float64)
            away = rng.integers(1, MAX_SPEED + 1, at_wall.shape).astype(np.float64)
            new_velocities = np.where(low_wall, away, np.where(high_wall, -away, fresh))
        else:
            new_velocities = np.where(at_wall, -velocity[hits], velocity[hits])

        moving = moving[hits]
        positions[moving] = new_positions
        velocities[moving] = new_velocities
        remaining[moving] = left[hits] - time[:, 0]


def _draw(digits: np.ndarray, path: np.ndarray, canvas_size: int) -> np.ndarray:
    """Add ``(N, digits, h, w)`` images at the rounded ``(N, T, digits, 2)`` corners, clip at 255."""
    count, length, num_digits, _ = path.shape
    height, width = digits.shape[2:]
    corners = np.rint(path).astype(np.int64)
    # Flat canvas offsets of one digit's pixels relative to its top-left corner.
    patch = (np.arange(height)[:, None] * canvas_size + np.arange(width)[None, :]).ravel()
    sequence_offset = np.arange(count)[:, None] * canvas_size**2
    videos = np.empty((count, length, canvas_size, canvas_size), np.uint8)
    canvas = np.empty(count * canvas_size**2, np.uint16)
    for t in range(length):
        canvas.fill(0)
        for d in range(num_digits):
            corner = corners[:, t, d, 1] * canvas_size + corners[:, t, d, 0]
            # Pixels of one digit never repeat an index, so a plain += adds each exactly once.
            canvas[sequence_offset + corner[:, None] + patch] += digits[:, d].reshape(count, -1)
        np.minimum(canvas, 255, out=canvas)
        videos[:, t] = canvas.reshape(count, canvas_size, canvas_size)
    return videos
