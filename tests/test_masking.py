"""Padded batches: the masked objective equals the objective of the sequences one by one, and
nothing in a padded position (NaN, inf) can reach the loss, the bound or the gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vrnnkit import VRNN, VRNNConfig
from vrnnkit.data.varlen import pad_collate
from vrnnkit.model.fused import fused_filter_supported

LENGTHS = (7, 3, 5)


def _model(**options) -> VRNN:
    torch.manual_seed(0)
    config = VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3, **options)
    return VRNN(config).double()


def _sequences() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.rand(n, 6, generator=generator, dtype=torch.float64) > 0.6).double() for n in LENGTHS]


def _shared_noise(model: VRNN, monkeypatch: pytest.MonkeyPatch, rows: list[int] | None) -> torch.Tensor:
    """Give the model fixed posterior noise (T_max, B, Z); ``rows`` picks the batch rows that a
    call sees, so that a sequence alone gets the very draws it had in the batch."""
    noise = torch.randn(max(LENGTHS), len(LENGTHS), model.config.z_dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(2))
    picked = noise if rows is None else noise[:, rows]
    monkeypatch.setattr(model, "noise", lambda steps, batch, like, generator: picked[:steps])
    return noise


@pytest.mark.parametrize("fused", [True, False], ids=["fused-loop", "autograd-loop"])
def test_masked_elbo_of_a_padded_batch_equals_each_sequence_alone(monkeypatch, fused):
    model = _model()
    model.fused_loop = fused
    sequences = _sequences()
    x, mask = pad_collate(sequences)
    _shared_noise(model, monkeypatch, None)
    batched = model(x, mask=mask)
    alone = []
    for row, sequence in enumerate(sequences):
        _shared_noise(model, monkeypatch, [row])
        alone.append(model(sequence[None]).elbo[0])
    torch.testing.assert_close(batched.elbo, torch.stack(alone), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched.loss, -torch.stack(alone).mean(), rtol=1e-12, atol=1e-12)
    assert batched.dims.tolist() == [n * 6 for n in LENGTHS]


def test_masked_gradients_equal_the_sum_of_each_sequence_alone(monkeypatch):
    model = _model()
    sequences = _sequences()
    x, mask = pad_collate(sequences)
    _shared_noise(model, monkeypatch, None)
    batched = torch.autograd.grad(-model(x, mask=mask).elbo.sum(), list(model.parameters()))
    summed = [torch.zeros_like(p) for p in model.parameters()]
    for row, sequence in enumerate(sequences):
        _shared_noise(model, monkeypatch, [row])
        grads = torch.autograd.grad(-model(sequence[None]).elbo.sum(), list(model.parameters()))
        summed = [a + b for a, b in zip(summed, grads, strict=True)]
    for got, expected in zip(batched, summed, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf"), 1e30])
@pytest.mark.parametrize("fused", [True, False], ids=["fused-loop", "autograd-loop"])
def test_non_finite_values_in_padding_change_nothing(poison, fused):
    model = _model()
    model.fused_loop = fused
    x, mask = pad_collate(_sequences())
    poisoned = x.masked_fill(mask[..., None] == 0, poison)

    def loss_and_grads(batch):
        out = model(batch, mask=mask, free_bits=0.5, generator=torch.Generator().manual_seed(3))
        model.zero_grad()
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters()]

    clean, clean_grads = loss_and_grads(x)
    dirty, dirty_grads = loss_and_grads(poisoned)
    assert torch.isfinite(dirty.loss)
    assert torch.equal(clean.loss, dirty.loss)
    assert torch.equal(clean.kl_per_step, dirty.kl_per_step)
    for a, b in zip(clean_grads, dirty_grads, strict=True):
        assert torch.isfinite(b).all()
        assert torch.equal(a, b)
    bound = model.log_likelihood(poisoned, 4, mask=mask, generator=torch.Generator().manual_seed(4))
    expected = model.log_likelihood(x, 4, mask=mask, generator=torch.Generator().manual_seed(4))
    assert torch.equal(bound, expected)


def test_kl_of_fully_padded_steps_is_zero_and_free_bits_count_only_real_steps():
    model = _model()
    x, mask = pad_collate(_sequences())
    out = model(x, mask=mask, free_bits=100.0, generator=torch.Generator().manual_seed(5))
    # every step's KL is floored at 100 nats times the share of sequences observed at that step
    observed = mask.mean(0)
    torch.testing.assert_close(out.loss - out.nll, (100.0 * observed).sum())


def test_dropout_defaults_to_off_and_leaves_the_checkpoint_keys_unchanged():
    plain = VRNN(VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3))
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in plain.modules())
    options = {"dropout": 0.0}
    explicit = VRNN(VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3, encoder_options=options,
                               decoder_options=options, prior_options=options,
                               posterior_options=options, rnn_options=options))
    assert list(plain.state_dict()) == list(explicit.state_dict())


@pytest.mark.parametrize("kind", ["encoder", "decoder", "prior", "posterior", "rnn"])
def test_dropout_acts_in_training_only(kind):
    model = _model(**{f"{kind}_options": {"dropout": 0.5}})
    x, mask = pad_collate(_sequences())

    def elbo():
        return model(x, mask=mask, generator=torch.Generator().manual_seed(6)).elbo

    model.train()
    assert not torch.equal(elbo(), elbo())
    model.eval()
    assert torch.equal(elbo(), elbo())


@pytest.mark.parametrize("kind", ["posterior", "rnn"])
def test_dropout_in_the_time_loop_makes_the_fused_loop_step_aside_while_training(kind):
    model = _model(**{f"{kind}_options": {"dropout": 0.2}})
    supported = lambda: fused_filter_supported(model.posterior, model.rnn, model.phi_z)  # noqa: E731
    assert not supported()
    model.eval()
    assert supported()


@pytest.mark.parametrize("dropout", [-0.1, 1.0, "0.5", True])
def test_a_bad_dropout_is_a_config_error(dropout):
    with pytest.raises(ValueError, match="dropout must be a probability"):
        VRNN(VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3, decoder_options={"dropout": dropout}))
