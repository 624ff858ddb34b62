"""Generated junk for the loaders and the config parsers (Hypothesis).

The contract: a loader returns float32 frames ``(N, T, C, H, W)`` or vectors ``(N, T, D)``,
finite, and in [0, 1] where the stored values were uint8 or bool, or it raises a
``VRNNKitError`` (``DataError``); a config parser returns a valid config or raises
``ConfigError``. Any other exception is a bug.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vrnnkit import VRNNConfig
from vrnnkit.data import load_mnist, load_sequences, open_sequences
from vrnnkit.errors import ConfigError, DataError, VRNNKitError
from vrnnkit.training import TrainConfig
from vrnnkit.training.config import read_toml

pytestmark = [
    pytest.mark.filterwarnings("ignore::vrnnkit.data.LayoutWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # imageio probing its legacy plugins
]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _small_images(monkeypatch):
    """A mutated GIF header may claim a huge canvas: keep Pillow from allocating it."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 16)


def _check_loaded(array: np.ndarray, stored_dtype: np.dtype | None = None) -> None:
    assert isinstance(array, np.ndarray) and array.dtype == np.float32
    assert array.ndim in (3, 5) and min(array.shape) >= 1
    assert np.isfinite(array).all()
    if stored_dtype is not None and stored_dtype.kind in "bu" and stored_dtype.itemsize == 1:
        assert array.min() >= 0.0 and array.max() <= 1.0


def _load(data: bytes, suffix: str) -> np.ndarray | None:
    """load_sequences and open_sequences on ``data`` saved as a file; None when refused."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"junk{suffix}"
        path.write_bytes(data)
        try:
            array = load_sequences(path)
        except VRNNKitError:
            return None
        sequences = open_sequences(path)
        assert sequences.num_sequences == array.shape[0]
        return array


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _valid_files() -> dict[str, bytes]:
    import imageio.v3 as iio

    frames = (np.random.default_rng(0).random((3, 12, 12)) * 255).astype(np.uint8)
    npz = io.BytesIO()
    np.savez_compressed(npz, clip=frames[None])
    gif = iio.imwrite("<bytes>", np.repeat(frames[..., None], 3, axis=-1), extension=".gif")
    return {".npy": _npy_bytes(frames[None]), ".npz": npz.getvalue(), ".gif": gif}


VALID = _valid_files()


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """A valid file with a few bytes overwritten, a cut, or junk appended."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data)))]
    return bytes(data) + draw(st.binary(max_size=8))


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".npy", ".npz", ".gif", ".mp4"]))
def test_random_bytes_are_loaded_or_refused(data, suffix):
    if suffix == ".mp4":
        data = data[:64]  # each mp4 case starts ffmpeg; short junk keeps that quick
    array = _load(data, suffix)
    if array is not None:
        _check_loaded(array)


@FUZZ
@given(st.data())
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".gif"])
def test_damaged_files_are_loaded_or_refused(suffix, data):
    array = _load(data.draw(mutated(VALID[suffix])), suffix)
    if array is not None:
        _check_loaded(array)


DTYPES = st.one_of(
    hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
    hnp.complex_number_dtypes(), hnp.datetime64_dtypes(), st.just(np.dtype("U3")), st.just(np.dtype("S2")),
)


@FUZZ
@given(array=hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=4)),
       as_npz=st.booleans())
