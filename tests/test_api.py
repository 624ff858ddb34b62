"""The Python API behind each command gives what the command gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from vrnnkit import api
from vrnnkit.cli import app
from vrnnkit.data.sources import CHUNK


def test_vrnnkit_data_writes_exactly_the_array_generate_dataset_returns(tmp_path):
    count = CHUNK + 3  # across a chunk boundary, where a seed's meaning could drift
    out = tmp_path / "balls.npy"
    args = ["data", "bouncing-balls", "--out", str(out), "--count", str(count), "--length", "2", "--size", "8", "--seed", "5"]
    assert CliRunner().invoke(app, args).exit_code == 0
    array = api.generate_dataset("bouncing-balls", count, length=2, size=8, seed=5)
    assert array.dtype == np.uint8 and array.shape == (count, 2, 8, 8)
    np.testing.assert_array_equal(np.load(out), array)
    assert not np.array_equal(array, api.generate_dataset("bouncing-balls", count, length=2, size=8, seed=6))


def _model() -> vrnnkit.VRNN:
    config = vrnnkit.VRNNConfig(frame_shape=(1, 12, 12), h_dim=8, z_dim=2, encoder_options={"channels": 2},
                                decoder_options={"channels": 2})
    return vrnnkit.VRNN(config).eval()


def test_predict_defaults_to_the_frames_after_the_context_and_scores_them():
    model = _model()
    videos = torch.rand(2, 7, 1, 12, 12)
    result = api.predict(model, videos, context=4, samples=2)
    assert result.futures.shape == (2, 2, 3, 1, 12, 12) and result.horizon == 3
    assert torch.equal(result.truth, videos[:, 4:])
    # 12x12 frames fit SSIM's 11x11 window, so there are figures.
    assert result.metrics is not None and len(result.metrics["psnr"]["best_of_n"]["per_step"]) == 3


def test_predict_past_the_end_of_the_data_has_no_truth_and_no_metrics():
    model = _model()
    result = api.predict(model, torch.rand(1, 4, 1, 12, 12), context=4, samples=1)
    assert result.horizon == 10 and result.truth is None and result.metrics is None
    with pytest.raises(vrnnkit.DataError, match="--json needs metrics"):
        api.predict(model, torch.rand(1, 4, 1, 12, 12), context=4, require_metrics=True)


def test_train_step_takes_no_step_on_a_non_finite_loss():
    from vrnnkit.training import TrainConfig, make_scaler, train_step

    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(3,), h_dim=4, z_dim=2, likelihood="gaussian")).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = TrainConfig()
    scaler = make_scaler(config, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, torch.full((2, 3, 3), float("nan")), optimizer, scaler, config, step=0)
    assert not result.finite
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    result = train_step(model, torch.rand(2, 3, 3), optimizer, scaler, config, step=0)
    assert result.finite and result.kl_weight == 1 / config.kl_anneal
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
