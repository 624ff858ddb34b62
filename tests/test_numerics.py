"""Numerical robustness (training stays finite on degenerate data) and security (nothing is
ever unpickled)."""

from __future__ import annotations

import ast
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vrnnkit
from vrnnkit.blocks.distributions import normal_kl, normal_log_prob, positive_std
from vrnnkit.blocks.likelihoods import Bernoulli, Gaussian, GaussianMixture
from vrnnkit.cli import app
from vrnnkit.errors import CheckpointError, DataError
from vrnnkit.training import TrainConfig, train

SRC = Path(vrnnkit.__file__).resolve().parent
ENV = {"COLUMNS": "200", "VRNNKIT_DEBUG": None}
rng = np.random.default_rng(0)

# (id, array, layout, options): each trains a tiny model for a few dozen steps.
DEGENERATE = [
    ("frames-all-0", np.zeros((6, 6, 16, 16), np.uint8), "NTHW", {}),
    ("frames-all-1", np.full((6, 6, 16, 16), 255, np.uint8), "NTHW", {}),
    ("constant-video-gaussian", np.full((6, 6, 16, 16), 0.37, np.float32), "NTHW", {"likelihood": "gaussian", "lr": 1e-2}),
    ("mlp-1000-steps", rng.random((3, 1000, 3), dtype=np.float32), "NTD", {"seq_len": 1000, "batch_size": 2, "steps": 3}),
    ("gaussian-variance-1e-12", (0.5 + 1e-6 * rng.standard_normal((8, 8, 4))).astype(np.float32), "NTD",
     {"likelihood": "gaussian", "lr": 1e-2}),
    ("gaussian-scale-1e3", (1e3 * rng.standard_normal((8, 8, 4))).astype(np.float32), "NTD", {"likelihood": "gaussian"}),
    ("gmm-scale-1e3", (1e3 * rng.standard_normal((8, 8, 4))).astype(np.float32), "NTD", {"likelihood": "gmm"}),
]


