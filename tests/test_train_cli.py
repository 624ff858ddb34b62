"""``vrnnkit train`` through the CLI runner, on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import train_cli
from vrnnkit.cli import app

runner = CliRunner()
TINY = ["--steps", "4", "--every", "2", "--h-dim", "12", "--z-dim", "3", "--seq-len", "4",
        "--batch-size", "4", "--val-fraction", "0.2"]


_train = train_cli


def test_help_of_every_command_exits_0():
    for command in ([], ["train"], ["data"], ["data", "bouncing-balls"], ["data", "moving-mnist"], ["blocks"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output


def test_no_help_text_loses_a_bracketed_word_to_rich_markup():
    """Rich reads ``[gym]`` in a help text as a style tag and drops it ("pip install 'vrnnkit'"):
    a bracket that opens on a lower-case letter, # / or @ in a command's or an option's help must
    be escaped (``\\[gym]``)."""
    import re

    import typer.main

    lost = []

    def visit(command, path):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        lost.extend(f"{path}: {m}" for text in texts for m in re.findall(r"(?<!\\)\[[a-z#/@][^\[]*?\]", text))
        for name, sub in getattr(command, "commands", {}).items():
            visit(sub, f"{path} {name}")

    visit(typer.main.get_command(app), "vrnnkit")
    assert not lost, lost


def test_a_tiny_run_writes_every_file_of_the_run_folder(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--out", str(out))
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "trainer.safetensors", "config.json", "metrics.jsonl", "samples.gif"):
        assert (out / name).is_file(), name
    model = vrnnkit.load(out / "model.safetensors")
    assert model.config.frame_shape == (1, 32, 32) and model.config.h_dim == 12
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"loss", "nll", "kl", "lr", "sequences_per_s", "val_loss", "val_bits_per_dim"} <= set(records[-1])
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["steps"] == 4 and config["train"]["num_sequences"] == 24
    assert config["model"]["encoder"] == "conv"
    assert "step 4/4" in result.output
    again = tmp_path / "again.gif"  # samples.gif is what `vrnnkit sample` draws (draws fed back: Bernoulli)
    vrnnkit.sample(model, 8, config["train"]["seq_len"], seed=config["train"]["seed"], out=again)
    assert again.read_bytes() == (out / "samples.gif").read_bytes()


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_config):
    # A constant learning rate: a cosine schedule follows --steps, which changes on resuming here.
    # The weight average (--ema, on by default) continues from the saved one.
    straight, split = tmp_path / "straight", tmp_path / "split"
    fixed = ("--lr-schedule", "constant", "--config", str(tiny_config))
    assert _train(*TINY, "--steps", "6", *fixed, "--out", str(straight)).exit_code == 0
    assert _train(*TINY, "--steps", "2", *fixed, "--out", str(split)).exit_code == 0
    result = _train("--resume", str(split), "--steps", "6")
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "trainer.safetensors"):  # the average, and the trained weights
        a = load_file(straight / name)
        b = load_file(split / name)
        assert a.keys() == b.keys() and any(k.startswith("average.") for k in a) == (name == "trainer.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng.")), name
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, tiny_config):
    out = tmp_path / "run"
    assert _train(*TINY, "--config", str(tiny_config), "--out", str(out)).exit_code == 0
    result = _train(*TINY, "--config", str(tiny_config), "--out", str(out))
    assert result.exit_code == 2
    assert "already holds a run" in result.output


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("stpes = 3\n", "unknown options: stpes"),
        ("steps = 'many'\n", "option 'steps' must be"),
        ("steps = [\n", "not valid TOML"),
        ("h_dim = 0\n", "got h_dim=0"),
        ("seed = -1\n", "got seed=-1"),
    ],
)
def test_a_bad_config_file_exits_2_with_the_reason(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = _train("--config", str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_an_unknown_block_name_lists_the_registered_ones(tmp_path):
    result = _train("--decoder", "deconv", "--out", str(tmp_path / "run"), "--steps", "1")
    assert result.exit_code == 2
    assert "unknown decoder block 'deconv'" in result.output and "convT, convT-skip, convT-warp, mlp" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_a_gpu_fails_in_one_line(tmp_path):
    result = _train("--device", "cuda", "--out", str(tmp_path / "run"), "--steps", "1")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: --device cuda: no CUDA GPU is available to this PyTorch build on this machine"]


def test_missing_data_file_and_bad_option_values(tmp_path):
    result = _train(str(tmp_path / "clips.npy"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "no such file" in result.output
    result = _train("--batch-size", "-1")
    assert result.exit_code == 2
    result = _train("--seq-len", "0")
    assert result.exit_code == 2


def test_vector_data_file_trains_with_mlp_blocks(tmp_path):
    import numpy as np

    data = tmp_path / "walks.npy"
    np.save(data, (np.random.default_rng(0).random((20, 12, 5)) > 0.5).astype(np.float32))
    out = tmp_path / "run"
    result = _train(str(data), "--layout", "NTD", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    model = vrnnkit.load(out / "model.safetensors")
    assert model.config.frame_shape == (5,) and model.config.encoder == "mlp"
    assert not (out / "samples.gif").exists()


def _nan_at(monkeypatch, bad_call: int) -> None:
    """Make the model's loss NaN on its ``bad_call``-th training forward."""
    from vrnnkit.model import VRNN

    original = VRNN.forward
    calls = {"n": 0}

    def forward(self, x, **kwargs):
        out = original(self, x, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == bad_call:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VRNN, "forward", forward)


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, tiny_config, monkeypatch):
    _nan_at(monkeypatch, 3)
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--out", str(out))
    assert result.exit_code == 1
    assert "not finite at step 3" in result.output and "--skip-nonfinite" in result.output
    model = vrnnkit.load(out / "model.safetensors")
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "2"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_nonfinite_skips_the_bad_step_and_finishes(tmp_path, tiny_config, monkeypatch):
    _nan_at(monkeypatch, 3)
    out = tmp_path / "run"
    result = _train(*TINY, "--config", str(tiny_config), "--out", str(out), "--skip-nonfinite")
    assert result.exit_code == 0, result.output
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "4"
    assert all(torch.isfinite(p).all() for p in vrnnkit.load(out / "model.safetensors").parameters())


