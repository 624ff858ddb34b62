"""Inputs built (or mistyped) to be huge: each is refused from what it claims, before the memory
it would take is allocated, with a one-line message, exit 1 or 2, no traceback and no file.

The memory these cases take is measured in benchmarks/bench_hostile_inputs.py; here a decoder
or builder that must not run is replaced by one that fails the test, and one case runs in a
subprocess under an address-space limit far below what the input claims.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.cli import app
from vrnnkit.errors import TrainingError
from vrnnkit.resources import budget
from vrnnkit.training.lock import LOCK_NAME, run_lock

runner = CliRunner()
ENV = {"COLUMNS": "200", "VRNNKIT_DEBUG": None, "VRNNKIT_MEMORY": None}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, 16, 16), h_dim=8, z_dim=4))
    return vrnnkit.save(model, tmp_path_factory.mktemp("ckpt") / "model.safetensors")


def _forged(ckpt: Path, out: Path, drop: str | None = None, **changes) -> Path:
    """``ckpt``'s tensors under a header config with ``changes`` (a tampered checkpoint)."""
    with safe_open(str(ckpt), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    config = {**json.loads(metadata["config"]), **changes}
    tensors.pop(drop, None)
    save_file(tensors, str(out), metadata={**metadata, "config": json.dumps(config)})
    return out


def _fails(args: list[str], *messages: str, code: int = 2, env: dict | None = None) -> str:
    result = runner.invoke(app, [str(a) for a in args], env={**ENV, **(env or {})})
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    for message in messages:
        assert message in output, output
    return output


def _no_build(monkeypatch):
    """Fail the test if a model is built on a real device."""
    original = vrnnkit.model.VRNN.__init__

    def guarded(self, config):
        assert torch.empty(0).device.type == "meta", "a model was built for real before the checks"
        original(self, config)

    monkeypatch.setattr(vrnnkit.model.VRNN, "__init__", guarded)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("h_dim", [30000, 200000])
def test_a_checkpoint_header_claiming_a_huge_model_is_refused_unbuilt(tmp_path, ckpt, monkeypatch, h_dim):
    forged = _forged(ckpt, tmp_path / "forged.safetensors", h_dim=h_dim, feature_dim=h_dim, latent_feature_dim=h_dim)
    _no_build(monkeypatch)
    _fails(["sample", "--ckpt", forged, "--out", tmp_path / "s.gif"], f"h-dim {h_dim}", "does not describe these weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forged.safetensors"]


def test_a_checkpoint_whose_config_disagrees_names_the_first_tensor(tmp_path, ckpt, monkeypatch):
    _no_build(monkeypatch)
    shapes = _forged(ckpt, tmp_path / "z.safetensors", z_dim=5)
    _fails(["sample", "--ckpt", shapes, "--out", tmp_path / "s.gif"], "tensor 'prior.head.linear.weight' has shape [8, 8]",
           "the config describes [10, 8]")
    missing = _forged(ckpt, tmp_path / "missing.safetensors", drop="phi_z.0.bias")
    _fails(["sample", "--ckpt", missing, "--out", tmp_path / "s.gif"], "tensor 'phi_z.0.bias' that the file lacks")
    with pytest.raises(vrnnkit.CheckpointError, match=r"tensor 'phi_z\.0\.bias'"):
        vrnnkit.load(missing)


def test_a_checkpoint_loads_onto_the_meta_model_bit_for_bit(ckpt):
    model = vrnnkit.load(ckpt)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    with safe_open(str(ckpt), framework="pt") as handle:
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, handle.get_tensor(name)), name


def test_loading_a_forged_checkpoint_stays_within_a_small_address_space(tmp_path, ckpt):
    """In a subprocess whose address space may grow by 1 GiB at most, the forged checkpoint of
    the issue (h_dim 30000: 21.5 GB when the model was built before the check) is refused."""
    forged = _forged(ckpt, tmp_path / "forged.safetensors", h_dim=30000, feature_dim=30000, latent_feature_dim=30000)
    script = (
        "import resource, re, sys, vrnnkit\n"
        "mapped = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, resource.RLIM_INFINITY))\n"
        "try:\n    vrnnkit.load(sys.argv[1])\nexcept vrnnkit.CheckpointError as error:\n    print('refused:', error)\n"
    )
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to read the mapped address space")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(forged)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "does not describe these weights" in done.stdout


# ----------------------------------------------------------------------------- options


def test_a_huge_h_dim_is_refused_with_the_figures(tmp_path, monkeypatch):
    _no_build(monkeypatch)
    output = _fails(["train", "--h-dim", "10000000", "--num-sequences", "20", "--steps", "1", "--out", tmp_path / "run"],
                    "a model with h-dim 10000000", "for its parameters", "available", "VRNNKIT_MEMORY=off", "--force")
    assert len(output.strip().splitlines()) <= 8
    assert not (tmp_path / "run").exists()


