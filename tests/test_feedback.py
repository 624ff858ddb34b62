"""``feedback``: what generation feeds back into the state (the likelihood's mean, or a draw from
it: ancestral sampling), independently of the frame it returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from vrnnkit import VRNN, VRNNConfig
from vrnnkit.cli import app

FRAME = (1, 12, 10)


def _model(**extra) -> VRNN:
    torch.manual_seed(0)
    config = VRNNConfig(frame_shape=FRAME, h_dim=16, z_dim=4, frame_difference=True,
                        encoder_options={"channels": 4}, decoder_options={"channels": 4}, **extra)
    return VRNN(config).double().eval()


def _hand_rollout(model: VRNN, num: int, steps: int, seed: int, *, feed_draw: bool, show_mean: bool):
    """Ancestral generation written out: prior noise, then the frame fed back (a draw or the mean),
    and the frame shown computed from the same likelihood parameters."""
    generator = torch.Generator().manual_seed(seed)
    state = model.rnn.initial_state(num, device=torch.device("cpu"), dtype=torch.float64)
    previous, shown = None, []
    for _ in range(steps):
        noise = torch.randn((num, model.config.z_dim), generator=generator, dtype=torch.float64)
        h = model.rnn.output(state)
        mean_p, std_p = model.prior(h)
        f = model.phi_z(mean_p + std_p * noise)
        params = model.decoder(f, h)
        fed = model.likelihood.sample(params, generator) if feed_draw else model.likelihood.mean(params)
        if feed_draw == show_mean:
            shown.append(model.likelihood.mean(params) if show_mean else model.likelihood.sample(params, generator))
        else:
            shown.append(fed)
        seen = torch.cat([fed, fed - (torch.zeros_like(fed) if previous is None else previous)], dim=1)
        state = model.rnn.step(model.rnn.precompute(model.encoder(seen)), f, state)
        previous = fed
    return torch.stack(shown, dim=1)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize(("feedback", "mean"), [("draw", True), ("mean", False), ("draw", False), ("mean", True)])
def test_sampling_equals_a_hand_written_ancestral_rollout(likelihood, feedback, mean):
    model = _model(likelihood=likelihood)
    with torch.no_grad():
        got = model.sample(3, 6, generator=torch.Generator().manual_seed(7), mean=mean, feedback=feedback)
        want = _hand_rollout(model, 3, 6, 7, feed_draw=feedback == "draw", show_mean=mean)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_the_default_feeds_back_the_frame_returned_as_before():
    model = _model()
    for mean, feedback in ((True, "mean"), (False, "draw")):
        a = model.sample(2, 5, generator=torch.Generator().manual_seed(3), mean=mean)
        b = model.sample(2, 5, generator=torch.Generator().manual_seed(3), mean=mean, feedback=feedback)
        assert torch.equal(a, b)
    drawn = model.sample(2, 5, generator=torch.Generator().manual_seed(3), feedback="draw")
    assert not torch.equal(drawn, model.sample(2, 5, generator=torch.Generator().manual_seed(3)))
    assert drawn.min() >= 0 and drawn.max() <= 1 and not torch.equal(drawn, drawn.round()), "means are shown"


def test_prediction_feeds_back_draws_after_the_context():
    model = _model()
    context = torch.rand(2, 4, *FRAME, dtype=torch.float64)
    futures = model.predict(context, 5, samples=3, generator=torch.Generator().manual_seed(1), feedback="draw")
    again = model.predict(context, 5, samples=3, generator=torch.Generator().manual_seed(1), feedback="draw")
    means = model.predict(context, 5, samples=3, generator=torch.Generator().manual_seed(1))
    assert futures.shape == (2, 3, 5, *FRAME) and torch.equal(futures, again)
    torch.testing.assert_close(futures[:, :, 0], means[:, :, 0])  # the first frame is shown before anything is fed back
    assert not torch.allclose(futures[:, :, 1:], means[:, :, 1:])


def test_a_bad_feedback_is_refused_and_nothing_is_written(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="feedback must be one of mean, draw"):
        model.sample(1, 2, feedback="samples")
    ckpt = vrnnkit.save(_model().float(), tmp_path / "m.safetensors")
    out = tmp_path / "grid.gif"
    result = CliRunner().invoke(app, ["sample", "--ckpt", str(ckpt), "--feedback", "samples", "--out", str(out)])
    assert result.exit_code == 2 and "--feedback must be one of mean, draw, got 'samples'" in result.output
    assert not out.exists()
    video = tmp_path / "clip.npy"
    np.save(video, np.random.default_rng(0).random((1, 8, *FRAME), dtype=np.float32))
    ok = CliRunner().invoke(app, ["predict", str(video), "--ckpt", str(ckpt), "--feedback", "draw", "--out", str(tmp_path / "p.npy")])
    assert ok.exit_code == 0, ok.output
    assert np.load(tmp_path / "p.npy").shape == (1, 3, 3, *FRAME)


def test_vrnnkit_sample_feeds_back_draws_for_bernoulli_models_and_the_frame_shown_for_the_others(tmp_path):
    for likelihood, expected in (("bernoulli", "draw"), ("gaussian", "mean")):
        model = _model(likelihood=likelihood).float()
        ckpt = vrnnkit.save(model, tmp_path / f"{likelihood}.safetensors")
        out = tmp_path / f"{likelihood}.npy"
        result = CliRunner().invoke(app, ["sample", "--ckpt", str(ckpt), "--num", "2", "--steps", "5", "--seed", "4", "--out", str(out)])
        assert result.exit_code == 0, result.output
        loaded = vrnnkit.load(ckpt)
        want = loaded.sample(2, 5, generator=torch.Generator().manual_seed(4), feedback=expected)
        other = loaded.sample(2, 5, generator=torch.Generator().manual_seed(4), feedback="mean" if expected == "draw" else "draw")
        written = torch.from_numpy(np.load(out))
        torch.testing.assert_close(written, want)
        assert not torch.allclose(written, other)
        explicit = vrnnkit.sample(loaded, 2, 5, seed=4, feedback="mean")
        torch.testing.assert_close(explicit, loaded.sample(2, 5, generator=torch.Generator().manual_seed(4), feedback="mean"))
