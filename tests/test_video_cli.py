"""Real video at any size through the command line: `vrnnkit train clip.mp4 --size N`, then
predict, eval and sample on it, with and without --out, and `vrnnkit data convert`."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.api import default_prediction_path
from vrnnkit.cli import app

runner = CliRunner()
TINY = ["--steps", "2", "--seq-len", "8", "--batch-size", "2", "--h-dim", "8", "--z-dim", "2", "--every", "2",
        "--encoder-option", "channels=4", "--decoder-option", "channels=4", "-q"]


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _colour_clip(path: Path, frames: int = 40, height: int = 96, width: int = 160) -> Path:
    """A moving colour gradient: smooth enough that mp4 keeps it, different in every frame."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    video = np.stack([(x * 1.5 + t * 4) % 256, (y * 2 + t * 3) % 256, (x + y + t * 6) % 256], axis=-1)
    iio.imwrite(path, video.astype(np.uint8), fps=10, macro_block_size=1)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """`vrnnkit train clip.mp4 --size 16`: the documented path, on a 40-frame 96x160 colour clip."""
    folder = tmp_path_factory.mktemp("video")
    clip = _colour_clip(folder / "clip.mp4")
    result = _run("train", clip, "--size", "16", *TINY, "--out", folder / "run")
    assert result.exit_code == 0, result.output
    return clip, folder / "run"


def test_train_on_an_mp4_at_a_chosen_size(trained):
    clip, run = trained
    assert vrnnkit.load(run / "model.safetensors").config.frame_shape == (3, 16, 16)
    options = json.loads((run / "config.json").read_text())["train"]
    assert options["size"] == "16x16" and options["grey"] is False and options["data"] == str(clip)


def test_train_grey_at_height_x_width(tmp_path):
    clip = _colour_clip(tmp_path / "clip.mp4", frames=20, height=48, width=80)
    result = _run("train", clip, "--size", "12x20", "--grey", *TINY, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert vrnnkit.load(tmp_path / "run" / "model.safetensors").config.frame_shape == (1, 12, 20)


def test_predict_without_out_writes_a_default_file_here_and_prints_metrics(trained, tmp_path, monkeypatch):
    clip, run = trained
    monkeypatch.chdir(tmp_path)
    result = _run("predict", clip, "--ckpt", run, "--size", "16", "--context", 5, "--horizon", 4, "--samples", 2)
    assert result.exit_code == 0, result.output
    assert "wrote clip-predicted.gif:" in result.output
    assert "PSNR best" in result.output and "copy-last" in result.output
    frames = iio.imread(tmp_path / "clip-predicted.gif", index=None)
    assert frames.shape[0] == 9  # 5 context + 4 predicted frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-predicted.gif"]  # nothing else, no temporary file


def test_predict_of_a_file_of_another_size_names_both_shapes_and_the_options(trained, tmp_path):
    clip, run = trained
    result = _run("predict", clip, "--ckpt", run, "--out", tmp_path / "p.gif")
    assert result.exit_code == 2
    assert "(3, 96, 160)" in result.output and "(3, 16, 16)" in result.output
    assert "--size 16x16" in result.output and "--resize" in result.output
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []
    result = _run("predict", clip, "--ckpt", run, "--resize", "--context", 5, "--out", tmp_path / "p.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "p.npy").shape[-3:] == (3, 16, 16)


def test_eval_at_a_size(trained, tmp_path):
    clip, run = trained
    out = tmp_path / "eval.json"
    result = _run("eval", clip, "--ckpt", run, "--size", "16", "--iwae-samples", 2, "--samples", 2, "--horizon", 3,
                  "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["prediction"]["horizon"] == 3
    result = _run("eval", clip, "--ckpt", run, "--size", "16x24", "--grey", "--iwae-samples", 2, "--samples", 1)
    assert result.exit_code == 2
    assert "(1, 16, 24)" in result.output and "(3, 16, 16)" in result.output and "--size 16x16" in result.output


def test_sample_without_out_writes_samples_gif_here(trained, tmp_path, monkeypatch):
    _, run = trained
    monkeypatch.chdir(tmp_path)
    result = _run("sample", "--ckpt", run, "--num", 2, "--steps", 3)
    assert result.exit_code == 0, result.output
    assert "wrote samples.gif: 2 clips of 3 frames" in result.output
    assert iio.imread(tmp_path / "samples.gif", index=None).shape[0] == 3


def test_the_default_prediction_never_overwrites_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_prediction_path("data/clip.npy") == Path("clip-predicted.gif")
    assert default_prediction_path("clip.npy", image=False) == Path("clip-predicted.npy")
    (tmp_path / "x-predicted.gif").write_bytes(b"GIF89a")
    assert default_prediction_path("x-predicted.gif") == Path("x-predicted-predicted.gif")


def test_data_convert_writes_a_resized_grey_npy(trained, tmp_path):
    clip, _ = trained
    out = tmp_path / "clip.npy"
    result = _run("data", "convert", clip, "--size", "24x40", "--grey", "--out", out)
    assert result.exit_code == 0, result.output
    array = np.load(out)
    assert array.shape == (1, 40, 24, 40) and array.dtype == np.uint8
    direct = vrnnkit.data.load_sequences(clip, resize=(24, 40), grey=True)
    np.testing.assert_allclose(array[:, :, None] / 255, direct, atol=1e-6)
    result = _run("data", "convert", clip, "--size", "16", "--out", tmp_path / "colour.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "colour.npy").shape == (1, 40, 16, 16, 3)