def test_random_arrays_are_loaded_or_refused(array, as_npz):
    if as_npz:
        buffer = io.BytesIO()
        np.savez(buffer, array)
        loaded = _load(buffer.getvalue(), ".npz")
    else:
        loaded = _load(_npy_bytes(array), ".npy")
    if loaded is not None:
        _check_loaded(loaded, array.dtype)
        assert loaded.size == array.size


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_a_damaged_npz_member_is_a_data_error(tmp_path, compressed):
    """A flipped byte inside an archive member fails its CRC check: a DataError naming it."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, clip=np.arange(576, dtype=np.uint8).reshape(1, 4, 12, 12))
    data = bytearray(buffer.getvalue())
    data[data.find(b"clip.npy") + 200] ^= 0xFF
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"damaged\.npz: the array 'clip' is damaged"):
        load_sequences(path)


def _idx(values: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, values.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in values.shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


@st.composite
def idx_files(draw) -> tuple[bytes, bytes]:
    kind = draw(st.sampled_from(["random", "mutated", "shapes"]))
    count = draw(st.integers(0, 3))
    images = _idx(np.zeros((count, 28, 28), np.uint8))
    labels = _idx(np.zeros(count, np.uint8))
    if kind == "random":
        return draw(st.binary(max_size=64)), draw(st.binary(max_size=32))
    if kind == "mutated":
        return draw(mutated(images)), draw(mutated(labels))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=30))
    type_code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]))
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}[type_code]
    return _idx(np.zeros(shape, dtype), type_code), _idx(np.full(draw(st.integers(0, 4)), draw(st.integers(0, 255)), np.uint8))


@FUZZ
@given(files=idx_files(), compress=st.booleans())
def test_mnist_reader_loads_or_refuses_junk(files, compress):
    with tempfile.TemporaryDirectory() as folder:
        for name, content in zip(("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), files, strict=True):
            if compress:
                (Path(folder) / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (Path(folder) / name).write_bytes(content)
        try:
            images, labels = load_mnist(folder, split="test")
        except VRNNKitError:
            return
    assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)
    assert labels.shape == (len(images),) and (labels.size == 0 or labels.max() <= 9)


# ----------------------------------------------------------------------------- configs

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
MODEL_KEYS = [*(f.name for f in __import__("dataclasses").fields(VRNNConfig)), "junk", ""]
TRAIN_KEYS = [*TrainConfig.option_names(), "hiden_dim"]


def _plausible(key: str):
    """Mostly right-looking values for a key, sometimes junk."""
    good = {
        "frame_shape": st.lists(st.integers(-2, 40), min_size=0, max_size=4),
        "encoder": st.sampled_from(["auto", "mlp", "conv", "nope"]),
        "decoder": st.sampled_from(["auto", "mlp", "convT", "nope"]),
        "likelihood": st.sampled_from(["bernoulli", "gaussian", "gmm", "x"]),
        "device": st.sampled_from(["cpu", "auto", "cuda", "tpu"]),
        "precision": st.sampled_from(["fp32", "bf16", "fp64"]),
    }.get(key, st.integers(-3, 50) | st.floats(-1, 2))
    return good | JUNK


@st.composite
def configs(draw, keys: list[str]) -> dict:
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=8))
    return {key: draw(_plausible(key)) for key in chosen}


@FUZZ
@given(data=st.one_of(configs(MODEL_KEYS), JUNK))
def test_model_config_from_dict_is_valid_or_config_error(data):
    try:
        config = VRNNConfig.from_dict(data)
    except ConfigError:
        return
    assert VRNNConfig.from_json(config.to_json()) == config


@FUZZ
@given(text=st.one_of(st.text(max_size=80), JUNK.map(json.dumps), configs(MODEL_KEYS).map(json.dumps)))
def test_model_config_from_json_is_valid_or_config_error(text):
    with contextlib.suppress(ConfigError):
        VRNNConfig.from_json(text)


@FUZZ
@given(data=configs(TRAIN_KEYS))
def test_train_config_from_dict_is_valid_or_config_error(data):
    try:
        config = TrainConfig.from_dict(data)
    except ConfigError:
        return
    assert config.model.h_dim > 0 and config.batch_size > 0 and 0 <= config.val_fraction < 1


TOML_LINES = st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from([*TRAIN_KEYS, "h-dim", "z-dim", "[table]"]),
              st.sampled_from(["1", "0", "-5", '"x"', "true", "1.5", "nan", "inf", "[1, 2]", "{a = 1}", "", "1979-05-27"])),
)


@FUZZ
@given(lines=st.lists(TOML_LINES, max_size=6))
def test_toml_config_files_are_valid_or_config_error(lines):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text("\n".join(lines), encoding="utf-8")
        with contextlib.suppress(ConfigError):
            TrainConfig.from_dict(read_toml(path))


def test_model_config_with_keys_that_are_not_text_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown config keys"):
        VRNNConfig.from_dict({"frame_shape": [4], 1: 2, None: 3})


def test_train_config_with_keys_that_are_not_text_is_a_config_error():
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({1: 2, "h_dim": 8})


@pytest.mark.parametrize("options", ["conv", {"encoder": 5}, {"decoder": ["a"]}], ids=["text", "int", "list"])
def test_train_config_block_options_must_be_a_table_of_tables(options):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"block_options": options})


def test_train_config_device_index_must_be_a_number():
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"device": "cuda:zero"})
