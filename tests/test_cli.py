from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import MNIST_DIR
from vrnnkit.cli import app
from vrnnkit.data import load_sequences

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"vrnnkit {vrnnkit.__version__}"


def test_blocks_lists_every_kind_and_name():
    result = runner.invoke(app, ["blocks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for kind, names in vrnnkit.list_blocks().items():
        assert kind in result.output
        for name in names:
            assert name in result.output


def test_an_unknown_command_exits_with_code_2_and_no_traceback():
    result = runner.invoke(app, ["trian"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_data_bouncing_balls_writes_a_uint8_file_the_loader_reads_back(tmp_path):
    out = tmp_path / "balls à.npy"
    args = ["data", "bouncing-balls", "--out", str(out), "--count", "7", "--length", "5", "--size", "16", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    array = np.load(out, allow_pickle=False)
    assert array.shape == (7, 5, 16, 16) and array.dtype == np.uint8 and array.max() > 200
    loaded = load_sequences(out, layout="NTHW")
    assert loaded.shape == (7, 5, 1, 16, 16)
    np.testing.assert_allclose(loaded[:, :, 0], array / 255.0, atol=1e-6)
    first = out.read_bytes()
    assert runner.invoke(app, args).exit_code == 0
    assert out.read_bytes() == first, "the same seed must give the same file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name], "no temporary file may remain"


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="MNIST test digits not present")
def test_data_moving_mnist_from_a_digit_range(tmp_path):
    out = tmp_path / "mm.npy"
    result = runner.invoke(app, ["data", "moving-mnist", "--mnist-dir", str(MNIST_DIR), "--out", str(out), "--count", "3",
                                 "--length", "4", "--digit-start", "9000", "--stochastic"])
    assert result.exit_code == 0, result.output
    array = np.load(out)
    assert array.shape == (3, 4, 64, 64) and array.dtype == np.uint8 and array.max() == 255


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{tmp}/balls.txt"], "ending in .npy"),
        (["--out", "{tmp}/missing/balls.npy"], "does not exist"),
        (["--out", "{tmp}/balls.npy", "--count", "0"], "--count"),
        (["--out", "{tmp}/balls.npy", "--size", "4"], "--size"),
    ],
)
def test_data_command_rejects_bad_options_with_exit_code_2_and_writes_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["data", "bouncing-balls", *[a.format(tmp=tmp_path) for a in args]], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_data_command_reports_a_full_disk_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import numpy.lib.format

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(numpy.lib.format, "open_memmap", disk_full)
    result = runner.invoke(app, ["data", "bouncing-balls", "--out", str(tmp_path / "balls.npy"), "--count", "2"])
    assert result.exit_code == 1
    assert f"cannot write {tmp_path / 'balls.npy'}: no space left on the device" in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


def test_data_moving_mnist_with_a_missing_folder_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["data", "moving-mnist", "--mnist-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "m.npy")])
    assert result.exit_code == 2
    assert "expected a folder holding the MNIST files" in result.output
    assert "Traceback" not in result.output
