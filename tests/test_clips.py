"""A folder of clips as a data source: reading, windows, the decode cache, and the commands on it."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import ROOT
from vrnnkit.cli import app
from vrnnkit.data import clips as clip_data
from vrnnkit.data.clips import clip_windows, is_clip_folder, read_clips
from vrnnkit.errors import DataError

NATURAL = ROOT.parent / "shared" / "data" / "natural-video"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VRNNKIT_DATA", str(tmp_path / "cache"))


def _clip(value: int, frames: int, height: int, width: int) -> np.ndarray:
    """A grey clip whose every pixel is ``value`` plus a stripe that moves one column a frame."""
    clip = np.full((frames, height, width), value, np.uint8)
    for t in range(frames):
        clip[t, :, t % width] = 255
    return clip


def _folder(root: Path) -> Path:
    """Mixed formats, sizes, lengths and frame rates; one clip shorter than a window of 6."""
    folder = root / "clips"
    (folder / "more").mkdir(parents=True)
    np.save(folder / "a1.npy", _clip(40, 9, 24, 32))
    np.save(folder / "a10.npy", _clip(80, 7, 24, 32))
    iio.imwrite(folder / "more" / "b.gif", np.repeat(_clip(120, 8, 30, 20)[..., None], 3, -1), extension=".gif", duration=100)
    iio.imwrite(folder / "c.mp4", np.repeat(_clip(160, 12, 48, 64)[..., None], 3, -1), plugin="FFMPEG", fps=25)
    np.save(folder / "short.npy", _clip(200, 4, 24, 32))
    (folder / "notes.txt").write_text("not a clip")
    return folder


def test_every_clip_under_the_folder_is_read_at_one_size_in_natural_order(tmp_path):
    folder = _folder(tmp_path)
    assert is_clip_folder(folder)
    clips = read_clips(folder, size=(16, 16), grey=True)
    assert clips.names == ["a1.npy", "a10.npy", "c.mp4", "more/b.gif", "short.npy"]
    assert clips.lengths == [9, 7, 12, 8, 4]
    assert clips.frame_shape == (1, 16, 16)
    first = clips.clips[0][0]  # float32 (T, C, H, W) in [0, 1]
    assert first.shape == (9, 1, 16, 16) and 0.1 < float(np.median(first)) < 0.2


def test_windows_never_cross_from_one_clip_to_the_next_and_short_clips_are_named(tmp_path):
    clips = read_clips(_folder(tmp_path), size=(16, 16), grey=True)
    said: list[str] = []
    training, validation = clip_windows(clips, 6, val_fraction=0.0, seed=0, say=said.append)
    assert said == ["short.npy: 4 frames, fewer than a window of 6; left out"]
    assert validation is None
    assert len(training) == (9 - 5) + (7 - 5) + (12 - 5) + (8 - 5)  # every start within each clip
    for i in range(len(training)):
        window = training[i].numpy()
        background = np.median(window.reshape(6, -1), axis=1)  # the clip's own grey level, in every frame
        assert np.ptp(background) < 0.03, (i, background)


def test_validation_holds_out_whole_clips(tmp_path):
    clips = read_clips(_folder(tmp_path), size=(16, 16), grey=True)
    training, validation = clip_windows(clips, 6, val_fraction=0.3, seed=1)
    held, trained = set(validation.clip_of.tolist()), set(training.clip_of.tolist())
    assert held and trained and not held & trained and held | trained == {0, 1, 2, 3}


def test_clips_of_different_sizes_need_a_size(tmp_path):
    with pytest.raises(DataError, match=r"differ in frame size .* pass --size"):
        read_clips(_folder(tmp_path), grey=True)


def test_a_second_reading_comes_from_the_cache_without_decoding(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    first = read_clips(folder, size=(16, 16), grey=True)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(clip_data, "read_video", no_decoding)
    again = read_clips(folder, size=(16, 16), grey=True)
    for a, b in zip(first.clips, again.clips, strict=True):
        assert np.array_equal(a[0], b[0])


def test_a_corrupt_clip_is_named_and_can_be_left_out(tmp_path):
    folder = _folder(tmp_path)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(DataError, match=r"broken\.mp4.*--skip-unreadable"):
        read_clips(folder, size=(16, 16), grey=True)
    with pytest.warns(UserWarning, match="broken.mp4"):
        clips = read_clips(folder, size=(16, 16), grey=True, skip_unreadable=True)
    assert "broken.mp4" not in clips.names and len(clips.skipped) == 1


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


TINY = ("--size", "16", "--grey", "--seq-len", "6", "--h-dim", "8", "--z-dim", "2", "--batch-size", "2",
        "--encoder", "conv-skip", "--decoder", "convT-warp", "--likelihood", "gaussian")


def test_bad_folders_exit_2_with_a_message_and_write_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = _folder(tmp_path)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    for data, message in ((folder, "broken.mp4"), (empty, "empty")):
        out = tmp_path / f"run-{data.name}"
        result = _cli("train", str(data), *TINY, "--steps", "1", "--out", str(out))
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()


def test_train_eval_predict_and_convert_on_a_folder(tmp_path):
    folder = _folder(tmp_path)
    run = tmp_path / "run"
    result = _cli("train", str(folder), *TINY, "--steps", "2", "--every", "2", "--flip", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert "short.npy: 4 frames, fewer than a window of 6; left out" in result.output

    report_path = tmp_path / "eval.json"
    result = _cli("eval", str(folder), "--ckpt", str(run), "--size", "16", "--grey", "--context", "2", "--horizon", "3",
                  "--samples", "2", "--bound", "elbo", "--json", str(report_path))
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    per_clip = report["prediction"]["per_group"]
    # non-overlapping windows of 5 frames: 9 -> 1, 7 -> 1, 12 -> 2, 8 -> 1, 4 -> 0
    assert {name: r["num_sequences"] for name, r in per_clip.items()} == {"a1.npy": 1, "a10.npy": 1, "c.mp4": 2, "more/b.gif": 1}
    assert report["num_sequences"] == 5 and "per clip" in result.output

    gif, metrics = tmp_path / "p.gif", tmp_path / "p.json"
    result = _cli("predict", str(folder), "--ckpt", str(run), "--size", "16", "--grey", "--context", "2", "--horizon", "3",
                  "--out", str(gif), "--json", str(metrics))
    assert result.exit_code == 0, result.output
    assert len(iio.imread(gif)) == 5  # context and horizon
    assert json.loads(metrics.read_text())["num_sequences"] == 5

    converted = tmp_path / "converted"
    result = _cli("data", "convert", str(folder), "--size", "16", "--grey", "--out", str(converted))
    assert result.exit_code == 0, result.output
    again = read_clips(converted)
    original = read_clips(folder, size=(16, 16), grey=True)
    assert again.lengths == original.lengths
    assert np.allclose(again.clips[2][0], original.clips[2][0], atol=1 / 255)
    model = vrnnkit.load(run / "model.safetensors")
    assert model.config.frame_shape == (1, 16, 16)


@pytest.mark.skipif(not NATURAL.is_dir(), reason="the natural-video clips are not in ../shared")
def test_the_shared_natural_video_test_folder_reads_as_123_windows_of_15(tmp_path):
    clips = read_clips(NATURAL / "test", size=(64, 64), grey=True)
    assert len(clips.clips) == 8 and len(clips.windows(15)) == 123
