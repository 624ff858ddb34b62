"""Sequences of different lengths through the commands: train, eval per time step, MIDI and
piano-roll pictures out of sample and predict, and the bad input they refuse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vrnnkit.api._music import checkpoint_note_range
from vrnnkit.cli import app
from vrnnkit.data.music import PIANO_KEYS, read_midi

ROOT = Path(__file__).resolve().parents[1]
JSB = ROOT.parent / "shared" / "data" / "jsb-chorales" / "jsb-chorales-quarter.json"
NOTTINGHAM = ROOT.parent / "shared" / "data" / "nottingham" / "nottingham.json"
runner = CliRunner()
ENV = {"COLUMNS": "200", "VRNNKIT_DEBUG": None}
TINY = ["--steps", "3", "--h-dim", "8", "--z-dim", "4", "--batch-size", "2", "--every", "3", "-q"]


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], env=ENV)


def _songs(count: int, seed: int) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    return [[sorted({int(n) for n in rng.integers(48, 80, rng.integers(0, 4))}) for _ in range(int(length))]
            for length in rng.integers(5, 21, count)]


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> tuple[Path, Path]:
    """A small note-list JSON file and a checkpoint trained on it."""
    folder = tmp_path_factory.mktemp("music")
    data = folder / "music.json"
    data.write_text(json.dumps({"train": _songs(8, 0), "valid": _songs(3, 1), "test": _songs(4, 2)}))
    result = _run("train", data, *TINY, "--seq-len", "full", "--out", folder / "run")
    assert result.exit_code == 0, result.output
    return data, folder / "run" / "model.safetensors"


def test_a_tiny_jsb_run_through_train_and_eval_per_time_step(tmp_path):
    if not JSB.exists():
        pytest.skip(f"{JSB} is absent")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(JSB), *TINY[:-1], "--seq-len", "0", "--out", str(run)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "output bias started at the logit" in result.output
    assert "nats/step" in result.output
    assert (run / "best.safetensors").exists()
    assert checkpoint_note_range(run / "best.safetensors") == PIANO_KEYS
    scores = tmp_path / "scores.csv"
    result = _run("eval", JSB, "--ckpt", run / "best.safetensors", "--split", "test", "--iwae-samples", "2",
                  "--per-sequence", scores, "--json", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert "ELBO (nats per time step)" in result.output and "4,725 time steps" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_sequences"] == 77 and report["num_steps"] == 4725 and report["split"] == "test"
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 77 and sum(int(r["steps"]) for r in rows) == 4725
    total = sum(float(r["elbo"]) for r in rows)
    assert report["likelihood"]["elbo_per_step"] == pytest.approx(total / 4725, rel=1e-5)


@pytest.mark.slow
def test_a_tiny_nottingham_run_with_the_music_recipe_in_windows_then_whole_tunes(tmp_path):
    """The recipe's data settings (windows of 200 steps, --transpose) on Nottingham; eval scores
    whole tunes of the test split."""
    if not NOTTINGHAM.exists():
        pytest.skip(f"{NOTTINGHAM} is absent")
    run = tmp_path / "run"
    result = _run("train", NOTTINGHAM, "--config", ROOT / "examples" / "polyphonic.toml", *TINY, "--likelihood-option", "hidden=16",
                  "--out", run)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())["train"]
    assert config["seq_len"] == 200 and config["transpose"] == 6
    result = _run("eval", NOTTINGHAM, "--ckpt", run / "best.safetensors", "--split", "test", "--iwae-samples", "2",
                  "--json", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_sequences"] == 170 and report["num_steps"] == 44463  # whole tunes, the README's counts
    assert -60.0 < report["likelihood"]["elbo_per_step"] < 0.0


def test_eval_per_sequence_json_with_per_step_values(tmp_path, music):
    data, ckpt = music
    out = tmp_path / "scores.json"
    result = _run("eval", data, "--ckpt", ckpt, "--iwae-samples", "3", "--per-sequence", out, "--per-step")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    songs = json.loads(data.read_text())["test"]
    assert [r["steps"] for r in rows] == [len(s) for s in songs]
    for row in rows:
        assert len(row["step_elbo"]) == row["steps"]
        assert sum(row["step_elbo"]) == pytest.approx(row["elbo"], rel=1e-6)
        assert row["elbo_per_step"] == pytest.approx(row["elbo"] / row["steps"])
    long_csv = tmp_path / "steps.csv"
    assert _run("eval", data, "--ckpt", ckpt, "--iwae-samples", "2", "--per-sequence", long_csv, "--per-step").exit_code == 0
    assert len(list(csv.DictReader(long_csv.open()))) == sum(len(s) for s in songs)


def test_sample_and_predict_write_midi_and_piano_roll_pictures(tmp_path, music):
    data, ckpt = music
    result = _run("sample", "--ckpt", ckpt, "--out", tmp_path / "piece.mid", "--num", "2", "--steps", "12")
    assert result.exit_code == 0, result.output
    for name in ("piece-1.mid", "piece-2.mid"):
        roll = read_midi(tmp_path / name, steps_per_beat=1)
        assert roll.shape[1] == 88 and roll.shape[0] <= 12
    assert _run("sample", "--ckpt", ckpt, "--out", tmp_path / "one.mid", "--num", "1").exit_code == 0
    assert (tmp_path / "one.mid").exists()
    assert _run("sample", "--ckpt", ckpt, "--out", tmp_path / "roll.png", "--num", "2").exit_code == 0
    assert (tmp_path / "roll.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = _run("predict", data, "--ckpt", ckpt, "--context", "4", "--horizon", "6", "--samples", "1",
                  "--split", "valid", "--out", tmp_path / "continuation.mid")
    assert result.exit_code == 0, result.output
    written = sorted(tmp_path.glob("continuation-*.mid"))
    assert len(written) == 3  # the 3 valid songs x 1 sample
    assert read_midi(written[0], steps_per_beat=1).shape[0] <= 10
    result = _run("predict", data, "--ckpt", ckpt, "--context", "4", "--horizon", "6", "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").exists()


def test_npz_of_several_arrays_trains_in_windows_and_evaluates(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"s{i}": (rng.random((int(n), 6)) < 0.3).astype(np.float32) for i, n in enumerate(rng.integers(3, 30, 9))}
    np.savez(tmp_path / "seqs.npz", **arrays)
    result = _run("train", tmp_path / "seqs.npz", *TINY, "--seq-len", "8", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    result = _run("eval", tmp_path / "seqs.npz", "--ckpt", tmp_path / "run", "--iwae-samples", "2")
    assert result.exit_code == 0, result.output
    assert f"{sum(len(a) for a in arrays.values())} time steps" in result.output


# ---------------------------------------------------------------------------- bad input


def _bad_inputs(folder: Path) -> None:
    good = {"train": _songs(4, 0), "valid": _songs(2, 1), "test": _songs(2, 2)}
    files = {
        "list.json": [[[60]]],
        "split-not-list.json": {**good, "train": {"a": 1}},
        "step-not-list.json": {**good, "train": [[[60], 61]]},
        "empty-split.json": {**good, "train": []},
        "zero-length.json": {**good, "train": [[[60]], []]},
        "note-200.json": {**good, "train": [[[60], [200]]]},
        "note-10.json": {**good, "train": [[[60], [10]]]},
        "no-valid-test.json": {"train": good["train"]},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    (folder / "broken.json").write_text("{not json")
    midi = folder / "midi"
    midi.mkdir()
    (midi / "bad.mid").write_bytes(b"MThd not really a midi file")
    np.savez(folder / "lengths.npz", x=np.zeros((2, 5, 3), np.float32), lengths=np.array([5, 6]))


BAD = [
    ("json-not-an-object", ["train", "{in}/list.json"], ["list.json", "expected a JSON object"]),
    ("json-unreadable", ["train", "{in}/broken.json"], ["broken.json", "unreadable JSON"]),
    ("json-split-not-a-list", ["train", "{in}/split-not-list.json"], ["['train']", "list of sequences"]),
    ("json-step-not-a-list", ["train", "{in}/step-not-list.json"], ["sequence 0, step 1", "list of MIDI note numbers"]),
    ("json-empty-split", ["train", "{in}/empty-split.json"], ["['train']", "empty list"]),
    ("json-zero-length-sequence", ["train", "{in}/zero-length.json"], ["sequence 1", "at least one time step"]),
    ("json-note-beyond-127", ["train", "{in}/note-200.json"], ["sequence 0, step 1", "0..127", "200"]),
    ("json-note-outside-range", ["train", "{in}/note-10.json"], ["note 10", "21..108"]),
    ("midi-unparsable", ["train", "{in}/midi"], ["bad.mid", "MIDI"]),
    ("npz-lengths-disagree", ["train", "{in}/lengths.npz"], ["lengths.npz", "found 6 for sequence 1"]),
    ("seq-len-0-equal-length-data", ["train", "bouncing-balls", "--seq-len", "0"], ["--seq-len 0"]),
    ("seq-len-words", ["train", "{in}/list.json", "--seq-len", "long"], ["seq_len", "'full'"]),
    ("eval-split-absent", ["eval", "{data}", "--ckpt", "{ckpt}", "--split", "dev"], ["'dev'", "'train', 'valid', 'test'"]),
    ("eval-test-split-absent", ["eval", "{in}/no-valid-test.json", "--ckpt", "{ckpt}"], ["'test'", "'train'"]),
    ("predict-split-absent", ["predict", "{data}", "--ckpt", "{ckpt}", "--split", "dev", "--out", "{tmp}/c.mid"], ["'dev'"]),
    ("eval-per-step-alone", ["eval", "{data}", "--ckpt", "{ckpt}", "--per-step"], ["--per-sequence"]),
    ("eval-per-sequence-format", ["eval", "{data}", "--ckpt", "{ckpt}", "--per-sequence", "{tmp}/s.txt"], [".csv or .json"]),
    ("eval-split-on-video", ["eval", "bouncing-balls", "--ckpt", "{ckpt}", "--split", "test"], ["--split"]),
    ("predict-context-too-long", ["predict", "{data}", "--ckpt", "{ckpt}", "--context", "50", "--out", "{tmp}/c.mid"], ["--context 50"]),
]


@pytest.mark.parametrize(("args", "messages"), [pytest.param(a, m, id=i) for i, a, m in BAD])
def test_bad_music_input_fails_cleanly_and_writes_nothing(tmp_path, music, args, messages):
    data, ckpt = music
    inputs = tmp_path / "in"
    inputs.mkdir()
    _bad_inputs(inputs)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    filled = [a.replace("{in}", str(inputs)).replace("{data}", str(data)).replace("{ckpt}", str(ckpt)).replace("{tmp}", str(tmp_path))
              for a in args]
    if filled[0] == "train":
        filled += [*TINY, "--out", str(tmp_path / "run")]
    result = runner.invoke(app, filled, env=ENV)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for message in messages:
        assert message in result.output, result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------------- options


def test_dropout_reaches_every_mlp_block_and_the_recurrence_unless_a_block_sets_its_own():
    from vrnnkit.training import TrainConfig

    config = TrainConfig.from_dict({"dropout": 0.2, "block_options": {"decoder": {"dropout": 0.05}}, "seq_len": "full"})
    assert config.seq_len == 0
    model = config.model_config((88,))
    assert [model.encoder_options["dropout"], model.prior_options["dropout"], model.posterior_options["dropout"],
            model.rnn_options["dropout"], model.decoder_options["dropout"]] == [0.2, 0.2, 0.2, 0.2, 0.05]
    assert "dropout" not in config.model.encoder_options  # the training config itself is unchanged
    assert TrainConfig().model_config((88,)).encoder_options == {}


def test_weight_decay_cosine_schedule_and_weight_averaging_train_and_save(tmp_path, music):
    import torch

    import vrnnkit
    from vrnnkit.io.checkpoint import load

    data, _ = music
    result = vrnnkit.train(data=str(data), out=tmp_path / "run", steps=6, every=3, h_dim=8, z_dim=4, batch_size=2,
                           seq_len=0, weight_decay=0.01, lr_schedule="cosine", ema=0.9, dropout=0.1)
    assert result.metrics["lr"] == pytest.approx(1e-3 * 0.05)
    assert "val_elbo_per_step" in result.metrics
    saved = load(tmp_path / "run" / "model.safetensors")
    # model.safetensors holds the averaged weights, which train() also returns
    for name, value in saved.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name])
    assert saved.config.rnn_options["dropout"] == 0.1
