"""benchmarks/device_check.py, the one-command GPU check, run the way it runs on a CPU: so the
script itself is known to work before a GPU is lent (docs/performance.md, "GPU")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"
STAGES = ["environment", "cuda_tests", "train", "train_bf16", "train_compile", "throughput_vector", "throughput_conv", "evaluation"]


def _check(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict]:
    out = Path(args[args.index("--out") + 1])
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return done, json.loads((out / "device_check.json").read_text())


@pytest.mark.slow
def test_the_tiny_check_runs_every_stage_on_the_cpu(tmp_path):
    # About a minute on an idle 2-core machine, four with two other jobs on it: a deadline and a
    # timeout that a busy machine does not reach.
    done, report = _check("--device", "cpu", "--tiny", "--deadline", "900", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["schema"] == "vrnnkit.device_check/1" and report["complete"] and report["device"] == "cpu"
    assert [stage["name"] for stage in report["stages"]] == STAGES
    for stage in report["stages"]:
        assert stage["status"] == "ok", stage
        assert stage["seconds"] > 0
    by_name = {stage["name"]: stage["details"] for stage in report["stages"]}
    assert by_name["environment"]["torch"] == torch.__version__
    assert by_name["cuda_tests"]["counts"].get("passed", 0) >= 4 and "failed" not in by_name["cuda_tests"]["counts"]
    assert all(outcome == "PASSED" for outcome in by_name["cuda_tests"]["tests"].values())
    for name in ("train", "train_bf16", "train_compile"):
        assert by_name[name]["step"] == 4 and by_name[name]["loss"] > 0
    assert by_name["train"]["sample_bytes"] > 0  # `vrnnkit sample` read the run back
    rows = by_name["throughput_vector"]["rows"] + by_name["throughput_conv"]["rows"]
    assert [row["batch"] for row in rows] == [8, 32, 2, 4]
    for row in rows:
        assert set(row["sequences_per_s"]) == {"vrnnkit", "autograd loop", "plain loop"}
        assert all(rate > 0 for rate in row["sequences_per_s"].values())
        assert row["ratio"] > 0
    for row in by_name["throughput_conv"]["rows"]:  # the plain loop computes vrnnkit's loss
        assert row["loss_relative_difference"] < 1e-4
    evaluation = by_name["evaluation"]
    assert evaluation["predict_ms_per_frame"] > 0 and evaluation["model"] == "the train stage's model"
    assert evaluation["iwae"] >= evaluation["elbo"] - 1.0  # K=4: the bound is above the ELBO, up to noise
    assert evaluation["cpu_agrees"] and evaluation["cpu_relative_difference"] == 0  # a CPU run: the CPU against itself
    table = (tmp_path / "out" / "device_check.md").read_text()
    assert all(f"| {name} | ok |" in table for name in STAGES)
    assert "| vector | 32 |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_the_check_stops_after_the_environment_and_says_why(tmp_path):
    done, report = _check("--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), timeout=120)
    assert done.returncode == 2
    assert "sees no CUDA GPU" in done.stdout
    environment, *rest = report["stages"]
    assert environment["status"] == "failed" and "a CPU build of PyTorch" in environment["reason"]
    assert [stage["name"] for stage in rest] == STAGES[1:]
    assert all(stage["status"] == "skipped" for stage in rest)


def test_a_stage_over_its_budget_is_stopped_and_keeps_what_it_measured(tmp_path):
    done, report = _check("--device", "cpu", "--stages", "throughput_vector", "--stage-timeout", "20",
                          "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), timeout=120)
    # The full-size vector grid (3 implementations x 39 steps at batch 8 to 512) takes minutes on a CPU.
    assert done.returncode == 1, done.stdout
    [vector] = report["stages"]
    assert vector["status"] == "timeout" and "budget of 20 s" in vector["reason"]
    assert vector["details"]["model"] == "vector"  # written by the worker before it was stopped
    assert len(vector["details"].get("rows", [])) < 4
    assert report["complete"] and "| throughput_vector | timeout |" in (tmp_path / "out" / "device_check.md").read_text()
