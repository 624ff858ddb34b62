"""Sequences of different lengths: the note-list JSON, .npz and folder readers, MIDI in and out,
windows, padded batches and the output-bias initialisation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import JSB_FILE
from vrnnkit import VRNN, VRNNConfig
from vrnnkit.data.music import (
    NoteRange,
    load_piano_roll_json,
    plot_piano_roll,
    read_midi,
    roll_to_notes,
    save_piano_roll_json,
    write_midi,
)
from vrnnkit.data.varlen import (
    LengthBucketSampler,
    VariableLengthDataset,
    load_variable_length,
    pad_collate,
)
from vrnnkit.errors import ConfigError, DataError
from vrnnkit.model.initialization import init_output_bias

JSB = JSB_FILE


def _rolls(lengths=(5, 1, 9), dims=88, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((n, dims)) < 0.05).astype(np.float32) for n in lengths]


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------ note-list JSON


def test_json_round_trips_piano_rolls(tmp_path):
    splits = {"train": _rolls(), "valid": _rolls((3,), seed=1), "test": _rolls((4, 2), seed=2)}
    save_piano_roll_json(tmp_path / "m.json", splits)
    for name, rolls in splits.items():
        loaded = load_piano_roll_json(tmp_path / "m.json", name)
        assert [r.shape for r in loaded] == [r.shape for r in rolls]
        for got, expected in zip(loaded, rolls, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_json_steps_map_notes_to_dimensions_from_the_range_low(tmp_path):
    path = _write_json(tmp_path / "m.json", {"train": [[[21, 60], [], [108]]]})
    (roll,) = load_piano_roll_json(path, "train")
    assert roll.shape == (3, 88)
    assert roll.sum() == 3 and roll[0, 0] == roll[0, 39] == roll[2, 87] == 1
    assert roll_to_notes(roll) == [[21, 60], [], [108]]
    narrow = NoteRange(60, 71)
    path = _write_json(tmp_path / "n.json", {"train": [[[60, 71]]]})
    assert load_piano_roll_json(path, "train", note_range=narrow)[0].tolist() == [[1] + [0] * 10 + [1]]
    assert narrow.to_dict() == {"low": 60, "high": 71} and NoteRange.from_dict(narrow.to_dict()) == narrow


@pytest.mark.parametrize(
    ("data", "split", "message"),
    [
        ([[[60]]], "train", "expected a JSON object"),
        ({"train": [[[60]]]}, "test", "expected a split named 'test', found 'train'"),
        ({"train": []}, "train", r"\['train'\] expected at least one sequence"),
        ({"train": {"a": 1}}, "train", "expected a list of sequences"),
        ({"train": [[[60]], []]}, "train", "sequence 1: expected at least one time step"),
        ({"train": [[[60]], [[60], 61]]}, "train", "sequence 1, step 1: expected a list of MIDI note numbers"),
        ({"train": [[[60], [200]]]}, "train", "sequence 0, step 1: expected MIDI note numbers 0..127, found 200"),
        ({"train": [[[60], [60.5]]]}, "train", "step 1: expected MIDI note numbers 0..127, found 60.5"),
        ({"train": [[[60]], [[60], [], [10]]]}, "train", "sequence 1, step 2: note 10 lies outside the note range 21..108"),
    ],
)
def test_bad_json_is_a_data_error_naming_where(tmp_path, data, split, message):
    path = _write_json(tmp_path / "m.json", data)
    with pytest.raises(DataError, match=message):
        load_piano_roll_json(path, split)


def test_unreadable_json_is_a_data_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"train": [')
    with pytest.raises(DataError, match="unreadable JSON"):
        load_piano_roll_json(path, "train")
    with pytest.raises(DataError, match="name one"):
        load_variable_length(path)


@pytest.mark.skipif(not JSB.exists(), reason="the shared JSB Chorales file is absent")
def test_jsb_chorales_loads_with_the_published_counts():
    counts = {"train": (229, 13807), "valid": (76, 4602), "test": (77, 4725)}
    for split, (sequences, steps) in counts.items():
        rolls = load_variable_length(JSB, split=split)
        assert (len(rolls), sum(len(r) for r in rolls)) == (sequences, steps)
        assert all(r.shape[1] == 88 for r in rolls)


# ------------------------------------------------------------------ .npz and folders


def test_npz_of_one_array_per_sequence_round_trips_in_natural_order(tmp_path):
    rolls = _rolls((4, 2, 7, 3), dims=5)
    np.savez(tmp_path / "s.npz", **{f"seq{i * 5}": r for i, r in enumerate(rolls)})  # seq0 seq5 seq10 seq15
    loaded = load_variable_length(tmp_path / "s.npz")
    assert [r.tolist() for r in loaded] == [r.tolist() for r in rolls]


def test_npz_of_a_padded_array_and_lengths_round_trips(tmp_path):
    rolls = _rolls((4, 2, 7), dims=5)
    padded, mask = pad_collate([torch.from_numpy(r) for r in rolls])
    np.savez(tmp_path / "p.npz", x=padded.numpy(), lengths=mask.sum(1).long().numpy())
    loaded = load_variable_length(tmp_path / "p.npz")
    assert [r.tolist() for r in loaded] == [r.tolist() for r in rolls]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 5, 3)), "lengths": np.array([5, 6])}, "found 6 for sequence 1"),
        ({"x": np.zeros((2, 5, 3)), "lengths": np.array([5, 0])}, "found 0 for sequence 1"),
        ({"x": np.zeros((2, 5, 3)), "lengths": np.array([5, 5, 5])}, "expected 'lengths' as 2 integers"),
        ({"x": np.zeros((2, 5, 3)), "lengths": np.array([1.0, 2.0])}, "expected 'lengths' as 2 integers"),
        ({"x": np.zeros((2, 5, 3)), "y": np.zeros(2), "lengths": np.array([1, 2])}, "one padded array"),
        ({"a": np.zeros((3, 2)), "b": np.zeros((0, 2))}, r"\['b'\]: expected at least one time step"),
        ({"a": np.zeros((3, 2)), "b": np.zeros((3, 4))}, "one frame size"),
        ({"a": np.array([[np.nan]])}, "expected finite values"),
    ],
)
def test_bad_npz_is_a_data_error(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_variable_length(tmp_path / "bad.npz")


def test_npz_needing_a_pickle_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match="unpickling"):
        load_variable_length(tmp_path / "obj.npz")


def test_folder_of_npy_files_reads_in_natural_order(tmp_path):
    rolls = _rolls((3, 6, 2), dims=4)
    for i, roll in zip((1, 10, 2), rolls, strict=True):
        np.save(tmp_path / f"piece{i}.npy", roll)
    loaded = load_variable_length(tmp_path)
    assert [r.tolist() for r in loaded] == [rolls[0].tolist(), rolls[2].tolist(), rolls[1].tolist()]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found none"):
        load_variable_length(tmp_path / "empty")


# ------------------------------------------------------------------ MIDI


def test_midi_write_then_read_gives_the_same_roll(tmp_path):
    pytest.importorskip("mido")
    roll = _rolls((12,), seed=3)[0]
    roll[4:8, 39] = 1  # a held note: one MIDI note over four steps
    for rate in ({"fps": 4}, {"steps_per_beat": 2}):
        write_midi(roll, tmp_path / "r.mid", **rate)
        back = read_midi(tmp_path / "r.mid", **rate)
        np.testing.assert_array_equal(back, roll[: len(back)])
        assert roll[len(back) :].sum() == 0  # only silent trailing steps may be lost
    folder = tmp_path / "songs"
    folder.mkdir()
    write_midi(roll, folder / "a.mid", fps=4)
    assert load_variable_length(folder, fps=4)[0].tolist() == back.tolist()


def test_unparsable_midi_is_a_data_error(tmp_path):
    pytest.importorskip("mido")
    path = tmp_path / "broken.mid"
    path.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(DataError, match="expected a readable MIDI file"):
        read_midi(path, fps=4)
    with pytest.raises(ConfigError, match="exactly one of fps"):
        read_midi(path)


def test_piano_roll_png_is_written(tmp_path):
    plot_piano_roll(_rolls((40,))[0], tmp_path / "roll.png", title="a roll", steps_per_beat=1)
    assert (tmp_path / "roll.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ windows and batches


def test_pad_collate_pads_with_zeros_and_masks_real_steps():
    items = [torch.ones(3, 2), torch.full((1, 2), 2.0)]
    batch, mask = pad_collate(items)
    assert batch.shape == (2, 3, 2)
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch[1].tolist() == [[2, 2], [0, 0], [0, 0]]


@pytest.mark.parametrize("seq_len", [0, 1, 4, 100])
def test_windows_serve_every_real_step_once(seq_len):
    rolls = _rolls((5, 1, 9), dims=3)
    dataset = VariableLengthDataset(rolls, seq_len)
    assert dataset.num_steps == 15
    assert max(dataset.lengths) == (9 if seq_len in (0, 100) else seq_len)
    rebuilt = np.concatenate([dataset[i].numpy() for i in range(len(dataset))])
    np.testing.assert_array_equal(rebuilt, np.concatenate(rolls))


def test_length_buckets_cover_every_item_once_and_group_similar_lengths():
    lengths = list(range(1, 101))
    sampler = LengthBucketSampler(lengths, batch_size=10, pool_batches=10, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) == 9 for b in batches)


# ------------------------------------------------------------------ output-bias initialisation


def test_output_bias_starts_at_the_logit_of_the_data_mean():
    rolls = _rolls((50, 30), dims=6, seed=4)
    model = VRNN(VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=2))
    bias = init_output_bias(model, rolls)
    mean = np.clip(np.concatenate(rolls).mean(0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(torch.sigmoid(bias).numpy(), mean, rtol=1e-5)
    assert torch.equal(model.decoder.head.bias.detach(), bias)
    with pytest.raises(ConfigError, match="Bernoulli"):
        init_output_bias(VRNN(VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=2, likelihood="gaussian")), rolls)


def test_midi_without_mido_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mido", None)  # import mido now fails
    with pytest.raises(ConfigError, match=r"vrnnkit\[midi\]"):
        write_midi(np.zeros((2, 88)), tmp_path / "x.mid", fps=4)