def test_bf16_autocast_trains_on_cpu(tmp_path, tiny_config):
    result = _train(*TINY, "--config", str(tiny_config), "--out", str(tmp_path / "run"), "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert all(torch.isfinite(p).all() for p in vrnnkit.load(tmp_path / "run" / "model.safetensors").parameters())


def test_ctrl_c_saves_the_run_and_says_how_to_resume(tmp_path, tiny_config):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "vrnnkit", "train", *TINY, "--steps", "100000", "--config", str(tiny_config), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training never logged"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"continue with: vrnnkit train --resume {out}" in stderr
    step = int(vrnnkit.read_metadata(out / "model.safetensors")["step"])
    assert step >= 2
    resumed = _train("--resume", str(out), "--steps", str(step + 2))
    assert resumed.exit_code == 0, resumed.output
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == str(step + 2)


def test_compile_option_compiles_the_batched_blocks_and_the_recurrent_step(tmp_path, tiny_config, monkeypatch):
    # The batched blocks' compile is recorded, not run (inductor takes ~50 s on this CPU);
    # the recurrent step is compiled for real and trains for a couple of steps.
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    result = vrnnkit.train(config=tiny_config, out=tmp_path / "run", compile=True, steps=2, every=2, h_dim=12, z_dim=3,
                           seq_len=4, batch_size=4, val_fraction=0.2)
    assert compiled == ["ConvEncoder", "ConvTransposeDecoder"]
    assert result.model._compiled_step is not None
    assert result.step == 2 and torch.isfinite(torch.tensor(result.metrics["loss"]))


def test_the_example_config_files_parse():
    from tests.conftest import ROOT
    from vrnnkit.training import TrainConfig
    from vrnnkit.training.config import read_toml

    files = sorted((ROOT / "examples").glob("*.toml"))
    assert files
    for path in files:
        config = TrainConfig.from_dict(read_toml(path))
        assert config.steps or config.epochs, path


def test_an_unknown_block_fails_with_exit_code_2_before_any_data_is_made_or_read(tmp_path, monkeypatch):
    import vrnnkit.data.sources as sources

    def no_data(*args, **kwargs):
        raise AssertionError("data was generated or read before the block names were checked")

    for name in ("open_source", "build_dataset", "bouncing_balls", "open_sequences", "load_mnist"):
        monkeypatch.setattr(sources, name, no_data)
    monkeypatch.setattr("vrnnkit.training.batching.build_dataset", no_data)
    result = train_cli("--decoder", "nosuch", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "unknown decoder block 'nosuch'" in result.output and "convT, convT-skip, convT-warp, mlp" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_feature_sizes_and_block_options_from_the_command_line_reach_the_model(tmp_path, tiny_config):
    result = train_cli(
        "--config", str(tiny_config), "--steps", "1", "--h-dim", "8", "--z-dim", "3", "--seq-len", "4",
        "--feature-dim", "6", "--latent-feature-dim", "5", "--decoder-option", "channels=2",
        "--likelihood-option", "std=0.1", "--likelihood", "gaussian", "--out", str(tmp_path / "run"), "-q",
    )
    assert result.exit_code == 0, result.output
    config = vrnnkit.load(tmp_path / "run" / "model.safetensors").config
    assert (config.feature_dim, config.latent_feature_dim) == (6, 5)
    # --decoder-option merges with the file's decoder table, option by option.
    assert config.decoder_options == {"channels": 2} and config.encoder_options == {"channels": 4}
    assert config.likelihood_options == {"std": 0.1}
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["feature_dim"] == 6 and saved["block_options"]["likelihood"] == {"std": 0.1}


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["channels=64"], {"channels": 64}),
        (["std=0.1", "learned=true", "name=wide", "text=\"7\""], {"std": 0.1, "learned": True, "name": "wide", "text": "7"}),
        (["a = 1", "a=2"], {"a": 2}),
    ],
)
def test_block_option_values_are_read_as_scalars(pairs, expected):
    from vrnnkit.training.config import block_options_from_pairs

    assert block_options_from_pairs({"decoder": pairs}) == {"decoder": expected}


def test_a_block_option_without_a_value_is_a_usage_error(tmp_path):
    result = train_cli("--decoder-option", "channels", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "--decoder-option takes KEY=VALUE" in result.output


def test_feature_sizes_and_block_tables_are_settable_in_toml():
    from vrnnkit.training import TrainConfig

    config = TrainConfig.from_dict({"feature_dim": 12, "latent_feature_dim": 7, "block_options": {"rnn": {"learn_initial_state": True}}})
    assert (config.model.feature_dim, config.model.latent_feature_dim) == (12, 7)
    assert config.model.rnn_options == {"learn_initial_state": True}
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_train_help_groups_the_options_in_panels_and_shows_flags_as_flags():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for panel in ("Data", "Model", "Optimisation", "Run"):
        assert f"─ {panel} " in result.output
    compile_line = next(line for line in result.output.splitlines() if "--compile" in line)
    assert "<bool>" not in compile_line
    h_dim_line = next(line for line in result.output.splitlines() if "--h-dim" in line)
    assert f"(default {vrnnkit.training.TrainConfig().model.h_dim})" in h_dim_line
