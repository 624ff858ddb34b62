"""Run folders written by vrnnkit 0.1.0 still load and resume.

tests/fixtures/run_0_1_0 was written by 0.1.0 itself (`vrnnkit train` on 24 bouncing-ball
clips, h_dim 8, z_dim 4, 2-channel convs, 4 steps, saving every 2; its samples.gif was
dropped to keep the fixture small). The figures below are what 0.1.0 printed for it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import vrnnkit
from tests.conftest import ROOT, train_cli

FIXTURE = ROOT / "tests" / "fixtures" / "run_0_1_0"


def test_a_0_1_0_model_loads_through_the_api():
    model = vrnnkit.load(FIXTURE / "model.safetensors")
    assert model.config.frame_shape == (1, 32, 32)
    assert (model.config.h_dim, model.config.z_dim, model.config.encoder_options) == (8, 4, {"channels": 2})
    clips = model.sample(2, 3, generator=torch.Generator().manual_seed(0))
    assert clips.shape == (2, 3, 1, 32, 32) and torch.isfinite(clips).all()


def test_a_0_1_0_run_folder_resumes_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    result = train_cli("--resume", str(run), "--steps", "6", "--quiet")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    # What 0.1.0 itself wrote when it resumed this folder to step 6.
    assert records[-1]["loss"] == pytest.approx(2724.277099609375, rel=1e-5)
    assert records[-1]["val_loss"] == pytest.approx(2716.935546875, rel=1e-5)
    assert vrnnkit.read_metadata(run / "model.safetensors")["step"] == "6"
