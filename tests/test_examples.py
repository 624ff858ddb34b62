"""The examples run as written (on small settings), so none of them rots."""

from __future__ import annotations

import subprocess
import sys

import torch

import vrnnkit
from tests.conftest import ROOT


def test_train_synthetic_example_trains_saves_and_reloads(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_synthetic.py"), "--steps", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "step   20" in result.stdout and "saved" in result.stdout
    model = vrnnkit.load(out / "model.safetensors")
    assert model.config.frame_shape == (1, 16, 16)
    assert vrnnkit.read_metadata(out / "model.safetensors")["example"] == "train_synthetic"
    assert model.sample(1, 3).shape == (1, 3, 1, 16, 16)
    assert torch.isfinite(next(model.parameters())).all()
