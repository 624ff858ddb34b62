"""Evaluation: PSNR and SSIM against hand formulas, the SRVP best-of-N protocol and the copy-last
baseline, and ``evaluate``'s report (schema, finiteness, the IWAE bound's ordering, errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

import vrnnkit
from vrnnkit.data import SequenceArray
from vrnnkit.errors import DataError
from vrnnkit.evaluation import PSNR_MAX, evaluate, prediction_metrics, psnr, ssim
from vrnnkit.evaluation.metrics import prediction_curves

# ---------------------------------------------------------------------- helpers


def hand_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (C, H, W) frames written out from the definition (Wang et al. 2004) in
    float64: a normalised 11x11 Gaussian window (sigma 1.5) at every position where it fits
    inside the frame, centred (two-pass) local variances, averaged over positions and channels."""
    r = np.arange(11) - 5.0
    window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for xc, yc in zip(x, y, strict=True):
        px, py = sliding_window_view(xc, (11, 11)), sliding_window_view(yc, (11, 11))
        mu_x = np.einsum("ijkl,kl->ij", px, window)
        mu_y = np.einsum("ijkl,kl->ij", py, window)
        dx, dy = px - mu_x[..., None, None], py - mu_y[..., None, None]
        var_x = np.einsum("ijkl,kl->ij", dx * dx, window)
        var_y = np.einsum("ijkl,kl->ij", dy * dy, window)
        cov = np.einsum("ijkl,kl->ij", dx * dy, window)
        maps.append(
            ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        )
    return float(np.mean(maps))


