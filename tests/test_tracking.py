"""vrnnkit train --log: the tracker interface, and TensorBoard event files read back with
TensorBoard's own reader (skipped when the tensorboard extra is absent)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import train_cli
from vrnnkit.tracking import known_trackers, scalars_of

TINY = ("--steps", "4", "--every", "2", "--quiet")


def test_the_known_trackers_are_the_modules_of_the_package():
    assert known_trackers() == ["tensorboard"]
    assert scalars_of({"step": 3, "loss": 1.5, "epoch": 0, "flag": True, "name": "x"}) == {"loss": 1.5, "epoch": 0.0}


def test_an_unknown_tracker_lists_the_known_ones_and_writes_nothing(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = train_cli("--config", str(tiny_config), *TINY, "--log", "wandb", "--out", str(out))
    assert result.exit_code == 2
    assert "unknown --log 'wandb'; known: tensorboard" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_a_missing_extra_says_how_to_install_it(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    out = tmp_path / "run"
    result = train_cli("--config", str(tiny_config), *TINY, "--log", "tensorboard", "--out", str(out))
    assert result.exit_code == 2
    assert "pip install 'vrnnkit[tensorboard]'" in result.output
    assert not out.exists()


def test_tensorboard_gets_the_metrics_and_sampled_clips(tmp_path, tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    out = tmp_path / "run"
    result = train_cli("--config", str(tiny_config), *TINY, "--log", "tensorboard", "--out", str(out))
    assert result.exit_code == 0, result.output
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {f"{'validation' if k.startswith('val_') else 'train'}/{k}" for k in scalars_of(records[-1])}
    assert {"train/loss", "train/nll", "train/kl", "train/kl_weight", "train/lr", "train/sequences_per_s",
            "train/bits_per_dim", "validation/val_loss", "validation/val_bits_per_dim"} <= expected
    assert set(events.Tags()["scalars"]) == expected
    for tag in expected:
        key = tag.split("/", 1)[1]
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-5)) for r in records]
    images = events.Images("samples")
    assert [image.step for image in images] == [2, 4]
    # four clips of 10 frames of 32x32, with 1-pixel gaps: a row per clip, a column per frame
    assert (images[0].height, images[0].width) == (4 * 33 - 1, 10 * 33 - 1)
