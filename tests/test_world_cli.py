"""World models through the CLI: training on frames with actions, predict/sample under plans,
eval with the actions shuffled, and the clear errors (exit 2, no traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.cli import app
from vrnnkit.data.actions import ActionSequences, save_action_data
from vrnnkit.data.pushed_ball import pushed_ball
from vrnnkit.training.actions import ActionWindows

runner = CliRunner()
FRAME = (1, 16, 16)


def _run(*args):
    return runner.invoke(app, list(map(str, args)), env={"COLUMNS": "200"})


@pytest.fixture
def pushed(tmp_path):
    path = tmp_path / "pushed.npz"
    save_action_data(path, pushed_ball(12, 10, size=16, seed=0), as_uint8=True)
    return path


@pytest.fixture
def world_ckpt(tmp_path):
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=FRAME, h_dim=8, z_dim=2, action_dim=2, action_embedding=4,
                                            encoder_options={"channels": 4}, decoder_options={"channels": 4}))
    return vrnnkit.save(model, tmp_path / "world.safetensors")


@pytest.fixture
def plain_ckpt(tmp_path):
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=FRAME, h_dim=8, z_dim=2,
                                            encoder_options={"channels": 4}, decoder_options={"channels": 4}))
    return vrnnkit.save(model, tmp_path / "plain.safetensors")


def _plans(tmp_path, shape=(2, 4, 2)):
    path = tmp_path / "plans.npy"
    np.save(path, np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
    return path


def _assert_clear_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def test_training_on_frames_with_actions_takes_the_action_width_from_the_data(tmp_path, pushed):
    out = tmp_path / "run"
    result = _run("train", pushed, "--steps", 2, "--seq-len", 5, "--h-dim", 8, "--z-dim", 2, "--batch-size", 4,
                  "--encoder-option", "channels=4", "--decoder-option", "channels=4", "--out", out)
    assert result.exit_code == 0, result.output
    model = vrnnkit.load(out / "model.safetensors")
    assert model.config.action_dim == 2
    assert (out / "samples.gif").is_file()


def test_windows_cut_the_actions_with_their_frames_and_mask_what_is_past_the_end():
    frames = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    actions = np.arange(2 * 6, dtype=np.float32).reshape(2, 6, 1)
    windows = ActionWindows(ActionSequences(frames, actions, np.array([6, 4])), 3, [0, 1])
    assert [w for w in windows.windows] == [(0, 0), (0, 3), (1, 0), (1, 3)]
    item = windows[3]
    np.testing.assert_array_equal(item["frames"].numpy(), frames[1, 3:6])
    np.testing.assert_array_equal(item["actions"].numpy(), actions[1, 3:6])
    np.testing.assert_array_equal(item["mask"].numpy(), [1, 0, 0])


def test_training_on_sequences_of_different_lengths_with_actions(tmp_path):
    data = pushed_ball(8, 10, size=16, seed=1)
    lengths = np.array([10, 6, 8, 10, 7, 10, 9, 10])
    path = tmp_path / "varlen.npz"
    save_action_data(path, ActionSequences(data.frames, data.actions, lengths), as_uint8=True)
    result = _run("train", path, "--steps", 2, "--seq-len", 10, "--h-dim", 8, "--z-dim", 2, "--batch-size", 4,
                  "--encoder-option", "channels=4", "--decoder-option", "channels=4", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output


def test_predict_under_the_recorded_actions_and_under_plans(tmp_path, pushed, world_ckpt):
    result = _run("predict", pushed, "--ckpt", world_ckpt, "--context", 4, "--samples", 2, "--out", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output
    out = tmp_path / "futures.npy"
    result = _run("predict", pushed, "--ckpt", world_ckpt, "--context", 4, "--samples", 3, "--actions", _plans(tmp_path),
                  "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 plans x 3" in result.output
    assert np.load(out).shape == (12, 6, 4, *FRAME)
    result = _run("predict", pushed, "--ckpt", world_ckpt, "--context", 4, "--actions", _plans(tmp_path), "--out", tmp_path / "plans.png")
    assert result.exit_code == 0 and (tmp_path / "plans.png").is_file(), result.output


def test_futures_under_different_plans_differ_and_the_same_plan_repeats(tmp_path, pushed, world_ckpt):
    model = vrnnkit.load(world_ckpt)
    with torch.no_grad():
        for parameter in model.action_input.parameters():
            parameter.normal_(0, 0.5)
    plans = np.zeros((3, 4, 2), np.float32)
    plans[1] = 1.0
    prediction = vrnnkit.api.predict_file(model, pushed, tmp_path / "f.npy", context=4, samples=1, actions=plans)
    futures = prediction.futures
    torch.testing.assert_close(futures[:, 0], futures[:, 2])
    assert not torch.allclose(futures[:, 0], futures[:, 1])


def test_sample_under_plans(tmp_path, world_ckpt):
    out = tmp_path / "s.npy"
    result = _run("sample", "--ckpt", world_ckpt, "--num", 2, "--actions", _plans(tmp_path), "--out", out)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (4, 4, *FRAME)


def test_eval_reports_the_figures_with_the_actions_shuffled_between_clips(tmp_path, pushed, world_ckpt):
    out = tmp_path / "report.json"
    result = _run("eval", pushed, "--ckpt", world_ckpt, "--context", 4, "--samples", 2, "--bound", "elbo", "--json", out)
    assert result.exit_code == 0, result.output
    assert "shuffled between clips" in result.output
    report = json.loads(out.read_text())
    assert report["actions"] == "recorded"
    assert set(report["shuffled_actions"]) == {"likelihood", "prediction"}
    assert len(report["shuffled_actions"]["prediction"]["psnr"]["mean_of_n"]["per_step"]) == 6


def test_eval_windows_score_every_window_of_each_sequence_to_its_own_length(tmp_path, world_ckpt):
    from vrnnkit.api._world import action_windows

    data = pushed_ball(3, 10, size=16, seed=1)
    path = tmp_path / "uneven.npz"
    save_action_data(path, ActionSequences(data.frames, data.actions, np.array([10, 7, 5])))
    model = vrnnkit.load(world_ckpt)
    frames, actions, groups = action_windows(model, path, 3)
    # 0, 3, 6 of the first sequence; 0, 3 of the second (6 + 3 > 7); 0 of the third.
    assert groups == ["sequence 0"] * 3 + ["sequence 1"] * 2 + ["sequence 2"]
    starts = [(0, 0), (0, 3), (0, 6), (1, 0), (1, 3), (2, 0)]
    expected = torch.stack([torch.as_tensor(data.frames[n, s : s + 3], dtype=torch.float32) for n, s in starts])
    torch.testing.assert_close(frames, expected.reshape(frames.shape), rtol=0, atol=0)
    torch.testing.assert_close(actions, torch.stack([torch.as_tensor(data.actions[n, s : s + 3]) for n, s in starts]))

    out = tmp_path / "report.json"
    result = _run("eval", path, "--ckpt", world_ckpt, "--context", 2, "--horizon", 1, "--samples", 2, "--bound", "elbo",
                  "--windows", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["num_sequences"] == 6 and report["sequence_length"] == 3
    assert list(report["prediction"]["per_group"]) == ["sequence 0", "sequence 1", "sequence 2"]
    assert len(report["shuffled_actions"]["prediction"]["psnr"]["mean_of_n"]["per_step"]) == 1
    # Without --windows each sequence is scored once, from its start, cut to the shortest.
    result = _run("eval", path, "--ckpt", world_ckpt, "--context", 2, "--horizon", 1, "--samples", 2, "--bound", "elbo", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["num_sequences"] == 3
    _assert_clear_error(_run("eval", path, "--ckpt", world_ckpt, "--context", 8, "--horizon", 3, "--windows"),
                        "no sequence has a window of 11 steps")
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((2, 10, 16, 16), np.float32))
    _assert_clear_error(_run("eval", clip, "--ckpt", world_ckpt, "--layout", "NTHW", "--windows"), "--windows applies")


@pytest.mark.parametrize("case", ["plan for a model without actions", "no actions for a world model", "frames without actions",
                                  "horizon past the recorded actions", "plan of the wrong width", "eval without actions",
                                  "flip"])
def test_bad_inputs_are_clear_errors(case, tmp_path, pushed, world_ckpt, plain_ckpt):
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((2, 10, 16, 16), np.float32))
    if case == "plan for a model without actions":
        result = _run("predict", pushed, "--ckpt", plain_ckpt, "--actions", _plans(tmp_path))
        _assert_clear_error(result, "trained without actions")
        result = _run("sample", "--ckpt", plain_ckpt, "--actions", _plans(tmp_path), "--out", tmp_path / "s.gif")
        _assert_clear_error(result, "trained without actions")
    elif case == "no actions for a world model":
        _assert_clear_error(_run("sample", "--ckpt", world_ckpt, "--out", tmp_path / "s.gif"), "--actions")
    elif case == "frames without actions":
        _assert_clear_error(_run("predict", clip, "--ckpt", world_ckpt, "--layout", "NTHW"), "without actions")
    elif case == "horizon past the recorded actions":
        _assert_clear_error(_run("predict", pushed, "--ckpt", world_ckpt, "--context", 4, "--horizon", 9), "records actions for 10 steps")
    elif case == "plan of the wrong width":
        result = _run("predict", pushed, "--ckpt", world_ckpt, "--actions", _plans(tmp_path, (4, 3)))
        _assert_clear_error(result, "(T, 2)")
    elif case == "eval without actions":
        _assert_clear_error(_run("eval", "bouncing-balls", "--ckpt", world_ckpt), "has no actions")
    else:
        result = _run("train", pushed, "--steps", 1, "--flip", "--out", tmp_path / "run")
        _assert_clear_error(result, "--flip")