def structured_frame(channels: int = 1, height: int = 64, width: int = 64) -> np.ndarray:
    """A disc, a diagonal gradient and stripes: edges and smooth parts at several scales."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    disc = ((i - height / 2) ** 2 + (j - width / 3) ** 2 < (height / 4) ** 2).astype(float)
    gradient = (i + j) / (height + width)
    stripes = (np.sin(j / 1.7) > 0.3) * (i > 2 * height / 3)
    frame = np.clip(0.6 * disc + 0.3 * gradient + 0.5 * stripes, 0.0, 1.0)
    return np.stack([np.roll(frame, 2 * c, axis=0) for c in range(channels)])


def tiny_image_model() -> vrnnkit.VRNN:
    return vrnnkit.VRNN(
        vrnnkit.VRNNConfig(
            frame_shape=(1, 16, 16), h_dim=16, z_dim=4,
            encoder_options={"channels": 4}, decoder_options={"channels": 4},
        )
    )


def tiny_vector_model() -> vrnnkit.VRNN:
    return vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(7,), h_dim=16, z_dim=4))


def video(num: int, steps: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(num, steps, 1, size, size, generator=torch.Generator().manual_seed(seed))


def binary_vectors(num: int, steps: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(num, steps, 7, generator=g) < 0.3).float()


# ---------------------------------------------------------------------- psnr


def test_psnr_of_identical_frames_is_exactly_the_cap_and_keeps_leading_shape() -> None:
    x = torch.rand(2, 3, 4, 1, 12, 12)
    score = psnr(x, x)
    assert score.shape == (2, 3, 4)
    assert torch.equal(score, torch.full((2, 3, 4), 100.0))
    assert PSNR_MAX == 100.0


def test_psnr_is_ten_log10_of_one_over_mse_over_the_whole_frame() -> None:
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1, 0] += 0.3  # one channel of three off by 0.3: MSE 0.03
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 10 * math.log10(1 / 0.03)], abs=1e-4)
    worst = psnr(torch.zeros(1, 8, 8), torch.ones(1, 8, 8))
    assert float(worst) == pytest.approx(0.0)  # the floor of pixels in [0, 1]


def test_psnr_broadcasts_a_target_against_many_samples() -> None:
    target = torch.rand(3, 1, 8, 8)
    samples = torch.rand(5, 3, 1, 8, 8)
    expected = torch.stack([psnr(s, target) for s in samples])
    assert torch.allclose(psnr(samples, target), expected)


# ---------------------------------------------------------------------- ssim


def test_ssim_of_identical_frames_is_one() -> None:
    x = torch.rand(2, 4, 3, 16, 20)
    score = ssim(x, x)
    assert score.shape == (2, 4)
    assert torch.allclose(score, torch.ones(2, 4), atol=1e-6)
    assert torch.equal(ssim(x.double(), x.double()), torch.ones(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 20, 27)])
def test_ssim_equals_the_hand_written_gaussian_window_formula(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    frame = structured_frame(*shape)
    noisy = np.clip(frame + 0.1 * rng.standard_normal(frame.shape), 0.0, 1.0)
    shifted = np.roll(frame, (1, 3), axis=(1, 2))
    for other in (noisy, shifted):
        expected = hand_ssim(frame, other)
        assert 0.2 < expected < 0.95  # a real test: neither identical nor unrelated
        got64 = ssim(torch.from_numpy(frame), torch.from_numpy(other))
        assert float(got64) == pytest.approx(expected, abs=1e-12)
        got32 = ssim(torch.from_numpy(frame).float(), torch.from_numpy(other).float())
        assert got32.dtype == torch.float32
        assert float(got32) == pytest.approx(expected, abs=1e-7)  # float32 rounding only


def test_ssim_agrees_with_torchmetrics_on_the_valid_window_positions() -> None:
    functional = pytest.importorskip("torchmetrics.functional.image")
    x = torch.rand(4, 2, 24, 30)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    _, full_map = functional.structural_similarity_index_measure(
        x.double(), y.double(), data_range=1.0, reduction="none", return_full_image=True
    )  # torchmetrics pads by reflection; its map at the valid positions is the plain formula
    assert torch.allclose(ssim(x.double(), y.double()), full_map[..., 5:-5, 5:-5].mean((1, 2, 3)), atol=1e-12)


def test_ssim_ranges_from_unrelated_noise_to_identical() -> None:
    x = torch.rand(8, 1, 32, 32)
    unrelated = ssim(x, torch.rand(8, 1, 32, 32))
    inverted = ssim(x, 1 - x)
    assert unrelated.abs().max() < 0.1
    assert (inverted < -0.5).all()  # anti-correlated structure scores below 0
    assert (ssim(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1)) > unrelated).all()


def test_frame_metrics_reject_small_or_mismatched_frames() -> None:
    with pytest.raises(DataError, match="at least 11x11"):
        ssim(torch.rand(2, 1, 10, 16), torch.rand(2, 1, 10, 16))
    with pytest.raises(DataError, match="differ in shape"):
        psnr(torch.rand(2, 1, 12, 12), torch.rand(2, 1, 12, 13))
    with pytest.raises(DataError, match="do not broadcast"):
        ssim(torch.rand(2, 1, 12, 12), torch.rand(3, 1, 12, 12))
    with pytest.raises(DataError, match="floating-point tensor"):
        psnr(torch.zeros(1, 12, 12, dtype=torch.uint8), torch.zeros(1, 12, 12))


# ---------------------------------------------------------------------- prediction_metrics


def test_best_of_n_is_at_least_mean_of_n_and_picks_the_best_sample() -> None:
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(6, 4, 1, 16, 16, generator=g)
    noise_levels = torch.tensor([0.05, 0.2, 0.4]).view(1, 3, 1, 1, 1, 1)
    predictions = truth.unsqueeze(1) + noise_levels * torch.randn(6, 3, 4, 1, 16, 16, generator=g)
    report = prediction_metrics(predictions, truth, truth[:, 0])
    clipped = predictions.clamp(0, 1)
    for name, metric in (("psnr", psnr), ("ssim", ssim)):
        best, mean = report[name]["best_of_n"], report[name]["mean_of_n"]
        assert best["mean"] > mean["mean"]
        # sample 0, the least noisy, is the best at every step here (not so in general: the
        # best sample is chosen on its average over the steps)
        assert all(b > m for b, m in zip(best["per_step"], mean["per_step"], strict=True))
        per_frame = metric(clipped, truth.unsqueeze(1)).double()
        assert best["per_step"] == pytest.approx(per_frame[:, 0].mean(0).tolist())
        assert mean["mean"] == pytest.approx(float(per_frame.mean()))
        per_sequence = per_frame[:, 0].mean(1)
        assert best["ci95"] == pytest.approx(1.96 * float(per_sequence.std(correction=0)) / math.sqrt(6))


def test_copy_last_baseline_is_perfect_on_a_static_video() -> None:
    frame = torch.rand(3, 1, 16, 16)
    truth = frame.unsqueeze(1).expand(3, 5, 1, 16, 16)
    predictions = torch.rand(3, 2, 5, 1, 16, 16)
    report = prediction_metrics(predictions, truth, frame)
    assert report["baseline"]["psnr"] == {"mean": 100.0, "ci95": 0.0, "per_step": [100.0] * 5, "per_step_ci95": [0.0] * 5}
    assert report["baseline"]["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert report["baseline"]["ssim"]["per_step"] == pytest.approx([1.0] * 5, abs=1e-6)
    assert report["psnr"]["best_of_n"]["mean"] < 20  # random guesses are far from it


def test_the_paired_difference_from_copy_last_is_taken_sequence_by_sequence() -> None:
    truth = torch.rand(6, 4, 1, 16, 16)
    last = (truth[:, 0] + 0.1 * torch.rand(6, 1, 16, 16)).clamp(0, 1)  # near the future: a strong baseline
    predictions = (truth.unsqueeze(1) + 0.2 * torch.rand(6, 3, 4, 1, 16, 16)).clamp(0, 1)
    report = prediction_metrics(predictions, truth, last)
    for name in ("psnr", "ssim"):
        for kind in ("best_of_n", "mean_of_n"):
            versus, model, baseline = report["versus_baseline"][name][kind], report[name][kind], report["baseline"][name]
            assert versus["mean"] == pytest.approx(model["mean"] - baseline["mean"])
            assert versus["per_step"] == pytest.approx([a - b for a, b in zip(model["per_step"], baseline["per_step"], strict=True)])
            # Sequences that are hard for both cancel: the paired interval is not the two added.
            assert versus["ci95"] != pytest.approx(model["ci95"] + baseline["ci95"])
    curves = prediction_curves(predictions, truth, last)
    differences = (curves["psnr/best_of_n"] - curves["baseline/psnr"]).mean(1)
    expected = 1.96 * float(differences.std(correction=0)) / math.sqrt(6)
    assert report["versus_baseline"]["psnr"]["best_of_n"]["ci95"] == pytest.approx(expected)


def test_one_exact_sample_among_n_gives_a_perfect_best_of_n() -> None:
    truth = torch.rand(2, 3, 1, 16, 16)
    predictions = torch.rand(2, 4, 3, 1, 16, 16)
    predictions[:, 2] = truth
    report = prediction_metrics(predictions, truth, torch.rand(2, 1, 16, 16))
    assert report["num_sequences"] == 2
    assert report["psnr"]["best_of_n"]["mean"] == 100.0
    assert report["ssim"]["best_of_n"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert report["psnr"]["mean_of_n"]["mean"] < 100.0
    json.dumps(report, allow_nan=False)


def test_prediction_metrics_check_shapes_and_the_pixel_range() -> None:
    truth = torch.rand(2, 3, 1, 16, 16)
    with pytest.raises(DataError, match="need truth"):
        prediction_metrics(torch.rand(2, 4, 5, 1, 16, 16), truth, truth[:, 0])
    with pytest.raises(DataError, match=r"predictions must be a floating-point tensor \(B, N, H"):
        prediction_metrics(torch.rand(2, 3, 1, 16, 16), truth, truth[:, 0])
    with pytest.raises(DataError, match=r"truth must hold pixels in \[0, 1\]"):
        prediction_metrics(torch.rand(2, 4, 3, 1, 16, 16), truth * 255, truth[:, 0])


# ---------------------------------------------------------------------- evaluate

SCHEMA = {
    "vrnnkit_version", "num_sequences", "sequence_length", "frame_shape", "dims_per_sequence",
    "seed", "likelihood", "prediction",
}
LIKELIHOOD_KEYS = {"elbo", "nll", "kl", "nats_per_dim", "bits_per_dim", "iwae"}
IWAE_KEYS = {"K", "bound", "nats_per_dim", "bits_per_dim"}
PREDICTION_KEYS = {"skipped", "context", "horizon", "samples", "num_sequences", "psnr", "ssim", "baseline", "versus_baseline"}
INTERVAL_KEYS = {"mean", "ci95", "per_step", "per_step_ci95"}


def _finite_numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _finite_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _finite_numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_evaluate_reports_every_documented_key_with_finite_values() -> None:
    model = tiny_image_model().train()
    report = evaluate(model, video(5, 7), iwae_samples=3, context=3, samples=2, batch_size=2, seed=1)
    assert model.training  # its mode is restored
    assert set(report) == SCHEMA
    assert report["vrnnkit_version"] == vrnnkit.__version__
    assert (report["num_sequences"], report["sequence_length"], report["frame_shape"]) == (5, 7, [1, 16, 16])
    assert report["dims_per_sequence"] == 7 * 256
    likelihood = report["likelihood"]
    assert set(likelihood) == LIKELIHOOD_KEYS and set(likelihood["iwae"]) == IWAE_KEYS
    assert likelihood["iwae"]["K"] == 3
    assert likelihood["elbo"] == pytest.approx(-(likelihood["nll"] + likelihood["kl"]), rel=1e-5)
    assert likelihood["nats_per_dim"] == pytest.approx(-likelihood["elbo"] / (7 * 256), rel=1e-5)
    assert likelihood["bits_per_dim"] == pytest.approx(likelihood["nats_per_dim"] / math.log(2))
    prediction = report["prediction"]
    assert set(prediction) == PREDICTION_KEYS
    assert (prediction["skipped"], prediction["context"], prediction["horizon"], prediction["samples"]) == (None, 3, 4, 2)
    assert prediction["num_sequences"] == 5
    for name in ("psnr", "ssim"):
        assert set(prediction[name]) == {"best_of_n", "mean_of_n"}
        for entry in (*prediction[name].values(), prediction["baseline"][name], *prediction["versus_baseline"][name].values()):
            assert set(entry) == INTERVAL_KEYS and len(entry["per_step"]) == 4
    numbers = _finite_numbers(report)
    assert len(numbers) > 40 and all(math.isfinite(n) for n in numbers)
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_evaluate_is_seeded_and_reads_tensors_arrays_and_sequences_alike() -> None:
    model = tiny_image_model()
    data = video(3, 6)
    settings = {"iwae_samples": 2, "context": 2, "horizon": 3, "samples": 2, "batch_size": 2, "seed": 5}
    report = evaluate(model, data, **settings)
    assert report["prediction"]["horizon"] == 3
    assert evaluate(model, data, **settings) == report
    assert evaluate(model, data.numpy(), **settings) == report
    assert evaluate(model, list(data), **settings) == report
    layout_array = SequenceArray(data[:, :, 0].numpy(), layout="NTHW")  # items are (T, 1, H, W) arrays
    assert evaluate(model, layout_array, **settings) == report
    assert evaluate(model, data, **{**settings, "seed": 6}) != report


def test_evaluate_skips_prediction_for_vectors_and_when_nothing_is_left_to_predict() -> None:
    report = evaluate(tiny_vector_model(), binary_vectors(4, 5), iwae_samples=2)
    assert report["prediction"] == {
        "skipped": "prediction metrics (PSNR, SSIM) need image frames; this model's frames are vectors of 7",
        "context": 5, "horizon": None, "samples": 10,
    }
    assert math.isfinite(report["likelihood"]["iwae"]["bound"])
    report = evaluate(tiny_image_model(), video(2, 4), iwae_samples=1, context=4)
    assert "leaves nothing to predict" in report["prediction"]["skipped"]


def test_iwae_bound_is_above_the_elbo_and_rises_with_k() -> None:
    torch.manual_seed(0)
    model = tiny_vector_model()
    data = binary_vectors(384, 6)
    bounds = {}
    for k in (1, 10, 100):
        report = evaluate(model, data, iwae_samples=k, batch_size=384, seed=2)
        bounds[k] = report["likelihood"]["iwae"]["bound"]
    elbo = report["likelihood"]["elbo"]
    assert bounds[1] < bounds[10] < bounds[100]
    assert elbo < bounds[10]
    # K = 1 is the ELBO in expectation: the two one-sample means differ only by noise
    assert abs(bounds[1] - elbo) < 0.1 * (bounds[100] - elbo)
    nats = report["likelihood"]["iwae"]["nats_per_dim"]
    assert nats == pytest.approx(-bounds[100] / (6 * 7)) and nats < report["likelihood"]["nats_per_dim"]


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"context": 0}, ValueError, "context must be a positive integer, got 0"),
        ({"context": -2}, ValueError, "context must be a positive integer, got -2"),
        ({"horizon": 0}, ValueError, "horizon must be a positive integer, got 0"),
        ({"samples": 0}, ValueError, "samples must be a positive integer, got 0"),
        ({"iwae_samples": 0}, ValueError, "iwae_samples must be a positive integer"),
        ({"batch_size": True}, ValueError, "batch_size must be a positive integer, got True"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive integer"),
        ({"context": 5, "horizon": 4}, DataError, r"context \(5\) \+ horizon \(4\) = 9 frames, but the test sequences have 8"),
    ],
)
def test_evaluate_rejects_bad_arguments_with_clear_messages(settings: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        evaluate(tiny_image_model(), video(2, 8), **settings)


def test_evaluate_rejects_data_that_does_not_fit_the_model() -> None:
    model = tiny_image_model()
    with pytest.raises(DataError, match=r"data must have shape \(sequences, time, 1, 16, 16\)"):
        evaluate(model, torch.rand(2, 8, 1, 12, 12))
    with pytest.raises(DataError, match="data item 1 has shape"):
        evaluate(model, [torch.rand(8, 1, 16, 16), torch.rand(7, 1, 16, 16)], iwae_samples=1)
    with pytest.raises(DataError, match="floating-point frames"):
        evaluate(model, torch.zeros(2, 8, 1, 16, 16, dtype=torch.uint8), iwae_samples=1)
    with pytest.raises(DataError, match="no frames"):
        evaluate(model, [])