def test_a_billion_generated_sequences_are_refused_before_generating(tmp_path, monkeypatch):
    monkeypatch.setattr("vrnnkit.data.sources.bouncing_balls", lambda *a, **k: pytest.fail("generated"))
    _fails(["train", "--num-sequences", "1000000000", "--out", tmp_path / "run"], "1,000,000,000 bouncing-balls sequences",
           "lower --num-sequences")
    _fails(["eval", "--num-sequences", "1000000000", "--ckpt", tmp_path / "none.safetensors"], "no such file")
    assert not (tmp_path / "run").exists()


def test_sampling_or_predicting_more_than_memory_holds_is_refused(tmp_path, ckpt, monkeypatch):
    monkeypatch.setattr(vrnnkit.VRNN, "sample", lambda *a, **k: pytest.fail("sampled"))
    monkeypatch.setattr(vrnnkit.VRNN, "predict", lambda *a, **k: pytest.fail("predicted"))
    _fails(["sample", "--ckpt", ckpt, "--num", "1000000", "--steps", "1000000", "--out", tmp_path / "s.gif"],
           "1,000,000 clips of 1,000,000 frames needs", "lower --num or --steps")
    np.save(tmp_path / "clip.npy", np.zeros((2, 8, 16, 16), np.uint8))
    _fails(["predict", tmp_path / "clip.npy", "--ckpt", ckpt, "--samples", "1000000000", "--out", tmp_path / "p.gif"],
           "1,000,000,000 futures of 3 frames for each of 2 sequences")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npy"]


def test_the_memory_to_assume_comes_from_the_environment(tmp_path, monkeypatch):
    _no_build(monkeypatch)
    _fails(["train", "--h-dim", "2000", "--num-sequences", "20", "--out", tmp_path / "run"], "this machine has 64.0 MiB available",
           env={"VRNNKIT_MEMORY": "64M"})
    monkeypatch.setenv("VRNNKIT_MEMORY", "64M")
    assert budget.available_memory() == 64 * 2**20
    monkeypatch.setenv("VRNNKIT_MEMORY", "off")
    assert budget.available_memory() is None and not budget.checks_enabled()
    monkeypatch.delenv("VRNNKIT_MEMORY")
    assert budget.available_memory() > 0
    assert budget.parse_bytes("1.5G") == 3 * 2**29


def test_force_skips_the_check_and_an_allocation_failure_is_one_line(tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        assert os.environ.get("VRNNKIT_MEMORY") == "off"  # --force turned the check off
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3600000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr("vrnnkit.api.train", no_memory)
    output = _fails(["train", "--h-dim", "30000", "--force", "--out", tmp_path / "run"], "out of memory (DefaultCPUAllocator",
                    "--debug", code=1)
    assert len(output.strip().splitlines()) == 1, output
    monkeypatch.delenv("VRNNKIT_MEMORY", raising=False)
    monkeypatch.setattr("vrnnkit.api.train", lambda **k: np.empty(2**50))  # numpy's _ArrayMemoryError
    _fails(["train", "--out", tmp_path / "run"], "out of memory (Unable to allocate", code=1)
    result = runner.invoke(app, ["--debug", "train", "--out", str(tmp_path / "run")], env=ENV)
    assert isinstance(result.exception, MemoryError)
    monkeypatch.setattr("vrnnkit.api.train", lambda **k: (_ for _ in ()).throw(RuntimeError("a bug, not memory")))
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run")], env=ENV)
    assert isinstance(result.exception, RuntimeError), "other RuntimeErrors are bugs: they keep their traceback"


# ----------------------------------------------------------------------------- media and arrays


def _gif(path: Path, side: int, frames: int = 3) -> Path:
    images = [Image.new("P", (side, side), i) for i in range(frames)]
    for image in images:
        image.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * (253 * 3))
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def _mp4(path: Path, side: int, frames: int) -> Path:
    import imageio.v3 as iio

    clip = np.zeros((frames, side, side, 3), np.uint8)
    clip[:, :, : side // 2] = 200
    iio.imwrite(path, clip, plugin="FFMPEG", fps=10)
    return path


def _no_decoding(monkeypatch):
    monkeypatch.setattr("vrnnkit.data.video.video_frames", lambda path: pytest.fail(f"{path} was decoded"))


def test_a_video_too_large_for_the_model_is_refused_before_decoding(tmp_path, ckpt, monkeypatch):
    gif = _gif(tmp_path / "big.gif", 1200)
    mp4 = _mp4(tmp_path / "wide.mp4", 64, 12)
    _no_decoding(monkeypatch)
    for video in (gif, mp4):
        _fails(["predict", video, "--ckpt", ckpt, "--out", tmp_path / "p.gif"], "(from its metadata)", "--size 16x16 --grey")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.gif", "wide.mp4"]


def test_a_decompression_bomb_gif_is_refused_from_its_metadata(tmp_path, ckpt, monkeypatch):
    """The issue's bomb is 3 frames of 12000x12000 in 107 KB; here the frame limit is lowered
    to fit a small file (benchmarks/bench_hostile_inputs.py runs the full-size one)."""
    gif = _gif(tmp_path / "bomb.gif", 300)
    monkeypatch.setattr("vrnnkit.data.video.MAX_FRAME_PIXELS", 200 * 200)
    _no_decoding(monkeypatch)
    for args in (["predict", gif, "--ckpt", ckpt, "--resize"], ["train", gif, "--size", "16"], ["data", "convert", gif, "--size", "16"]):
        _fails([*args, "--out", tmp_path / "out.npy"], "frames of 300x300 pixels", "decompression bomb")
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.gif"]


def test_an_mp4_longer_than_memory_is_refused_and_a_lying_one_stopped(tmp_path, ckpt, monkeypatch):
    mp4 = _mp4(tmp_path / "long.mp4", 32, 40)
    small = {"VRNNKIT_MEMORY": "20K"}
    with monkeypatch.context() as patch:
        _no_decoding(patch)
        _fails(["predict", mp4, "--ckpt", ckpt, "--size", "16", "--out", tmp_path / "p.gif"], "40 frames at 16x16", "in memory",
               env=small)
    monkeypatch.setattr("vrnnkit.data.video.probe", lambda path: None)  # metadata that tells nothing
    _fails(["predict", mp4, "--ckpt", ckpt, "--size", "16", "--out", tmp_path / "p.gif"], "as many as fit in the memory", env=small)
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]


