"""A corpus of bad input for every command: each case must fail with exit code 1 or 2, a short
message that names what was wrong, no traceback (unless --debug), and no file left behind.

Cases are rows of tables; ``{in}`` is a folder of prepared bad files (see ``_make_inputs``),
``{tmp}`` the test's own folder and ``{ckpt}`` a tiny checkpoint trained once for the module.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.cli import app
from vrnnkit.errors import DataError
from vrnnkit.training import TrainConfig

runner = CliRunner()
# VRNNKIT_DEBUG: None unsets it for the call and restores it after (--debug sets it in-process).
ENV = {"COLUMNS": "200", "VRNNKIT_DEBUG": None}
TINY = ["--steps", "1", "--h-dim", "8", "--z-dim", "4", "--seq-len", "4", "--batch-size", "2"]
FRAMES = 8  # frames per sequence in clip.npy; the checkpoint's frames are 1x16x16


def _clip(count: int = 12, size: int = 16) -> np.ndarray:
    return (np.random.default_rng(0).random((count, FRAMES, size, size)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    np.save(folder / "clip.npy", _clip())
    result = vrnnkit.train(data=str(folder / "clip.npy"), layout="NTHW", steps=2, h_dim=8, z_dim=4, seq_len=4,
                           batch_size=2, every=1, out=folder / "run")
    return result.run_dir / "model.safetensors"


def _make_inputs(folder: Path, ckpt: Path) -> None:
    folder.mkdir()
    np.save(folder / "clip.npy", _clip(3))
    np.save(folder / "big.npy", _clip(3, size=20))
    np.save(folder / "vectors.npy", np.random.default_rng(0).random((3, FRAMES, 5), dtype=np.float32))
    np.save(folder / "loud.npy", np.full((3, FRAMES, 16, 16), 1e3, np.float32))
    (folder / "folder.npy").mkdir()
    (folder / "empty.npy").write_bytes(b"")
    (folder / "text.npy").write_text("frame,value\n0,1\n", encoding="utf-8")
    np.save(folder / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (folder / "pickled.npy").write_bytes(pickle.dumps({"frames": [1, 2, 3]}))
    torch.save({"weights": torch.zeros(2)}, folder / "torch.pt")
    np.save(folder / "five.npy", np.zeros((2, 3, 5, 6, 7), np.uint8))
    np.save(folder / "one.npy", np.zeros(7, np.float32))
    nan = np.zeros((3, FRAMES, 16, 16), np.float32)
    nan[1, 2, 3, 4] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "inf.npy", np.where(nan == nan, 0, np.inf).astype(np.float32))
    whole = (folder / "clip.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    for suffix in (".npz", ".gif", ".mp4"):
        (folder / f"text{suffix}").write_text("not a video\n", encoding="utf-8")
    np.savez(folder / "two.npz", a=_clip(2), b=np.zeros(3))
    # checkpoints
    model = ckpt.read_bytes()
    (folder / "truncated.safetensors").write_bytes(model[: len(model) // 2])
    save_file({"w": torch.randn(3, 3), "b": torch.zeros(2)}, str(folder / "foreign.safetensors"))
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "text.safetensors").write_text("{ not a checkpoint }", encoding="utf-8")
    torch.save(torch.nn.Linear(2, 2).state_dict(), folder / "model.pt")
    (folder / "pickled.safetensors").write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    (folder / "norun").mkdir()
    # config files
    (folder / "invalid.toml").write_text("h-dim = \n", encoding="utf-8")
    (folder / "unknown.toml").write_text("h-dim = 8\nhiden-dim = 3\n", encoding="utf-8")
    (folder / "types.toml").write_text('h-dim = "big"\n', encoding="utf-8")
    (folder / "zero.toml").write_text("h-dim = 0\n", encoding="utf-8")
    (folder / "binary.toml").write_bytes(b"\xff\xfe\x00h\x00-\x00d")
    (folder / "folder.toml").mkdir()
    # outputs: a plain file where a folder is needed, folders where a file is
    (folder / "afile").write_text("I am a file\n", encoding="utf-8")
    for name in ("outdir.gif", "outdir.npy", "outdir.onnx", "outdir.safetensors", "outdir.json"):
        (folder / name).mkdir()
    # MNIST folders of junk
    junk = folder / "mnist-junk"
    junk.mkdir()
    (junk / "t10k-images-idx3-ubyte").write_text("not IDX at all\n", encoding="utf-8")
    (junk / "t10k-labels-idx1-ubyte").write_bytes(b"")


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


TRAIN = ["train", "{file}", *TINY, "--out", "{tmp}/run"]
PREDICT = ["predict", "{file}", "--ckpt", "{ckpt}", "--out", "{tmp}/prediction.gif"]
EVAL = ["eval", "{file}", "--ckpt", "{ckpt}", "--iwae-samples", "2", "--samples", "1", "--json", "{tmp}/report.json"]

# (id, data file, what the message must say); the file's name must appear too.
DATA_PROBLEMS = [
    ("missing", "missing.npy", "no such file"),
    ("folder", "folder.npy", "a directory"),
    ("zero-byte", "empty.npy", "empty (0-byte)"),
    ("text-as-npy", "text.npy", "magic bytes"),
    ("object-dtype", "object.npy", "Python objects"),
    ("pickled-npy", "pickled.npy", "never unpickles"),
    ("torch-pt", "torch.pt", "'.pt'"),
    ("5d-impossible", "five.npy", "no known layout fits shape (2, 3, 5, 6, 7)"),
    ("1d", "one.npy", "1-D array"),
    ("nan", "nan.npy", "1 NaN"),
    ("inf", "inf.npy", "infinite"),
    ("truncated-npy", "truncated.npy", "truncated"),
    ("text-as-npz", "text.npz", "not a zip"),
    ("text-as-gif", "text.gif", "corrupt or unsupported"),
    ("text-as-mp4", "text.mp4", "corrupt or unsupported"),
    ("npz-two-arrays", "two.npz", "found 2 arrays"),
]

CASES = []
for command, template in (("train", TRAIN), ("predict", PREDICT), ("eval", EVAL)):
    for name, file, message in DATA_PROBLEMS:
        args = [a.replace("{file}", f"{{in}}/{file}") for a in template]
        CASES.append(pytest.param(args, [message, file], (2,), id=f"{command}-data-{name}"))


def _case(id: str, args: list[str], *messages: str, codes: tuple[int, ...] = (2,), marks=()):
    CASES.append(pytest.param(args, list(messages), codes, id=id, marks=marks))


# Checkpoints, for every command that reads one.
CKPT_PROBLEMS = [
    ("missing", "missing.safetensors", "no such file"),
    ("run-folder-without-model", "norun", "holds no model.safetensors"),
    ("zero-byte", "empty.safetensors", "empty (0-byte)"),
    ("truncated", "truncated.safetensors", "not a readable safetensors file"),
    ("other-program", "foreign.safetensors", "not a vrnnkit checkpoint"),
    ("text", "text.safetensors", "not a readable safetensors file"),
    ("torch-save", "model.pt", "never unpickles"),
    ("pickle", "pickled.safetensors", "never unpickles"),
    ("npy-file", "clip.npy", "not a readable safetensors file"),
]
CKPT_COMMANDS = {
    "sample": ["sample", "--out", "{tmp}/samples.gif"],
    "predict": ["predict", "{in}/clip.npy", "--out", "{tmp}/prediction.gif"],
    "eval": ["eval", "{in}/clip.npy", "--iwae-samples", "2", "--samples", "1"],
    "export": ["export", "--out", "{tmp}/model.onnx"],
}
for command, template in CKPT_COMMANDS.items():
    for name, file, message in CKPT_PROBLEMS:
        _case(f"{command}-ckpt-{name}", [*template, "--ckpt", f"{{in}}/{file}"], message, file)

# Config files.
for name, file, message in [
    ("missing", "missing.toml", "does not exist"),
    ("folder", "folder.toml", "folder.toml"),
    ("invalid-toml", "invalid.toml", "not valid TOML"),
    ("unknown-key", "unknown.toml", "unknown options: hiden_dim"),
    ("wrong-type", "types.toml", "'h_dim' must be a whole number"),
    ("zero-size", "zero.toml", "h_dim=0"),
    ("not-utf8", "binary.toml", "cannot read config file"),
]:
    _case(f"train-config-{name}", ["train", "{in}/clip.npy", "--config", f"{{in}}/{file}", "--out", "{tmp}/run"], message)

# Absurd sizes and values.
for option, value in [
    ("--h-dim", "0"), ("--z-dim", "0"), ("--batch-size", "-1"), ("--seq-len", "0"), ("--steps", "0"),
    ("--lr", "-1"), ("--val-fraction", "1.5"), ("--steps", "lots"),
]:
    _case(f"train-{option[2:]}-{value}", ["train", "{in}/clip.npy", option, value, "--out", "{tmp}/run"], option)
_case("train-seq-len-beyond-frames", ["train", "{in}/clip.npy", *TINY[:-4], "--seq-len", "9", "--out", "{tmp}/run"], "seq_len=9")
_case("train-batch-larger-than-data", ["train", "{in}/clip.npy", *TINY[:-2], "--batch-size", "500", "--out", "{tmp}/run"], "--batch-size")
_case("train-bad-layout", ["train", "{in}/clip.npy", "--layout", "XYZ", "--out", "{tmp}/run"], "layout 'XYZ'")
_case("train-unknown-dataset", ["train", "no-such-dataset", "--out", "{tmp}/run"], "no-such-dataset")
_case("train-unknown-block", ["train", "{in}/clip.npy", *TINY, "--encoder", "transformer", "--out", "{tmp}/run"], "unknown encoder block 'transformer'")
_case("train-device", ["train", "{in}/clip.npy", "--device", "tpu", "--out", "{tmp}/run"], "'tpu'")
_case("data-download-unknown", ["data", "download", "cifar"], "unknown data set 'cifar'", "mnist, jsb-chorales")
_case("train-log-unknown", ["train", "{in}/clip.npy", *TINY, "--log", "wandb", "--out", "{tmp}/run"], "unknown --log 'wandb'", "tensorboard")
_case("train-mnist-dir-is-a-file", ["train", "moving-mnist", "--mnist-dir", "{in}/afile", "--out", "{tmp}/run"], "afile", "found a file")
_case("train-mnist-junk-files", ["train", "seq-mnist", "--mnist-dir", "{in}/mnist-junk", "--out", "{tmp}/run"], "t10k-images-idx3-ubyte", "IDX header")
_case("train-resume-not-a-run", ["train", "--resume", "{in}/norun"], "norun", "config.json")
_case("train-bernoulli-data-outside-0-1", ["train", "{in}/loud.npy", *TINY, "--out", "{tmp}/run"], "loud.npy", "[0, 1]")
for command, option in [("sample", "--num"), ("sample", "--steps"), ("export", "--steps")]:
    _case(f"{command}-{option[2:]}-0", [command, "--ckpt", "{ckpt}", option, "0", "--out", "{tmp}/o.gif"], option)
for option in ("--samples", "--horizon", "--context"):
    _case(f"predict-{option[2:]}-0", [*PREDICT, option, "0"], option)
for option in ("--iwae-samples", "--batch-size", "--chunk-size"):
    _case(f"eval-{option[2:]}-0", [*EVAL, option, "0"], option)
_case("export-unknown-format", ["export", "--ckpt", "{ckpt}", "--format", "zip", "--out", "{tmp}/model.zip"], "'zip'")

# --context at or beyond the video's length (clip.npy has 8 frames).
_case("predict-context-beyond-length", [*PREDICT, "--context", "9"], "--context 9", "8 frames")
_case("predict-context-at-length-json", [*PREDICT, "--context", "8", "--json", "{tmp}/m.json"], "--json", "after the context")
_case("eval-context-at-length", [*EVAL, "--context", "8", "--horizon", "1"], "context (8) + horizon (1)")
_case("eval-context-beyond-length", [*EVAL, "--context", "12", "--horizon", "2"], "context (12)")

# Data of another frame shape than the checkpoint's, or values a Bernoulli model cannot score.
_case("predict-frame-shape", ["predict", "{in}/big.npy", *PREDICT[2:]], "frames of shape (1, 20, 20)", "--resize")
_case("eval-frame-shape", ["eval", "{in}/big.npy", *EVAL[2:]], "frames of shape (1, 20, 20)", "(1, 16, 16)")
_case("predict-vectors-to-image-model", ["predict", "{in}/vectors.npy", *PREDICT[2:], "--layout", "NTD"], "frames of shape (5,)")
_case("eval-vectors-to-image-model", ["eval", "{in}/vectors.npy", *EVAL[2:], "--layout", "NTD"], "frames of shape (5,)")
_case("predict-bernoulli-data-outside-0-1", ["predict", "{in}/loud.npy", *PREDICT[2:]], "loud.npy", "[0, 1]")
_case("eval-bernoulli-data-outside-0-1", ["eval", "{in}/loud.npy", *EVAL[2:]], "loud.npy", "[0, 1]")

# Outputs: a parent that is a file, an output that is a folder, a format we do not write.
OUTPUTS = {
    "sample": (["sample", "--ckpt", "{ckpt}", "--out"], "gif"),
    "predict": (["predict", "{in}/clip.npy", "--ckpt", "{ckpt}", "--out"], "gif"),
    "export-onnx": (["export", "--ckpt", "{ckpt}", "--out"], "onnx"),
    "export-safetensors": (["export", "--ckpt", "{ckpt}", "--format", "safetensors", "--out"], "safetensors"),
    "data": (["data", "bouncing-balls", "--count", "2", "--length", "3", "--size", "8", "--out"], "npy"),
}
for name, (prefix, suffix) in OUTPUTS.items():
    _case(f"{name}-out-parent-is-a-file", [*prefix, f"{{in}}/afile/out.{suffix}"], "afile is a file, not a folder")
    _case(f"{name}-out-is-a-folder", [*prefix, f"{{in}}/outdir.{suffix}"], f"outdir.{suffix}", "folder")
_case("sample-out-unknown-format", ["sample", "--ckpt", "{ckpt}", "--out", "{tmp}/samples.txt"], "must end in")
_case("data-out-not-npy", [*OUTPUTS["data"][0], "{tmp}/balls.txt"], "ending in .npy")
_case("eval-json-parent-is-a-file", [*EVAL[:-1], "{in}/afile/report.json"], "afile is a file, not a folder")
_case("eval-json-is-a-folder", [*EVAL[:-1], "{in}/outdir.json"], "outdir.json", "folder")
_case("predict-json-parent-is-a-file", [*PREDICT, "--context", "3", "--json", "{in}/afile/m.json"], "afile is a file, not a folder")
_case("train-out-is-a-file", ["train", "{in}/clip.npy", *TINY, "--out", "{in}/afile"], "afile", codes=(1, 2))
_case("train-out-parent-is-a-file", ["train", "{in}/clip.npy", *TINY, "--out", "{in}/afile/run"], "afile", codes=(1, 2))
_case("data-moving-mnist-missing-dir", ["data", "moving-mnist", "--mnist-dir", "{in}/nowhere", "--out", "{tmp}/mm.npy"], "nowhere", "no such folder")
_case("data-moving-mnist-junk", ["data", "moving-mnist", "--mnist-dir", "{in}/mnist-junk", "--out", "{tmp}/mm.npy"], "t10k-images-idx3-ubyte", "IDX header")
_case("data-bouncing-balls-count-0", [*OUTPUTS["data"][0], "{tmp}/b.npy", "--count", "0"], "--count")
_case("data-bouncing-balls-size-4", [*OUTPUTS["data"][0], "{tmp}/b.npy", "--size", "4"], "--size")

# --size: not a size, or a side below the conv blocks' minimum (MIN_SIDE = 8); --resize with --size.
CONVERT = ["data", "convert", "{file}", "--out", "{tmp}/converted.npy"]
for value, message in [("0", "at least 8x8"), ("7x", "HEIGHTxWIDTH"), ("abc", "HEIGHTxWIDTH"), ("4", "MIN_SIDE = 8"),
                       ("64x4", "at least 8x8"), ("-8", "HEIGHTxWIDTH")]:
    for command, template in (("train", TRAIN), ("predict", PREDICT), ("eval", EVAL), ("data-convert", CONVERT)):
        _case(f"{command}-size-{value}", [*template, f"--size={value}"], f"--size {value}")
        CASES[-1].values[1].append(message)
_case("predict-size-and-resize", [*PREDICT, "--size", "16", "--resize"], "--size or --resize")
_case("predict-out-is-the-input", ["predict", "{in}/clip.npy", "--ckpt", "{ckpt}", "--out", "{in}/clip.npy"], "it is the input file")
_case("data-convert-out-is-the-input", ["data", "convert", "{in}/clip.npy", "--out", "{in}/clip.npy"], "it is the input file")
_case("data-convert-missing", ["data", "convert", "{in}/missing.npy", "--out", "{tmp}/c.npy"], "missing.npy", "no such file")


def _fill(args: list[str], tmp: Path, inputs: Path, ckpt: Path) -> list[str]:
    return [a.replace("{file}", "{in}/clip.npy").replace("{tmp}", str(tmp)).replace("{in}", str(inputs)).replace("{ckpt}", str(ckpt)) for a in args]


@pytest.mark.parametrize(("args", "messages", "codes"), CASES)
def test_bad_input_fails_cleanly(tmp_path, ckpt, args, messages, codes):
    inputs = tmp_path / "in"
    _make_inputs(inputs, ckpt)
    before = _snapshot(tmp_path)
    ckpt_before = _snapshot(ckpt.parent)
    result = runner.invoke(app, _fill(args, tmp_path, inputs, ckpt), env=ENV)
    output = result.output
    assert result.exit_code in codes, output
    assert "Traceback" not in output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    for message in messages:
        assert message in output, output
    assert len(output.strip().splitlines()) <= 8, output
    assert _snapshot(tmp_path) == before, "a failed command must write nothing, temporary files included"
    assert _snapshot(ckpt.parent) == ckpt_before


def test_debug_shows_the_exception(tmp_path, ckpt):
    missing = tmp_path / "missing.npy"
    result = runner.invoke(app, ["--debug", "predict", str(missing), "--ckpt", str(ckpt), "--out", str(tmp_path / "p.gif")], env=ENV)
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    assert "missing.npy" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def test_a_billion_steps_is_a_valid_value(tmp_path, monkeypatch):
    seen = {}

    def fake_train(**kwargs):
        seen.update(kwargs)
        return SimpleNamespace(run_dir=tmp_path, step=0, interrupted=False, metrics={})

    monkeypatch.setattr("vrnnkit.api.train", fake_train)
    result = runner.invoke(app, ["train", "--steps", "1000000000", "--out", str(tmp_path / "run"), "-q"], env=ENV)
    assert result.exit_code == 0, result.output
    assert seen["steps"] == 1_000_000_000
    assert TrainConfig.from_dict({"steps": 1_000_000_000}).steps == 1_000_000_000


def test_names_with_spaces_and_accents_work(tmp_path):
    """Paths with spaces and non-ASCII letters, through every command."""
    data_dir = tmp_path / "mes données"
    data_dir.mkdir()
    clip = data_dir / "vidéo clip.npy"
    run_dir = tmp_path / "runs" / "été 1"
    settings = data_dir / "réglages ü.toml"
    settings.write_text("h-dim = 8\nz-dim = 4\nseq-len = 4\nbatch-size = 2\nevery = 1\nlayout = 'NTHW'\n", encoding="utf-8")

    def ok(*args):
        result = runner.invoke(app, [str(a) for a in args], env=ENV)
        assert result.exit_code == 0, result.output
        return result

    ok("data", "bouncing-balls", "--out", clip, "--count", 8, "--length", 6, "--size", 16)
    ok("train", clip, "--config", settings, "--steps", 2, "--out", run_dir, "-q")
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "samples.gif").is_file()
    outputs = [data_dir / "échantillon 1.gif", data_dir / "prédiction ü.png", data_dir / "rapport é.json",
               data_dir / "modèle exporté.safetensors"]
    ok("sample", "--ckpt", run_dir, "--num", 2, "--steps", 3, "--out", outputs[0])
    ok("predict", clip, "--ckpt", run_dir, "--layout", "NTHW", "--context", 3, "--samples", 1, "--out", outputs[1])
    ok("eval", clip, "--ckpt", run_dir / "model.safetensors", "--layout", "NTHW", "--context", 3, "--iwae-samples", 2,
       "--samples", 1, "--json", outputs[2])
    ok("export", "--ckpt", run_dir, "--format", "safetensors", "--out", outputs[3])
    for path in outputs:
        assert path.is_file() and path.stat().st_size > 0, path
    assert vrnnkit.load(outputs[3]).config.h_dim == 8
    stray = [p.name for p in (*data_dir.iterdir(), *run_dir.iterdir()) if p.name.startswith(".") or ".tmp" in p.name]
    assert stray == []
