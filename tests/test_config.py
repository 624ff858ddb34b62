from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vrnnkit
from vrnnkit.errors import ConfigError


def test_auto_blocks_resolve_by_frame_kind_and_defaults_are_explicit():
    image = vrnnkit.VRNNConfig(frame_shape=(1, 32, 32))
    vector = vrnnkit.VRNNConfig(frame_shape=[28], h_dim=64)
    assert (image.encoder, image.decoder) == ("conv", "convT")
    assert (vector.encoder, vector.decoder) == ("mlp", "mlp")
    assert vector.frame_shape == (28,)
    assert vector.feature_dim == vector.latent_feature_dim == 64


def test_json_round_trip_keeps_every_field():
    config = vrnnkit.VRNNConfig(
        frame_shape=(3, 16, 20), z_dim=8, h_dim=32, rnn="lstm", rnn_layers=2, likelihood="gmm",
        likelihood_options={"components": 3}, decoder_options={"channels": 8},
    )
    text = config.to_json()
    assert json.loads(text)["frame_shape"] == [3, 16, 20]
    assert vrnnkit.VRNNConfig.from_json(text) == config


def test_unknown_keys_are_rejected_with_the_valid_keys_listed():
    with pytest.raises(ConfigError, match=r"unknown config keys: hdim, zdim; valid keys: frame_shape, z_dim"):
        vrnnkit.VRNNConfig.from_dict({"frame_shape": [4], "hdim": 3, "zdim": 2})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"frame_shape": [4], "h_dim": 0}, r"sizes must be positive integers, got h_dim=0"),
        ({"frame_shape": [4], "z_dim": "16"}, r"z_dim='16'"),
        ({"frame_shape": [4], "rnn_layers": True}, r"rnn_layers=True"),
        ({"frame_shape": [4, 4]}, r"frame_shape must be \(D,\) for vectors or \(C, H, W\)"),
        ({"frame_shape": [1, 0, 4]}, r"frame_shape must be"),
        ({"frame_shape": "28"}, r"frame_shape must be"),
        ({"frame_shape": [4], "rnn": "transformer"}, r"unknown rnn block 'transformer'; registered rnn blocks: gru, lstm"),
        ({"frame_shape": [4], "decoder": 3}, r"must be a block name"),
        ({"frame_shape": [4], "decoder_options": [1]}, r"decoder_options must be a mapping"),
        ({"h_dim": 3}, r"needs 'frame_shape'"),
    ],
)
def test_invalid_configs_raise_config_error_naming_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        vrnnkit.VRNNConfig.from_dict(data)


def test_block_options_that_a_block_does_not_take_are_a_config_error():
    config = vrnnkit.VRNNConfig(frame_shape=(4,), prior_options={"widht": 3})
    with pytest.raises(ConfigError, match=r"cannot build prior block 'mlp' with options \{'widht': 3\}"):
        vrnnkit.VRNN(config)


def test_block_options_may_not_override_model_sizes():
    config = vrnnkit.VRNNConfig(frame_shape=(4,), prior_options={"z_dim": 3})
    with pytest.raises(ConfigError, match="prior_options may not set z_dim"):
        vrnnkit.VRNN(config)


def test_invalid_json_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        vrnnkit.VRNNConfig.from_json("{frame_shape: [4]")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["frame_shape", "z_dim", "h_dim", "rnn", "encoder", "prior_options", "junk"]), json_values))
def test_junk_configs_either_load_or_raise_config_error(data):
    try:
        config = vrnnkit.VRNNConfig.from_dict(data)
    except ConfigError as error:
        assert str(error)
    else:
        assert vrnnkit.VRNNConfig.from_json(config.to_json()) == config


def test_run_folders_that_did_not_record_newer_options_resume_with_the_old_defaults(tmp_path):
    from vrnnkit.training import DEFAULT_STEPS, TrainConfig, read_config

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"train": {"steps": None, "epochs": None, "lr": 0.002}}))
    options = read_config(old)
    assert options == {"steps": 1500, "epochs": None, "lr": 0.002, "frame_difference": False,
                       "lr_schedule": "constant", "ema": 0.0}
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"train": {"steps": 40, "lr_schedule": "cosine", "ema": 0.99, "frame_difference": None}}))
    assert read_config(new) == {"steps": 40, "lr_schedule": "cosine", "ema": 0.99, "frame_difference": None}
    defaults = TrainConfig()
    assert (defaults.lr_schedule, defaults.ema, defaults.steps, DEFAULT_STEPS) == ("cosine", 0.99, None, 1200)
