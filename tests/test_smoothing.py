"""The smoothing posterior (``posterior = "smoothing"``): q(z_t | x_{t:T}, h_{t-1}) with a
backward summary of the frames from t to each sequence's own end. Masks and padding change
nothing, the bounds stay below the exact log-likelihood of a linear-Gaussian model, reading the
future shrinks the ELBO's gap there, both time loops agree, and it trains and evaluates from the
command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import train_cli
from vrnnkit.blocks.base import RecurrentCell
from vrnnkit.blocks.smoothing import SmoothingPosterior
from vrnnkit.cli import app
from vrnnkit.data.varlen import pad_collate
from vrnnkit.errors import ConfigError
from vrnnkit.model.fused import fused_filter_supported

LENGTHS = (7, 3, 5)


def _model(**options) -> vrnnkit.VRNN:
    torch.manual_seed(0)
    config = vrnnkit.VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3, posterior="smoothing",
                                posterior_options={"backward_dim": 5, **options})
    return vrnnkit.VRNN(config).double()


def _sequences() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.rand(n, 6, generator=generator, dtype=torch.float64) > 0.6).double() for n in LENGTHS]


def _seeded(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shared_noise(model: vrnnkit.VRNN, monkeypatch: pytest.MonkeyPatch, rows: list[int] | None) -> None:
    """Fixed posterior noise (T_max, B, Z); ``rows`` picks the batch rows a call sees, so that a
    sequence alone draws what it drew in the batch."""
    noise = torch.randn(max(LENGTHS), len(LENGTHS), model.config.z_dim, dtype=torch.float64, generator=_seeded(2))
    picked = noise if rows is None else noise[:, rows]
    monkeypatch.setattr(model, "noise", lambda steps, batch, like, generator: picked[:steps])


# ----------------------------------------------------------------- the block and its registration


def test_it_is_registered_and_reads_the_future():
    assert "smoothing" in vrnnkit.list_blocks("posterior")
    model = _model()
    assert isinstance(model.posterior, SmoothingPosterior) and model.posterior.reads_future
    assert model.posterior.backward_rnn.hidden_size == 5
    assert vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3, posterior="smoothing")).posterior.backward_rnn.hidden_size == 8
    with pytest.raises(ValueError, match="backward_dim=0"):
        _model(backward_dim=0)


def test_the_summary_reads_the_frames_from_t_to_the_end():
    """b_t changes with the frames at steps >= t and not with those before t."""
    posterior = _model().posterior
    e = torch.randn(6, 2, 8, dtype=torch.float64, generator=_seeded())
    changed = e.clone()
    changed[4] += 1.0
    before, after = posterior.summary(e), posterior.summary(changed)
    assert torch.equal(before[5:], after[5:])
    assert (before[:5] - after[:5]).abs().amax(-1).gt(1e-6).all()


def test_the_backward_summary_does_not_depend_on_what_follows_a_sequences_end():
    posterior = _model().posterior
    e = torch.randn(7, 3, 8, dtype=torch.float64, generator=_seeded())
    lengths = torch.tensor([7, 3, 5])
    mask = (torch.arange(7).unsqueeze(1) < lengths).double()  # (T, B)
    summary = posterior.summary(e, mask)
    other = torch.where(mask.unsqueeze(-1) > 0, e, torch.randn(e.shape, dtype=torch.float64, generator=_seeded(9)) * 1e3)
    assert torch.equal(posterior.summary(other, mask), summary)
    for row, length in enumerate(lengths.tolist()):
        alone = posterior.summary(e[:length, row : row + 1])  # the sequence alone, no mask
        torch.testing.assert_close(summary[:length, row], alone[:, 0], rtol=0, atol=1e-14)
        assert (summary[length:, row] == 0).all()  # the backward pass starts at the own last step
    # A full mask is the unmasked pass; a step left out in the middle is skipped, not read.
    torch.testing.assert_close(posterior.summary(e, torch.ones(7, 3, dtype=torch.float64)), posterior.summary(e), rtol=0, atol=1e-14)
    holed = torch.ones(7, 3, dtype=torch.float64)
    holed[3, 0] = 0
    poked = e.clone()
    poked[3, 0] = float("nan")
    kept = posterior.summary(poked, holed)
    torch.testing.assert_close(kept[3, 0], kept[4, 0], rtol=0, atol=0)
    torch.testing.assert_close(kept[4:, 0], posterior.summary(e[4:, :1])[:, 0], rtol=0, atol=1e-14)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-loop", "autograd-loop"])
def test_padding_in_the_features_reaches_no_observed_step_of_the_filter(fused):
    """``filter`` itself, without the zeroing of ``checked_batch``: what the features hold at
    padded steps changes nothing at the observed steps, gradients included."""
    model = _model()
    model.fused_loop = fused
    x, mask = pad_collate(_sequences())
    features = model.encode(x)[0].detach()
    noise = model.noise(x.shape[1], x.shape[0], x, _seeded())
    poisoned = torch.where(mask.unsqueeze(-1) > 0, features, torch.full_like(features, 1e6))

    def observed(feats):
        model.zero_grad()
        filtered = model.filter(feats, noise, mask=mask)
        values = torch.cat([filtered.mean, filtered.std], -1)[mask > 0]
        values.sum().backward()
        return values, [p.grad.clone() for p in model.posterior.parameters()]

    clean, clean_grads = observed(features)
    dirty, dirty_grads = observed(poisoned)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    for a, b in zip(clean_grads, dirty_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


# ----------------------------------------------------------------- masks, padding, both loops


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


@pytest.mark.parametrize(("objective", "particles"), [("elbo", 1), ("iwae", 4), ("fivo", 4)])
def test_padding_contents_change_nothing(objective, particles):
    model = _model()
    x, mask = pad_collate(_sequences())
    padding = mask.unsqueeze(-1) == 0

    def run(batch):
        out = model(batch, mask=mask, objective=objective, particles=particles, generator=_seeded())
        model.zero_grad()
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters()]

    clean, clean_grads = run(x)
    for fill in (torch.rand(x.shape, dtype=torch.float64, generator=_seeded(7)), torch.full_like(x, float("nan"))):
        dirty, dirty_grads = run(torch.where(padding, fill, x))
        assert torch.equal(dirty.elbo, clean.elbo) and torch.equal(dirty.loss, clean.loss)
        for a, b in zip(clean_grads, dirty_grads, strict=True):
            assert torch.equal(a, b)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.posterior.backward_rnn.parameters())


@pytest.mark.parametrize(("objective", "particles"), [("elbo", 1), ("iwae", 3), ("fivo", 3)])
def test_the_fused_and_the_autograd_loops_agree(objective, particles):
    model = _model()
    assert fused_filter_supported(model.posterior, model.rnn, model.phi_z)
    x, mask = pad_collate(_sequences())
    results = []
    for fused in (True, False):
        model.fused_loop = fused
        model.zero_grad()
        out = model(x, mask=mask, objective=objective, particles=particles, generator=_seeded())
        out.loss.backward()
        results.append((out.elbo.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fused_elbo, fused_grads), (plain_elbo, plain_grads) = results
    torch.testing.assert_close(fused_elbo, plain_elbo, rtol=1e-12, atol=1e-12)
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-9, atol=1e-11, msg=name)


def test_dreg_reads_whole_sequences_and_runs_through_both_loops():
    from vrnnkit.training.config import TrainConfig
    from vrnnkit.training.loop import train_step

    x, mask = pad_collate(_sequences())
    grads = []
    for fused in (True, False):
        model = _model()
        model.fused_loop = fused
        config = TrainConfig(objective="iwae", particles=3, gradient="dreg", clip=0.0, kl_anneal=0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        train_step(model, x, optimizer, torch.amp.GradScaler("cpu", enabled=False), config, step=0, generator=_seeded(), mask=mask)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-9, atol=1e-10, msg=name)
    assert grads[0]["posterior.backward_rnn.weight_ih_l0"].abs().sum() > 0


# ----------------------------------------------------------------- prediction, one step, export


def test_one_step_filtering_and_onnx_export_are_refused_clearly(tmp_path):
    from vrnnkit.io.export import export

    model = _model()
    state = model.rnn.initial_state(2, device=torch.device("cpu"), dtype=torch.float64)
    with pytest.raises(ConfigError, match="no one-step filtering form"):
        model.filter_step(torch.zeros(2, 6, dtype=torch.float64), state, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="reads the frames after each step"):
        export(model.float(), tmp_path / "m.onnx", "onnx")
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------- a linear-Gaussian model
# z_t = A z_{t-1} + N(0, Q^2), x_t = C z_t + N(0, R^2), z_0 = 0, as in test_objectives.py: a
# VRNN whose prior, recurrence (h_t = z_t) and decoder are that model exactly, so that a
# Kalman filter gives log p(x).

A, Q, C, R = 0.9, 0.7, 1.3, 0.5


class _LinearPrior(nn.Module):
    def forward(self, h):
        return A * h, torch.full_like(h, Q)


class _StateIsZ(RecurrentCell):
    """h_t = z_t, read back from phi_z(z) = (relu(z), relu(-z))."""

    state_size = hidden_size = 1

    def output(self, state):
        return state

    def step(self, pre, f, state):
        return f[:, :1] - f[:, 1:]


class _LinearDecoder(nn.Module):
    def forward(self, f, h):
        return (C * (f[:, :1] - f[:, 1:])).view(-1, 1, 1)


class _FilteringOptimum(nn.Module):
    """p(z_t | z_{t-1}, x_t): the locally optimal filtering proposal."""

    def precompute(self, e):
        return e

    def step(self, x, h):
        var = 1.0 / (1.0 / Q**2 + C**2 / R**2)
        return var * (A * h / Q**2 + C * x / R**2), torch.full_like(h, math.sqrt(var))


class _SmoothingOptimum(nn.Module):
    """p(z_t | z_{t-1}, x_{t:T}): the locally optimal smoothing proposal, which here is the
    exact posterior. ``precompute`` runs a backward information filter over the observed
    frames: the information (J_t, k_t) of p(x_{t:T} | z_t) = exp(-J z^2 / 2 + k z) (up to a
    constant), so that q is N(z_t; A z_{t-1}, Q^2) times it, normalised."""

    reads_future = True

    def precompute(self, e, mask=None):
        observed = torch.ones_like(e[..., 0]) if mask is None else mask
        info, shift = torch.zeros_like(e[0, :, 0]), torch.zeros_like(e[0, :, 0])
        rows = []
        for t in reversed(range(e.shape[0])):
            seen = observed[t] > 0
            info = torch.where(seen, info + C**2 / R**2, info)
            shift = torch.where(seen, shift + C * e[t, :, 0] / R**2, shift)
            rows.append(torch.stack([shift, info + 1.0 / Q**2], -1))
            info, shift = A**2 * info / (1 + Q**2 * info), A * shift / (1 + Q**2 * info)
        return torch.stack(rows[::-1])

    def step(self, pre, h):
        precision = pre[:, 1:]
        return (A * h / Q**2 + pre[:, :1]) / precision, precision.rsqrt()


def _linear_gaussian_vrnn(posterior: str | nn.Module, seed: int = 0, **options) -> vrnnkit.VRNN:
    """The model with a registered posterior (``options`` its options, ``seed`` its initial
    weights; the encoder passes x_t through) or the given module."""
    torch.manual_seed(seed)
    config = vrnnkit.VRNNConfig(
        frame_shape=(1,), h_dim=1, z_dim=1, feature_dim=1, latent_feature_dim=2, encoder="mlp", decoder="mlp",
        likelihood="gaussian", likelihood_options={"std": R},
        posterior=posterior if isinstance(posterior, str) else "mlp", posterior_options=options,
    )
    model = vrnnkit.VRNN(config).double()
    model.encoder, model.prior, model.rnn, model.decoder = nn.Identity(), _LinearPrior(), _StateIsZ(), _LinearDecoder()
    if not isinstance(posterior, str):
        model.posterior = posterior
    with torch.no_grad():
        model.phi_z[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model.phi_z[0].bias.zero_()
    model.phi_z.requires_grad_(False)
    return model


def _simulate(sequences: int, steps: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    z, xs = np.zeros(sequences), []
    for _ in range(steps):
        z = A * z + Q * rng.standard_normal(sequences)
        xs.append(C * z + R * rng.standard_normal(sequences))
    return torch.tensor(np.stack(xs, 1), dtype=torch.float64).unsqueeze(-1)


def _kalman_log_likelihood(x: torch.Tensor) -> float:
    mean, var, total = 0.0, 0.0, 0.0
    for value in x.flatten().tolist():
        mean, var = A * mean, A * A * var + Q * Q  # predict z_t
        s = C * C * var + R * R
        total += -0.5 * (math.log(2 * math.pi * s) + (value - C * mean) ** 2 / s)
        gain = var * C / s
        mean, var = mean + gain * (value - C * mean), (1 - gain * C) * var
    return total


def _elbo_gap(model: vrnnkit.VRNN, x: torch.Tensor, exact: torch.Tensor, draws: int = 16, objective: str = "elbo") -> float:
    """The mean over sequences of log p(x) minus the ELBO (averaged over ``draws``); with
    ``objective="iwae"``, the one-sample ELBO with the KL sampled."""
    with torch.no_grad():
        elbo = torch.stack([model(x, objective=objective, generator=_seeded(s)).elbo for s in range(draws)]).mean(0)
    return float((exact - elbo).mean())


def test_the_optimal_smoothing_proposal_is_exact_on_padded_batches_and_closes_the_elbo_gap():
    """With q the exact posterior every path's importance weight is log p(x), per sequence of a
    padded batch (the mask reaches the posterior): IWAE, and FIVO while it does not resample,
    are exact. (Resampling on these weights is not: their per-step increments
    p(x_{t:T} | z_{t-1}) / p(x_{t+1:T} | z_t) vary, and only their product is constant.) The
    ELBO's gap, about 1.7 nats with the locally optimal filtering proposal, closes."""
    lengths = (30, 17, 9)
    sequences = [_simulate(1, n, seed)[0] for seed, n in enumerate(lengths)]
    x, mask = pad_collate(sequences)
    exact = torch.tensor([_kalman_log_likelihood(s) for s in sequences], dtype=torch.float64)
    smoothing = _linear_gaussian_vrnn(_SmoothingOptimum())
    for objective, threshold in (("iwae", 0.5), ("fivo", 0.0), ("fivo", 0.5)):
        for seed in range(3):
            bound = smoothing(x, mask=mask, objective=objective, particles=4, resample_threshold=threshold,
                              generator=_seeded(seed)).elbo.detach()
            torch.testing.assert_close(bound, exact, rtol=0, atol=1e-9 if threshold == 0 or objective == "iwae" else 0.05)
    # The ELBO with the KL sampled (IWAE with K = 1; the same expectation as the closed form,
    # whose own draws vary even at the exact posterior) has no gap left at all.
    data = _simulate(32, 20, 1)
    exact = torch.tensor([_kalman_log_likelihood(s) for s in data], dtype=torch.float64)
    filtering_gap = _elbo_gap(_linear_gaussian_vrnn(_FilteringOptimum()), data, exact, objective="iwae")
    smoothing_gap = _elbo_gap(smoothing, data, exact, objective="iwae")
    assert filtering_gap > 1.0 and abs(smoothing_gap) < 1e-9, (filtering_gap, smoothing_gap)


