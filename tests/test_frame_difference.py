"""frame_difference: phi_x reads [x_t, x_t - x_{t-1}] (zeros before the first frame), in
training, filtering, prediction, sampling and the exported graphs alike."""

from __future__ import annotations

import json

import pytest
import torch

from vrnnkit import VRNN, VRNNConfig
from vrnnkit.blocks.distributions import normal_kl
from vrnnkit.model import inputs
from vrnnkit.training import TrainConfig


def _model(frame=(1, 16, 12), **extra) -> VRNN:
    torch.manual_seed(0)
    options = {"encoder_options": {"channels": 4}, "decoder_options": {"channels": 4}} if len(frame) == 3 else {}
    config = VRNNConfig(frame_shape=frame, h_dim=24, z_dim=4, frame_difference=True, likelihood="gaussian", **options, **extra)
    return VRNN(config).double()


def _encode_one(model: VRNN, frame: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    return model.encoder(torch.cat([frame, frame - previous], dim=1))


@pytest.mark.parametrize("frame", [(1, 16, 12), (3, 9, 20), (7,)])
def test_training_loss_equals_a_per_step_loop_that_differences_by_hand(frame):
    model = _model(frame)
    x = torch.rand(3, 5, *frame, dtype=torch.float64)
    noise = torch.randn(5, 3, 4, dtype=torch.float64)
    model.noise = lambda *args, **kwargs: noise
    state = model.rnn.initial_state(3, device=torch.device("cpu"), dtype=torch.float64)
    total, previous = torch.zeros(3, dtype=torch.float64), torch.zeros_like(x[:, 0])
    for t in range(5):
        h = model.rnn.output(state)
        e = _encode_one(model, x[:, t], previous)
        mean_q, std_q = model.posterior(e, h)
        f = model.phi_z(mean_q + std_q * noise[t])
        mean_p, std_p = model.prior(h)
        total += -model.likelihood.log_prob(model.decoder(f, h), x[:, t]) + normal_kl(mean_q, std_q, mean_p, std_p).sum(-1)
        state = model.rnn.step(model.rnn.precompute(e), f, state)
        previous = x[:, t]
    torch.testing.assert_close(model(x).loss, total.mean(), rtol=1e-10, atol=1e-8)


def test_the_encoder_reads_twice_the_channels_and_a_static_clip_has_no_change():
    model = _model()
    assert model.encoder_input_shape == (2, 16, 12)
    still = torch.rand(1, 1, 16, 12, dtype=torch.float64).expand(4, 1, 16, 12)
    seen = inputs.encoder_input(still[1:], still[:-1], True)
    assert torch.equal(seen[:, 1], torch.zeros_like(seen[:, 1]))
    assert torch.equal(inputs.encoder_input(still[:1], None, True)[:, 1], still[0])  # before the first frame: zeros


@pytest.mark.parametrize("skip", [False, True])
def test_prediction_differences_against_the_last_context_frame_then_each_generated_one(skip):
    extra = {"encoder": "conv-skip", "decoder": "convT-skip", "skip_residual": True} if skip else {}
    model = _model(**extra)
    if skip:
        torch.nn.init.normal_(model.residual_gate)  # at zero the model copies its reference, whatever its state
    x = torch.rand(2, 4, 1, 16, 12, dtype=torch.float64)
    predicted = model.predict(x, 3, generator=torch.Generator().manual_seed(5))[:, 0]
    generator = torch.Generator().manual_seed(5)
    features, _ = model.encode(x)
    state = model.filter(features, model.noise(4, 2, x, generator)).state
    previous = x[:, -1]
    reference = [previous, *model.encoder.encode(torch.cat([previous, previous - x[:, -2]], 1))[1]] if skip else None
    for t in range(3):
        noise = torch.randn((2, 4), generator=generator, dtype=torch.float64)
        _, frame, state, new_reference = model.generate_step(state, noise, reference, previous=previous)
        assert torch.equal(frame, predicted[:, t])
        reference, previous = new_reference, frame


def test_filter_step_chain_equals_the_batched_filter():
    model = _model()
    x = torch.rand(2, 5, 1, 16, 12, dtype=torch.float64)
    noise = torch.randn(5, 2, 4, dtype=torch.float64)
    features, _ = model.encode(x)
    batched = model.filter(features, noise)
    state, previous = model.rnn.initial_state(2, device=torch.device("cpu"), dtype=torch.float64), None
    for t in range(5):
        state, z = model.filter_step(x[:, t], state, noise[t], previous=previous)
        torch.testing.assert_close(z, batched.z[:, t], rtol=1e-10, atol=1e-10)
        previous = x[:, t]
    torch.testing.assert_close(state, batched.state, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("skip", [False, True])
def test_onnx_export_carries_the_last_frame_in_its_state(tmp_path, skip):
    pytest.importorskip("onnxruntime")
    from vrnnkit.io.export import export, state_size

    extra = {"encoder": "conv-skip", "decoder": "convT-skip"} if skip else {}
    model = _model(**extra).float().eval()
    report = export(model, tmp_path / "diff.onnx", steps=4)
    assert report["max_abs_difference"] <= 1e-4
    skip_size = sum(torch.Size(s).numel() for s in model.reference_shapes())
    assert state_size(model) == model.rnn.state_size + 16 * 12 + skip_size


def test_training_turns_it_on_for_images_only_and_old_runs_resume_without_it(tmp_path):
    assert TrainConfig().model_config((1, 32, 32)).frame_difference is True
    assert TrainConfig().model_config((88,)).frame_difference is False
    assert TrainConfig.from_dict({"frame_difference": False}).model_config((1, 32, 32)).frame_difference is False
    assert VRNNConfig(frame_shape=(1, 32, 32)).frame_difference is False  # the library's own default is unchanged
    from vrnnkit.training.config import resumed_options

    run = tmp_path / "old-run"
    run.mkdir()
    options = TrainConfig().to_dict()
    options.pop("frame_difference")
    (run / "config.json").write_text(json.dumps({"train": options}))
    assert TrainConfig.from_dict(resumed_options(run)).model_config((1, 32, 32)).frame_difference is False


def test_a_frame_difference_that_is_not_a_flag_is_refused():
    from vrnnkit.errors import ConfigError

    with pytest.raises(ConfigError, match="frame_difference must be true or false"):
        VRNNConfig(frame_shape=(1, 16, 16), frame_difference="yes")