def _header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_array_headers_claiming_terabytes_are_refused_before_allocation(tmp_path, ckpt, monkeypatch):
    claim = (1000, 1000, 1000, 1000)  # 8 TB of float64
    (tmp_path / "tb.npy").write_bytes(_header(claim) + bytes(1000))
    with zipfile.ZipFile(tmp_path / "tb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _header(claim) + bytes(1000))
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("allocated"))
    for name, message in (("tb.npy", "(the file is truncated)"), ("tb.npz", "claims 8,000,000,000,000 bytes")):
        _fails(["predict", tmp_path / name, "--ckpt", ckpt, "--out", tmp_path / "p.gif"], message)
    with zipfile.ZipFile(tmp_path / "zeros.npz", "w", zipfile.ZIP_DEFLATED) as archive:  # a real array, larger than memory
        archive.writestr("x.npy", _header((64, 1024)) + bytes(64 * 1024 * 8))
    _fails(["predict", tmp_path / "zeros.npz", "--ckpt", ckpt, "--out", tmp_path / "p.gif"], "needs 512.0 KiB in memory",
           env={"VRNNKIT_MEMORY": "100K"})


# ----------------------------------------------------------------------------- the run folder


def test_a_run_folder_in_use_is_refused_with_its_holder(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {"h_dim": 8}}', encoding="utf-8")
    monkeypatch.setattr("vrnnkit.training.loop.train", lambda *a, **k: pytest.fail("trained in a locked folder"))
    with run_lock(run):
        _fails(["train", "--resume", run], f"run folder {run} is in use by another vrnnkit train (process {os.getpid()}", code=1)
        with pytest.raises(TrainingError, match="in use"), run_lock(run):
            pass
    assert not (run / LOCK_NAME).exists(), "the lock file goes with the lock"


def test_a_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text('{"pid": 999999, "host": "gone", "since": "yesterday"}', encoding="utf-8")
    with run_lock(run):
        assert json.loads((run / LOCK_NAME).read_text(encoding="utf-8"))["pid"] == os.getpid()


# ----------------------------------------------------------------------------- a lost process


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            children = [int(c) for c in task.read_text().split()]
            found += children
            queue += children
    return found


def _rank(pid: int) -> str | None:
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((item[5:].decode() for item in environment if item.startswith(b"RANK=")), None)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the processes through Linux's /proc")
def test_a_killed_process_stops_the_others_with_its_rank_and_the_run_resumes(tmp_path):
    import signal
    import time

    data = tmp_path / "bits.npy"
    np.save(data, (np.random.default_rng(0).random((32, 8, 6)) < 0.5).astype(np.float32))
    out = tmp_path / "run"
    tiny = ["--layout", "NTD", "--h-dim", "8", "--z-dim", "2", "--seq-len", "4", "--batch-size", "4", "--every", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "VRNNKIT_DDP_TIMEOUT": "30"}
    env.pop("WORLD_SIZE", None)
    process = subprocess.Popen([sys.executable, "-m", "vrnnkit", "train", str(data), *tiny, "--nproc", "2", "--steps", "1000000",
                                "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "model.safetensors").is_file():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training never saved"
            time.sleep(0.2)
        victim = next(pid for pid in _descendants(process.pid) if _rank(pid) == "1")
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=120)
        stopped = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 1, stderr
    assert stopped < 60
    assert "training process 1 was killed (SIGKILL)" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not (out / LOCK_NAME).exists()
    step = int(vrnnkit.read_metadata(out / "model.safetensors")["step"])
    resumed = runner.invoke(app, ["train", "--resume", str(out), "--steps", str(step + 1), "-q"], env=ENV)
    assert resumed.exit_code == 0, resumed.output
