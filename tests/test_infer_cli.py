"""``vrnnkit sample`` and ``vrnnkit predict`` through the CLI runner."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.cli import app

runner = CliRunner()
FRAME = (1, 16, 16)


def _run(*args):
    return runner.invoke(app, list(map(str, args)), env={"COLUMNS": "200"})


@pytest.fixture
def image_ckpt(tmp_path):
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=FRAME, h_dim=16, z_dim=4))
    folder = tmp_path / "runs" / "r1"
    folder.mkdir(parents=True)
    return vrnnkit.save(model, folder / "model.safetensors")


@pytest.fixture
def vector_ckpt(tmp_path):
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(5,), h_dim=16, z_dim=4))
    return vrnnkit.save(model, tmp_path / "vector.safetensors")


def test_sample_writes_a_looping_gif_with_one_frame_per_step(tmp_path, image_ckpt):
    out = tmp_path / "grid.gif"
    result = _run("sample", "--ckpt", image_ckpt, "--num", 3, "--steps", 7, "--out", out)
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 7
    assert iio.immeta(out)["loop"] == 0
    assert frames.shape[2] > frames.shape[1] * 2, "three clips side by side"


def test_sample_png_npy_and_mp4(tmp_path, image_ckpt):
    for name in ("grid.png", "clips.npy", "clips.mp4"):
        result = _run("sample", "--ckpt", image_ckpt, "--num", 2, "--steps", 4, "--out", tmp_path / name, "--seed", 1)
        assert result.exit_code == 0, result.output
    png = iio.imread(tmp_path / "grid.png")
    tile = png.shape[0] // 2
    assert png.shape[1] == 4 * tile, "a row per clip, a column per step"
    clips = np.load(tmp_path / "clips.npy")
    assert clips.shape == (2, 4, *FRAME) and clips.min() >= 0 and clips.max() <= 1
    again = tmp_path / "again.npy"
    assert _run("sample", "--ckpt", image_ckpt, "--num", 2, "--steps", 4, "--out", again, "--seed", 1).exit_code == 0
    np.testing.assert_array_equal(np.load(again), clips)
    video = iio.imread(tmp_path / "clips.mp4", index=None, plugin="FFMPEG")
    assert video.shape[0] == 4


def test_sample_random_draws_binary_frames_from_a_bernoulli_model(tmp_path, image_ckpt):
    out = tmp_path / "drawn.npy"
    assert _run("sample", "--ckpt", image_ckpt, "--num", 2, "--steps", 3, "--random", "--out", out).exit_code == 0
    assert set(np.unique(np.load(out)).tolist()) <= {0.0, 1.0}


def test_sample_vector_model_to_csv_and_png(tmp_path, vector_ckpt):
    assert _run("sample", "--ckpt", vector_ckpt, "--num", 2, "--steps", 6, "--out", tmp_path / "s.csv").exit_code == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "clip,step,x0,x1,x2,x3,x4" and len(lines) == 1 + 12
    assert _run("sample", "--ckpt", vector_ckpt, "--num", 2, "--steps", 6, "--out", tmp_path / "s.png").exit_code == 0
    assert iio.imread(tmp_path / "s.png").ndim == 3
    result = _run("sample", "--ckpt", vector_ckpt, "--out", tmp_path / "s.gif")
    assert result.exit_code == 2 and "must end in .npy, .csv, .png" in result.output
    assert not (tmp_path / "s.gif").exists()


def test_sample_finds_the_newest_run_or_says_how_to_train_one(tmp_path, image_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("sample", "--out", "s.npy", "--num", 1, "--steps", 2)
    assert result.exit_code == 0, result.output
    assert "using runs/r1/model.safetensors" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = _run("sample", "--out", "s.npy")
    assert result.exit_code == 2
    assert "train one with `vrnnkit train` or pass --ckpt" in result.output


def _video(layout: str, length: int = 9, count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    sizes = {"N": count, "T": length, "H": 16, "W": 16, "C": 1}
    return (rng.random([sizes[letter] for letter in layout]) * 255).astype(np.uint8)


@pytest.mark.parametrize("layout", ["THW", "THWC", "NTHW", "NTHWC", "TNHW"])
def test_predict_reads_every_layout(tmp_path, image_ckpt, layout):
    path = tmp_path / f"video_{layout}.npy"
    np.save(path, _video(layout))
    out = tmp_path / "futures.npy"
    result = _run("predict", path, "--ckpt", image_ckpt, "--layout", layout, "--context", 4, "--samples", 2, "--out", out)
    assert result.exit_code == 0, result.output
    sequences = 1 if "N" not in layout else 2
    assert np.load(out).shape == (sequences, 2, 5, *FRAME)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_predict_reads_video_files_and_draws_a_gif(tmp_path, image_ckpt, suffix):
    path = tmp_path / f"clip{suffix}"
    frames = np.zeros((8, 16, 16), np.uint8)
    for t in range(8):
        frames[t, 4:8, t : t + 4] = 255  # a moving square, so no two frames are equal
    iio.imwrite(path, frames, extension=suffix, **({"fps": 8, "macro_block_size": 1, "plugin": "FFMPEG"} if suffix == ".mp4" else {}))
    out = tmp_path / "pred.gif"
    result = _run("predict", path, "--ckpt", image_ckpt, "--context", 3, "--samples", 2, "--out", out)
    assert result.exit_code == 0, result.output
    gif = iio.imread(out, index=None)
    assert gif.shape[0] == 8, "context plus the 5 following frames"


def test_predict_horizon_defaults(tmp_path, image_ckpt):
    only_context = tmp_path / "short.npy"
    np.save(only_context, _video("THW", length=4))
    out = tmp_path / "f.npy"
    assert _run("predict", only_context, "--ckpt", image_ckpt, "--context", 4, "--out", out).exit_code == 0
    assert np.load(out).shape[2] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "0", "--out", "{tmp}/f.gif"], "--context"),
        (["--context", "20", "--horizon", "2", "--out", "{tmp}/f.gif"], "longer than the 9 frames"),
        (["--samples", "0", "--out", "{tmp}/f.gif"], "--samples"),
        (["--out", "{tmp}/f.webm"], "must end in .gif, .png, .mp4, .npy"),
        (["--out", "{tmp}/missing/f.gif"], "does not exist"),
    ],
)
def test_predict_bad_arguments_exit_2_and_write_nothing(tmp_path, image_ckpt, args, message):
    path = tmp_path / "video.npy"
    np.save(path, _video("THW"))
    result = _run("predict", path, "--ckpt", image_ckpt, *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "video.npy"]


def test_predict_frame_shape_mismatch_and_resize(tmp_path, image_ckpt):
    path = tmp_path / "big.npy"
    np.save(path, (np.random.default_rng(0).random((6, 24, 20, 3)) * 255).astype(np.uint8))
    out = tmp_path / "f.npy"
    result = _run("predict", path, "--ckpt", image_ckpt, "--layout", "THWC", "--context", 3, "--out", out)
    assert result.exit_code == 2
    assert "frames of shape (3, 24, 20)" in result.output and "--resize" in result.output
    result = _run("predict", path, "--ckpt", image_ckpt, "--layout", "THWC", "--context", 3, "--out", out, "--resize")
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (1, 3, 3, *FRAME)
    assert torch.isfinite(torch.from_numpy(np.load(out))).all()


def test_eval_prints_and_saves_the_documented_figures(tmp_path):
    import json

    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, 32, 32), h_dim=8, z_dim=2,
                                            encoder_options={"channels": 4}, decoder_options={"channels": 4}))
    ckpt = vrnnkit.save(model, tmp_path / "m.safetensors")
    out = tmp_path / "eval.json"
    result = _run("eval", "--ckpt", ckpt, "--num-sequences", 6, "--iwae-samples", 3, "--samples", 2,
                  "--context", 2, "--horizon", 3, "--json", out)
    assert result.exit_code == 0, result.output
    assert "IWAE bound, K=3" in result.output and "copy-last" in result.output
    report = json.loads(out.read_text())
    assert report["num_sequences"] == 6 and report["sequence_length"] == 5
    assert report["likelihood"]["iwae"]["K"] == 3
    assert np.isfinite(report["likelihood"]["bits_per_dim"])
    prediction = report["prediction"]
    assert prediction["horizon"] == 3 and len(prediction["psnr"]["best_of_n"]["per_step"]) == 3
    assert prediction["psnr"]["best_of_n"]["mean"] >= prediction["psnr"]["mean_of_n"]["mean"]


def test_eval_refuses_data_of_another_frame_shape(tmp_path, image_ckpt):
    result = _run("eval", "--ckpt", image_ckpt, "--num-sequences", 2, "--iwae-samples", 1, "--samples", 1)
    assert result.exit_code == 2
    assert "frames of shape (1, 32, 32); the model was trained on (1, 16, 16)" in result.output


def test_eval_of_a_vector_model_skips_prediction(tmp_path, vector_ckpt):
    import json

    path = tmp_path / "seqs.npy"
    np.save(path, (np.random.default_rng(0).random((6, 8, 5)) > 0.5).astype(np.float32))
    out = tmp_path / "eval.json"
    result = _run("eval", path, "--layout", "NTD", "--ckpt", vector_ckpt, "--iwae-samples", 2, "--json", out)
    assert result.exit_code == 0, result.output
    assert "prediction skipped" in result.output
    assert json.loads(out.read_text())["prediction"]["skipped"]


def test_predict_json_saves_metrics_and_refuses_without_ground_truth(tmp_path, image_ckpt):
    import json

    video = tmp_path / "video.npy"
    np.save(video, _video("THW", length=9))
    result = _run("predict", video, "--ckpt", image_ckpt, "--context", 4, "--samples", 3, "--out", tmp_path / "f.gif", "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert len(report["psnr"]["best_of_n"]["per_step"]) == 5
    assert report["psnr"]["best_of_n"]["mean"] >= report["psnr"]["mean_of_n"]["mean"]
    assert "PSNR best" in result.output and "copy-last" in result.output
    short = tmp_path / "short.npy"
    np.save(short, _video("THW", length=4))
    result = _run("predict", short, "--ckpt", image_ckpt, "--context", 4, "--out", tmp_path / "g.gif", "--json", tmp_path / "n.json")
    assert result.exit_code == 2
    assert "--json needs metrics" in result.output
    assert not (tmp_path / "g.gif").exists() and not (tmp_path / "n.json").exists()
