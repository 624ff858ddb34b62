from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch import nn

import vrnnkit
import vrnnkit.model.fused
from vrnnkit.errors import DataError


def _mlp_model(**overrides) -> vrnnkit.VRNN:
    config = dict(frame_shape=(28,), h_dim=100, z_dim=16, encoder="mlp", decoder="mlp")
    config.update(overrides)
    return vrnnkit.VRNN(vrnnkit.VRNNConfig(**config))


def test_parameter_count_of_the_reference_layout():
    # The reference PyTorch VRNN (x 28, h 100, z 16, GRU without biases, a decoder std head)
    # has 187,320 parameters; the same layout here is a Gaussian likelihood with a learned std.
    assert _mlp_model(likelihood="gaussian", rnn_options={"bias": False}).num_parameters() == 187_320
    # The default: Bernoulli (no std head: -2,828) and a GRU with biases (+600).
    assert _mlp_model().num_parameters() == 185_092


def _per_step_loss(model: vrnnkit.VRNN, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook loop: every block called inside the time loop, the recurrence computed by
    torch's own GRUCell, the KL by torch.distributions."""
    rnn = model.rnn
    cell = nn.GRUCell(rnn.from_features.in_features + rnn.from_latent.in_features, rnn.hidden_size)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.cat([rnn.from_features.weight, rnn.from_latent.weight], 1))
        cell.bias_ih.copy_(rnn.from_features.bias)
        cell.weight_hh.copy_(rnn.from_state[0].weight)
        cell.bias_hh.copy_(rnn.from_state[0].bias)
    h = torch.zeros(x.shape[0], rnn.hidden_size)
    nll = kl = torch.zeros(x.shape[0])
    for t in range(x.shape[1]):
        e = model.encoder(x[:, t])
        mean_q, std_q = model.posterior(e, h)
        mean_p, std_p = model.prior(h)
        z = mean_q + std_q * noise[t]
        f = model.phi_z(z)
        nll = nll - model.likelihood.log_prob(model.decoder(f, h), x[:, t])
        kl = kl + D.kl_divergence(D.Normal(mean_q, std_q), D.Normal(mean_p, std_p)).sum(-1)
        h = cell(torch.cat([e, f], -1), h)
    return nll, kl


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_batched_forward_equals_a_plain_per_step_loop(likelihood):
    model = _mlp_model(h_dim=20, z_dim=4, frame_shape=(7,), likelihood=likelihood)
    x = torch.rand(5, 9, 7)
    out = model(x, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(9, 5, 4, generator=torch.Generator().manual_seed(3))
    nll, kl = _per_step_loss(model, x, noise)
    torch.testing.assert_close(out.nll, nll.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.kl, kl.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.elbo, -(nll + kl), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.loss, (nll + kl).mean(), rtol=1e-5, atol=1e-4)


def test_per_step_terms_add_up_and_per_dimension_figures_follow():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    out = model(torch.rand(4, 6, 7))
    assert out.nll_per_step.shape == out.kl_per_step.shape == (6,)
    torch.testing.assert_close(out.nll_per_step.sum(), out.nll)
    torch.testing.assert_close(out.kl_per_step.sum(), out.kl)
    torch.testing.assert_close(out.nats_per_dim, -out.elbo.mean() / 42)
    torch.testing.assert_close(out.bits_per_dim, out.nats_per_dim / math.log(2))


def test_kl_weight_and_free_bits_change_the_loss_but_not_the_reported_kl():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    x = torch.rand(4, 6, 7)
    seed = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = model(x, generator=seed())
    annealed = model(x, kl_weight=0.25, generator=seed())
    torch.testing.assert_close(annealed.loss, plain.nll + 0.25 * plain.kl)
    floor = plain.kl_per_step.max().item() + 1.0
    floored = model(x, free_bits=floor, generator=seed())
    torch.testing.assert_close(floored.kl, plain.kl)
    torch.testing.assert_close(floored.loss, plain.nll + 6 * floor)
    floored.loss.backward()
    # Every step's KL is under the floor, so nothing pushes the posterior towards the prior:
    # the prior gets no gradient at all.
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.prior.parameters())


