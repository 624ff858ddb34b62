"""Crash safety and storage faults: a run killed at any moment, or stopped by a full or
read-only disk, keeps a checkpoint it can resume from and says what was not saved."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import ROOT, train_cli

runner = CliRunner()
TINY = ["--h-dim", "12", "--z-dim", "3", "--seq-len", "4", "--batch-size", "4", "--val-fraction", "0.2"]
TIMEOUT = 180


_train = train_cli


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


# ----------------------------------------------------------------------------- SIGKILL


def _command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vrnnkit", "train", *TINY, "--config", str(config), "--steps", "24", "--every", "1",
            "--keep", "2", "--out", str(out), *extra]


def _environment() -> dict[str, str]:
    # One thread: the same arithmetic in every process, so resumed runs can match bit for bit.
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_sigkill_at_random_moments_loses_nothing_and_ends_with_the_uninterrupted_weights(tmp_path, tiny_config):
    reference = tmp_path / "reference"
    done = subprocess.run(_command(tiny_config, reference), env=_environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr

    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    first = True
    while kills < 4:
        command = _command(tiny_config, run) if first else [sys.executable, "-m", "vrnnkit", "train", "--resume", str(run)]
        process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + TIMEOUT
            # Wait until this process has saved at least once past where it began, then a
            # random moment more: inside a step, a save, or a write of metrics.jsonl.
            start_step = _trainer_step(run)
            while _trainer_step(run) <= start_step and process.poll() is None:
                assert time.monotonic() < deadline, "training never saved"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            if process.poll() is not None:
                break  # it finished before the kill: the run is complete
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        kills += 1
        first = False
        # After every kill: a loadable model and a trainer state to resume from.
        assert (run / "trainer.safetensors").is_file()
        if (run / "model.safetensors").is_file():
            vrnnkit.load(run / "model.safetensors")
        for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]:
            json.loads(line)  # only the last line may be cut short, and resuming repairs it
    assert kills >= 2, "the run finished before it could be killed twice; slow it down"
    finished = subprocess.run([sys.executable, "-m", "vrnnkit", "train", "--resume", str(run)],
                              env=_environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert finished.returncode == 0, finished.stderr

    ours, theirs = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 25))
    assert _leftovers(run) == []
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000023.safetensors", "step-00000024.safetensors"]


def _trainer_step(run: Path) -> int:
    try:
        return int(vrnnkit.read_metadata(run / "model.safetensors")["step"])
    except Exception:
        return 0


# ----------------------------------------------------------------------------- storage faults


def _fail_nth_call(monkeypatch, target: str, n: int, error: OSError) -> None:
    module_name, name = target.rsplit(".", 1)
    module = sys.modules[module_name]
    original = getattr(module, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_a_full_disk_at_a_save_stops_with_what_was_not_saved_and_keeps_the_last_checkpoint(tmp_path, tiny_config, monkeypatch):
    _fail_nth_call(monkeypatch, "vrnnkit.training.run_dir.save_file", 2, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--steps", "6", "--every", "2", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "could not save step 4" in message and "no space left on the device" in message
    assert "steps 3-4 are not saved" in message and "checkpoint of step 2 is intact" in message
    assert f"vrnnkit train --resume {out}" in message
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "2"
    vrnnkit.load(out / "model.safetensors")
    assert _leftovers(out) == []
    monkeypatch.undo()
    resumed = _train("--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "6"


def test_a_failed_model_write_is_reported_the_same_way(tmp_path, tiny_config, monkeypatch):
    _fail_nth_call(monkeypatch, "vrnnkit.io.checkpoint.save_file", 2, OSError(errno.EIO, "Input/output error"))
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--steps", "6", "--every", "2", "--out", str(out))
    assert result.exit_code == 1
    assert "could not save step 4" in result.output and "an input/output error" in result.output
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "2"
    assert _leftovers(out) == []


def test_a_read_only_run_folder_is_reported_before_training(tmp_path, tiny_config, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o555)
    else:  # root writes anywhere: make the write fail as a read-only folder would
        import vrnnkit.io.atomic as atomic

        def read_only(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(out))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    try:
        result = _train(*TINY, "--config", str(tiny_config), "--steps", "2", "--out", str(out))
    finally:
        out.chmod(0o755)
    assert result.exit_code == 1
    assert "permission denied" in result.output and str(out) in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_output_path_that_is_a_file_is_refused(tmp_path, tiny_config, where):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--steps", "2", "--out", str(out))
    assert result.exit_code in (1, 2)
    assert "taken" in result.output and "Traceback" not in result.output
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------- kept checkpoints


def test_keep_k_keeps_the_last_saves_and_the_best_by_validation_loss(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--steps", "10", "--every", "2", "--keep", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-00000008.safetensors", "step-00000010.safetensors"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda r: r["val_loss"])
    header = vrnnkit.read_metadata(out / "best.safetensors")
    assert header["step"] == str(best["step"]) and float(header["val_loss"]) == best["val_loss"]
    for path in [out / "best.safetensors", *(out / "checkpoints").iterdir()]:
        vrnnkit.load(path)
    assert vrnnkit.read_metadata(out / "checkpoints" / kept[-1])["step"] == "10"


def test_keep_0_writes_no_checkpoint_folder(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--steps", "4", "--every", "2", "--keep", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert not (out / "checkpoints").exists()
