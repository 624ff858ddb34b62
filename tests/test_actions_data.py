"""Data with actions: the .npz reader and its errors, action plans, the pushed-ball generator,
and ``vrnnkit data gym`` (for real where gymnasium is installed; through a stand-in module
everywhere, which checks the recording, the alignment and the file it writes)."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vrnnkit.cli import app
from vrnnkit.data.action_values import one_hot
from vrnnkit.data.actions import (
    ActionSequences,
    has_actions,
    load_action_data,
    load_action_plan,
    save_action_data,
)
from vrnnkit.data.pushed_ball import pushed_ball, roll
from vrnnkit.errors import DataError

runner = CliRunner()
ENV = {"COLUMNS": "200", "VRNNKIT_DEBUG": None}
RNG = np.random.default_rng(0)


def _frames(*shape: int) -> np.ndarray:
    return (RNG.random(shape) * 255).astype(np.uint8)


def _cli(*args: str):
    return runner.invoke(app, [str(arg) for arg in args], env=ENV)


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize(("shape", "layout", "actions_shape"), [
    ((3, 6, 8, 8), "NTHW", (3, 6, 2)),
    ((3, 6, 8, 8, 3), "NTHWC", (3, 6, 2)),
    ((3, 6, 1, 8, 8), "NTCHW", (3, 6)),
    ((6, 3, 8, 8), "TNHW", (3, 6, 2)),  # the actions tell which axis is time
    ((6, 8, 8), "THW", (6, 2)),  # one sequence, no N axis
    ((3, 6, 5), "NTD", (3, 6, 2)),
])
def test_every_frame_layout_reads_channels_first_with_its_actions(tmp_path, shape, layout, actions_shape):
    frames, actions = _frames(*shape), RNG.standard_normal(actions_shape).astype(np.float32)
    np.savez(tmp_path / "d.npz", frames=frames, actions=actions)
    data = load_action_data(tmp_path / "d.npz")
    assert data.frames.dtype == np.uint8 and data.actions.dtype == np.float32 and data.lengths is None
    count, steps = (1, 6) if "N" not in layout else (3, 6)
    assert data.frames.shape[:2] == (count, steps) and data.actions.shape[:2] == (count, steps)
    expected = {"NTHW": lambda f: f[:, :, None], "NTHWC": lambda f: f.transpose(0, 1, 4, 2, 3), "NTCHW": lambda f: f,
                "TNHW": lambda f: f.transpose(1, 0, 2, 3)[:, :, None], "THW": lambda f: f[None, :, None],
                "NTD": lambda f: f}[layout](frames)
    np.testing.assert_array_equal(data.frames, expected)
    np.testing.assert_array_equal(data.actions, actions.reshape(count, steps, -1))


def test_a_round_trip_keeps_frames_actions_lengths_and_names(tmp_path):
    frames = RNG.random((4, 7, 3, 8, 8)).astype(np.float32)
    data = ActionSequences(frames, RNG.standard_normal((4, 7, 3)).astype(np.float32), np.array([7, 3, 1, 5]),
                           ("steer", "gas", "brake"))
    save_action_data(tmp_path / "d.npz", data)
    back = load_action_data(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.frames, frames)
    np.testing.assert_array_equal(back.actions, data.actions)
    np.testing.assert_array_equal(back.lengths, [7, 3, 1, 5])
    assert back.action_names == ("steer", "gas", "brake") and back.lengths.dtype == np.int64
    assert back.mask().sum() == 16 and back.sequence_array()[0].shape == (7, 3, 8, 8)
    save_action_data(tmp_path / "u.npz", data, as_uint8=True)
    small = load_action_data(tmp_path / "u.npz")
    assert small.frames.dtype == np.uint8 and np.abs(small.float_frames() - frames).max() <= 0.5 / 255 + 1e-6


def test_a_folder_of_files_of_different_lengths_is_padded_with_lengths(tmp_path):
    folder = tmp_path / "episodes"
    folder.mkdir()
    np.savez(folder / "ep10.npz", frames=_frames(2, 9, 8, 8), actions=np.ones((2, 9, 2), np.float32))
    np.savez(folder / "ep2.npz", frames=_frames(1, 4, 8, 8), actions=np.full((1, 4, 2), 2, np.float32))
    np.savez(folder / "ep3.npz", frames=_frames(1, 6, 8, 8), actions=np.zeros((1, 6, 2), np.float32),
             lengths=np.array([5]))
    data = load_action_data(folder)
    assert data.frames.shape == (4, 9, 1, 8, 8) and data.actions.shape == (4, 9, 2)
    np.testing.assert_array_equal(data.lengths, [4, 5, 9, 9])  # natural order: ep2, ep3, ep10
    assert (data.actions[0, :4] == 2).all() and (data.actions[0, 4:] == 0).all() and (data.frames[0, 4:] == 0).all()
    assert has_actions(folder)
    np.savez(folder / "other.npz", frames=_frames(1, 4, 8, 8), actions=np.zeros((1, 4, 3), np.float32))
    with pytest.raises(DataError, match=r"other\.npz.*3 action value.*first file.*2"):
        load_action_data(folder)


def test_discrete_actions_are_one_hot_encoded_with_the_number_of_classes(tmp_path):
    ids = np.array([[0, 2, 1, -1], [1, 1, 0, 2]])
    np.savez(tmp_path / "d.npz", frames=_frames(2, 4, 8, 8), actions=ids)
    data = load_action_data(tmp_path / "d.npz", action_classes=3)
    assert data.actions.shape == (2, 4, 3)
    np.testing.assert_array_equal(data.actions[0], [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])  # -1: no action
    np.savez(tmp_path / "own.npz", frames=_frames(2, 4, 8, 8), actions=ids, action_classes=np.array(3))
    np.testing.assert_array_equal(load_action_data(tmp_path / "own.npz").actions, data.actions)
    with pytest.raises(DataError, match="3 classes, and 4 were asked for"):
        load_action_data(tmp_path / "own.npz", action_classes=4)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.lists(st.integers(-1, 5), min_size=1, max_size=30))
def test_one_hot_has_one_one_per_action_and_none_for_no_action(classes, values):
    ids = np.clip(np.array(values), -1, classes - 1)
    encoded = one_hot(ids, classes, "ids", first_axes=("step",))
    assert encoded.shape == (len(ids), classes)
    np.testing.assert_array_equal(encoded.sum(axis=1), ids >= 0)
    np.testing.assert_array_equal(encoded.argmax(axis=1)[ids >= 0], ids[ids >= 0])


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 3), steps=st.integers(1, 5), columns=st.integers(1, 3), channels=st.sampled_from([1, 3]),
       lengths=st.booleans(), uint8=st.booleans())
def test_what_is_saved_loads_back_the_same(tmp_path_factory, count, steps, columns, channels, lengths, uint8):
    rng = np.random.default_rng(count * 100 + steps * 10 + columns)
    frames = rng.random((count, steps, channels, 8, 8)).astype(np.float32)
    if uint8:
        frames = (frames * 255).astype(np.uint8)
    data = ActionSequences(frames, rng.standard_normal((count, steps, columns)).astype(np.float32),
                           rng.integers(1, steps + 1, count) if lengths else None)
    path = tmp_path_factory.mktemp("round") / "d.npz"
    save_action_data(path, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what vrnnkit writes reads back without a guess, N = T included
        back = load_action_data(path)
    np.testing.assert_array_equal(back.frames, data.frames)
    np.testing.assert_array_equal(back.actions, data.actions)
    assert (back.lengths is None) == (data.lengths is None)
    if lengths:
        np.testing.assert_array_equal(back.lengths, data.lengths)


def _canary_object_array(tmp_path: Path) -> np.ndarray:
    class Canary:
        def __reduce__(self):
            return (open, (str(tmp_path / "UNPICKLED"), "w"))

    return np.array([[Canary()] * 4] * 2, dtype=object)


BAD = {  # name: (arrays of the .npz, load options, what the message must say)
    "fewer sequences": (dict(frames=_frames(3, 4, 8, 8), actions=np.zeros((2, 4, 2), np.float32)), {},
                        r"3 sequence\(s\) of 4 steps\) need actions of shape \(3, 4\) or \(3, 4, A\).*found actions of shape \(2, 4, 2\)"),
    "fewer steps": (dict(frames=_frames(3, 4, 8, 8), actions=np.zeros((3, 5), np.float32)), {},
                    r"frames of shape \(3, 4, 8, 8\).*found actions of shape \(3, 5\)"),
    "wrong rank": (dict(frames=_frames(3, 4, 8, 8), actions=np.zeros((3, 4, 2, 2), np.float32)), {},
                   r"found actions of shape \(3, 4, 2, 2\)"),
    "NaN": (dict(frames=_frames(3, 4, 8, 8), actions=np.array([[[0.0, np.nan]] * 4] * 3)), {}, r"12 NaN.*first at sequence 0, step 0"),
    "infinity": (dict(frames=_frames(3, 4, 8, 8), actions=np.full((3, 4), np.inf)), {}, "infinite"),
    "integers without classes": (dict(frames=_frames(3, 4, 8, 8), actions=np.ones((3, 4), np.int64)), {},
                                 r"integers.*no number of classes.*--action-classes"),
    "class out of range": (dict(frames=_frames(3, 4, 8, 8), actions=np.array([[0, 1, 2, 0]] * 2 + [[0, 0, 0, 7]])),
                           {"action_classes": 3}, r"class 7 at sequence 2, step 3 is out of range; expected class ids 0 to 2"),
    "fractional ids": (dict(frames=_frames(3, 4, 8, 8), actions=np.full((3, 4), 0.5)), {"action_classes": 3},
                       "fractional"),
    "no actions": (dict(frames=_frames(3, 4, 8, 8)), {}, r"no 'actions' among 'frames'"),
    "no frames": (dict(actions=np.zeros((3, 4), np.float32)), {}, "no 'frames'"),
    "unknown array": (dict(frames=_frames(3, 4, 8, 8), actions=np.zeros((3, 4), np.float32), action=np.zeros(3)), {},
                      "unknown arrays 'action'"),
    "lengths out of range": (dict(frames=_frames(3, 4, 8, 8), actions=np.zeros((3, 4), np.float32),
                                  lengths=np.array([4, 5, 1])), {}, "lengths from 1 to the 4 steps.*found 5 for sequence 1"),
    "float lengths": (dict(frames=_frames(3, 4, 8, 8), actions=np.zeros((3, 4), np.float32), lengths=np.ones(3)), {},
                      "3 integers"),
    "text actions": (dict(frames=_frames(3, 4, 8, 8), actions=np.array([["a"] * 4] * 3)), {}, "numeric"),
    "NaN frames": (dict(frames=np.full((3, 4, 8, 8), np.nan), actions=np.zeros((3, 4), np.float32)), {}, "NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_gives_a_clear_error_in_python_and_exit_2_on_the_command_line(tmp_path, case):
    arrays, options, message = BAD[case]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_action_data(tmp_path / "bad.npz", **options)
    flags = [f"--action-classes={options['action_classes']}"] if options else []
    result = _cli("data", "check-actions", tmp_path / "bad.npz", *flags)
    assert result.exit_code == 2, result.output
    assert "bad.npz" in result.output and "Traceback" not in result.output


def test_pickled_object_arrays_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "obj.npz", frames=_frames(2, 4, 8, 8), actions=_canary_object_array(tmp_path))
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"frames": 1}))
    for name, message in (("obj.npz", "unpickling"), ("pickle.npz", "not a zip|unreadable")):
        with pytest.raises(DataError, match=message):
            load_action_data(tmp_path / name)
        result = _cli("data", "check-actions", tmp_path / name)
        assert result.exit_code == 2 and "Traceback" not in result.output
    np.save(tmp_path / "plan.npy", _canary_object_array(tmp_path), allow_pickle=True)
    with pytest.raises(DataError, match="unpickl"):
        load_action_plan(tmp_path / "plan.npy", action_dim=2)
    assert not (tmp_path / "UNPICKLED").exists()


def test_has_actions_tells_files_with_actions_and_never_raises(tmp_path):
    np.savez(tmp_path / "with.npz", frames=_frames(1, 2, 8, 8), actions=np.zeros((1, 2)))
    np.savez(tmp_path / "without.npz", frames=_frames(1, 2, 8, 8))
    np.save(tmp_path / "plain.npy", _frames(1, 2, 8, 8))
    (tmp_path / "junk.npz").write_text("not a zip")
    (tmp_path / "empty").mkdir()
    assert has_actions(tmp_path / "with.npz")
    for name in ("without.npz", "plain.npy", "junk.npz", "missing.npz", "empty"):
        assert not has_actions(tmp_path / name), name
    assert not has_actions(tmp_path)  # a folder where some .npz files have no actions


def test_the_check_actions_command_describes_the_data(tmp_path):
    np.savez(tmp_path / "d.npz", frames=_frames(2, 5, 8, 8), actions=np.array([[0, 1, 2, 1, 0]] * 2),
             action_classes=np.array(3))
    result = _cli("data", "check-actions", tmp_path / "d.npz")
    assert result.exit_code == 0, result.output
    assert "2 sequences of 5 steps" in result.output and "3 action values a step" in result.output


# ----------------------------------------------------------------------------- plans


def test_action_plans_load_as_float_rows_of_the_models_action_size(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((6, 2)))
    np.save(tmp_path / "many.npy", np.ones((3, 6, 2), np.float32))
    np.save(tmp_path / "ids.npy", np.array([[0, 1, 2, -1], [2, 2, 2, 2]]))
    np.save(tmp_path / "scalar.npy", np.arange(5.0))
    np.savez(tmp_path / "plan.npz", frames=_frames(1, 6, 8, 8), actions=np.ones((6, 2)))
    assert load_action_plan(tmp_path / "one.npy", action_dim=2).shape == (6, 2)
    assert load_action_plan(tmp_path / "many.npy", action_dim=2, steps=4).shape == (3, 4, 2)
    assert load_action_plan(tmp_path / "scalar.npy", action_dim=1).shape == (5, 1)
    assert load_action_plan(tmp_path / "plan.npz", action_dim=2).dtype == np.float32
    ids = load_action_plan(tmp_path / "ids.npy", action_dim=3, action_classes=3)
    assert ids.shape == (2, 4, 3) and ids[0, 3].sum() == 0 and ids[1, :, 2].all()


@pytest.mark.parametrize(("name", "array", "options", "message"), [
    ("wide.npy", np.ones((6, 3)), {"action_dim": 2}, r"\(T, 2\) or \(K, T, 2\).*found shape \(6, 3\)"),
    ("ids.npy", np.array([0, 1]), {"action_dim": 2}, "--action-classes"),
    ("range.npy", np.array([0, 4]), {"action_dim": 3, "action_classes": 3}, "class 4 at step 1"),
    ("short.npy", np.ones((3, 2)), {"action_dim": 2, "steps": 5}, "3 steps; 5 steps were asked for"),
    ("nan.npy", np.full((3, 2), np.nan), {"action_dim": 2}, "NaN"),
    ("classes.npy", np.array([0, 1]), {"action_dim": 2, "action_classes": 3}, "3 action classes.*2 action value"),
    ("plan.txt", None, {"action_dim": 2}, r"\.npy or \.npz"),
])
def test_bad_action_plans_are_refused_clearly(tmp_path, name, array, options, message):
    path = tmp_path / name
    if array is None:
        path.write_text("0.1, 0.2\n")
    else:
        np.save(path, array)
    with pytest.raises(DataError, match=message):
        load_action_plan(path, **options)


# ----------------------------------------------------------------------------- the generator


def _centres(frames: np.ndarray) -> np.ndarray:
    """The intensity-weighted centre (x, y) of each grey frame of ``(N, T, 1, H, W)``."""
    grid = np.arange(frames.shape[-1])
    mass = frames.sum(axis=(-1, -2))
    return np.stack([(frames.sum(-2) * grid).sum(-1) / mass, (frames.sum(-1) * grid).sum(-1) / mass], -1)[:, :, 0]


def test_pushed_ball_is_deterministic_in_range_and_starts_with_no_action():
    first, again, other = (pushed_ball(6, 9, size=16, seed=seed) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.frames, again.frames)
    np.testing.assert_array_equal(first.actions, again.actions)
    assert not np.array_equal(first.actions, other.actions)
    assert first.frames.shape == (6, 9, 1, 16, 16) and first.actions.shape == (6, 9, 2)
    assert first.frames.dtype == np.float32 and first.frames.min() >= 0 and first.frames.max() <= 1
    assert (first.actions[:, 0] == 0).all() and np.abs(first.actions).max() <= 1
    assert first.action_names == ("force_x", "force_y")
    two = pushed_ball(2, 5, balls=2, walls="stop", seed=0)
    assert two.actions.shape == (2, 5, 4) and two.action_names[2:] == ("ball2_x", "ball2_y")


def test_the_ball_moves_in_the_direction_of_the_action_of_that_step():
    """u_t is applied before frame t: the move from frame t-1 to frame t follows u_t far more
    than u_{t-1} or u_{t+1} (forces drawn afresh each step, so only the alignment links them)."""
    data = pushed_ball(300, 12, size=32, hold=0.0, seed=1)
    moves = np.diff(_centres(data.frames), axis=1)  # (N, T-1, 2): frame t-1 -> t
    actions = data.actions[:, 1:]
    for axis in (0, 1):
        aligned = np.corrcoef(moves[..., axis].ravel(), actions[..., axis].ravel())[0, 1]
        late = np.corrcoef(moves[:, 1:, axis].ravel(), actions[:, :-1, axis].ravel())[0, 1]
        early = np.corrcoef(moves[:, :-1, axis].ravel(), actions[:, 1:, axis].ravel())[0, 1]
        assert aligned > 0.6 and aligned > late + 0.2 and aligned > early + 0.4, (aligned, late, early)


def test_an_action_changes_its_own_frame_and_later_ones_never_earlier_ones():
    rng = np.random.default_rng(0)
    start, velocity = rng.uniform(3, 7, (1, 1, 2)), np.zeros((1, 1, 2))
    forces = rng.uniform(-1, 1, (1, 8, 1, 2))
    path = roll(start, velocity, forces)
    np.testing.assert_array_equal(path, roll(start, velocity, forces))  # deterministic
    changed = forces.copy()
    changed[:, 5] = -forces[:, 5]
    other = roll(start, velocity, changed)
    np.testing.assert_array_equal(path[:, :5], other[:, :5])
    assert not np.allclose(path[:, 5], other[:, 5])
    stopped = roll(np.full((1, 1, 2), 5.0), velocity, np.ones((1, 30, 1, 2)), walls="stop")
    assert stopped.max() <= 10 - 1.2 + 1e-9


def test_the_pushed_ball_command_writes_a_file_the_reader_reads(tmp_path):
    out = tmp_path / "pushed.npz"
    result = _cli("data", "pushed-ball", "--sequences", "5", "--steps", "6", "--size", "16", "--out", out)
    assert result.exit_code == 0, result.output
    assert has_actions(out) and np.load(out)["frames"].shape == (5, 6, 1, 16, 16)
    data = load_action_data(out)
    assert data.frames.shape == (5, 6, 1, 16, 16) and data.frames.dtype == np.uint8 and data.actions.shape == (5, 6, 2)
    again = tmp_path / "again.npz"
    _cli("data", "pushed-ball", "--sequences", "5", "--steps", "6", "--size", "16", "--out", again)
    np.testing.assert_array_equal(load_action_data(again).frames, data.frames)
    result = _cli("data", "pushed-ball", "--sequences", "5", "--out", tmp_path / "pushed.npy")
    assert result.exit_code == 2 and ".npz" in result.output and "Traceback" not in result.output
    result = _cli("data", "pushed-ball", "--sequences", "5", "--walls", "wobble", "--out", out)
    assert result.exit_code == 2 and "bounce, stop" in result.output


# ----------------------------------------------------------------------------- gym


def test_without_the_gym_extra_the_command_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium raises ImportError
    result = _cli("data", "gym", "CarRacing-v3", "--out", tmp_path / "cars.npz")
    assert result.exit_code == 2, result.output
    assert "pip install 'vrnnkit[gym]'" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


class _Space:
    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)


class Discrete(_Space):
    def __init__(self, n: int) -> None:
        self.n, self.start = n, 0


class Box(_Space):
    def __init__(self) -> None:
        self.low, self.high, self.shape, self.dtype = np.full(2, -1.0), np.full(2, 1.0), (2,), np.float32


class _EchoEnv:
    """Shows the last action in its frame (the grey level is 40 x the class id + 20), ends
    after ``episode_steps`` steps."""

    def __init__(self, discrete: bool, episode_steps: int) -> None:
        self.action_space = Discrete(5) if discrete else Box()
        self.spec = types.SimpleNamespace(id="Echo-v0", max_episode_steps=None)
        self.episode_steps, self.steps, self.closed = episode_steps, 0, False

    def _observation(self, level: float) -> np.ndarray:
        return np.full((12, 10, 3), level, np.uint8)

    def reset(self, seed: int | None = None):
        self.steps = 0
        return self._observation(0), {}

    def step(self, action):
        self.steps += 1
        level = 40 * action + 20 if np.ndim(action) == 0 else 100 + 100 * float(np.asarray(action)[0])
        return self._observation(level), 1.0, False, self.steps >= self.episode_steps, {}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def echo_gym(monkeypatch):
    """A stand-in gymnasium module whose environments are :class:`_EchoEnv`."""
    made = []
    module = types.ModuleType("gymnasium")
    module.error = types.SimpleNamespace(DependencyNotInstalled=ImportError, Error=KeyError)

    def make(env_id, render_mode=None):
        if env_id == "Missing-v0":
            raise KeyError("no such environment")
        made.append(_EchoEnv(env_id.startswith("EchoDiscrete"), episode_steps=7))
        return made[-1]

    module.make = make
    monkeypatch.setitem(sys.modules, "gymnasium", module)
    return made


def test_gym_recording_aligns_each_action_with_the_frame_it_led_to(tmp_path, echo_gym):
    out = tmp_path / "echo.npz"
    result = _cli("data", "gym", "EchoDiscrete-v0", "--episodes", "3", "--policy", "random", "--size", "8",
                  "--max-steps", "5", "--skip-frames", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert echo_gym[0].closed and [p.name for p in tmp_path.iterdir()] == ["echo.npz"]  # no scratch left
    stored = np.load(out)
    assert stored["frames"].shape == (3, 5, 8, 8, 3) and int(stored["action_classes"]) == 5
    ids = stored["actions"]
    assert (ids >= 0).all()  # skipping a frame: the first recorded frame follows a real action
    np.testing.assert_array_equal(stored["frames"][:, :, 0, 0, 0], 40 * ids + 20)
    data = load_action_data(out)
    assert data.actions.shape == (3, 5, 5) and (data.actions.sum(-1) == 1).all()
    result = _cli("data", "gym", "EchoDiscrete-v0", "--episodes", "2", "--size", "8", "--skip-frames", "0",
                  "--out", out)
    stored = np.load(out)
    assert result.exit_code == 0 and (stored["actions"][:, 0] == -1).all()  # nothing led to a reset's frame
    np.testing.assert_array_equal(stored["lengths"], [8, 8])  # the reset frame and 7 steps


def test_gym_action_repeat_holds_each_action_and_records_the_frame_after_it(tmp_path, echo_gym):
    out = tmp_path / "repeat.npz"
    result = _cli("data", "gym", "EchoDiscrete-v0", "--episodes", "2", "--policy", "random", "--size", "8",
                  "--skip-frames", "0", "--action-repeat", "3", "--out", out)
    assert result.exit_code == 0, result.output
    stored = np.load(out)
    # 7 environment steps an episode: the reset frame, then after steps 3, 6 and 7 (the end cuts the last hold short).
    np.testing.assert_array_equal(stored["lengths"], [4, 4])
    np.testing.assert_array_equal(stored["rewards"][:, 1:], [[3, 3, 1], [3, 3, 1]])
    ids = stored["actions"]
    np.testing.assert_array_equal(stored["frames"][:, 1:, 0, 0, 0], 40 * ids[:, 1:] + 20)  # the held action shows
    assert _cli("data", "gym", "EchoDiscrete-v0", "--action-repeat", "0", "--out", out).exit_code == 2


def test_gym_recording_of_continuous_actions_pads_and_stops_at_episode_ends(tmp_path, echo_gym):
    out = tmp_path / "box.npz"
    result = _cli("data", "gym", "EchoBox-v0", "--episodes", "2", "--policy", "sticky", "--size", "8", "--out", out)
    assert result.exit_code == 0, result.output
    stored = np.load(out)
    assert stored["actions"].dtype == np.float32 and stored["actions"].shape == (2, 8, 2)
    assert (stored["actions"][:, 0] == 0).all() and np.abs(stored["actions"]).max() <= 1
    np.testing.assert_allclose(stored["frames"][:, 1:, 0, 0, 0], np.rint(100 + 100 * stored["actions"][:, 1:, 0]), atol=1)
    result = _cli("data", "gym", "Missing-v0", "--out", out)
    assert result.exit_code == 2 and "cannot make the environment 'Missing-v0'" in result.output


@pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None, reason="needs the gym extra (gymnasium)")
def test_a_tiny_car_racing_recording(tmp_path):
    pytest.importorskip("Box2D", reason="needs the gym extra (box2d)")
    out = tmp_path / "cars.npz"
    result = _cli("data", "gym", "CarRacing-v3", "--episodes", "1", "--max-steps", "4", "--skip-frames", "2",
                  "--size", "16", "--out", out)
    assert result.exit_code == 0, result.output
    data = load_action_data(out)
    assert data.frames.shape == (1, 4, 3, 16, 16) and data.actions.shape == (1, 4, 3)
    assert data.frames.std() > 0 and (data.actions[0, :, 1] > 0).any()  # a picture, and gas
