from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import vrnnkit
from vrnnkit.errors import CheckpointError, WriteError
from vrnnkit.io import checkpoint


@pytest.fixture
def model() -> vrnnkit.VRNN:
    config = vrnnkit.VRNNConfig(
        frame_shape=(1, 8, 8), h_dim=16, z_dim=4, rnn="lstm", likelihood="gmm",
        likelihood_options={"components": 2}, encoder_options={"channels": 4}, decoder_options={"channels": 4},
    )
    return vrnnkit.VRNN(config)


@pytest.fixture
def saved(tmp_path, model):
    return vrnnkit.save(model, tmp_path / "model.safetensors", metadata={"data_scale": "0.5"})


def test_save_then_load_gives_bit_identical_outputs(model, saved):
    loaded = vrnnkit.load(saved)
    assert loaded.config == model.config
    x = torch.rand(2, 3, 1, 8, 8)
    for a, b in [(model, loaded)]:
        out_a = a(x, generator=torch.Generator().manual_seed(0))
        out_b = b(x, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out_a.loss, out_b.loss)
        assert torch.equal(
            a.sample(2, 4, mean=False, generator=torch.Generator().manual_seed(1)),
            b.sample(2, 4, mean=False, generator=torch.Generator().manual_seed(1)),
        )
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_header_holds_config_versions_and_user_metadata(saved, model):
    header = vrnnkit.read_metadata(saved)
    assert header["format"] == "vrnnkit" and header["format_version"] == "1"
    assert header["vrnnkit_version"] == vrnnkit.__version__
    assert header["data_scale"] == "0.5"
    assert vrnnkit.VRNNConfig.from_json(header["config"]) == model.config


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, model, saved):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    before = saved.read_bytes()

    def broken_write(*args, **kwargs):
        raise OSError(28, "No space left on device")

    original = checkpoint.save_file
    checkpoint.save_file = broken_write
    try:
        with pytest.raises(WriteError, match="no space left on the device"):  # exit 1 on the command line
            vrnnkit.save(model, saved)
    finally:
        checkpoint.save_file = original
    assert saved.read_bytes() == before, "a failed save must leave the previous checkpoint intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_saving_into_a_missing_folder_is_a_clear_error(tmp_path, model):
    with pytest.raises(CheckpointError, match="does not exist"):
        vrnnkit.save(model, tmp_path / "nope" / "model.safetensors")


def test_reserved_or_non_string_metadata_is_refused(tmp_path, model):
    with pytest.raises(ValueError, match="reserved"):
        vrnnkit.save(model, tmp_path / "m.safetensors", metadata={"config": "{}"})
    with pytest.raises(TypeError, match="strings to strings"):
        vrnnkit.save(model, tmp_path / "m.safetensors", metadata={"scale": 0.5})


def _rewrite_header(source, **changes):
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    metadata.update(changes)
    return tensors, metadata


def _corrupt_cases(tmp_path, saved):
    data = saved.read_bytes()
    cases = {}
    cases["missing"] = (tmp_path / "absent.safetensors", "found no such file or directory")
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    cases["folder"] = (folder, "found a directory")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "found an empty (0-byte) file")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    cases["truncated"] = (truncated, "not a readable safetensors file")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, or a pickle, or anything" * 10)
    cases["garbage"] = (garbage, "not a readable safetensors file")
    text = tmp_path / "text.safetensors"
    text.write_text("hello")
    cases["tiny text"] = (text, "not a readable safetensors file")
    flipped = bytearray(data)
    flipped[10:14] = b"\xff\xff\xff\xff"
    header_broken = tmp_path / "header.safetensors"
    header_broken.write_bytes(bytes(flipped))
    cases["corrupt header"] = (header_broken, "not a readable safetensors file")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    cases["another program's file"] = (foreign, "not a vrnnkit checkpoint")
    for name, changes, message in [
        ("future version", {"format_version": "99"}, "format version '99'"),
        ("bad config json", {"config": "{"}, "not valid JSON"),
        ("invalid config", {"config": json.dumps({"frame_shape": [4], "rnn": "nope"})}, "cannot be rebuilt: unknown rnn block 'nope'"),
        ("weights of another shape", {"config": json.dumps({"frame_shape": [1, 8, 8], "h_dim": 17, "z_dim": 4})}, "weights do not fit"),
    ]:
        tensors, metadata = _rewrite_header(saved, **changes)
        path = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        cases[name] = (path, message)
    return cases


def test_every_corrupt_or_foreign_file_raises_checkpoint_error_naming_the_file(tmp_path, saved):
    for name, (path, message) in _corrupt_cases(tmp_path, saved).items():
        with pytest.raises(CheckpointError) as info:
            vrnnkit.load(path)
        assert message in str(info.value), f"{name}: {info.value}"
        assert str(path) in str(info.value), f"{name}: message does not name the file"


def test_load_to_a_device_and_names_with_spaces_and_non_ascii_letters(tmp_path, model):
    path = vrnnkit.save(model, tmp_path / "modèle à tester.safetensors")
    loaded = vrnnkit.load(os.fspath(path), device="cpu")
    assert next(loaded.parameters()).device.type == "cpu"
