"""A ball pushed by a chosen force each step: controllable data with no extra dependency.

The world is the box of :mod:`vrnnkit.data.balls` (``[0, 10]^2``, balls of radius 1.2, drawn
the same way). Each step t >= 1 the action u_t, a 2-D force per ball with each component in
[-1, 1] (x to the right, y down the image), changes the velocity and then the position:

    v_t = FRICTION * v_{t-1} + GAIN * u_t
    p_t = p_{t-1} + v_t          (then the walls: bounce back, or stop there)

and frame t shows p_t. So u_t is the action taken before frame t (the alignment of
:mod:`vrnnkit.data.actions`) and u_0 is zeros: nothing preceded the first frame. Friction
halves the velocity each step, so the last two or three forces decide where the ball goes, far
more than the small random initial velocity does: a model that reads the actions predicts the
future well, one that ignores them cannot. Given the actions and the initial state everything is
deterministic. Forces are drawn uniformly from [-1, 1]^2 and held for a few steps (each step
keeps the previous force with probability ``hold``), so that a force's effect is seen long
enough to learn. Several balls each get their own force (two columns each) and pass over one
another without colliding.
"""

from __future__ import annotations

import numpy as np

from vrnnkit.data.actions import ActionSequences
from vrnnkit.data.balls import BOX, RADIUS, _render
from vrnnkit.errors import DataError

FRICTION = 0.5
GAIN = 0.5  # a force held at 1 moves a ball GAIN / (1 - FRICTION) = 1 box unit (3.2 px at 32x32) a step
INITIAL_SPEED = 0.2  # the standard deviation of each initial velocity component
WALLS = ("bounce", "stop")


def pushed_ball(
    n: int,
    steps: int,
    *,
    size: int = 32,
    balls: int = 1,
    walls: str = "bounce",
    hold: float = 0.6,
    seed: int | np.random.Generator | None = None,
) -> ActionSequences:
    """``n`` sequences of ``steps`` grey frames of pushed balls, with the forces that pushed them.

    Args:
        n: number of sequences.
        steps: frames per sequence (T).
        size: frame side in pixels.
        balls: balls per frame, each pushed by its own force (A = 2 * balls action columns).
        walls: ``"bounce"`` (a ball reflects off a wall) or ``"stop"`` (it stops there).
        hold: the probability that a step keeps the previous step's force.
        seed: an integer seed or a ``numpy.random.Generator``; the same seed gives the same data.

    Returns:
        :class:`ActionSequences` with float32 frames ``(n, steps, 1, size, size)`` in [0, 1] and
        float32 actions ``(n, steps, 2 * balls)``, ``actions[:, 0]`` zeros; lengths None.
    """
    for name, value in (("n", n), ("steps", steps), ("size", size), ("balls", balls)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"pushed_ball: expected {name} as a whole number >= 1, found {value!r}")
    if walls not in WALLS:
        raise DataError(f"pushed_ball: expected walls to be one of {', '.join(WALLS)}, found {walls!r}")
    if not 0.0 <= hold < 1.0:
        raise DataError(f"pushed_ball: expected hold in [0, 1), found {hold!r}")
    rng = np.random.default_rng(seed)
    forces = draw_forces(rng, n, steps, balls, hold)
    start = RADIUS + rng.random((n, balls, 2)) * (BOX - 2 * RADIUS)
    velocity = rng.normal(0.0, INITIAL_SPEED, (n, balls, 2))
    path = roll(start, velocity, forces, walls=walls)
    frames = _render(path, size)[:, :, None]
    names = ("force_x", "force_y") if balls == 1 else tuple(f"ball{b + 1}_{axis}" for b in range(balls) for axis in "xy")
    return ActionSequences(frames, forces.reshape(n, steps, 2 * balls).astype(np.float32), None, names)


def draw_forces(rng: np.random.Generator, n: int, steps: int, balls: int, hold: float) -> np.ndarray:
    """Forces ``(n, steps, balls, 2)`` uniform in [-1, 1]^2, each kept for the next step with
    probability ``hold``; step 0 is zeros."""
    forces = np.zeros((n, steps, balls, 2))
    fresh = rng.uniform(-1.0, 1.0, (n, steps, balls, 2))
    keep = rng.random((n, steps, balls, 1)) < hold
    for t in range(1, steps):
        forces[:, t] = fresh[:, t] if t == 1 else np.where(keep[:, t], forces[:, t - 1], fresh[:, t])
    return forces


def roll(start: np.ndarray, velocity: np.ndarray, forces: np.ndarray, *, walls: str = "bounce") -> np.ndarray:
    """The ball centres ``(n, steps, balls, 2)`` from the start ``(n, balls, 2)``, the initial
    velocity and the forces ``(n, steps, balls, 2)`` (``forces[:, 0]`` is not used: frame 0
    shows the start). Deterministic: the same inputs give the same path."""
    position, velocity = start.astype(np.float64).copy(), velocity.astype(np.float64).copy()
    path = np.empty(forces.shape)
    path[:, 0] = position
    low, high = RADIUS, BOX - RADIUS
    for t in range(1, forces.shape[1]):
        velocity = FRICTION * velocity + GAIN * forces[:, t]
        position = position + velocity
        below, above = position < low, position > high
        if walls == "bounce":
            position = np.where(below, 2 * low - position, np.where(above, 2 * high - position, position))
            velocity = np.where(below, np.abs(velocity), np.where(above, -np.abs(velocity), velocity))
            position = np.clip(position, low, high)  # a ball faster than the box is wide stays inside
        else:
            position = np.clip(position, low, high)
            velocity = np.where(below | above, 0.0, velocity)
        path[:, t] = position
    return path