def test_mask_removes_padded_steps_from_every_term():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    x = torch.rand(2, 6, 7)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    masked = model(x, mask=mask, generator=torch.Generator().manual_seed(0))
    short = model(x[1:, :4], generator=torch.Generator().manual_seed(0))
    # The second sequence's first 4 steps use the second row of the same noise draw.
    full = model(x, generator=torch.Generator().manual_seed(0))
    assert masked.elbo[0] == full.elbo[0]
    assert masked.dims.tolist() == [42, 28]
    assert short.elbo.shape == (1,)
    garbage = x.clone()
    garbage[1, 4:] = torch.rand(2, 7)
    again = model(garbage, mask=mask, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.elbo, masked.elbo)


def test_input_of_the_wrong_frame_shape_is_a_clear_error():
    model = _mlp_model(h_dim=8, z_dim=2, frame_shape=(7,))
    with pytest.raises(DataError, match=r"x must have shape \(batch, time, 7\) for this model, got \(2, 3, 8\)"):
        model(torch.rand(2, 3, 8))
    with pytest.raises(DataError, match="floating-point"):
        model(torch.ones(2, 3, 7, dtype=torch.long))


def test_sample_and_predict_shapes_and_reproducibility():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(1, 8, 8), encoder="conv", decoder="convT")
    samples = model.sample(3, 5, generator=torch.Generator().manual_seed(1))
    again = model.sample(3, 5, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (3, 5, 1, 8, 8) and torch.equal(samples, again)
    assert ((samples >= 0) & (samples <= 1)).all()
    drawn = model.sample(3, 5, mean=False, generator=torch.Generator().manual_seed(1))
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}
    context = torch.rand(2, 4, 1, 8, 8)
    futures = model.predict(context, horizon=6, samples=3, generator=torch.Generator().manual_seed(2))
    assert futures.shape == (2, 3, 6, 1, 8, 8)
    assert not torch.equal(futures[:, 0], futures[:, 1]), "samples of one context must differ"


def test_predict_depends_on_the_context():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    a = model.predict(torch.zeros(1, 3, 7), 4, generator=torch.Generator().manual_seed(0))
    b = model.predict(torch.ones(1, 3, 7), 4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)


def test_iwae_bound_with_k_1_is_the_elbo_in_expectation():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    x = torch.rand(1, 5, 7).expand(4000, -1, -1)
    g = torch.Generator().manual_seed(0)
    iw = model.log_likelihood(x, k=1, generator=g)
    with torch.no_grad():
        elbo = model(x, generator=g).elbo
    # Same expectation, different estimators: log w uses sampled log-densities, the ELBO the
    # analytic KL. Compare the means within 4 standard errors of their difference.
    standard_error = (iw.var() / len(iw) + elbo.var() / len(elbo)).sqrt()
    assert abs(iw.mean() - elbo.mean()) < 4 * standard_error


def test_iwae_bound_does_not_decrease_as_k_grows():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    x = torch.rand(512, 5, 7)
    bounds = [model.log_likelihood(x, k=k, generator=torch.Generator().manual_seed(k)).mean().item() for k in (1, 4, 16, 64)]
    assert bounds == sorted(bounds), bounds
    assert bounds[-1] - bounds[0] > 0.1  # the bound visibly tightens


def test_iwae_chunking_and_masking():
    model = _mlp_model(h_dim=16, z_dim=4, frame_shape=(7,))
    x = torch.rand(3, 5, 7)
    one_chunk = model.log_likelihood(x, k=8, chunk_size=8, generator=torch.Generator().manual_seed(0))
    many = model.log_likelihood(x, k=8, chunk_size=3, generator=torch.Generator().manual_seed(0))
    assert one_chunk.shape == many.shape == (3,)
    assert torch.isfinite(many).all()
    mask = torch.ones(3, 5)
    mask[:, 3:] = 0
    garbage = x.clone()
    garbage[:, 3:] = 0.5
    torch.testing.assert_close(
        model.log_likelihood(x, k=4, mask=mask, generator=torch.Generator().manual_seed(0)),
        model.log_likelihood(garbage, k=4, mask=mask, generator=torch.Generator().manual_seed(0)),
    )
    with pytest.raises(ValueError, match="positive integer"):
        model.log_likelihood(x, k=0)


