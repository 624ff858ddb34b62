"""``--transpose``: piano rolls shifted along their notes at random while training."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from typer.testing import CliRunner

from vrnnkit.cli import app
from vrnnkit.errors import ConfigError
from vrnnkit.training.batching import transpose_rolls
from vrnnkit.training.config import TrainConfig

runner = CliRunner()
ENV = {"COLUMNS": "200", "VRNNKIT_DEBUG": None}


def _shift_of(before: torch.Tensor, after: torch.Tensor) -> int | None:
    """The k with after[:, d] == before[:, d - k] for every d (None if there is none)."""
    width = before.shape[-1]
    for k in range(-width + 1, width):
        moved = torch.zeros_like(before)
        if k >= 0:
            moved[:, k:] = before[:, : width - k]
        else:
            moved[:, :k] = before[:, -k:]
        if torch.equal(moved, after):
            return k
    return None


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), most=st.integers(0, 7), width=st.integers(4, 20))
def test_each_window_moves_whole_by_an_allowed_shift_and_keeps_every_note(seed, most, width):
    rng = torch.Generator().manual_seed(seed)
    rolls = (torch.rand(5, 6, width, generator=rng) < 0.15).float() * torch.rand(5, 6, width, generator=rng).add(0.5)
    rolls[0] = 0  # a silent window stays silent
    out = transpose_rolls(rolls, most, torch.Generator().manual_seed(seed + 1))
    assert out.shape == rolls.shape
    for before, after in zip(rolls, out):
        assert torch.equal(after[after != 0].sort().values, before[before != 0].sort().values)  # no note lost
        k = _shift_of(before, after)
        assert k is not None and abs(k) <= most or not before.any()
        if before.any():
            notes = before.nonzero()[:, 1]
            assert 0 <= int(notes.min()) + k and int(notes.max()) + k < width


def test_every_allowed_shift_is_drawn_and_no_other():
    rolls = torch.zeros(4000, 3, 12)
    rolls[:, :, 2] = 1  # room for 2 down and 9 up; --transpose 4 allows -2..4
    out = transpose_rolls(rolls, 4, torch.Generator().manual_seed(0))
    shifts = out.argmax(dim=-1)[:, 0] - 2
    counts = torch.bincount(shifts + 2, minlength=7)
    assert counts[:7].tolist() == [c for c in counts[:7].tolist() if c > 0] and counts.numel() == 7
    assert counts.min() > 4000 / 7 * 0.8  # uniform over the seven allowed shifts


def test_padding_neither_moves_nor_limits_the_shift():
    rolls = torch.zeros(2000, 4, 12)
    rolls[:, :2, 6] = 1
    rolls[:, 3, 11] = 1  # a note in the padding, on the top key
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(2000, 4)
    out = transpose_rolls(rolls, 3, torch.Generator().manual_seed(0), mask)
    shifts = out[:, 0].argmax(dim=-1) - 6
    assert set(shifts.tolist()) == {-3, -2, -1, 0, 1, 2, 3}  # the padded note does not stop upward moves


def test_transpose_is_refused_for_images_and_negative_counts(tmp_path):
    with pytest.raises(ConfigError, match="transpose must be a whole number"):
        TrainConfig(transpose=-1)
    result = runner.invoke(app, ["train", "bouncing-balls", "--transpose", "2", "--steps", "1", "--num-sequences", "4",
                                 "--out", str(tmp_path / "run")], env=ENV)
    assert result.exit_code == 2, result.output
    assert "--transpose shifts vectors (piano rolls)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_tiny_music_run_trains_with_transpose(tmp_path):
    song = [[60, 64, 67], [62], [], [65, 69]] * 3
    data = tmp_path / "music.json"
    data.write_text(json.dumps({"train": [song] * 4, "valid": [song], "test": [song]}))
    result = runner.invoke(app, ["train", str(data), "--transpose", "5", "--steps", "4", "--h-dim", "8", "--z-dim", "4",
                                 "--batch-size", "2", "--every", "2", "--seq-len", "0", "-q", "--out", str(tmp_path / "run")],
                           env=ENV)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["transpose"] == 5
