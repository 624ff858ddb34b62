"""Policies that act in a gymnasium environment while ``vrnnkit data gym`` records it.

* ``random``: each step an action drawn uniformly from the action space.
* ``sticky``: a random action, repeated from the previous step with probability ``stickiness``
  (actions held for a while, whose effects a world model can see and learn).
* ``heuristic``: for CarRacing, a noisy driver that follows the road: it steers towards the grey
  road ahead of the car read from the frame, adds a smoothed random walk to the steering, keeps
  a little gas on and now and then brakes. (A random policy on CarRacing mostly stands still:
  gas and brake drawn at once cancel.) For other environments, ``sticky``.

Every policy draws from its own ``numpy.random.Generator``, so a seed gives the same actions.
Actions are numpy values the environment accepts: float32 arrays for a ``Box`` space, ints
for ``Discrete``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vrnnkit.errors import ConfigError

POLICIES = ("random", "sticky", "heuristic")
STICKINESS = 0.8


class RandomPolicy:
    """Uniform actions from a ``Box`` (unbounded sides drawn in [-1, 1]) or ``Discrete`` space;
    other spaces sample themselves, seeded from ``rng``."""

    def __init__(self, space: Any, rng: np.random.Generator) -> None:
        self.space, self.rng = space, rng
        self.kind = type(space).__name__
        if self.kind not in ("Box", "Discrete"):
            space.seed(int(rng.integers(2**31)))

    def reset(self) -> None:
        """Start an episode (a random policy keeps nothing between steps)."""

    def __call__(self, frame: np.ndarray) -> Any:
        if self.kind == "Box":
            low = np.where(np.isfinite(self.space.low), self.space.low, -1.0)
            high = np.where(np.isfinite(self.space.high), self.space.high, 1.0)
            return self.rng.uniform(low, high).astype(self.space.dtype)
        if self.kind == "Discrete":
            return int(self.space.start + self.rng.integers(self.space.n))
        return self.space.sample()


class StickyPolicy:
    """Another policy's action, repeated from the previous step with probability ``stickiness``."""

    def __init__(self, base: Any, rng: np.random.Generator, stickiness: float = STICKINESS) -> None:
        self.base, self.rng, self.stickiness = base, rng, stickiness
        self.previous: Any = None

    def reset(self) -> None:
        """Start an episode with a fresh action."""
        self.previous = None
        self.base.reset()

    def __call__(self, frame: np.ndarray) -> Any:
        if self.previous is None or self.rng.random() >= self.stickiness:
            self.previous = self.base(frame)
        return self.previous


class CarRacingDriver:
    """A noisy driver for CarRacing's continuous actions (steer in [-1, 1], gas and brake in
    [0, 1]) that reads the road from the 96x96 frame the environment returns."""

    LOOK_AHEAD = slice(46, 62)  # rows of the frame in front of the car (the car sits near rows 66-77)
    CENTRE = 48.0  # the car's column
    GAIN = 1.6

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.walk, self.braking = 0.0, 0

    def reset(self) -> None:
        """Start an episode: no steering bias, not braking."""
        self.walk, self.braking = 0.0, 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.walk = float(np.clip(0.85 * self.walk + 0.25 * self.rng.standard_normal(), -0.8, 0.8))
        steer = self.walk
        target = road_centre(frame, self.LOOK_AHEAD)
        if target is not None:
            steer += self.GAIN * (target - self.CENTRE) / self.CENTRE
        if self.braking == 0 and self.rng.random() < 0.03:
            self.braking = int(self.rng.integers(2, 6))
        if self.braking:
            self.braking -= 1
            gas, brake = 0.0, float(self.rng.uniform(0.3, 0.8))
        else:
            gas, brake = float(self.rng.uniform(0.05, 0.35)), 0.0
        return np.array([np.clip(steer, -1.0, 1.0), gas, brake], np.float32)


def road_centre(frame: np.ndarray, rows: slice) -> float | None:
    """The mean column of the road (grey pixels, channels within 20 of each other, 70..170)
    in ``rows`` of an ``(H, W, 3)`` uint8 frame, or None when no road is in sight."""
    band = frame[rows].astype(np.int16)
    grey = (np.ptp(band, axis=-1) < 20) & (band[..., 0] > 70) & (band[..., 0] < 170)
    if grey.sum() < 4:
        return None
    return float(np.nonzero(grey)[1].mean())


def make_policy(name: str, env_id: str, space: Any, rng: np.random.Generator, stickiness: float = STICKINESS) -> Any:
    """The policy ``name`` (one of :data:`POLICIES`) for an environment and its action space."""
    if name not in POLICIES:
        raise ConfigError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    if not 0.0 <= stickiness < 1.0:
        raise ConfigError(f"--stickiness must be in [0, 1), got {stickiness!r}")
    if name == "random":
        return RandomPolicy(space, rng)
    if name == "heuristic" and env_id.split("/")[-1].startswith("CarRacing") and type(space).__name__ == "Box" \
            and space.shape == (3,):
        return CarRacingDriver(rng)
    return StickyPolicy(RandomPolicy(space, rng), rng, stickiness)
