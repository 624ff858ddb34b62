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


def _run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_example_trains_samples_predicts_and_evaluates(tmp_path):
    out = tmp_path / "run"
    stdout = _run_example("quickstart.py", "--steps", "6", "--out", str(out), "--eval-sequences", "4")
    assert "trained 6 steps" in stdout
    assert "predicted futures (2, 3, 10, 1, 32, 32)" in stdout
    assert "PSNR best of 10" in stdout and "copy-last baseline" in stdout
    assert (out / "model.safetensors").is_file() and (out / "quickstart-samples.gif").is_file()


def test_custom_block_example_registers_a_prior_and_lowers_the_loss():
    stdout = _run_example("custom_block.py", "--steps", "40")
    assert "registered priors: linear-gaussian, mlp, standard-normal" in stdout
    first, last = (float(v) for v in stdout.split("loss ")[1].split(" after")[0].split(" -> "))
    assert last < first
