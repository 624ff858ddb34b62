"""The autoregressive Bernoulli likelihood (``ar-bernoulli``): a normalised distribution whose
element d reads only the elements before it, exact sampling, and a VRNN that trains on it."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.blocks.autoregressive import AutoregressiveBernoulli
from vrnnkit.cli import app
from vrnnkit.errors import ConfigError

runner = CliRunner()


def _trained_looking(size: int = 5, hidden: int = 7, context: int = 2) -> AutoregressiveBernoulli:
    """A block whose masked weights are not zero (a new one starts as the factorised Bernoulli)."""
    torch.manual_seed(0)
    block = AutoregressiveBernoulli((size,), hidden=hidden, context=context).double()
    for weight in (block.w_out, block.w_direct):
        torch.nn.init.normal_(weight)
    return block


def _all_frames(size: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=size)), dtype=torch.float64)


def test_probabilities_of_every_frame_sum_to_one():
    block = _trained_looking()
    params = torch.randn(3, 3, 5, dtype=torch.float64)
    frames = _all_frames(5)
    total = torch.stack([block.log_prob(params, f.expand(3, 5)) for f in frames]).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(3, dtype=torch.float64))


def test_element_d_reads_only_the_elements_before_it():
    block = _trained_looking(size=6, hidden=11)
    params = torch.randn(1, 3, 6, dtype=torch.float64)
    x = torch.tensor([[1.0, 0, 1, 1, 0, 1]], dtype=torch.float64)
    base = block.logits(params, x)
    for d in range(6):
        changed = x.clone()
        changed[0, d:] = 1 - changed[0, d:]
        torch.testing.assert_close(block.logits(params, changed)[0, : d + 1], base[0, : d + 1])
    assert not torch.allclose(block.logits(params, 1 - x)[0, 1:], base[0, 1:])  # it does read the past


def test_without_gradients_the_rows_go_in_chunks_with_the_same_logits(monkeypatch):
    import vrnnkit.blocks.autoregressive as autoregressive

    block = _trained_looking(size=6, hidden=11)
    params = torch.randn(10, 3, 6, dtype=torch.float64)
    x = (torch.rand(10, 6, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    whole = block.logits(params, x)  # with gradients: one pass over every row
    assert whole.requires_grad
    monkeypatch.setattr(autoregressive, "CHUNK_ROWS", 3)  # 3 + 3 + 3 + 1 rows
    with torch.no_grad():
        chunked = block.logits(params, x)
    torch.testing.assert_close(chunked, whole.detach(), rtol=0, atol=1e-12)
    calls, linear = [], autoregressive.F.linear
    monkeypatch.setattr(autoregressive.F, "linear", lambda *a: calls.append(len(a[0])) or linear(*a))
    with torch.no_grad():
        block.logits(params, x)
    assert calls == [3, 3, 3, 1]


def test_a_new_block_is_the_factorised_bernoulli_of_its_base_logits():
    block = AutoregressiveBernoulli((2, 3, 4))
    params = torch.randn(5, block.params_per_element, 2, 3, 4)
    x = (torch.rand(5, 2, 3, 4) < 0.4).float()
    bernoulli = vrnnkit.build("likelihood", "bernoulli")
    torch.testing.assert_close(block.log_prob(params, x), bernoulli.log_prob(params[:, :1], x))
    torch.testing.assert_close(block.mean(params), torch.sigmoid(params[:, 0]))


def test_draws_follow_the_exact_joint_and_mean_is_a_deterministic_approximation():
    block = _trained_looking().float()
    params = torch.randn(1, 3, 5)
    frames = _all_frames(5).float()
    with torch.no_grad():
        exact = block.log_prob(params.expand(32, -1, -1), frames).exp()
        draws = block.sample(params.expand(20_000, -1, -1), torch.Generator().manual_seed(1))
        again = block.sample(params.expand(20_000, -1, -1), torch.Generator().manual_seed(1))
        index = (draws * torch.tensor([16.0, 8, 4, 2, 1])).sum(1).long()
        frequency = torch.bincount(index, minlength=32).float() / 20_000
        marginals = (exact[:, None] * frames).sum(0)
    assert torch.equal(draws, again)
    # 20,000 draws: the standard error of a probability is at most 0.0036.
    assert (frequency - exact).abs().max() < 0.02
    mean = block.mean(params)[0]
    assert mean.shape == (5,) and torch.equal(mean, block.mean(params)[0])
    assert (mean - marginals).abs().max() < 0.1


def test_the_block_needs_frames_of_two_elements_and_positive_sizes():
    with pytest.raises(ValueError, match="at least 2 elements"):
        AutoregressiveBernoulli((1,))
    with pytest.raises(ValueError, match="hidden"):
        AutoregressiveBernoulli((4,), hidden=0)
    with pytest.raises(ConfigError, match="ar-bernoulli"):
        vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(4,), likelihood="ar-bernoulli", likelihood_options={"hidden": -1}))


def test_a_music_model_trains_samples_and_evaluates_with_it(tmp_path):
    songs = [[[60 + (i + t) % 5, 64 + t % 3] for t in range(12)] for i in range(6)]
    data = tmp_path / "music.json"
    data.write_text(json.dumps({"train": songs, "valid": songs[:2], "test": songs[2:4]}))
    env = {"COLUMNS": "200", "VRNNKIT_DEBUG": None}
    run = tmp_path / "run"
    args = ["train", str(data), "--likelihood", "ar-bernoulli", "--steps", "30", "--h-dim", "16", "--z-dim", "4",
            "--batch-size", "3", "--every", "30", "--seq-len", "full", "--lr", "0.01", "--out", str(run)]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "output bias started at the logit" in result.output
    model = vrnnkit.load(run / "model.safetensors")
    assert isinstance(model.likelihood, AutoregressiveBernoulli)
    assert model.likelihood.w_out.abs().sum() > 0  # the masked part learned something
    result = runner.invoke(app, ["eval", str(data), "--ckpt", str(run / "model.safetensors"), "--iwae-samples", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "ELBO (nats per time step)" in result.output
    result = runner.invoke(app, ["sample", "--ckpt", str(run / "model.safetensors"), "--out", str(tmp_path / "s.mid"),
                                 "--num", "1", "--steps", "8"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.mid").exists() and "1 clip of 8 frames" in result.output
