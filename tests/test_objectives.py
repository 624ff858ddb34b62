"""IWAE and FIVO, as objectives and as bounds: exactness at K = 1, the bound property against a
Kalman filter's exact log-likelihood, masking, resampling, training and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vrnnkit
from vrnnkit.blocks.base import RecurrentCell
from vrnnkit.model.objectives import fivo_log_likelihood, systematic_ancestors

ROOT = Path(__file__).resolve().parents[1]


def _model(**overrides) -> vrnnkit.VRNN:
    config = dict(frame_shape=(10,), h_dim=16, z_dim=4, encoder="mlp", decoder="mlp")
    config.update(overrides)
    torch.manual_seed(0)
    return vrnnkit.VRNN(vrnnkit.VRNNConfig(**config)).double()


def _bits(batch: int = 3, steps: int = 7, dim: int = 10, seed: int = 0) -> torch.Tensor:
    return (torch.rand(batch, steps, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) < 0.3).double()


def _seeded(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("objective", ["iwae", "fivo"])
def test_one_particle_is_exactly_the_one_sample_elbo_with_a_sampled_kl(objective):
    model, x = _model(), _bits()
    single = model.log_likelihood(x, 1, generator=_seeded())  # IWAE with K = 1: sum_t log w_t
    out = model(x, objective=objective, particles=1, generator=_seeded())
    torch.testing.assert_close(out.elbo.detach(), single, rtol=0, atol=1e-12)
    assert torch.isclose(out.loss, -single.mean(), rtol=0, atol=1e-10)
    # Averaged over draws, it is the closed-form-KL ELBO (same expectation).
    draws = torch.stack([model(x, objective=objective, particles=1, generator=_seeded(s)).elbo.detach() for s in range(400)])
    closed = torch.stack([model(x, generator=_seeded(s)).elbo.detach() for s in range(400)])
    spread = (draws.std(0) / 20 + closed.std(0) / 20) * 4
    assert ((draws.mean(0) - closed.mean(0)).abs() < spread).all(), (draws.mean(0), closed.mean(0), spread)


def test_bounds_grow_with_the_number_of_particles_on_average():
    model, x = _model(), _bits()
    means = {}
    for objective in ("iwae", "fivo"):
        for k in (1, 4, 32):
            values = [model(x, objective=objective, particles=k, generator=_seeded(s)).elbo.detach().sum() for s in range(20)]
            means[objective, k] = float(torch.stack(values).mean())
    for objective in ("iwae", "fivo"):
        assert means[objective, 1] < means[objective, 4] < means[objective, 32], means
    assert means["fivo", 4] > means["iwae", 4]  # resampling pays on 7 steps already


# ----------------------------------------------------------------- a linear-Gaussian model

A, Q, C, R = 0.9, 0.7, 1.3, 0.5  # z_t = A z_{t-1} + N(0, Q^2), x_t = C z_t + N(0, R^2), z_0 = 0


class _LinearPrior(nn.Module):
    def forward(self, h):
        return A * h, torch.full_like(h, Q)


class _StateIsZ(RecurrentCell):
    """h_t = z_t, read back from phi_z(z) = (relu(z), relu(-z))."""

    state_size = 1

    def output(self, state):
        return state

    def precompute(self, e):
        return e

    def step(self, pre, f, state):
        return f[:, :1] - f[:, 1:]


class _LinearDecoder(nn.Module):
    def forward(self, f, h):
        return (C * (f[:, :1] - f[:, 1:])).view(-1, 1, 1)


class _OptimalPosterior(nn.Module):
    """q(z_t | x_t, z_{t-1}) = p(z_t | x_t, z_{t-1}), the locally optimal proposal (the encoder
    passes x_t through)."""

    def precompute(self, e):
        return e

    def step(self, x, h):
        var = 1.0 / (1.0 / Q**2 + C**2 / R**2)
        return var * (A * h / Q**2 + C * x / R**2), torch.full_like(h, math.sqrt(var))

    def forward(self, x, h):
        return self.step(x, h)


def _linear_gaussian_vrnn(optimal_proposal: bool) -> vrnnkit.VRNN:
    """A VRNN whose generative model is exactly the scalar linear-Gaussian state-space model
    above. Its posterior is the default (random) mlp, or the locally optimal proposal: any
    proposal gives a lower bound."""
    model = _model(frame_shape=(1,), h_dim=1, z_dim=1, latent_feature_dim=2, likelihood="gaussian",
                   likelihood_options={"std": R}, rnn="gru")
    model.prior, model.rnn, model.decoder = _LinearPrior(), _StateIsZ(), _LinearDecoder()
    if optimal_proposal:
        model.encoder, model.posterior = nn.Identity(), _OptimalPosterior()
    with torch.no_grad():
        model.phi_z[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model.phi_z[0].bias.zero_()
    return model


def _kalman_log_likelihood(x: np.ndarray) -> float:
    mean, var, total = 0.0, 0.0, 0.0
    for value in x:
        mean, var = A * mean, A * A * var + Q * Q  # predict z_t
        s = C * C * var + R * R
        total += -0.5 * (math.log(2 * math.pi * s) + (value - C * mean) ** 2 / s)
        gain = var * C / s
        mean, var = mean + gain * (value - C * mean), (1 - gain * C) * var
    return total


@pytest.mark.parametrize("optimal_proposal", [False, True])
def test_bounds_never_exceed_the_kalman_filters_exact_log_likelihood(optimal_proposal):
    model = _linear_gaussian_vrnn(optimal_proposal)
    rng = np.random.default_rng(1)
    z, xs = 0.0, []
    for _ in range(30):
        z = A * z + Q * rng.standard_normal()
        xs.append(C * z + R * rng.standard_normal())
    exact = _kalman_log_likelihood(np.array(xs))
    x = torch.tensor(xs, dtype=torch.float64).view(1, -1, 1)
    figures = {}
    for name, k in (("iwae", 4), ("iwae", 64), ("fivo", 4), ("fivo", 64), ("fivo", 512)):
        values = torch.stack([model(x, objective=name, particles=k, generator=_seeded(s)).elbo.detach() for s in range(24)])
        figures[name, k] = (float(values.mean()), float(values.std()) / math.sqrt(len(values)))
    for (name, k), (mean, error) in figures.items():
        assert mean < exact + 3 * error + 1e-9, (name, k, mean, exact)
    assert figures["fivo", 64][0] > figures["iwae", 64][0]
    assert figures["fivo", 4][0] < figures["fivo", 64][0] < figures["fivo", 512][0]
    if optimal_proposal:  # with a good proposal the filter gets close to the exact value
        assert exact - figures["fivo", 512][0] < 0.1, (figures, exact)
    else:  # the random mlp proposal leaves a gap (the test's point is the bound, not the gap)
        assert exact - figures["fivo", 512][0] > 1.0


# ----------------------------------------------------------------- masks and resampling


@pytest.mark.parametrize("objective", ["iwae", "fivo"])
def test_padding_changes_nothing_even_when_it_holds_nan(objective):
    model, x = _model(), _bits()
    mask = torch.ones(3, 7, dtype=torch.float64)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    poisoned = x.clone()
    poisoned[mask == 0] = float("nan")
    clean = model(x * mask.unsqueeze(-1), mask=mask, objective=objective, particles=6, generator=_seeded())
    dirty = model(poisoned, mask=mask, objective=objective, particles=6, generator=_seeded())
    torch.testing.assert_close(dirty.elbo, clean.elbo, rtol=0, atol=0)
    dirty.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # Other values behind the mask change nothing either, and padded steps add nothing.
    other = model(torch.where(mask.unsqueeze(-1) > 0, x, 1 - x), mask=mask, objective=objective, particles=6, generator=_seeded())
    torch.testing.assert_close(other.elbo, clean.elbo, rtol=0, atol=0)
    assert (other.nll_per_step[mask.sum(0) == 0] == 0).all()


def test_systematic_resampling_follows_the_weights():
    log_w = torch.log(torch.tensor([[0.0, 0.25], [0.0, 0.25], [1.0, 0.25], [0.0, 0.25]], dtype=torch.float64))
    ancestors = systematic_ancestors(log_w, torch.tensor([0.3, 0.3], dtype=torch.float64))
    assert ancestors[:, 0].tolist() == [2, 2, 2, 2]  # all the weight on particle 2
    assert ancestors[:, 1].tolist() == [0, 1, 2, 3]  # equal weights: each keeps itself
    weights = torch.tensor([[0.5], [0.375], [0.125], [0.0]])
    for u in (0.0, 0.3, 0.9):
        counts = torch.bincount(systematic_ancestors(weights.log(), torch.tensor([u]))[:, 0], minlength=4)
        assert ((counts - 4 * weights[:, 0]).abs() < 1).all(), (u, counts)  # systematic: within one of K * w_k
    assert counts.tolist() == [2, 1, 1, 0]  # u = 0.9: positions 0.225, 0.475, 0.725, 0.975


def test_iwae_objective_runs_the_fused_loop_and_matches_autograd():
    model, x = _model(), _bits()
    grads = []
    for fused in (True, False):
        model.fused_loop = fused
        model.zero_grad()
        out = model(x, objective="iwae", particles=5, generator=_seeded())
        out.loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for fused_grad, autograd_grad in zip(*grads, strict=True):
        torch.testing.assert_close(fused_grad, autograd_grad, rtol=1e-9, atol=1e-9)


def test_fivo_evaluation_runs_few_sequences_at_a_time_when_particles_are_many(monkeypatch):
    import vrnnkit.model.objectives as objectives

    model, x = _model(), _bits(batch=5)
    seen = []
    real = objectives.fivo_bound

    def spy(model, x, mask, particles, generator=None, **options):
        seen.append((x.shape[0], particles))
        return real(model, x, mask, particles, generator, **options)

    monkeypatch.setattr(objectives, "fivo_bound", spy)
    bound = fivo_log_likelihood(model, x, 8, generator=_seeded())
    assert bound.shape == (5,) and torch.isfinite(bound).all() and seen == [(5, 8)]
    seen.clear()
    monkeypatch.setattr(objectives, "fivo_bound", lambda model, x, mask, particles, generator=None, **o: seen.append((x.shape[0], particles)) or x.new_zeros(x.shape[0]))
    assert fivo_log_likelihood(model, x, 2**17, generator=_seeded()).shape == (5,)
    assert seen == [(1, 2**17)] * 5  # 2**17 particles x 10 values: one sequence per pass


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fivo_evaluation_sums_the_loops_scores_and_equals_the_two_pass_bound(dropout):
    import vrnnkit.model.objectives as objectives

    options = {"dropout": dropout}
    model = _model(decoder_options=options, prior_options=options).eval()
    x, mask = _bits(batch=4, steps=9), torch.ones(4, 9, dtype=torch.float64)
    mask[1, 5:], mask[3, 2:] = 0, 0  # padding: the bound stops at each sequence's own end
    step_mask = model.checked_batch(x, mask)[1]
    with torch.no_grad():
        one_pass = objectives.fivo_bound(model, x, step_mask, 16, _seeded(3), threshold=0.9)
        two_pass, terms = objectives._fivo(model, x, step_mask, 16, 1.0, 0.9, _seeded(3))
    assert terms is not None
    torch.testing.assert_close(one_pass, two_pass, rtol=0, atol=1e-10)
    assert not torch.equal(one_pass, objectives._fivo(model, x, step_mask, 16, 1.0, 0.9, _seeded(4))[0])
    # In training mode (dropout drawn in the second pass) or with gradients, the two passes run.
    with torch.no_grad():
        trained = objectives.fivo_bound(model.train(), x, step_mask, 16, _seeded(3), threshold=0.9)
    assert torch.allclose(trained, one_pass, rtol=0, atol=1e-10) == (dropout == 0.0)


# ----------------------------------------------------------------- training and the CLI


@pytest.fixture(scope="module")
def bits_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    on = np.where(np.arange(8) < 4, 0.9, 0.1)
    path = tmp_path_factory.mktemp("data") / "bits.npy"
    np.save(path, (rng.random((48, 12, 8)) < on).astype(np.float32))
    return path


@pytest.mark.parametrize("objective", ["iwae", "fivo"])
def test_training_on_a_particle_objective_lowers_its_validation_bound(tmp_path, bits_file, objective):
    records = []
    vrnnkit.train(str(bits_file), out=tmp_path / "run", steps=24, every=8, h_dim=12, z_dim=3, batch_size=8,
                  seq_len=6, lr=1e-2, kl_anneal=0, layout="NTD", output_bias=False, objective=objective,
                  particles=3, on_log=records.append)
    bounds = [r[f"val_{objective}"] for r in records if f"val_{objective}" in r]
    losses = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(bounds) == 3 and bounds[-1] > bounds[0] + 1.0, bounds
    assert losses == pytest.approx([-b for b in bounds])  # best.safetensors follows the bound
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["objective"] == objective and saved["particles"] == 3


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vrnnkit", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--objective", "fivo", "--particles", "0"], "particles"),
        (["--objective", "smc"], "objective must be one of elbo, iwae, fivo"),
        (["--particles", "4"], "needs objective iwae or fivo"),
        (["--objective", "iwae", "--particles", "2", "--free-bits", "0.5"], "free_bits applies to the ELBO"),
        (["--objective", "fivo", "--resample-threshold", "1.5"], "resample"),
        (["--objective", "fivo", "--particles", "100000000"], "x 100000000 particles needs at least"),
        (["--objective", "fivo", "--particles", "2", "--gradient", "dreg"], "objective is fivo"),
        (["--objective", "iwae", "--particles", "2", "--gradient", "dreg", "--nproc", "2"], "DistributedDataParallel"),
    ],
)
def test_bad_objective_options_exit_2_and_write_nothing(tmp_path, bits_file, options, message):
    result = _cli("train", str(bits_file), "--layout", "NTD", "--steps", "2", *options, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_eval_reports_every_bound_asked_for(tmp_path, bits_file):
    run = tmp_path / "run"
    vrnnkit.train(str(bits_file), out=run, steps=4, every=4, h_dim=12, z_dim=3, batch_size=8, seq_len=6, layout="NTD")
    report_path = tmp_path / "report.json"
    result = _cli("eval", str(bits_file), "--layout", "NTD", "--ckpt", str(run / "model.safetensors"), "--bound", "elbo,iwae,fivo",
                  "--particles", "16", "--json", str(report_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "FIVO bound, K=16" in result.stdout and "IWAE bound, K=16" in result.stdout
    likelihood = json.loads(report_path.read_text())["likelihood"]
    assert likelihood["fivo"]["K"] == likelihood["iwae"]["K"] == 16
    assert likelihood["fivo"]["bound"] > likelihood["elbo"] and likelihood["iwae"]["bound"] > likelihood["elbo"]
    bad = _cli("eval", str(bits_file), "--layout", "NTD", "--ckpt", str(run / "model.safetensors"), "--bound", "elbo,smc", cwd=tmp_path)
    assert bad.returncode == 2 and "bound must be" in bad.stderr


def test_two_processes_train_on_fivo(tmp_path, bits_file):
    out = tmp_path / "run"
    result = _cli("train", str(bits_file), "--nproc", "2", "--layout", "NTD", "--h-dim", "8", "--z-dim", "2", "--seq-len", "6",
                  "--batch-size", "4", "--steps", "3", "--every", "3", "--objective", "fivo", "--particles", "3",
                  "--device", "cpu", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["step"] == 3 and math.isfinite(record["val_fivo"])


def test_fivo_through_the_fused_loop_matches_the_autograd_loop_values_and_gradients():
    model, x = _model(), _bits(steps=12)
    results = []
    for fused in (True, False):
        model.fused_loop = fused
        model.zero_grad()
        out = model(x, objective="fivo", particles=6, generator=_seeded(), resample_threshold=0.9)
        out.loss.backward()
        results.append((out.elbo.detach(), [p.grad.clone() for p in model.parameters()]))
    (bound_fused, grads_fused), (bound_autograd, grads_autograd) = results
    torch.testing.assert_close(bound_fused, bound_autograd, rtol=0, atol=1e-10)
    for a, b in zip(grads_fused, grads_autograd, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_fivo_resamples_and_its_gradient_matches_finite_differences_of_its_value():
    """With the same noise and uniforms the bound is piecewise smooth in the weights (an
    ancestor or a resampling decision changes at some distance): within a piece its gradient is
    the derivative of its value, checked along a random direction with a step small enough
    (1e-8, float64) to stay in the piece."""
    model, x = _model(), _bits(steps=12)
    calls = []
    import vrnnkit.model.objectives as objectives

    original = objectives.systematic_ancestors

    def counting(*args):
        calls.append(1)
        return original(*args)

    objectives.systematic_ancestors = counting
    try:
        out = model(x, objective="fivo", particles=6, generator=_seeded(), resample_threshold=0.9)
        assert calls, "the filter never resampled"
        model.zero_grad()
        out.loss.backward()
        g = torch.Generator().manual_seed(0)
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]
        slope = sum(float((p.grad * d).sum()) for p, d in zip(model.parameters(), direction, strict=True))
        eps = 1e-8
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(model.parameters(), direction, strict=True):
                    p.add_(sign * eps * d)
            values.append(float(model(x, objective="fivo", particles=6, generator=_seeded(), resample_threshold=0.9).loss.detach()))
            with torch.no_grad():
                for p, d in zip(model.parameters(), direction, strict=True):
                    p.sub_(sign * eps * d)
        assert (values[0] - values[1]) / (2 * eps) == pytest.approx(slope, rel=1e-5)
    finally:
        objectives.systematic_ancestors = original


@pytest.mark.parametrize("objective", ["iwae", "fivo"])
def test_skip_decoders_take_each_steps_reference_in_both_objectives(objective):
    model = _model(frame_shape=(1, 8, 8), encoder="conv-skip", decoder="convT-skip", skip_residual=True,
                   encoder_options={"channels": 4}, decoder_options={"channels": 4})
    x = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    single = model.log_likelihood(x, 1, generator=_seeded())
    out = model(x, objective=objective, particles=1, generator=_seeded())
    torch.testing.assert_close(out.elbo.detach(), single, rtol=0, atol=1e-10)
    many = model(x, objective=objective, particles=5, generator=_seeded(), resample_threshold=1.0)
    many.loss.backward()
    assert torch.isfinite(many.elbo).all() and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fivo_resamples_on_the_model_without_dropout_and_keeps_each_blocks_mode(monkeypatch):
    """The loop's scoring runs the prior and decoder in eval mode: with dropout in them the
    resampling decisions are those of the same weights without dropout, while the bound's pass
    (with gradients) still draws dropout masks; every block is back in its own mode after."""
    import vrnnkit.model.objectives as objectives

    drawn = []
    original = objectives.systematic_ancestors

    def recording(log_weights, uniform):
        ancestors = original(log_weights, uniform)
        drawn.append(ancestors.clone())
        return ancestors

    monkeypatch.setattr(objectives, "systematic_ancestors", recording)
    x = _bits(steps=12)
    runs = {}
    for dropout in (0.0, 0.5):
        model = _model(prior_options={"dropout": dropout}, decoder_options={"dropout": dropout}).train()
        model.prior.eval()  # a block the user set to eval mode stays there
        drawn.clear()
        out = model(x, objective="fivo", particles=6, generator=_seeded(), resample_threshold=0.9)
        assert drawn, "the filter never resampled"
        runs[dropout] = (list(drawn), float(out.loss.detach()))
        assert model.training and model.decoder.training and not model.prior.training
        assert all(m.training for m in model.decoder.modules())
    assert len(runs[0.0][0]) == len(runs[0.5][0])
    for a, b in zip(runs[0.0][0], runs[0.5][0], strict=True):
        assert torch.equal(a, b)
    assert runs[0.0][1] != runs[0.5][1]  # the bound's own pass does use dropout
