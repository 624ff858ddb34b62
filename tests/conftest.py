from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
JSB_FILE = ROOT.parent / "shared" / "data" / "jsb-chorales" / "jsb-chorales-quarter.json"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` run only where PyTorch sees a CUDA GPU; elsewhere they are
    skipped with the reason (``python -m pytest -m cuda`` runs just them on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A TOML file that makes `vrnnkit train` on bouncing balls take a second: 24 clips, 4-channel convs."""
    path = tmp_path / "tiny.toml"
    path.write_text('num_sequences = 24\n[block_options.encoder]\nchannels = 4\n[block_options.decoder]\nchannels = 4\n')
    return path


def train_cli(*args: str):
    """`vrnnkit train ARGS` in this process, through Typer's runner, on a wide terminal."""
    from typer.testing import CliRunner

    from vrnnkit.cli import app

    return CliRunner().invoke(app, ["train", *args], env={"COLUMNS": "200"})
