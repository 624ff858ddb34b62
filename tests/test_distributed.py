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
TROUBLE = ("Traceback", "terminate called", "SIGABRT", "was killed")
"""What stderr holds when a process of a run fails or dies (issue 32: an abort at exit)."""


def _environment(*paths: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(map(str, (*paths, ROOT))))
    env.pop("WORLD_SIZE", None)
    return env


def _assert_clean(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [sign for sign in TROUBLE if sign in result.stderr], result.stderr[-3000:]


def _run(*commands: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Start every command at once (as separate nodes would), wait for all, kill all on timeout."""
    processes = [
        subprocess.Popen(c, cwd=cwd, env=env or _environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
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


def _gloo_threads(summary: Path) -> list[tuple[list[str], list[str]]]:
    """Each rank's gloo threads during training and once its process group was gone."""
    ranks = [summary, summary.with_name(f"{summary.name}.rank1")]
    return [(r["gloo_threads_during"], r["gloo_threads_after"]) for r in map(json.loads, (p.read_text() for p in ranks))]


def test_two_gloo_processes_hold_identical_weights_after_every_step_and_learn(tmp_path, bits):
    worker = str(ROOT / "tests" / "distributed_worker.py")
    out, summary = tmp_path / "run", tmp_path / "summary.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker]
    (first,) = _run([*torchrun, str(bits), str(out), str(summary), "12"], cwd=tmp_path)
    _assert_clean(first)
    # The worker made the group and destroyed it after vrnnkit.train: nothing vrnnkit left
    # kept it alive, so gloo's threads ended with it, not at interpreter exit (issue 32).
    for during, after in _gloo_threads(summary):
        assert during and after == [], (during, after)
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

    # Both processes resume from rank 0's files and go on in step; vrnnkit.train makes and
    # destroys the group this time, with the same end.
    (resumed,) = _run([*torchrun, str(bits), str(out), str(summary), "15", "resume", "vrnnkit-group"], cwd=tmp_path)
    _assert_clean(resumed)
    for during, after in _gloo_threads(summary):
        assert during and after == [], (during, after)
    result = json.loads(summary.read_text())
    assert result["step"] == 15 and result["start"]["step"] == 12
    assert len(result["differences"]) == 3 and max(result["differences"]) == 0.0


def test_every_process_leaves_the_same_way_when_the_run_fails(tmp_path, bits):
    # A learning rate that makes the loss non-finite at step 2: every process raises, meets
    # the others at the last barrier and destroys the group, gloo's threads with it.
    worker = str(ROOT / "tests" / "distributed_worker.py")
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker,
               str(bits), str(tmp_path / "run"), str(summary), "6", "vrnnkit-group", "diverge"]
    (result,) = _run(command, cwd=tmp_path)
    _assert_clean(result)
    for path in (summary, summary.with_name(f"{summary.name}.rank1")):
        rank = json.loads(path.read_text())
        assert "not finite at step 2" in rank["error"]
        assert rank["gloo_threads_during"] and rank["gloo_threads_after"] == [], rank


_ERROR_INSIDE_DDP = """
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests.distributed_worker import gloo_threads
from vrnnkit.training.distributed import _leaving


def fail_inside(wrapper):  # a frame that holds the wrapper, as DDP's own do
    raise RuntimeError("a peer is gone")


dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
assert gloo_threads(), "no gloo thread while the group exists: the check below would prove nothing"
try:
    with _leaving(owned=True):
        fail_inside(DistributedDataParallel(torch.nn.Linear(2, 2)))
except RuntimeError as error:
    assert "a peer is gone" in str(error), error
    assert not dist.is_initialized()
    left = gloo_threads()  # while the error and its traceback are still held
    assert left == [], left
    print("ended cleanly")
else:
    raise AssertionError("the error did not come through")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from Linux's /proc")
def test_an_error_inside_ddp_still_ends_the_group_and_its_threads(tmp_path):
    # In a fresh interpreter: inside pytest's process the result would depend on what earlier
    # tests imported (a clean clone's full suite once left a gloo_tcp_loop thread that way).
    (result,) = _run([sys.executable, "-c", _ERROR_INSIDE_DDP], cwd=tmp_path)
    _assert_clean(result)
    assert result.stdout.strip() == "ended cleanly", result.stdout


def test_nproc_launcher_trains_and_a_single_process_resumes_its_run(tmp_path, bits):
    out = tmp_path / "run été"
    common = ["--layout", "NTD", "--h-dim", "12", "--z-dim", "3", "--seq-len", "6", "--batch-size", "8", "--every", "2", "--device", "cpu"]
    (launched,) = _run([sys.executable, "-m", "vrnnkit", "train", str(bits), "--nproc", "2", "--steps", "4", *common, "--out", str(out)], cwd=tmp_path)
    _assert_clean(launched)
    assert "2 processes x 8 sequences = 16 per step" in launched.stdout
    assert launched.stdout.count("step 4/4") == 1  # rank 0 alone reports
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 8
    model = vrnnkit.load(out / "model.safetensors")
    assert model.config.h_dim == 12

    # Four more ends of a run, where a process once died one time in three (issue 32): two
    # resumes with a step to train, two with nothing left to do.
    for steps in (5, 6, 6, 6):
        (again,) = _run([sys.executable, "-m", "vrnnkit", "train", "--resume", str(out), "--nproc", "2", "--steps", str(steps)],
                        cwd=tmp_path)
        _assert_clean(again)
        assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == str(steps)

    (alone,) = _run([sys.executable, "-m", "vrnnkit", "train", "--resume", str(out), "--steps", "7"], cwd=tmp_path)
    _assert_clean(alone)
    assert "from step 6 to step 7" in alone.stdout
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "7"


def test_a_process_that_dies_after_the_run_finished_is_a_warning_and_exit_0(tmp_path, bits):
    # Every process of this run loads this sitecustomize; the training process of rank 1
    # aborts as its interpreter exits, after the run has finished and saved its last step.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import atexit, os\nif os.environ.get('RANK') == '1':\n    atexit.register(os.abort)\n", encoding="utf-8")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vrnnkit", "train", str(bits), "--layout", "NTD", "--nproc", "2", "--steps", "2", "--every", "2",
               "--h-dim", "12", "--z-dim", "3", "--seq-len", "6", "--batch-size", "8", "--device", "cpu", "--out", str(out)]
    (result,) = _run(command, cwd=tmp_path, env=_environment(hooks))
    assert result.returncode == 0, result.stderr[-3000:]
    warning = (f"warning: training process 1 was killed (SIGABRT) after the run had finished; step 2 is saved in {out} "
               "and the run is complete")
    assert [line for line in result.stderr.splitlines() if "training process" in line] == [warning], result.stderr[-3000:]
    assert "continue" not in result.stderr and "Traceback" not in result.stderr
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "2"


@pytest.mark.parametrize(("finished", "exitcodes", "code", "said"), [
    (12, {1: -6}, 0, ["warning: training process 1 was killed (SIGABRT) after the run had finished; step 12 is saved in RUN "
                      "and the run is complete"]),
    (None, {1: -6}, 1, ["error: training process 1 was killed (SIGABRT); the others stopped; continue from the last save "
                        "with: vrnnkit train --resume RUN --nproc 2"]),
    (12, {0: -9, 1: 2}, 2, ["error: training process 0 was killed (SIGKILL); the others stopped; continue from the last save "
                            "with: vrnnkit train --resume RUN --nproc 2"]),  # process 1 said its own error
    (12, {0: -15, 1: -6}, 0, ["warning: training process 1 was killed (SIGABRT) after the run had finished; step 12 is saved "
                              "in RUN and the run is complete"]),  # the launcher stopped process 0
    (None, {0: -15, 1: 1}, 1, []),  # process 1 said its own error; the launcher stopped process 0
    (None, {0: 130, 1: 130}, 130, []),
])
def test_the_launcher_says_what_became_of_the_run(capsys, finished, exitcodes, code, said):
    from types import SimpleNamespace

    from vrnnkit.training.launch import report_failures

    failures = {rank: SimpleNamespace(exitcode=exitcode) for rank, exitcode in exitcodes.items()}
    assert report_failures(failures, Path("RUN"), 2, finished) == code
    assert capsys.readouterr().err.splitlines() == said


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
        _assert_clean(result)
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
    assert not [sign for sign in TROUBLE if sign in stderr], stderr
    step = int(vrnnkit.read_metadata(out / "model.safetensors")["step"])
    assert f"interrupted: saved step {step} in {out}; continue with: vrnnkit train --resume {out} --nproc 2" in stderr