def test_bounds_with_the_smoothing_block_stay_below_the_exact_log_likelihood():
    """Averaged over draws, with no tolerance, for three initialisations. (They bound log p(x)
    in expectation: a single FIVO draw of a poor proposal can land above it, and here one of
    these does.)"""
    x = _simulate(1, 30, 1)
    exact = _kalman_log_likelihood(x)
    with torch.no_grad():
        for seed in range(3):
            model = _linear_gaussian_vrnn("smoothing", seed, hidden=8, backward_dim=4)
            for name, k in (("elbo", 1), ("iwae", 16), ("fivo", 16)):
                values = torch.stack([model(x, objective=name, particles=k, generator=_seeded(s)).elbo for s in range(24)])
                assert values.mean() < exact, (seed, name, values, exact)


def test_a_trained_smoothing_posterior_beats_the_filtering_ones():
    """The posterior alone trained for 100 Adam steps on 32 sequences: the smoothing block's
    ELBO gap on other sequences ends well below the trained mlp's, and below that of the best
    filtering proposal there is; the bounds stay below log p(x)."""
    train, test = _simulate(32, 20, 0), _simulate(32, 20, 1)
    exact = torch.tensor([_kalman_log_likelihood(s) for s in test], dtype=torch.float64)
    gaps, models = {}, {}
    for name, options in (("mlp", {"hidden": 16}), ("smoothing", {"hidden": 16, "backward_dim": 8})):
        model = models[name] = _linear_gaussian_vrnn(name, **options)
        optimizer = torch.optim.Adam(model.posterior.parameters(), lr=1e-2)
        generator = _seeded(0)
        for _ in range(100):
            optimizer.zero_grad()
            model(train, generator=generator).loss.backward()
            optimizer.step()
        gaps[name] = _elbo_gap(model, test, exact)
    gaps["filtering optimum"] = _elbo_gap(_linear_gaussian_vrnn(_FilteringOptimum()), test, exact)
    assert 0 < gaps["smoothing"] < 0.5 * min(gaps["mlp"], gaps["filtering optimum"]), gaps
    with torch.no_grad():
        for name, k in (("elbo", 1), ("iwae", 8), ("fivo", 8)):
            bounds = torch.stack([models["smoothing"](test, objective=name, particles=k, generator=_seeded(s)).elbo for s in range(8)])
            assert bounds.mean() < exact.mean(), (name, bounds.mean(), exact.mean())


