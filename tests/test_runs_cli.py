"""vrnnkit runs, info, plot and eval --plot: on two tiny runs trained once for the module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from vrnnkit.cli import app

TINY = 'num_sequences = 24\n[block_options.encoder]\nchannels = 4\n[block_options.decoder]\nchannels = 4\n'


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    config = folder.parent / "tiny.toml"
    config.write_text(TINY)
    for name, lr in (("old", "1e-3"), ("new", "3e-3")):
        result = _cli("train", "--config", str(config), "--steps", "4", "--every", "2", "--lr", lr,
                      "--out", str(folder / name), "--quiet")
        assert result.exit_code == 0, result.output
    os.utime(folder / "old" / "metrics.jsonl", (1, 1))  # make "new" clearly the newest
    for path in (folder / "old").rglob("*"):
        os.utime(path, (1, 1), follow_symlinks=False)
    return folder


def _check_png(path: Path, min_width: int) -> None:
    image = iio.imread(path)
    assert image.shape[1] >= min_width and image.shape[0] >= 300
    grey = image[..., :3].mean(-1)
    assert (grey < 200).mean() > 0.01 and grey.std() > 10  # drawn on, not a blank canvas


def test_runs_lists_newest_first_as_a_table_and_as_json(runs):
    result = _cli("runs", str(runs))
    assert result.exit_code == 0, result.output
    assert result.output.index("│ new") < result.output.index("│ old")
    assert "bouncing-balls" in result.output
    listed = json.loads(_cli("runs", str(runs), "--json").output)
    assert [run["name"] for run in listed] == ["new", "old"]
    for run in listed:
        assert run["steps"] == 4 and run["best_val_loss"] > 0 and run["wall_s"] > 0 and run["size_bytes"] > 10_000


def test_runs_on_a_missing_folder_is_a_clear_error(tmp_path):
    result = _cli("runs", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "no such folder" in result.output and "Traceback" not in result.output


def test_info_reads_the_header_without_building_the_model(runs, monkeypatch):
    import vrnnkit

    model = vrnnkit.load(runs / "old" / "model.safetensors")
    monkeypatch.setattr("vrnnkit.model.VRNN.__init__", lambda *a, **k: pytest.fail("info built a model"))
    info = json.loads(_cli("info", str(runs / "old"), "--json").output)
    assert info["total_parameters"] == sum(t.numel() for t in model.state_dict().values())
    assert set(info["parameters"]) >= {"encoder", "decoder", "prior", "posterior", "rnn"}
    assert info["format_version"] == "1" and info["vrnnkit_version"] == vrnnkit.__version__
    assert info["config"]["frame_shape"] == [1, 32, 32] and info["metadata"]["step"] == "4"
    table = _cli("info", str(runs / "old" / "model.safetensors")).output
    assert "parameters per block" in table and f"{info['total_parameters']:,}" in table


def test_info_on_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"\x80\x04not a safetensors file at all")
    result = _cli("info", str(bad))
    assert result.exit_code == 2 and "not a safetensors file" in result.output


def test_plot_draws_the_curves_of_several_runs(runs, tmp_path):
    out = tmp_path / "curves.png"
    result = _cli("plot", str(runs / "old"), str(runs / "new"), "--out", str(out))
    assert result.exit_code == 0, result.output
    _check_png(out, 800)


@pytest.mark.parametrize(("target", "message"), [
    ("nowhere", "no such folder"),
    (".", "holds no config.json"),
])
def test_plot_on_a_folder_that_is_not_a_run_says_what_is_missing(tmp_path, target, message):
    out = tmp_path / "curves.png"
    result = _cli("plot", str(tmp_path / target), "--out", str(out))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_plot_refuses_an_unknown_figure_format(runs, tmp_path):
    result = _cli("plot", str(runs / "old"), "--out", str(tmp_path / "curves.gif"))
    assert result.exit_code == 2 and ".png, .pdf, .svg" in result.output


def test_eval_plot_draws_quality_per_predicted_step(runs, tmp_path):
    out, report = tmp_path / "quality.png", tmp_path / "eval.json"
    result = _cli("eval", "--ckpt", str(runs / "new"), "--num-sequences", "6", "--iwae-samples", "2",
                  "--samples", "2", "--horizon", "4", "--plot", str(out), "--json", str(report))
    assert result.exit_code == 0, result.output
    _check_png(out, 800)
    entry = json.loads(report.read_text())["prediction"]["psnr"]["best_of_n"]
    assert len(entry["per_step_ci95"]) == 4 and all(np.isfinite(entry["per_step_ci95"]))


def test_eval_plot_is_checked_before_evaluating(runs, tmp_path):
    result = _cli("eval", "--ckpt", str(runs / "new"), "--plot", str(tmp_path / "no" / "quality.png"))
    assert result.exit_code == 2 and "does not exist" in result.output
