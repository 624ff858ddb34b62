"""Record episodes of a gymnasium environment as frames with the actions taken: ``vrnnkit data gym``.

Needs the ``gym`` extra (:data:`INSTALL_HINT`); gymnasium is imported only here, when a
recording starts. Rendering is headless (``render_mode="rgb_array"``, ``SDL_VIDEODRIVER=dummy``).
Each frame is the environment's observation when that is an RGB image (CarRacing's 96x96 view,
Atari's screen), else ``env.render()``; it is resized to ``size x size`` as soon as it arrives.

Memory stays bounded: each frame is appended to a temporary file beside the output as it is
recorded, and the ``.npz`` is assembled from that file at the end, one episode at a time,
streamed into the archive (compressed). Its arrays (:mod:`vrnnkit.data.actions`):

* ``frames``: uint8 ``(N, T, size, size, 3)``, episodes zero-padded to the longest;
* ``actions``: the actions actually taken, aligned so that ``actions[:, t]`` led to frame t:
  float32 ``(N, T, A)`` for a ``Box`` space; int64 class ids ``(N, T)`` for ``Discrete``, with
  ``action_classes`` so that they load one-hot by themselves (-1: no action, and padding);
  ``actions[:, 0]`` is the action that led to the first recorded frame, zeros (-1) at a reset;
* ``rewards``: float32 ``(N, T)``, the reward received with frame t;
* ``lengths``: int64 ``(N,)``, the recorded frames of each episode.

CarRacing opens with a zoom-in animation of about 50 frames: ``skip_frames`` (by default 50
for CarRacing, 0 otherwise) leaves them out, the policy acting all along.

``action_repeat`` (the world-model papers' "action repeat", Atari's frame skip) holds each
action for that many environment steps and records the frame after the last of them, with the
rewards summed: one recorded step then spans several of the environment's (CarRacing runs at
50 steps a second, so ten recorded steps are 0.2 s of driving at 1 and 0.8 s at 4), and an
action's effect on the next recorded frame grows with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vrnnkit.data.gym_policies import STICKINESS, make_policy
from vrnnkit.data.video import _convert
from vrnnkit.errors import ConfigError, is_count
from vrnnkit.io.atomic import atomic_path

INSTALL_HINT = "pip install 'vrnnkit[gym]'  (gymnasium, box2d, pygame, ale-py)"
CAR_RACING_ZOOM = 50
DEFAULT_MAX_STEPS = 1000


def import_gymnasium(env_id: str = "") -> Any:
    """The gymnasium module (with the Atari environments registered for an ``ALE/`` id), or a
    ConfigError that says how to install the extra."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off screen
    try:
        import gymnasium
    except ImportError:
        raise ConfigError(f"recording a gymnasium environment needs the gym extra: {INSTALL_HINT}") from None
    if env_id.startswith("ALE/"):
        try:
            import ale_py
        except ImportError:
            raise ConfigError(f"the Atari environment {env_id} needs ale-py: {INSTALL_HINT}") from None
        gymnasium.register_envs(ale_py)
    return gymnasium


def make_env(env_id: str) -> Any:
    """The environment ``env_id`` rendering to arrays, or a ConfigError naming what is missing."""
    gymnasium = import_gymnasium(env_id)
    try:
        return gymnasium.make(env_id, render_mode="rgb_array")
    except gymnasium.error.DependencyNotInstalled as err:
        raise ConfigError(f"{env_id} needs a package that is not installed ({err}); {INSTALL_HINT}") from None
    except gymnasium.error.Error as err:  # an unknown id, namespace or version
        raise ConfigError(f"cannot make the environment {env_id!r}: {err}") from None