# ----------------------------------------------------------------- configs, checkpoints, the CLI


def test_toml_names_the_smoothing_posterior_and_its_options(tmp_path):
    from vrnnkit.training.config import TrainConfig, read_toml

    path = tmp_path / "smooth.toml"
    path.write_text('posterior = "smoothing"\n\n[block_options.posterior]\nbackward_dim = 6\n')
    config = TrainConfig.from_dict(read_toml(path))
    assert config.model.posterior == "smoothing" and config.model.posterior_options == {"backward_dim": 6}
    assert config.model_config((5,)).posterior == "smoothing"


def test_a_checkpoint_round_trips(tmp_path):
    model = _model().float()
    loaded = vrnnkit.load(vrnnkit.save(model, tmp_path / "m.safetensors"))
    assert isinstance(loaded.posterior, SmoothingPosterior) and loaded.config.posterior_options == {"backward_dim": 5}
    x, mask = pad_collate([s.float() for s in _sequences()])
    torch.testing.assert_close(loaded(x, mask=mask, generator=_seeded()).elbo, model(x, mask=mask, generator=_seeded()).elbo,
                               rtol=0, atol=0)
    # Prediction filters the context it is given (the posterior reads that context only).
    context = x[:1, :4]
    predicted = loaded.predict(context, 3, 2, generator=_seeded())
    assert predicted.shape == (1, 2, 3, 6)
    torch.testing.assert_close(predicted, model.predict(context, 3, 2, generator=_seeded()), rtol=0, atol=0)


def test_train_and_eval_from_the_command_line(tmp_path):
    data = tmp_path / "walks.npy"
    np.save(data, (np.random.default_rng(0).random((20, 12, 5)) > 0.5).astype(np.float32))
    out = tmp_path / "run"
    result = train_cli(str(data), "--layout", "NTD", "--out", str(out), "--posterior", "smoothing",
                       "--posterior-option", "backward_dim=4", "--steps", "4", "--every", "2", "--h-dim", "12",
                       "--z-dim", "3", "--seq-len", "6", "--batch-size", "4", "--val-fraction", "0.2")
    assert result.exit_code == 0, result.output
    model = vrnnkit.load(out / "model.safetensors")
    assert isinstance(model.posterior, SmoothingPosterior) and model.posterior.backward_rnn.hidden_size == 4
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(data), "--layout", "NTD", "--ckpt", str(out / "model.safetensors"),
                                      "--iwae-samples", "3", "--bound", "elbo,iwae,fivo", "--json", str(report)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    likelihood = json.loads(report.read_text())["likelihood"]
    assert all(np.isfinite(likelihood[name]["bound"]) for name in ("iwae", "fivo"))
