"""``vrnnkit runs``, ``vrnnkit info`` and ``vrnnkit plot``: runs and checkpoints at a glance."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vrnnkit.cli.common import app, console, friendly_errors, say

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.", metavar="")]


@app.command("runs")
@friendly_errors
def runs_command(
    folder: Annotated[Path, typer.Argument(help="The folder of runs.")] = Path("runs"),
    as_json: JsonFlag = False,
) -> None:
    """List the runs under ./runs (or FOLDER), newest first: data, steps, best validation, wall time, size."""
    from vrnnkit.io.runs import list_runs

    runs = list_runs(folder)
    if as_json:
        console.print_json(json.dumps(runs))
        return
    if not runs:
        say(f"no runs in {folder}; `vrnnkit train` writes one")
        return
    table = Table(title=f"runs in {folder}, newest first")
    for column, justify in (("run", "left"), ("data", "left"), ("steps", "right"), ("best val loss @ step", "right"),
                            ("bits/dim", "right"), ("wall", "right"), ("size", "right"), ("written", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for run in runs:
        table.add_row(*_run_row(run))
    console.print(table)


def _run_row(run: dict[str, Any]) -> list[str]:
    """bits/dim column: nats per time step (val ELBO) for sequences of different lengths."""
    per_dim = run["best_val_bits_per_dim"]
    figure = "" if per_dim is None else f"{per_dim:.4g}"
    if run["best_val_elbo_per_step"] is not None:
        figure = f"{run['best_val_elbo_per_step']:.4g} nats/step"
    best = "" if run["best_val_loss"] is None else f"{run['best_val_loss']:.5g} @ {run['best_step']:,}"
    return [
        run["name"], _short(str(run["data"] or "")), f"{run['steps']:,}", best, figure,
        "" if run["wall_s"] is None else _duration(run["wall_s"]),
        _bytes(run["size_bytes"]), time.strftime("%m-%d %H:%M", time.localtime(run["modified"])),
    ]


def _short(text: str, width: int = 20) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return ""


@app.command("info")
@friendly_errors
def info_command(
    ckpt: Annotated[Path, typer.Argument(help="A .safetensors checkpoint or a run folder.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """What a checkpoint holds: config, parameters per block, vrnnkit and format versions (read from its header; nothing is built)."""
    from vrnnkit.io.runs import MODEL, checkpoint_info

    info = checkpoint_info(ckpt / MODEL if ckpt.is_dir() else ckpt)
    if as_json:
        console.print_json(json.dumps(info))
        return
    head = Table(title=f"{info['path']}", show_header=False)
    head.add_row("vrnnkit version", str(info["vrnnkit_version"]))
    head.add_row("format version", str(info["format_version"]))
    head.add_row("file size", _bytes(info["size_bytes"]))
    for key, value in info["metadata"].items():
        head.add_row(key, _short(value, 80))
    console.print(head)
    blocks = Table(title="parameters per block")
    blocks.add_column("block")
    blocks.add_column("values", justify="right")
    for name, count in info["parameters"].items():
        blocks.add_row(name, f"{count:,}")
    blocks.add_row("total", f"{info['total_parameters']:,}", style="bold")
    console.print(blocks)
    config = Table(title="model config", show_header=False)
    for key, value in info["config"].items():
        config.add_row(key, json.dumps(value))
    console.print(config)


@app.command("plot")
@friendly_errors
def plot_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (e.g. runs/latest runs/other).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The figure to write: .png, .pdf or .svg.")] = Path("curves.png"),
) -> None:
    """Draw the training and validation curves of one or several runs on shared axes."""
    from vrnnkit.io.plots import plot_runs

    say(f"wrote {plot_runs(runs, out)}")
