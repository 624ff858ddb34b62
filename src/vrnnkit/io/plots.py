"""Figures: the training curves of runs, and prediction quality per predicted step.

    plot_runs(["runs/a", "runs/b"], "curves.png")      # = vrnnkit plot runs/a runs/b --out curves.png
    plot_prediction(report["prediction"], "quality.png")  # = vrnnkit eval ... --plot quality.png

Drawn with matplotlib's Agg canvas (no display, no global pyplot state) and written
atomically; the format follows the file's extension (.png, .pdf, .svg).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vrnnkit.errors import ConfigError, DataError, output_problem
from vrnnkit.io.atomic import atomic_path
from vrnnkit.io.runs import METRICS, read_metrics, run_problem

FORMATS = (".png", ".pdf", ".svg")
# (title, y label, training key, validation key) of each panel of plot_runs.
PANELS = (
    ("loss (minus the bound trained on: ELBO, IWAE or FIVO)", "nats per sequence", "loss", "val_loss"),
    ("reconstruction (NLL)", "nats per sequence", "nll", "val_nll"),
    ("KL divergence", "nats per sequence", "kl", "val_kl"),
    ("bits per dimension", "bits/dim", "bits_per_dim", "val_bits_per_dim"),
)


def check_plot_path(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """``path`` if a figure can be written there (a known extension, an existing folder)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot write {path} ({option}): expected a {', '.join(FORMATS)} file name")
    problem = output_problem(path)
    if problem:
        raise ConfigError(f"cannot write {path} ({option}): {problem}")
    return path


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _figure(columns: int, rows: int = 1) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * columns, 3.9 * rows), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lower().lstrip("."))
    return path


def plot_runs(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Training (solid) and validation (dashed) curves of each run in ``runs``, one colour per
    run, on shared axes: loss, NLL, KL and bits per dimension against the step."""
    out = check_plot_path(out)
    if not runs:
        raise ConfigError("give at least one run folder to plot")
    histories = []
    for run in runs:
        problem = run_problem(run)
        if problem:
            raise DataError(f"{run}: {problem}")
        records = read_metrics(Path(run) / METRICS)
        if not records:
            raise DataError(f"{run}: its {METRICS} holds no records yet (the first comes at the first --every steps)")
        histories.append((Path(run).name if Path(run).name != "latest" else Path(run).resolve().name, records))
    figure = _figure(2, 2)
    axes = figure.subplots(2, 2).ravel()
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for axis, (title, unit, train_key, val_key) in zip(axes, PANELS, strict=True):
        for colour, (name, records) in zip(colours, histories, strict=True):
            for key, style, label in ((train_key, "-", f"{name} (train)"), (val_key, "--", f"{name} (validation)")):
                points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
                if points:
                    steps, values = zip(*points, strict=True)
                    axis.plot(steps, values, style, color=colour, label=label, linewidth=1.6, marker="." if len(points) < 30 else None)
        axis.set_title(title)
        axis.xaxis.set_major_locator(_integer_locator())
        axis.set_xlabel("step")
        axis.set_ylabel(unit)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle("training (solid) and validation (dashed)")
    return _save(figure, out)


def plot_prediction(prediction: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """PSNR and SSIM at each predicted step: best-of-N and mean-of-N with their 95% bands
    (over sequences) beside the copy-last baseline, from the ``prediction`` entry of
    ``vrnnkit.evaluation.evaluate``'s report."""
    out = check_plot_path(out, "--plot")
    if prediction.get("skipped"):
        raise DataError(f"no prediction figures to plot: {prediction['skipped']}")
    figure = _figure(2)
    axes = figure.subplots(1, 2)
    samples = prediction.get("samples", "N")
    for axis, (metric, unit) in zip(axes, (("psnr", "PSNR (dB)"), ("ssim", "SSIM")), strict=True):
        lines = ((f"best of {samples}", prediction[metric]["best_of_n"], "C0", "-"),
                 (f"mean of {samples}", prediction[metric]["mean_of_n"], "C1", "-"),
                 ("copy last context frame", prediction["baseline"][metric], "0.35", "--"))
        for label, entry, colour, style in lines:
            values = entry["per_step"]
            steps = range(1, len(values) + 1)
            axis.plot(steps, values, style, color=colour, label=label, linewidth=1.8, marker="o", markersize=3)
            bands = entry.get("per_step_ci95")
            if bands:
                low = [v - b for v, b in zip(values, bands, strict=True)]
                high = [v + b for v, b in zip(values, bands, strict=True)]
                axis.fill_between(steps, low, high, color=colour, alpha=0.18, linewidth=0)
        axis.xaxis.set_major_locator(_integer_locator())
        axis.set_xlabel("predicted step (frames after the context)")
        axis.set_ylabel(unit)
        axis.set_title(f"{unit.split(' ')[0]} per predicted step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    context = prediction.get("context")
    figure.suptitle(f"prediction quality: {prediction.get('num_sequences')} sequences"
                    + (f", {context} context frames" if context else "") + "; bands: 95% intervals")
    return _save(figure, out)