@pytest.mark.parametrize(("rnn", "layers"), [("gru", 1), ("lstm", 2)])
def test_training_learns_a_sequential_pattern(rnn, layers):
    torch.manual_seed(0)
    model = _mlp_model(h_dim=32, z_dim=4, frame_shape=(6,), rnn=rnn, rnn_layers=layers)
    # A learnable pattern: a bit moving one position per step.
    x = torch.zeros(32, 8, 6)
    for t in range(8):
        x[:, t, t % 6] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = model(x).loss.item()
    for _ in range(150):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    # Marginals alone (p = 1/6 per element) give about 21.6 nats; beating that well means the
    # recurrence carries the position from step to step.
    assert model(x).loss.item() < 0.4 * first


@pytest.mark.parametrize("posterior_layers", [1, 2, 3])
def test_fused_time_loop_matches_autograd_in_loss_and_every_gradient(posterior_layers):
    model = _mlp_model(h_dim=12, z_dim=3, frame_shape=(7,), likelihood="gaussian",
                       posterior_options={"layers": posterior_layers}).double()
    assert vrnnkit.model.fused.fused_filter_supported(model.posterior, model.rnn, model.phi_z)
    x = torch.rand(5, 6, 7, dtype=torch.float64)
    results = {}
    for fused in (True, False):
        model.fused_loop = fused
        model.zero_grad()
        out = model(x, free_bits=0.1, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        results[fused] = out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-12, atol=0)
    for name, grad in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_fused_time_loop_is_used_only_where_it_applies():
    supported = vrnnkit.model.fused.fused_filter_supported
    assert supported(*_parts(_mlp_model(h_dim=8, z_dim=2, frame_shape=(4,))))
    assert not supported(*_parts(_mlp_model(h_dim=8, z_dim=2, frame_shape=(4,), rnn="lstm")))
    assert not supported(*_parts(_mlp_model(h_dim=8, z_dim=2, frame_shape=(4,), rnn_layers=2)))
    assert not supported(*_parts(_mlp_model(h_dim=8, z_dim=2, frame_shape=(4,), posterior_options={"activation": "tanh"})))


def _parts(model):
    return model.posterior, model.rnn, model.phi_z


def test_cpu_chunks_of_frames_give_the_same_loss_and_gradients():
    config = vrnnkit.VRNNConfig(frame_shape=(1, 8, 8), h_dim=12, z_dim=3, encoder_options={"channels": 4}, decoder_options={"channels": 4})
    model = vrnnkit.VRNN(config).double()
    x = (torch.rand(3, 5, 1, 8, 8) > 0.5).double()

    def loss_and_grads(chunk_elements: int):
        model.zero_grad()
        model.cpu_chunk_elements = chunk_elements
        loss = model(x, generator=torch.Generator().manual_seed(0)).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    whole, whole_grads = loss_and_grads(1 << 30)
    chunked, chunked_grads = loss_and_grads(4 * 64)  # 4 frames a chunk: 15 frames in 4 chunks
    torch.testing.assert_close(chunked, whole, rtol=1e-10, atol=1e-10)
    for a, b in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_filter_step_is_one_step_of_the_filter_the_loss_runs():
    model = _mlp_model(h_dim=8, z_dim=3, frame_shape=(5,)).double()
    x = torch.rand(4, 1, 5, dtype=torch.float64)
    noise = torch.randn(1, 4, 3, dtype=torch.float64)
    filtered = model.filter(model.encode(x)[0], noise)
    state, z = model.filter_step(x[:, 0], model.rnn.initial_state(4, device=x.device, dtype=x.dtype), noise[0])
    assert torch.allclose(state, filtered.state) and torch.allclose(z, filtered.z[:, 0])
