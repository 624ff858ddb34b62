"""``vrnnkit export``: ONNX step functions checked in onnxruntime, safetensors, pt2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import ROOT
from vrnnkit.cli import app

runner = CliRunner()
onnxruntime = pytest.importorskip("onnxruntime")


def _run(*args):
    return runner.invoke(app, list(map(str, args)), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, 8, 8), h_dim=8, z_dim=2,
                                            encoder_options={"channels": 4}, decoder_options={"channels": 4}))
    return vrnnkit.save(model, tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = _run("export", "--ckpt", ckpt, "--out", out, "--steps", 5)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_onnx_export_writes_both_graphs_and_reports_its_check(exported):
    out, output = exported
    assert out.is_file() and out.with_name("model.filter.onnx").is_file()
    assert "onnxruntime matches PyTorch to" in output and "tolerance 0.0001" in output


def test_onnx_generative_step_matches_pytorch_with_a_dynamic_batch(exported, ckpt):
    from vrnnkit.io.export import GenerativeStep

    out, _ = exported
    model = vrnnkit.load(ckpt).eval()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        state = np.random.default_rng(batch).standard_normal((batch, model.rnn.state_size)).astype(np.float32)
        noise = np.random.default_rng(batch + 1).standard_normal((batch, 2)).astype(np.float32)
        params, frame, next_state = session.run(None, {"state": state, "noise": noise})
        with torch.no_grad():
            expected = GenerativeStep(model)(torch.from_numpy(state), torch.from_numpy(noise))
        assert frame.shape == (batch, 1, 8, 8) and params.shape == (batch, 1, 1, 8, 8)
        np.testing.assert_allclose(frame, expected[1].numpy(), atol=1e-5)
        np.testing.assert_allclose(next_state, expected[2].numpy(), atol=1e-5)


def test_onnx_inference_example_runs_with_numpy_and_onnxruntime_alone(exported, tmp_path):
    out, _ = exported
    clip = tmp_path / "clip.npy"
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_inference.py"), str(out), "--steps", "6", "--out", str(clip)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frames = np.load(clip)
    assert frames.shape == (4, 6, 1, 8, 8) and frames.min() >= 0 and frames.max() <= 1


def test_a_failing_parity_check_is_an_error_with_the_difference_and_writes_nothing(ckpt, tmp_path):
    result = _run("export", "--ckpt", ckpt, "--out", tmp_path / "m.onnx", "--steps", 2, "--tolerance", 0)
    assert result.exit_code == 1
    assert "differ from PyTorch by" in result.output and "nothing was written" in result.output
    assert list(tmp_path.iterdir()) == []


def test_safetensors_export_is_an_inference_checkpoint_that_loads(ckpt, tmp_path):
    out = tmp_path / "inference.safetensors"
    assert _run("export", "--ckpt", ckpt, "--format", "safetensors", "--out", out).exit_code == 0
    assert vrnnkit.read_metadata(out)["inference_only"] == "true"
    original, loaded = vrnnkit.load(ckpt), vrnnkit.load(out)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), loaded.state_dict().values(), strict=True))


def test_pt2_export_runs_the_generative_step(ckpt, tmp_path):
    out = tmp_path / "step.pt2"
    result = _run("export", "--ckpt", ckpt, "--format", "pt2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output  # the exporter's own warnings stay quiet
    step = torch.export.load(out).module()
    for batch in (1, 2, 5):  # a dynamic batch
        _, frame, state = step(torch.zeros(batch, 8), torch.zeros(batch, 2))
        assert frame.shape == (batch, 1, 8, 8) and state.shape == (batch, 8)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--ckpt", "{tmp}/absent.safetensors", "--out", "{tmp}/m.onnx"], "found no such file", 2),
        (["--ckpt", "{tmp}/notes.safetensors", "--out", "{tmp}/m.onnx"], "not a readable safetensors file", 2),
        (["--format", "tflite", "--out", "{tmp}/m.onnx"], "unknown export format 'tflite'", 2),
        (["--out", "{tmp}/missing/m.onnx"], "does not exist", 2),
    ],
)
def test_bad_export_requests(ckpt, tmp_path, args, message, code):
    (tmp_path / "notes.safetensors").write_text("not a checkpoint")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--ckpt" not in args:
        args = ["--ckpt", str(ckpt), *args]
    result = _run("export", *args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.safetensors"]


def test_without_the_export_extra_the_install_line_is_named(ckpt, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxscript(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxscript)
    result = _run("export", "--ckpt", ckpt, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert "pip install 'vrnnkit[export]'" in result.output


def test_onnx_parity_for_an_mlp_model_of_vector_frames(tmp_path):
    from vrnnkit.io.export import export

    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(6,), h_dim=12, z_dim=3, likelihood="gaussian"))
    report = export(model, tmp_path / "mlp.onnx", steps=5)
    assert report["max_abs_difference"] <= 1e-4
    assert (tmp_path / "mlp.onnx").is_file() and (tmp_path / "mlp.filter.onnx").is_file()


def test_the_api_evaluate_equals_the_cli_json_for_the_same_seed(ckpt, tmp_path):
    import json

    from vrnnkit.data import load_sequences

    videos = (np.random.default_rng(0).random((4, 7, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "videos.npy", videos)
    out = tmp_path / "eval.json"
    args = ["eval", tmp_path / "videos.npy", "--layout", "NTHW", "--ckpt", ckpt, "--iwae-samples", 3,
            "--samples", 2, "--context", 3, "--seed", 5, "--json", out]
    assert _run(*args).exit_code == 0
    data = torch.from_numpy(load_sequences(tmp_path / "videos.npy", layout="NTHW"))
    api = vrnnkit.evaluate(vrnnkit.load(ckpt), data, iwae_samples=3, samples=2, context=3, seed=5)
    assert json.loads(out.read_text()) == json.loads(json.dumps(api))