def record(
    out: Path,
    env_id: str,
    episodes: int,
    *,
    policy: str = "heuristic",
    size: int = 64,
    max_steps: int | None = None,
    skip_frames: int | None = None,
    stickiness: float = STICKINESS,
    seed: int = 0,
    action_repeat: int = 1,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Record ``episodes`` episodes into the ``.npz`` file ``out`` (see the module's docstring).

    Args:
        policy: ``random``, ``sticky`` or ``heuristic`` (:mod:`vrnnkit.data.gym_policies`).
        size: the side of the square frames, in pixels.
        max_steps: frames recorded per episode at most (default: the environment's own limit,
            else 1000); an episode that ends sooner is shorter.
        skip_frames: steps left out at the start of each episode (default 50 for CarRacing).
        seed: seeds the environment (episode i is reset with ``seed + i``) and the policy.
        action_repeat: environment steps each recorded action is held for (the frame after the
            last of them is recorded; the rewards are summed).
        on_step: called as ``on_step(episode, frames recorded in it)`` after every frame.

    Returns:
        A summary: ``episodes``, ``frames`` (recorded in all), ``shape`` (of ``frames``), ``action_space``.
    """
    for name, value in (("episodes", episodes), ("size", size), ("action-repeat", action_repeat)):
        if not is_count(value):
            raise ConfigError(f"--{name} must be a positive whole number, got {value!r}")
    env = make_env(env_id)
    try:
        skip = (CAR_RACING_ZOOM if env_id.split("/")[-1].startswith("CarRacing") else 0) if skip_frames is None else skip_frames
        limit = max_steps or getattr(env.spec, "max_episode_steps", None) or DEFAULT_MAX_STEPS
        if not is_count(limit) or not is_count(skip, 0):
            raise ConfigError(f"--max-steps must be >= 1 and --skip-frames >= 0, got {limit!r} and {skip!r}")
        discrete = type(env.action_space).__name__ == "Discrete"
        if not discrete and type(env.action_space).__name__ != "Box":
            raise ConfigError(f"{env_id}: its {type(env.action_space).__name__} action space is not supported; "
                              "expected a Box (continuous) or Discrete action space")
        rng = np.random.default_rng(seed)
        actor = make_policy(policy, env_id, env.action_space, rng, stickiness)
        with _scratch(out) as scratch:
            recorder = _Recorder(scratch, size, discrete, env.action_space)
            for episode in range(episodes):
                _episode(env, actor, recorder, seed=seed + episode, skip=skip, limit=limit, repeat=action_repeat,
                         on_step=None if on_step is None else lambda done, e=episode: on_step(e, done))
            recorder.write(out, env.action_space)
    finally:
        env.close()
    return {"episodes": episodes, "frames": int(sum(recorder.lengths)), "shape": recorder.shape,
            "action_space": str(env.action_space)}


def _episode(env: Any, actor: Any, recorder: _Recorder, *, seed: int, skip: int, limit: int,
             on_step: Callable[[int], None] | None, repeat: int = 1) -> None:
    """Run one episode, recording ``limit`` frames at most after the first ``skip`` steps,
    each action held for ``repeat`` steps."""
    observation, _ = env.reset(seed=seed)
    actor.reset()
    action, reward, done = None, 0.0, False
    for _ in range(skip):
        action = actor(observation)
        observation, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            raise ConfigError(f"an episode of {env.spec.id} ended after {skip} steps or fewer, within --skip-frames; "
                              "lower --skip-frames")
    recorder.start()
    while True:
        frame = _frame(env, observation)
        recorder.add(frame, action, reward)
        if on_step is not None:
            on_step(recorder.lengths[-1])
        if done or recorder.lengths[-1] >= limit:
            break
        action, reward = actor(observation), 0.0
        for _ in range(repeat):
            observation, step_reward, terminated, truncated, _ = env.step(action)
            reward, done = reward + float(step_reward), terminated or truncated
            if done:
                break


def _frame(env: Any, observation: Any) -> np.ndarray:
    """The observation when it is an RGB image, else the rendered frame: ``(H, W, 3)`` uint8."""
    image = observation if isinstance(observation, np.ndarray) and observation.ndim == 3 \
        and observation.shape[-1] == 3 and observation.dtype == np.uint8 else env.render()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ConfigError(f"{env.spec.id}: expected RGB frames from render(), got an array of shape {image.shape}")
    return np.ascontiguousarray(image[..., :3].astype(np.uint8, copy=False))


class _Recorder:
    """Frames appended to one scratch file as they come; actions, rewards and lengths in memory
    (a few numbers a step); :meth:`write` assembles the ``.npz``."""

    def __init__(self, scratch: Path, size: int, discrete: bool, space: Any) -> None:
        self.size, self.discrete = size, discrete
        self.frames_file = (scratch / "frames.raw").open("wb")
        self.actions: list[list[Any]] = []
        self.rewards: list[list[float]] = []
        self.lengths: list[int] = []
        self.action_dim = 1 if discrete else int(np.prod(space.shape))
        self.shape: tuple[int, ...] = ()

    def start(self) -> None:
        self.actions.append([])
        self.rewards.append([])
        self.lengths.append(0)

    def add(self, frame: np.ndarray, action: Any, reward: float) -> None:
        self.frames_file.write(_convert(frame, grey=False, size=(self.size, self.size)).tobytes())
        self.actions[-1].append(action)  # None: nothing led to this frame (a reset)
        self.rewards[-1].append(float(reward))
        self.lengths[-1] += 1

    def write(self, out: Path, space: Any) -> None:
        """Write the ``.npz``: frames streamed from the scratch file, one episode at a time."""
        self.frames_file.close()
        count, steps = len(self.lengths), max(self.lengths)
        self.shape = (count, steps, self.size, self.size, 3)
        arrays = self._small_arrays(steps, space)
        frame_bytes = self.size * self.size * 3
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            with archive.open("frames.npy", "w", force_zip64=True) as member, open(self.frames_file.name, "rb") as source:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": self.shape}
                np.lib.format.write_array_header_2_0(member, header)
                for length in self.lengths:
                    for _ in range(length):
                        member.write(source.read(frame_bytes))
                    member.write(bytes(frame_bytes * (steps - length)))
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    def _small_arrays(self, steps: int, space: Any) -> dict[str, np.ndarray]:
        count = len(self.lengths)
        rewards = np.zeros((count, steps), np.float32)
        if self.discrete:
            actions = np.full((count, steps), -1, np.int64)
        else:
            actions = np.zeros((count, steps, self.action_dim), np.float32)
        for row, (taken, received) in enumerate(zip(self.actions, self.rewards, strict=True)):
            if self.discrete:
                actions[row, : len(taken)] = [-1 if a is None else int(a) - int(space.start) for a in taken]
            else:
                for step, a in enumerate(taken):
                    if a is not None:
                        actions[row, step] = np.clip(np.asarray(a, np.float32).reshape(-1), space.low.reshape(-1),
                                                     space.high.reshape(-1))
            rewards[row, : len(received)] = received
        arrays = {"actions": actions, "rewards": rewards, "lengths": np.asarray(self.lengths, np.int64)}
        if self.discrete:
            arrays["action_classes"] = np.array(int(space.n), np.int64)
        return arrays


@contextlib.contextmanager
def _scratch(out: Path) -> Any:
    """A temporary folder beside ``out`` (same disk), removed afterwards whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".recording", dir=out.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
