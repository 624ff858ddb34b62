"""Every registered block, parametrized over the registry, so a new block is tested the day it
is registered."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vrnnkit
from vrnnkit.blocks.conv import _stage_sizes
from vrnnkit.errors import ConfigError

IMAGE = (2, 12, 10)  # small, odd-halving, non-square
VECTOR = (6,)


def _small(encoder: str, decoder: str, frame_shape, likelihood="bernoulli", **extra) -> vrnnkit.VRNN:
    options = {"channels": 4, "max_channels": 8}
    return vrnnkit.VRNN(
        vrnnkit.VRNNConfig(
            frame_shape=frame_shape,
            h_dim=12,
            z_dim=3,
            encoder=encoder,
            decoder=decoder,
            likelihood=likelihood,
            encoder_options=options if encoder == "conv" else {},
            decoder_options=options if decoder == "convT" else {},
            **extra,
        )
    )


def _assert_trains(model: vrnnkit.VRNN, x: torch.Tensor) -> None:
    out = model(x)
    assert torch.isfinite(out.loss) and out.loss.shape == ()
    out.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("decoder", vrnnkit.list_blocks("decoder"))
@pytest.mark.parametrize("encoder", vrnnkit.list_blocks("encoder"))
def test_every_encoder_decoder_pair_trains_on_images(encoder, decoder):
    needs_maps = getattr(vrnnkit.registry.get_builder("decoder", decoder), "uses_skips", False)
    if needs_maps and not getattr(vrnnkit.registry.get_builder("encoder", encoder), "provides_skips", False):
        with pytest.raises(ConfigError, match=f"decoder {decoder!r} needs the feature maps of a skip encoder"):
            _small(encoder, decoder, IMAGE)
        return
    _assert_trains(_small(encoder, decoder, IMAGE), torch.rand(3, 4, *IMAGE))


def test_mlp_blocks_train_on_vectors():
    _assert_trains(_small("mlp", "mlp", VECTOR), torch.rand(3, 4, *VECTOR))


@pytest.mark.parametrize(("encoder", "decoder"), [("conv", "mlp"), ("mlp", "convT")])
def test_conv_blocks_reject_vector_frames_with_a_clear_error(encoder, decoder):
    with pytest.raises(ConfigError, match=r"needs image frames \(C, H, W\), got frame shape \(6,\)"):
        _small(encoder, decoder, VECTOR)


def test_conv_blocks_reject_frames_smaller_than_8x8():
    with pytest.raises(ConfigError, match="at least 8x8, got 6x20"):
        _small("conv", "mlp", (1, 6, 20))


@pytest.mark.parametrize("frame_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 144, 176), (2, 9, 31)])
def test_conv_encoder_and_convT_decoder_fit_any_frame_size(frame_shape):
    encoder = vrnnkit.build("encoder", "conv", frame_shape=frame_shape, out_dim=7, channels=4, max_channels=8)
    decoder = vrnnkit.build(
        "decoder", "convT", latent_dim=3, h_dim=5, frame_shape=frame_shape, params_per_element=2,
        channels=4, max_channels=8,
    )
    x = torch.rand(2, *frame_shape)
    assert encoder(x).shape == (2, 7)
    assert decoder(torch.rand(2, 3), torch.rand(2, 5)).shape == (2, 2, *frame_shape)
    assert min(_stage_sizes(*frame_shape[1:])[-1]) <= 4


@pytest.mark.parametrize("prior", vrnnkit.list_blocks("prior"))
def test_every_prior_gives_a_mean_and_a_positive_std(prior):
    block = vrnnkit.build("prior", prior, h_dim=5, z_dim=3)
    mean, std = block(torch.randn(4, 5) * 100)
    assert mean.shape == std.shape == (4, 3)
    assert (std > 0).all() and torch.isfinite(mean).all()


def test_standard_normal_prior_is_the_vrnn_i_prior():
    mean, std = vrnnkit.build("prior", "standard-normal", h_dim=5, z_dim=3)(torch.randn(4, 5))
    assert torch.equal(mean, torch.zeros(4, 3)) and torch.equal(std, torch.ones(4, 3))


@pytest.mark.parametrize("posterior", vrnnkit.list_blocks("posterior"))
def test_every_posterior_step_equals_its_forward(posterior):
    block = vrnnkit.build("posterior", posterior, feature_dim=4, h_dim=5, z_dim=3)
    e, h = torch.randn(6, 4), torch.randn(6, 5)
    if getattr(block, "reads_future", False):  # q at t reads the frames after t: whole sequences
        e, h = e.view(2, 3, 4), h.view(2, 3, 5)
        mean, std = (x.flatten(0, 1) for x in block(e, h))
        step_mean, step_std = block.step(block.precompute(e.transpose(0, 1)).transpose(0, 1).flatten(0, 1), h.flatten(0, 1))
    else:
        mean, std = block(e, h)
        step_mean, step_std = block.step(block.precompute(e), h)
    assert mean.shape == (6, 3) and (std > 0).all()
    torch.testing.assert_close(step_mean, mean)
    torch.testing.assert_close(step_std, std)


def test_mlp_posterior_std_has_a_floor():
    block = vrnnkit.build("posterior", "mlp", feature_dim=4, h_dim=5, z_dim=3, min_std=0.01)
    with torch.no_grad():
        block.head.linear.bias.fill_(-1e4)
    _, std = block(torch.randn(6, 4), torch.randn(6, 5))
    assert (std >= 0.01).all()


def _reference_cells(block, kind: str, layers: int, feature_dim: int, latent_dim: int, hidden: int):
    """torch's own GRU/LSTM with the block's weights copied in."""
    reference = (nn.GRU if kind == "gru" else nn.LSTM)(feature_dim + latent_dim, hidden, layers)
    with torch.no_grad():
        for layer in range(layers):
            if layer == 0:
                weight_ih = torch.cat([block.from_features.weight, block.from_latent.weight], dim=1)
                bias_ih = block.from_features.bias
            else:
                weight_ih, bias_ih = block.from_below[layer - 1].weight, block.from_below[layer - 1].bias
            getattr(reference, f"weight_ih_l{layer}").copy_(weight_ih)
            getattr(reference, f"bias_ih_l{layer}").copy_(bias_ih)
            getattr(reference, f"weight_hh_l{layer}").copy_(block.from_state[layer].weight)
            getattr(reference, f"bias_hh_l{layer}").copy_(block.from_state[layer].bias)
    return reference


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_rnn_blocks_match_torch_gru_and_lstm(kind, layers):
    feature_dim, latent_dim, hidden, batch, steps = 4, 3, 5, 6, 7
    block = vrnnkit.build("rnn", kind, feature_dim=feature_dim, latent_dim=latent_dim, hidden_size=hidden, num_layers=layers)
    reference = _reference_cells(block, kind, layers, feature_dim, latent_dim, hidden)
    e, f = torch.randn(steps, batch, feature_dim), torch.randn(steps, batch, latent_dim)
    expected, _ = reference(torch.cat([e, f], dim=-1))
    state = block.initial_state(batch, device=e.device, dtype=e.dtype)
    assert state.shape == (batch, block.state_size)
    outputs = []
    pre = block.precompute(e)
    for t in range(steps):
        state = block.step(pre[t], f[t], state)
        outputs.append(block.output(state))
    torch.testing.assert_close(torch.stack(outputs), expected, rtol=1e-5, atol=1e-6)


def test_rnn_learned_initial_state_is_a_parameter():
    block = vrnnkit.build("rnn", "lstm", feature_dim=2, latent_dim=2, hidden_size=3, num_layers=2, learn_initial_state=True)
    state = block.initial_state(4, device=torch.device("cpu"), dtype=torch.float32)
    assert state.shape == (4, 12) and state.requires_grad
