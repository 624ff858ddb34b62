"""``vrnnkit train``: options -> TrainConfig -> ``vrnnkit.training.train`` -> progress and summary.

Every option defaults to "not given" here, so that the three sources merge in a clear order:
the TrainConfig defaults, then a resumed run's own config, then ``--config FILE.toml``, then
the options on the command line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vrnnkit.cli import app, console, errors, friendly_errors

Opt = Optional  # typer reads the annotations at run time, where Python 3.10 has no "X | None"


def _option(help: str, *names: str, **kwargs: Any) -> Any:
    return typer.Option(*names, help=help, show_default=False, **kwargs)


@app.command()
@friendly_errors
def train(
    data: Annotated[Opt[str], typer.Argument(help="A .npy/.npz/.gif/.mp4 file, or bouncing-balls (default), moving-mnist, seq-mnist.", show_default=False)] = None,
    mnist_dir: Annotated[Opt[str], _option("Folder with the MNIST IDX files (moving-mnist, seq-mnist).")] = None,
    layout: Annotated[Opt[str], _option("Layout of a data file, e.g. NTHW, TNHW, NTD (guessed by default).")] = None,
    num_sequences: Annotated[Opt[int], _option("Generated datasets (bouncing-balls, moving-mnist): how many sequences (default 2000).", min=1)] = None,
    encoder: Annotated[Opt[str], _option("Encoder block (default auto: conv for images, mlp for vectors).")] = None,
    decoder: Annotated[Opt[str], _option("Decoder block (default auto: convT for images, mlp for vectors).")] = None,
    prior: Annotated[Opt[str], _option("Prior block (default mlp; standard-normal is VRNN-I).")] = None,
    posterior: Annotated[Opt[str], _option("Posterior block (default mlp).")] = None,
    rnn: Annotated[Opt[str], _option("Recurrence (default gru).")] = None,
    likelihood: Annotated[Opt[str], _option("Likelihood (default bernoulli).")] = None,
    h_dim: Annotated[Opt[int], _option("Recurrent state size (default 64).", min=1)] = None,
    z_dim: Annotated[Opt[int], _option("Latent size (default 16).", min=1)] = None,
    layers: Annotated[Opt[int], _option("Recurrent layers (default 1).", min=1)] = None,
    steps: Annotated[Opt[int], _option("Optimiser steps (default 1500 when --epochs is not given).", min=1)] = None,
    epochs: Annotated[Opt[int], _option("Passes over the training windows, instead of --steps.", min=1)] = None,
    batch_size: Annotated[Opt[int], _option("Sequences per batch (default 16).", min=1)] = None,
    lr: Annotated[Opt[float], _option("Adam learning rate (default 1e-3).", min=0.0)] = None,
    clip: Annotated[Opt[float], _option("Gradient-norm clip, applied before the step; 0 disables (default 10).", min=0.0)] = None,
    kl_anneal: Annotated[Opt[int], _option("Raise the KL weight from 0 to 1 over this many steps; 0 turns it off (default 200).", min=0)] = None,
    free_bits: Annotated[Opt[float], _option("Floor, in nats, on each step's KL in the loss (default 0).", min=0.0)] = None,
    seq_len: Annotated[Opt[int], _option("Frames per training window (default 10).", min=1)] = None,
    val_fraction: Annotated[Opt[float], _option("Share of sequences held out for validation (default 0.1).", min=0.0, max=0.99)] = None,
    seed: Annotated[Opt[int], _option("Random seed (default 0).", min=0)] = None,
    device: Annotated[Opt[str], _option("auto, cpu, cuda or mps (default auto).")] = None,
    precision: Annotated[Opt[str], _option("fp32, bf16 or fp16 autocast (default fp32).")] = None,
    workers: Annotated[Opt[int], _option("DataLoader worker processes (default 0).", min=0)] = None,
    every: Annotated[Opt[int], _option("Validate, log and save every N steps (default 250).", min=1)] = None,
    keep: Annotated[Opt[int], _option("Keep the model of the last K saves in checkpoints/ (default 3; 0 keeps none).", min=0)] = None,
    nproc: Annotated[Opt[int], _option("Train with N processes on this machine (DistributedDataParallel, as torchrun --standalone); --batch-size is per process.", min=1)] = None,
    compile: Annotated[Opt[bool], _option("torch.compile the encoder and decoder (worth it on GPUs).", "--compile")] = None,
    skip_nonfinite: Annotated[Opt[bool], _option("Skip steps whose loss is not finite instead of stopping.", "--skip-nonfinite")] = None,
    out: Annotated[Opt[Path], _option("Run folder (default runs/<timestamp>; runs/latest links the newest).")] = None,
    resume: Annotated[Opt[Path], _option("Continue the run in this folder (e.g. runs/latest).")] = None,
    config: Annotated[Opt[Path], _option("A TOML file of any of these options; the command line overrides it.")] = None,
    quiet: Annotated[bool, _option("Print only the final summary.", "--quiet", "-q")] = False,
) -> None:
    """Train a VRNN. With no arguments: a conv VRNN on generated bouncing balls, on the CPU."""
    from vrnnkit.api import train as run_training

    given = {k: v for k, v in locals().items() if v is not None and k not in ("out", "resume", "config", "quiet", "nproc", "run_training")}
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from vrnnkit.launch import launch_training

        raise typer.Exit(launch_training(nproc, given, out=out, resume=resume, config=config, quiet=quiet))
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone reports
    reporter = _Reporter(quiet=quiet or not main_process)
    with reporter:
        result = run_training(out=out, resume=resume, config=config, on_log=reporter.log, **given)
    run_dir = result.run_dir
    if not main_process:
        raise typer.Exit(130 if result.interrupted else 0)
    if result.interrupted:
        again = f" --nproc {result.world_size}" if result.world_size > 1 else ""
        errors.print(
            f"interrupted: saved step {result.step} in {run_dir}; continue with: vrnnkit train --resume {run_dir}{again}",
            soft_wrap=True, highlight=False,
        )
        raise typer.Exit(130)
    _summary(result, run_dir)


class _Reporter:
    """A Rich progress bar on a terminal, plain lines elsewhere (CI logs), nothing with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.2f}  nll {task.fields[nll]:.2f}  kl {task.fields[kl]:.2f}"),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            console=console, disable=not self.live,
        )
        self.task: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> _Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def log(self, record: dict[str, Any]) -> None:
        if record.get("event") == "start":
            if not self.quiet:
                self._print(_start_line(record))
            return
        if self.task is None:
            self.task = self.progress.add_task("train", total=record["total"], loss=0.0, nll=0.0, kl=0.0, rate="")
        elapsed = time.perf_counter() - self.started
        rate = f"{record['step'] / elapsed:.1f} steps/s" if elapsed > 0 else ""
        self.progress.update(self.task, completed=record["step"], loss=record["loss"], nll=record["nll"], kl=record["kl"], rate=rate)
        if record.get("live") or self.quiet:
            return
        line = (f"step {record['step']}/{record['total']}  loss {record['loss']:.3f}  nll {record['nll']:.3f}  "
                f"kl {record['kl']:.3f}  {record['sequences_per_s']:.0f} seq/s")
        if "val_loss" in record:
            line += f"  | val loss {record['val_loss']:.3f}  {record['val_bits_per_dim']:.4f} bits/dim"
        self._print(line)

    def _print(self, line: str) -> None:
        if self.live:
            self.progress.console.print(line, highlight=False)
        else:
            print(line, flush=True)


def _start_line(record: dict[str, Any]) -> str:
    world, batch = record["world_size"], record["batch_size"]
    per_step = f"{world} processes x {batch} sequences = {world * batch} per step" if world > 1 else f"batch {batch}"
    begin = f"from step {record['step']} " if record["step"] else ""
    return (f"training on {record['device']}: {per_step}; {record['parameters']:,} parameters; "
            f"{begin}to step {record['total']} -> {record['run_dir']}")


def _summary(result: Any, run_dir: Path) -> None:
    table = Table(title=f"vrnnkit train: {result.step} steps", show_header=False)
    for key in ("loss", "nll", "kl", "bits_per_dim", "val_loss", "val_bits_per_dim", "sequences_per_s"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4f}")
    table.add_row("run folder", str(run_dir))
    for name in ("model.safetensors", "samples.gif"):
        if (run_dir / name).exists():
            table.add_row(name, str(run_dir / name))
    console.print(table)

