"""Skip-connection blocks (conv-skip / convT-skip) and the model's skip rules."""

from __future__ import annotations

import pytest
import torch

from vrnnkit import VRNN, VRNNConfig
from vrnnkit.blocks.distributions import normal_kl
from vrnnkit.errors import ConfigError
from vrnnkit.model import skips


def _model(frame=(1, 16, 12), *, context=0, residual=False, likelihood="gaussian", **extra) -> VRNN:
    torch.manual_seed(0)
    config = VRNNConfig(
        frame_shape=frame, h_dim=24, z_dim=4, encoder="conv-skip", decoder="convT-skip",
        likelihood=likelihood, skip_context=context, skip_residual=residual,
        encoder_options={"channels": 4}, decoder_options={"channels": 4}, **extra,
    )
    return VRNN(config).double()


@pytest.mark.parametrize("frame", [(1, 8, 8), (3, 16, 12), (1, 28, 28), (2, 20, 33), (1, 64, 48)])
def test_skip_blocks_keep_every_frame_size(frame):
    model = _model(frame)
    x = torch.rand(2, 3, *frame, dtype=torch.float64)
    out = model(x)
    assert torch.isfinite(out.loss)
    assert model.predict(x[:, :2], 2, samples=2).shape == (2, 2, 2, *frame)
    assert model.sample(3, 2).shape == (3, 2, *frame)


def _per_step_loss(model: VRNN, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The negative ELBO with the whole step inside a plain Python loop: the reference."""
    batch, steps = x.shape[:2]
    state = model.rnn.initial_state(batch, device=x.device, dtype=x.dtype)
    total = torch.zeros(batch, dtype=x.dtype)
    reference = skips.reference_index(steps, model.config.skip_context)
    for t in range(steps):
        h = model.rnn.output(state)
        e, _ = model.encoder.encode(x[:, t])
        mean_q, std_q = model.posterior(e, h)
        z = mean_q + std_q * noise[t]
        f = model.phi_z(z)
        r = reference[t]
        if r < 0:
            frame, maps = torch.zeros_like(x[:, 0]), [torch.zeros(batch, *s, dtype=x.dtype) for s in model.encoder.skip_shapes]
        else:
            frame = x[:, r]
            maps = model.encoder.encode(frame)[1]
        params = model.decoder(f, h, maps)
        if model.config.skip_residual:
            params = model.residual_gate * params + model.likelihood.frame_params(frame)
        mean_p, std_p = model.prior(h)
        total += -model.likelihood.log_prob(params, x[:, t]) + normal_kl(mean_q, std_q, mean_p, std_p).sum(-1)
        state = model.rnn.step(model.rnn.precompute(e), f, state)
    return total.mean()


@pytest.mark.parametrize(("context", "residual"), [(0, False), (0, True), (3, False), (3, True)])
def test_filtering_with_skips_equals_a_per_step_loop(context, residual):
    model = _model(context=context, residual=residual)
    if residual:
        torch.nn.init.normal_(model.residual_gate)  # not the zeros it starts at, which hide the decoder
    x = torch.rand(3, 6, 1, 16, 12, dtype=torch.float64)
    noise = torch.randn(6, 3, 4, dtype=torch.float64)
    model.noise = lambda *args, **kwargs: noise  # the same posterior noise for both paths
    batched = model(x).loss
    assert torch.allclose(batched, _per_step_loss(model, x, noise), rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("context", [0, 4])
def test_prediction_with_skips_equals_a_per_step_loop(context):
    model = _model(context=context, residual=True)
    x = torch.rand(2, 4, 1, 16, 12, dtype=torch.float64)
    predicted = model.predict(x, 3, generator=torch.Generator().manual_seed(5))[:, 0]
    # the same rollout by hand: filter the context, then generate with the held or moving reference
    generator = torch.Generator().manual_seed(5)
    features, _ = model.encode(x)
    filtered = model.filter(features, model.noise(4, 2, x, generator))
    state, frame = filtered.state, x[:, -1]
    reference = [frame, *model.encoder.encode(frame)[1]]
    for t in range(3):
        noise = torch.randn((2, 4), generator=generator, dtype=torch.float64)
        _, frame, state, maps = model.generate_step(state, noise, reference)
        assert torch.equal(frame, predicted[:, t])
        if context == 0:
            reference = maps


def test_a_skip_decoder_needs_a_skip_encoder():
    with pytest.raises(ConfigError, match=r"decoder 'convT-skip' needs .* encoder 'conv' gives none"):
        VRNN(VRNNConfig(frame_shape=(1, 16, 16), encoder="conv", decoder="convT-skip"))


def test_plain_conv_blocks_keep_their_parameter_names():
    model = VRNN(VRNNConfig(frame_shape=(1, 64, 64)))
    names = set(model.state_dict())
    assert {"encoder.convs.0.weight", "encoder.convs.9.weight", "decoder.deconvs.0.weight", "decoder.deconvs.12.weight"} <= names


@pytest.mark.parametrize("context", [0, 3])
def test_onnx_export_of_a_skip_model_carries_the_reference_in_its_state(tmp_path, context):
    pytest.importorskip("onnxruntime")
    from vrnnkit.io.export import export, state_size

    model = _model(context=context, residual=True).float().eval()
    torch.nn.init.normal_(model.residual_gate)
    report = export(model, tmp_path / "skip.onnx", steps=4)
    assert report["max_abs_difference"] <= 1e-4
    frame_and_maps = 16 * 12 + sum(c * h * w for c, h, w in model.encoder.skip_shapes)
    assert state_size(model) == model.rnn.state_size + frame_and_maps


def test_a_skip_decoder_with_a_plain_encoder_fails_before_any_data_is_read(tmp_path, monkeypatch):
    import vrnnkit.data.sources as sources
    from tests.conftest import train_cli

    def no_data(*args, **kwargs):
        raise AssertionError("data was generated or read before the blocks were checked")

    for name in ("open_source", "bouncing_balls", "open_sequences", "load_mnist"):
        monkeypatch.setattr(sources, name, no_data)
    result = train_cli("--encoder", "conv", "--decoder", "convT-skip", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "decoder 'convT-skip' needs the feature maps of a skip encoder, but encoder 'conv' gives none" in result.output
    assert not (tmp_path / "run").exists()


def test_the_auto_encoder_of_a_skip_decoder_is_the_skip_encoder():
    assert VRNNConfig(frame_shape=(1, 16, 16), decoder="convT-skip").encoder == "conv-skip"
    assert VRNNConfig(frame_shape=(1, 16, 16)).encoder == "conv"


@pytest.mark.parametrize("options", [{"depth": 1}, {"norm": "batch"}, {"norm": "none", "channels": 8, "max_channels": 16}])
def test_stronger_conv_options_build_and_train(options):
    config = VRNNConfig(frame_shape=(1, 20, 16), h_dim=16, z_dim=3, encoder="conv-skip", decoder="convT-skip",
                        encoder_options=options, decoder_options=options)
    model = VRNN(config)
    out = model(torch.rand(2, 3, 1, 20, 16))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
