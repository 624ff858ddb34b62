"""Distributed training on the CPU: torchrun with 2 processes over gloo, the ``--nproc``
launcher, and a two-node rendezvous simulated on this machine.

Each test runs real processes under a hard timeout and kills their whole process group on
the way out, so a hung rendezvous fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vrnnkit
from tests.conftest import ROOT

TIMEOUT = 240


def _environment() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def _run(*commands: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Start every command at once (as separate nodes would), wait for all, kill all on timeout."""
    processes = [
        subprocess.Popen(c, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for c in commands
    ]
    results = []
    try:
        for command, process in zip(commands, processes, strict=True):
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bits(tmp_path_factory) -> Path:
    """64 binary vector sequences of 12 steps whose first 4 elements are mostly on and the
    rest mostly off: quick to learn, so a dozen steps take the loss well down."""
    rng = np.random.default_rng(0)
    on = np.where(np.arange(8) < 4, 0.95, 0.05)
    path = tmp_path_factory.mktemp("data") / "bits.npy"
    np.save(path, (rng.random((64, 12, 8)) < on).astype(np.float32))
    return path


def test_two_gloo_processes_hold_identical_weights_after_every_step_and_learn(tmp_path, bits):
    worker = str(ROOT / "tests" / "distributed_worker.py")
    out, summary = tmp_path / "run", tmp_path / "summary.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker]
    (first,) = _run([*torchrun, str(bits), str(out), str(summary), "12"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["world_size"] == 2 and result["step"] == 12
    assert result["start"]["effective_batch_size"] == 16
    assert len(result["differences"]) == 12 and max(result["differences"]) == 0.0
    losses = result["val_loss"]
    assert len(losses) == 12 and losses[-1] < 0.75 * losses[0], losses
    model = vrnnkit.load(out / "model.safetensors")
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "12"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000011.safetensors", "step-00000012.safetensors"]

    # Both processes resume from rank 0's files and go on in step.
    (resumed,) = _run([*torchrun, str(bits), str(out), str(summary), "15", "resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["step"] == 15 and result["start"]["step"] == 12
    assert len(result["differences"]) == 3 and max(result["differences"]) == 0.0


def test_nproc_launcher_trains_and_a_single_process_resumes_its_run(tmp_path, bits):
    out = tmp_path / "run été"
    common = ["--layout", "NTD", "--h-dim", "12", "--z-dim", "3", "--seq-len", "6", "--batch-size", "8", "--every", "2", "--device", "cpu"]
    (launched,) = _run([sys.executable, "-m", "vrnnkit", "train", str(bits), "--nproc", "2", "--steps", "4", *common, "--out", str(out)], cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 processes x 8 sequences = 16 per step" in launched.stdout
    assert launched.stdout.count("step 4/4") == 1  # rank 0 alone reports
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 8
    model = vrnnkit.load(out / "model.safetensors")
    assert model.config.h_dim == 12

    (alone,) = _run([sys.executable, "-m", "vrnnkit", "train", "--resume", str(out), "--steps", "6"], cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "from step 4 to step 6" in alone.stdout
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "6"


def test_nproc_launcher_reports_bad_input_once_without_starting_processes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vrnnkit", "train", "missing.npy", "--nproc", "2", "--out", str(tmp_path / "run")],
        cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert result.stderr.count("missing.npy") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_two_nodes_meet_through_a_c10d_rendezvous_on_localhost(tmp_path, bits):
    port = _free_port()
    out = tmp_path / "run"
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "vrnnkit-test",
         "-m", "vrnnkit", "train", str(bits), "--layout", "NTD", "--steps", "3", "--every", "3", "--h-dim", "12", "--z-dim", "3",
         "--seq-len", "6", "--batch-size", "8", "--device", "cpu", "--out", str(out)]
        for _ in range(2)
    ]
    results = _run(*commands, cwd=tmp_path)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    printed = "".join(r.stdout for r in results)
    assert "2 processes x 8 sequences = 16 per step" in printed and printed.count("step 3/3") == 1
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "3"


def test_ctrl_c_stops_every_process_after_a_save_and_the_launcher_exits_130(tmp_path, bits):
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "vrnnkit", "train", str(bits), "--layout", "NTD", "--nproc", "2", "--steps", "100000",
               "--every", "2", "--h-dim", "12", "--z-dim", "3", "--seq-len", "6", "--batch-size", "8", "--out", str(out)]
    process = subprocess.Popen(command, cwd=tmp_path, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training never logged"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    step = int(vrnnkit.read_metadata(out / "model.safetensors")["step"])
    assert f"interrupted: saved step {step} in {out}; continue with: vrnnkit train --resume {out} --nproc 2" in stderr