@pytest.mark.parametrize(("array", "layout", "options"), [pytest.param(*c[1:], id=c[0]) for c in DEGENERATE])
def test_training_stays_finite_on_degenerate_data(tmp_path, array, layout, options):
    np.save(tmp_path / "data.npy", array)
    settings = {"steps": 30, "h_dim": 8, "z_dim": 4, "seq_len": 4, "batch_size": 2, "every": 10, "kl_anneal": 0, **options}
    config = TrainConfig.from_dict({"data": str(tmp_path / "data.npy"), "layout": layout, **settings})
    result = train(config, tmp_path / "run")
    assert result.step == settings["steps"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] == settings["steps"]
    for record in records:
        for key, value in record.items():
            assert math.isfinite(value), (key, record)
    model = vrnnkit.load(tmp_path / "run" / "model.safetensors")
    for name, parameter in model.state_dict().items():
        assert torch.isfinite(parameter).all(), name
    x = torch.from_numpy(array[:2, : min(array.shape[1], 6)].astype(np.float32))
    if layout == "NTHW":
        x = x.unsqueeze(2) / (255.0 if array.dtype == np.uint8 else 1.0)
    bound = model.log_likelihood(x, k=8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(bound).all()


def test_standard_deviations_have_a_floor():
    raw = torch.tensor([-1e30, -1e4, -20.0, 0.0, 20.0, 1e4, 1e30])
    std = positive_std(raw, 1e-3)
    assert torch.isfinite(std).all() and (std >= 1e-3).all()
    # The floor bounds each element's log-density: at most -log(min_std) - log(2 pi) / 2.
    log_p = normal_log_prob(torch.zeros(7), torch.zeros(7), std)
    assert torch.isfinite(log_p).all() and log_p.max() <= -math.log(1e-3) - 0.5 * math.log(2 * math.pi) + 1e-4
    # Standard deviations from 1e-3 to 1e4 (raw scales of +-1e4): the KL stays representable.
    kl = normal_kl(torch.zeros(5), std[1:-1], torch.full((5,), 1e3), std[1:-1].flip(0))
    assert torch.isfinite(kl).all() and (kl >= 0).all()
    for likelihood in (Gaussian(), GaussianMixture(components=3)):
        params = torch.full((2, likelihood.params_per_element, 5), -1e4)  # raw scales -> floor
        assert torch.isfinite(likelihood.log_prob(params, torch.zeros(2, 5))).all()


def test_bernoulli_log_prob_is_finite_for_any_logit():
    logits = torch.tensor([[-1e4, 1e4, 0.0, -1e30, 1e30]]).unsqueeze(1)
    log_p = Bernoulli().log_prob(logits, torch.tensor([[1.0, 0.0, 0.5, 1.0, 0.0]]))
    assert torch.isfinite(log_p).all()


def test_mixture_densities_are_summed_with_log_sum_exp():
    """Each component's frame density is exp(-1e5): a naive sum underflows to log(0) = -inf."""
    mixture = GaussianMixture(components=3)
    frame = 64
    params = torch.zeros(1, 9, frame)
    params[:, 3:6] = torch.tensor([50.0, 60.0, 70.0]).view(1, 3, 1)  # means far from x = 0
    params[:, 6:] = -3.0  # raw scales: std = softplus(-3) + 1e-3, about 0.05
    x = torch.zeros(1, frame)
    log_p = mixture.log_prob(params, x)
    std = positive_std(torch.tensor(-3.0), 1e-3).double()
    components = torch.stack([normal_log_prob(x.double(), torch.full_like(x, m).double(), std).sum() for m in (50.0, 60.0, 70.0)])
    expected = torch.logsumexp(components, 0) - math.log(3)
    assert components.max() < -1e5 and torch.isfinite(log_p).all()
    assert log_p.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.log(torch.exp(components.float()).sum() / 3) == -math.inf  # what log-sum-exp avoids


# ----------------------------------------------------------------------------- security


class Canary:
    """Unpickling this object creates ``marker``: the test fails if the file ever appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def pickles(tmp_path) -> tuple[Path, dict[str, Path]]:
    marker = tmp_path / "UNPICKLED"
    canary = Canary(marker)
    folder = tmp_path / "files"
    folder.mkdir()
    files = {
        "pickle.npy": pickle.dumps(canary, protocol=4),
        "pickle.safetensors": pickle.dumps(canary, protocol=2),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    np.save(folder / "object.npy", np.array([canary, 1], dtype=object), allow_pickle=True)
    np.savez(folder / "object.npz", clip=np.array([canary], dtype=object))
    torch.save({"weights": canary}, folder / "model.pt")
    torch.save({"weights": canary}, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    # The canary is live: unpickling one copy (elsewhere) does create its marker.
    live = tmp_path / "live"
    live.mkdir()
    pickle.loads(pickle.dumps(Canary(live / "UNPICKLED"))).close()
    assert (live / "UNPICKLED").exists()
    return marker, {p.name: p for p in folder.iterdir()}


def test_loaders_refuse_pickles_without_unpickling(pickles):
    marker, files = pickles
    for name in ("pickle.npy", "object.npy", "object.npz"):
        with pytest.raises(DataError, match="unpickl"):
            vrnnkit.data.load_sequences(files[name])
        with pytest.raises(DataError):
            vrnnkit.data.open_sequences(files[name])
    for name in ("model.pt", "legacy.pt", "pickle.safetensors", "pickle.npy"):
        with pytest.raises(CheckpointError):
            vrnnkit.load(files[name])
        with pytest.raises(CheckpointError):
            vrnnkit.read_metadata(files[name])
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "legacy.pt", "pickle.safetensors", "pickle.npy"])
def test_ckpt_option_refuses_pickles_with_a_clear_message(pickles, tmp_path, name):
    marker, files = pickles
    runner = CliRunner()
    result = runner.invoke(app, ["sample", "--ckpt", str(files[name]), "--out", str(tmp_path / "s.gif")], env=ENV)
    assert result.exit_code == 2, result.output
    assert "never unpickles" in result.output and name in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["predict", str(files["object.npy"]), "--ckpt", str(files[name]), "--out", str(tmp_path / "p.gif")], env=ENV)
    assert result.exit_code == 2 and "never unpickles" in result.output
    assert not marker.exists() and not (tmp_path / "s.gif").exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_the_source_never_unpickles():
    """No pickle.load(s) / torch.load / Unpickler anywhere; np.load always with allow_pickle=False."""
    problems = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, name in _calls(tree):
            where = f"{path.relative_to(SRC)}:{node.lineno}: {name}"
            leaf = name.rsplit(".", 1)[-1]
            if name in ("pickle.load", "pickle.loads", "torch.load", "pickle.Unpickler", "dill.load", "joblib.load",
                        "torch.export.load", "_pickle.load", "cPickle.load", "shelve.open"):
                problems.append(where)
            elif leaf == "load" and name.split(".")[0] in ("np", "numpy"):
                safe = any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                           for k in node.keywords)
                if not safe:
                    problems.append(where + " without allow_pickle=False")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "_pickle", "dill"):
                names = {alias.name for alias in node.names}
                if names & {"load", "loads", "Unpickler"}:
                    problems.append(f"{path.relative_to(SRC)}:{node.lineno}: from {node.module} import {names}")
    assert problems == []
