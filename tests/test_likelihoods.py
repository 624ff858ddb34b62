from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import distributions as D

import vrnnkit
from vrnnkit.blocks.distributions import normal_kl
from vrnnkit.registry import get_builder

FRAME = (2, 3, 4)


def test_bernoulli_log_prob_equals_torch_distributions_and_stays_finite_at_extreme_logits():
    logits = torch.randn(5, 1, *FRAME) * 4
    logits[0, 0, 0, 0, 0] = 200.0  # the reference's log(1 - p - eps) is NaN here
    logits[0, 0, 0, 0, 1] = -200.0
    x = (torch.rand(5, *FRAME) > 0.5).float()
    likelihood = vrnnkit.build("likelihood", "bernoulli")
    expected = D.Bernoulli(logits=logits[:, 0]).log_prob(x).flatten(1).sum(1)
    got = likelihood.log_prob(logits, x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)


def test_gaussian_learned_std_log_prob_equals_torch_distributions():
    params = torch.randn(5, 2, *FRAME)
    x = torch.randn(5, *FRAME)
    likelihood = vrnnkit.build("likelihood", "gaussian", min_std=0.01)
    std = torch.nn.functional.softplus(params[:, 1]) + 0.01
    expected = D.Normal(params[:, 0], std).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(likelihood.log_prob(params, x), expected)
    assert likelihood.params_per_element == 2


def test_gaussian_fixed_std_needs_only_the_mean():
    likelihood = vrnnkit.build("likelihood", "gaussian", std=0.5)
    params = torch.randn(5, 1, *FRAME)
    x = torch.randn(5, *FRAME)
    expected = D.Normal(params[:, 0], 0.5).log_prob(x).flatten(1).sum(1)
    assert likelihood.params_per_element == 1
    torch.testing.assert_close(likelihood.log_prob(params, x), expected)


@pytest.mark.parametrize("bad", [0, -1.0, "wide", True])
def test_gaussian_rejects_a_bad_std(bad):
    with pytest.raises(ValueError, match="std must be 'learned' or a positive number"):
        vrnnkit.build("likelihood", "gaussian", std=bad)


def test_gmm_log_prob_equals_a_hand_derived_mixture_over_the_frame():
    k = 3
    likelihood = vrnnkit.build("likelihood", "gmm", components=k, min_std=1e-3)
    params = torch.randn(4, 3 * k, 3)  # a small frame keeps the densities far from underflow
    x = torch.randn(4, 3)
    logits = params[:, :k].flatten(2).mean(2)
    means, stds = params[:, k : 2 * k], torch.nn.functional.softplus(params[:, 2 * k :]) + 1e-3
    expected = []
    for n in range(4):
        weights = torch.softmax(logits[n], 0)
        density = sum(
            weights[j] * math.exp(D.Normal(means[n, j], stds[n, j]).log_prob(x[n]).sum().double()) for j in range(k)
        )
        expected.append(math.log(density))
    torch.testing.assert_close(likelihood.log_prob(params, x).double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-4)


def test_gmm_per_element_equals_torch_mixture_same_family():
    k = 2
    likelihood = vrnnkit.build("likelihood", "gmm", components=k, per_element=True)
    params = torch.randn(4, 3 * k, 5)
    x = torch.randn(4, 5)
    logits, means, raw = params.split(k, dim=1)
    stds = torch.nn.functional.softplus(raw) + 1e-3
    mixture = D.MixtureSameFamily(D.Categorical(logits=logits.movedim(1, -1)), D.Normal(means.movedim(1, -1), stds.movedim(1, -1)))
    torch.testing.assert_close(likelihood.log_prob(params, x), mixture.log_prob(x).sum(1))


@pytest.mark.parametrize("name", vrnnkit.list_blocks("likelihood"))
def test_every_likelihood_mean_and_sample_have_the_frame_shape_and_reproduce(name):
    builder = get_builder("likelihood", name)
    shape = {"frame_shape": FRAME} if getattr(builder, "needs_frame_shape", False) else {}
    likelihood = vrnnkit.build("likelihood", name, **shape)
    params = torch.randn(3, likelihood.params_per_element, *FRAME)
    assert likelihood.mean(params).shape == (3, *FRAME)
    a = likelihood.sample(params, torch.Generator().manual_seed(5))
    b = likelihood.sample(params, torch.Generator().manual_seed(5))
    assert a.shape == (3, *FRAME) and torch.equal(a, b)


def test_gmm_samples_follow_the_mixture_mean():
    likelihood = vrnnkit.build("likelihood", "gmm", components=2)
    params = torch.randn(1, 6, 3).expand(20000, -1, -1)
    samples = likelihood.sample(params, torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples.mean(0), likelihood.mean(params[:1])[0], atol=0.05, rtol=0)


# ----------------------------------------------------------------------------- the KL

finite = st.floats(-5, 5, allow_nan=False)
positive = st.floats(1e-3, 20, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(finite, positive, finite, positive)
def test_kl_is_non_negative_and_matches_torch(mean_q, std_q, mean_p, std_p):
    args = [torch.tensor([v], dtype=torch.float64) for v in (mean_q, std_q, mean_p, std_p)]
    kl = normal_kl(*args)
    expected = D.kl_divergence(D.Normal(args[0], args[1]), D.Normal(args[2], args[3]))
    assert kl.item() >= 0
    torch.testing.assert_close(kl, expected)


def test_kl_is_exactly_zero_for_identical_distributions():
    mean, std = torch.randn(1000), torch.rand(1000) * 5 + 1e-3
    assert torch.equal(normal_kl(mean, std, mean, std), torch.zeros(1000))


def test_kl_equals_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mean_q, std_q, mean_p, std_p = torch.tensor(0.3), torch.tensor(0.5), torch.tensor(-0.4), torch.tensor(1.3)
    z = mean_q + std_q * torch.randn(400_000, generator=g)
    estimate = (D.Normal(mean_q, std_q).log_prob(z) - D.Normal(mean_p, std_p).log_prob(z)).mean()
    assert abs(estimate - normal_kl(mean_q, std_q, mean_p, std_p)) < 0.01
