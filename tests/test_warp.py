"""The motion-compensated decoder (convT-warp): its warp, its start at copy-last, its place in the model."""

from __future__ import annotations

import pytest
import torch

from vrnnkit import VRNN, VRNNConfig
from vrnnkit.blocks.distributions import normal_kl
from vrnnkit.blocks.motion import lucas_kanade
from vrnnkit.blocks.warp import warp


@pytest.mark.parametrize("shape", [(2, 1, 16, 12), (1, 3, 20, 33), (3, 2, 64, 48)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_zero_flow_returns_the_frame_bit_for_bit(shape, dtype):
    frame = torch.rand(shape, dtype=dtype)
    flow = torch.zeros(shape[0], 2, *shape[2:], dtype=dtype)
    assert torch.equal(warp(frame, flow), frame)


def test_a_whole_pixel_flow_reads_the_neighbour_it_points_at():
    frame = torch.rand(1, 1, 8, 10, dtype=torch.float64)
    flow = torch.zeros(1, 2, 8, 10, dtype=torch.float64)
    flow[:, 0] = 2.0  # dx: each pixel reads the one two columns to its right
    flow[:, 1] = -1.0  # dy: and one row above
    moved = warp(frame, flow)
    assert torch.equal(moved[..., 1:, :-2], frame[..., :-1, 2:])
    assert torch.equal(moved[..., 0, :-2], frame[..., 0, 2:])  # above the top row: the border


def test_the_gradient_reaches_the_flow_as_finite_differences_say():
    torch.manual_seed(3)
    frame = torch.rand(2, 2, 7, 9, dtype=torch.float64)
    flow = (torch.rand(2, 2, 7, 9, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    # away from whole pixels, where bilinear interpolation has kinks
    with torch.no_grad():
        flow += 0.5 * ((flow - flow.floor() - 0.5).abs() < 0.05)
    assert torch.autograd.gradcheck(lambda f: warp(frame, f), (flow,), eps=1e-6, atol=1e-6)


def _model(frame=(1, 16, 12), *, likelihood="gaussian", context=0, moved=True, motion=False) -> VRNN:
    torch.manual_seed(0)
    config = VRNNConfig(
        frame_shape=frame, h_dim=24, z_dim=4, encoder="conv-skip", decoder="convT-warp", likelihood=likelihood,
        frame_difference=True, skip_context=context, encoder_options={"channels": 4},
        decoder_options={"channels": 4, "motion": motion},
    )
    model = VRNN(config).double()
    if moved:  # away from the identity it starts at, so that the flow, blend and content all matter
        torch.nn.init.normal_(model.decoder.deconvs[-1].weight, std=0.3)
        torch.nn.init.normal_(model.decoder.deconvs[-1].bias, std=0.3)
        torch.nn.init.constant_(model.decoder.gate, 0.7)
        torch.nn.init.normal_(model.decoder.shift.weight, std=0.1)
        if motion:
            torch.nn.init.normal_(model.decoder.pace.weight, std=0.1)
            torch.nn.init.constant_(model.decoder.pace.bias, 0.8)
    return model


@pytest.mark.parametrize("motion", [False, True])
@pytest.mark.parametrize(("frame", "likelihood"), [((1, 16, 12), "gaussian"), ((3, 20, 33), "gaussian"), ((1, 16, 16), "bernoulli")])
def test_an_untrained_model_predicts_the_last_context_frame_exactly(frame, likelihood, motion):
    model = _model(frame, likelihood=likelihood, moved=False, motion=motion).float()
    x = torch.rand(2, 5, *frame)
    if likelihood == "bernoulli":  # its mean passes through clamped logits; exact at these values
        x = torch.full_like(x, 0.5)
    futures = model.predict(x, 4, samples=3)
    assert torch.equal(futures, x[:, -1, None, None].expand_as(futures))


def _per_step_loss(model: VRNN, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The negative ELBO with each step's whole work in a plain loop, the previous frame warped."""
    batch, steps = x.shape[:2]
    state = model.rnn.initial_state(batch, device=x.device, dtype=x.dtype)
    total = torch.zeros(batch, dtype=x.dtype)
    previous, previous_maps = torch.zeros_like(x[:, 0]), None
    for t in range(steps):
        if model.reads_motion and previous_maps is not None:  # the motion into frame t-1, zeros into frame 0
            seen = lucas_kanade(x[:, t - 2], x[:, t - 1]) if t >= 2 else torch.zeros_like(x[:, 0, :1]).expand(-1, 2, -1, -1)
            previous_maps = [*previous_maps[: len(model.encoder.skip_shapes)], seen]
        h = model.rnn.output(state)
        e, maps = model.encoder.encode(torch.cat([x[:, t], x[:, t] - previous], dim=1))
        mean_q, std_q = model.posterior(e, h)
        f = model.phi_z(mean_q + std_q * noise[t])
        if previous_maps is None:  # step 0 has no frame before it: zeros
            maps = [*maps, torch.zeros_like(x[:, 0, :1]).expand(-1, 2, -1, -1)] if model.reads_motion else maps
            reference, reference_maps = torch.zeros_like(x[:, 0]), [torch.zeros_like(m) for m in maps]
        else:
            reference, reference_maps = previous, previous_maps
        mean, rest = model.decoder(f, h, reference_maps, reference)
        params = torch.cat([mean.unsqueeze(1), rest], dim=1)  # a Gaussian's mean, then its scale
        mean_p, std_p = model.prior(h)
        total += -model.likelihood.log_prob(params, x[:, t]) + normal_kl(mean_q, std_q, mean_p, std_p).sum(-1)
        state = model.rnn.step(model.rnn.precompute(e), f, state)
        previous, previous_maps = x[:, t], maps
    return total.mean()


@pytest.mark.parametrize("motion", [False, True])
def test_filtering_with_the_warp_equals_a_per_step_loop(motion):
    model = _model(motion=motion)
    x = torch.rand(3, 6, 1, 16, 12, dtype=torch.float64)
    noise = torch.randn(6, 3, 4, dtype=torch.float64)
    model.noise = lambda *args, **kwargs: noise  # the same posterior noise for both paths
    assert torch.allclose(model(x).loss, _per_step_loss(model, x, noise), rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("motion", [False, True])
def test_prediction_with_the_warp_equals_a_per_step_loop(motion):
    model = _model(motion=motion)
    x = torch.rand(2, 4, 1, 16, 12, dtype=torch.float64)
    predicted = model.predict(x, 3, generator=torch.Generator().manual_seed(5))[:, 0]
    generator = torch.Generator().manual_seed(5)
    state = model.rnn.initial_state(2, device=x.device, dtype=x.dtype)
    previous, noise = None, torch.randn((4, 2, 4), generator=generator, dtype=x.dtype)  # drawn as predict draws it
    for t in range(4):  # filtering the context, one frame at a time
        state, _, reference = model.filter_step(x[:, t], state, noise[t], previous=previous, with_reference=True)
        previous = x[:, t]
    for t in range(3):
        noise = torch.randn((2, 4), generator=generator, dtype=torch.float64)
        _, frame, state, reference = model.generate_step(state, noise, reference, previous=previous)
        assert torch.allclose(frame, predicted[:, t], rtol=1e-10, atol=1e-10)
        assert not torch.allclose(frame, previous, atol=1e-3)  # the moved decoder does move the frame
        previous = frame


def test_training_moves_the_warp_away_from_the_identity():
    model = _model(moved=False)
    x = torch.rand(2, 5, 1, 16, 12, dtype=torch.float64)
    model(x).loss.backward()
    head = model.decoder.deconvs[-1]
    flow_rows = head.weight.grad[:2]
    assert flow_rows.abs().sum() > 0 and model.decoder.gate.grad.abs() > 0


@pytest.mark.parametrize("motion", [False, True])
def test_onnx_export_of_a_warp_model_matches_pytorch(tmp_path, motion):
    pytest.importorskip("onnxruntime")
    from vrnnkit.io.export import export

    model = _model(frame=(1, 16, 20), motion=motion).float().eval()
    report = export(model, tmp_path / "warp.onnx", steps=4)
    assert report["max_abs_difference"] <= 1e-4
