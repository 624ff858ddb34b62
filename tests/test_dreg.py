"""IWAE's doubly reparameterised gradient (``--gradient dreg``): the posterior's own parameters
get an estimate with the IWAE gradient's expectation and less variance; every other parameter
keeps the plain IWAE gradient exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vrnnkit
from vrnnkit.training.config import TrainConfig
from vrnnkit.training.loop import train_step


def _model() -> vrnnkit.VRNN:
    torch.manual_seed(0)
    config = vrnnkit.VRNNConfig(frame_shape=(6,), h_dim=8, z_dim=3, encoder="mlp", decoder="mlp")
    return vrnnkit.VRNN(config).double()


def _bits() -> torch.Tensor:
    return (torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) < 0.3).double()


def _gradients(model: vrnnkit.VRNN, x: torch.Tensor, seed: int, gradient: str, kl_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The gradient every parameter gets from one training step's backward, as train_step runs it."""
    config = TrainConfig(objective="iwae", particles=3, gradient=gradient, clip=0.0, kl_anneal=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    generator = torch.Generator().manual_seed(seed)
    if kl_weight != 1.0:
        config.kl_anneal = round(1 / kl_weight)  # the first step's weight is 1 / kl_anneal
    train_step(model, x, optimizer, scaler, config, step=0, generator=generator)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_dreg_changes_only_the_posteriors_gradient():
    model, x = _model(), _bits()
    plain, dreg = _gradients(model, x, 1, "reparam"), _gradients(model, x, 1, "dreg")
    for name in plain:
        if name.startswith("posterior."):
            assert not torch.allclose(plain[name], dreg[name]), name
        else:
            torch.testing.assert_close(dreg[name], plain[name], rtol=0, atol=1e-12)


def test_dreg_runs_through_the_fused_loop_as_through_autograd():
    model, x = _model(), _bits()
    fused = _gradients(model, x, 2, "dreg")
    model.fused_loop = False
    autograd = _gradients(model, x, 2, "dreg")
    for name in fused:
        torch.testing.assert_close(fused[name], autograd[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_dreg_is_unbiased_for_the_posterior_and_has_less_variance(kl_weight):
    """Averaged over draws, both estimates of the posterior's gradient agree within their
    standard errors; the DReG one spreads less."""
    model, x = _model(), _bits()
    draws = 300
    names = [n for n, _ in model.named_parameters() if n.startswith("posterior.")]

    def estimates(gradient: str) -> torch.Tensor:
        return torch.stack([
            torch.cat([g.flatten() for n, g in _gradients(model, x, s, gradient, kl_weight).items() if n in names])
            for s in range(draws)
        ])

    plain, dreg = estimates("reparam"), estimates("dreg")
    error = (plain.var(0) / draws + dreg.var(0) / draws).sqrt()
    z = (plain.mean(0) - dreg.mean(0)) / error.clamp_min(1e-12)
    assert z.abs().max() < 4.5, z.abs().max()
    assert dreg.var(0).sum() < 0.5 * plain.var(0).sum(), (dreg.var(0).sum(), plain.var(0).sum())


def test_dreg_trains_and_bad_combinations_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "bits.npy"
    np.save(path, (rng.random((24, 8, 6)) < 0.3).astype(np.float32))
    records = []
    vrnnkit.train(str(path), out=tmp_path / "run", steps=16, every=8, h_dim=8, z_dim=3, batch_size=8, seq_len=6,
                  lr=1e-2, kl_anneal=0, layout="NTD", objective="iwae", particles=3, gradient="dreg", on_log=records.append)
    bounds = [r["val_iwae"] for r in records if "val_iwae" in r]
    assert len(bounds) == 2 and bounds[-1] > bounds[0], bounds
    model = _model()
    for objective in ("elbo", "fivo"):  # the model refuses it too, rather than ignoring it
        with pytest.raises(ValueError, match=f"with objective '{objective}'"):
            model(_bits(), objective=objective, particles=2, gradient="dreg")
    for options, message in [
        ({"gradient": "dreg"}, "objective is elbo"),
        ({"gradient": "dreg", "objective": "fivo", "particles": 2}, "objective is fivo"),
        ({"gradient": "dreg", "objective": "iwae", "particles": 2, "dropout": 0.1}, "without dropout"),
        ({"gradient": "score"}, "gradient must be one of reparam, dreg"),
    ]:
        with pytest.raises(vrnnkit.ConfigError, match=message):
            TrainConfig.from_dict(options)
