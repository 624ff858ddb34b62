"""``vrnnkit train`` and ``vrnnkit blocks``.

The options of ``vrnnkit train`` are the flat options of ``TrainConfig`` (plus where the run
goes), declared once in ``OPTIONS`` below: their types and the defaults shown in ``--help``
come from the config dataclass. Every option defaults to "not given" here, so that the
sources merge in a clear order: the TrainConfig defaults, then a resumed run's own config,
then ``--config FILE``, then the options on the command line.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vrnnkit import api
from vrnnkit.cli.common import app, console, errors, friendly_errors
from vrnnkit.errors import ConfigError
from vrnnkit.registry import KINDS, list_blocks
from vrnnkit.resources.budget import MEMORY_ENV
from vrnnkit.training.config import DEFAULT_STEPS, TrainConfig, block_options_from_pairs

DATA, MODEL, OPTIMISATION, RUN = "Data", "Model", "Optimisation", "Run"

# (option, panel, help, extra typer.Option settings); the order of --help.
OPTIONS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("mnist_dir", DATA, "Folder with the MNIST IDX files (moving-mnist, seq-mnist); default: the MNIST download in the data cache.", {}),
    ("layout", DATA, "Layout of a data file, e.g. NTHW, TNHW, NTD (guessed by default).", {}),
    ("size", DATA, "Resize frames as they are read: SIZE (square, e.g. 64) or HEIGHTxWIDTH (e.g. 64x48); area averaging when shrinking, bilinear when enlarging; at least 8.", {"metavar": "SIZE|HxW"}),
    ("grey", DATA, "Convert colour frames to grey (BT.601 luma) as they are read.", {}),
    ("skip_unreadable", DATA, "A folder of clips: leave out (with a warning) a clip that cannot be read, instead of stopping.", {}),
    ("flip", DATA, "Image data: mirror each training window left to right at random, half of them (more data for scenes without a handedness).", {}),
    ("transpose", DATA, "Vector data (piano rolls): shift each training window by a random whole number of steps (semitones) in [-N, N] along its notes, keeping every note on the keyboard; 0: off.", {"min": 0, "metavar": "N"}),
    ("num_sequences", DATA, "Generated datasets (bouncing-balls, moving-mnist): how many sequences.", {"min": 1}),
    ("seq_len", DATA, "Frames per training window; 0 or full: whole sequences (data of different lengths).", {"metavar": "N|full"}),
    ("action_classes", DATA, "Data with integer (discrete) actions: their number of classes, one-hot encoded (default: the file's action_classes).", {"min": 1}),
    ("fps", DATA, "MIDI folders: time steps per second (default: one step per quarter note).", {"min": 0.0}),
    ("val_fraction", DATA, "Share of sequences held out for validation.", {"min": 0.0, "max": 0.99}),
    ("workers", DATA, "DataLoader worker processes.", {"min": 0}),
    ("encoder", MODEL, "Encoder block (auto: conv for images, mlp for vectors).", {}),
    ("decoder", MODEL, "Decoder block (auto: convT for images, mlp for vectors).", {}),
    ("prior", MODEL, "Prior block (standard-normal is VRNN-I).", {}),
    ("posterior", MODEL, "Posterior block: mlp (filtering) or smoothing (also reads the frames after t).", {}),
    ("rnn", MODEL, "Recurrence.", {}),
    ("likelihood", MODEL, "Likelihood.", {}),
    ("h_dim", MODEL, "Recurrent state size.", {"min": 1}),
    ("z_dim", MODEL, "Latent size.", {"min": 1}),
    ("feature_dim", MODEL, "Width of the frame features phi_x(x_t) (default: --h-dim).", {"min": 1}),
    ("latent_feature_dim", MODEL, "Width of the latent features phi_z(z_t) (default: --h-dim).", {"min": 1}),
    ("layers", MODEL, "Recurrent layers.", {"min": 1}),
    ("skip_context", MODEL, "Skip decoders: 0 takes skips from the previous frame; N from the previous frame up to frame N, then holds frame N (SVG).", {"min": 0}),
    ("skip_residual", MODEL, "Skip decoders: predict the change from the skip frame (copying it is where training starts).", {}),
    ("action_embedding", MODEL, "Data with actions: the width of each action's embedding, which the prior, posterior, recurrence and decoder read.", {"min": 1}),
    ("frame_difference", MODEL, "The encoder also reads each frame's change from the previous one, so motion is in what it sees (default: on for images, off for vectors).", {}),
    ("steps", OPTIMISATION, f"Optimiser steps ({DEFAULT_STEPS} when --epochs is not given).", {"min": 1}),
    ("epochs", OPTIMISATION, "Passes over the training windows, instead of --steps.", {"min": 1}),
    ("batch_size", OPTIMISATION, "Sequences per batch (per process with --nproc).", {"min": 1}),
    ("lr", OPTIMISATION, "Adam learning rate.", {"min": 0.0}),
    ("weight_decay", OPTIMISATION, "AdamW's decoupled weight decay; 0 keeps plain Adam.", {"min": 0.0}),
    ("lr_schedule", OPTIMISATION, "constant, or cosine: from --lr down to 5% of it at the last step.", {}),
    ("dropout", OPTIMISATION, "Dropout in every mlp block and in the gru/lstm (a block's own dropout option wins).", {"min": 0.0, "max": 0.99}),
    ("ema", OPTIMISATION, "Average the weights (exponential moving average with this decay, e.g. 0.999); validation, model.safetensors and best.safetensors use the average.", {"min": 0.0, "max": 0.9999999}),
    ("output_bias", OPTIMISATION, "Bernoulli models with an mlp decoder: start the output bias at the logit of the training data's mean.", {}),
    ("clip", OPTIMISATION, "Gradient-norm clip, applied before the step; 0 disables.", {"min": 0.0}),
    ("kl_anneal", OPTIMISATION, "Raise the KL weight from 0 to 1 over this many steps; 0 turns it off.", {"min": 0}),
    ("free_bits", OPTIMISATION, "Floor, in nats, on each step's KL in the loss.", {"min": 0.0}),
    ("objective", OPTIMISATION, "elbo; or iwae or fivo, bounds on log p(x) over --particles latent paths per sequence (tighter, costlier; docs/objectives.md).", {}),
    ("particles", OPTIMISATION, "Latent paths per sequence for --objective iwae or fivo.", {"min": 1}),
    ("gradient", OPTIMISATION, "reparam; or dreg: with --objective iwae, the doubly reparameterised gradient for the posterior (docs/objectives.md).", {}),
    ("resample_threshold", OPTIMISATION, "fivo: resample when the effective sample size drops below this share of the particles.", {"min": 0.0, "max": 1.0}),
    ("precision", OPTIMISATION, "fp32, bf16 or fp16 autocast.", {}),
    ("compile", OPTIMISATION, "torch.compile the encoder and decoder (worth it on GPUs).", {}),
    ("skip_nonfinite", OPTIMISATION, "Skip steps whose loss is not finite instead of stopping.", {}),
    ("seed", RUN, "Random seed.", {"min": 0}),
    ("device", RUN, "auto, cpu, cuda, cuda:N or mps.", {}),
    ("every", RUN, "Validate, log and save every N steps.", {"min": 1}),
    ("keep", RUN, "Keep the model of the last K saves in checkpoints/; 0 keeps none.", {"min": 0}),
]
# Options of the command, not of the training config.
RUN_OPTIONS: list[tuple[str, type, str, dict[str, Any]]] = [
    ("nproc", int, "Train with N processes on this machine (DistributedDataParallel, as torchrun --standalone); --batch-size is per process.", {"min": 1}),
    ("out", Path, "Run folder (default runs/<timestamp>; runs/latest links the newest).", {}),
    ("resume", Path, "Continue the run in this folder (e.g. runs/latest).", {}),
    ("config", Path, "A TOML file of any of these options (or a run folder's config.json); the command line overrides it.", {}),
    ("log", str, "Also log the figures and sampled clips to a tracker: tensorboard (into RUN/tensorboard; pip install 'vrnnkit\\[tensorboard]').", {"metavar": "TRACKER"}),
]
TYPES = {"int": int, "float": float, "str": str, "bool": bool}  # a union takes its first type
BLOCK_OPTION_EXAMPLES = {"encoder": "channels=64", "decoder": "channels=64", "prior": "hidden=128",
                         "posterior": "layers=2", "rnn": "learn_initial_state=true", "likelihood": "std=0.1"}


def _parameters() -> list[inspect.Parameter]:
    """The parameters of ``vrnnkit train``, built from ``OPTIONS`` and ``TrainConfig``."""
    defaults, types = TrainConfig().to_dict(), TrainConfig.option_types()
    keyword = inspect.Parameter.KEYWORD_ONLY

    def parameter(name: str, kind: type, info: Any) -> inspect.Parameter:
        return inspect.Parameter(name, keyword, default=None, annotation=Annotated[Optional[kind], info])  # noqa: UP045

    data_help = ("A .npy/.npz/.gif/.mp4 file; sequences of different lengths: a note-list .json (train split, "
                 "valid for validation), a .npz of several arrays or with lengths, a folder of .npy/.mid files; frames with actions "
                 "(a .npz with 'frames' and 'actions', or a folder of them: a world model, docs/world_models.md); "
                 "or bouncing-balls (default), moving-mnist, seq-mnist, jsb-chorales (downloaded into the data cache when missing).")
    params = [inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
        Optional[str], typer.Argument(help=data_help, show_default=False)])]  # noqa: UP045
    for name, panel, text, extra in OPTIONS:
        kind = TYPES[types[name].split("|")[0].strip()]
        if kind is bool:  # a flag: no value to show, no default to print
            flag = name.replace("_", "-")
            names = f"--{flag}/--no-{flag}" if defaults[name] is not False else f"--{flag}"
            info = typer.Option(names, help=text, show_default=False, metavar="", rich_help_panel=panel)
        else:
            shown = text if defaults[name] is None else f"{text.rstrip('.')} (default {defaults[name]})."
            info = typer.Option(help=shown, show_default=False, rich_help_panel=panel, **extra)
        params.append(parameter(name, kind, info))
    for kind_name in KINDS:
        example = BLOCK_OPTION_EXAMPLES[kind_name]
        info = typer.Option(f"--{kind_name}-option", metavar="KEY=VALUE", rich_help_panel=MODEL, show_default=False,
                            help=f"An option of the {kind_name} block (e.g. {example}); repeat for more.")
        params.append(parameter(f"{kind_name}_option", list[str], info))
    for name, kind, text, extra in RUN_OPTIONS:
        params.append(parameter(name, kind, typer.Option(help=text, show_default=False, rich_help_panel=RUN, **extra)))
    quiet = typer.Option("--quiet", "-q", help="Print only the final summary.", rich_help_panel=RUN, metavar="")
    params.append(inspect.Parameter("quiet", keyword, default=False, annotation=Annotated[bool, quiet]))
    force = typer.Option("--force", rich_help_panel=RUN, metavar="", help=(
        f"Skip the memory check made before the model and the data are allocated (as {MEMORY_ENV}=off)."))
    params.append(inspect.Parameter("force", keyword, default=False, annotation=Annotated[bool, force]))
    return params


def train_command(**given: Any) -> None:
    """Train a VRNN. With no arguments: a conv VRNN on generated bouncing balls, on the CPU."""
    out, resume, config, quiet, nproc, log = (given.pop(k) for k in ("out", "resume", "config", "quiet", "nproc", "log"))
    if given.pop("force"):
        os.environ[MEMORY_ENV] = "off"  # the worker processes of --nproc inherit it
    pairs = {kind: given.pop(f"{kind}_option") or [] for kind in KINDS}
    options = {k: v for k, v in given.items() if v is not None}
    if any(pairs.values()):
        options["block_options"] = block_options_from_pairs(pairs)
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from vrnnkit.training.launch import launch_training

        if log is not None:
            raise ConfigError("--log applies to a run in one process; leave out --nproc, or --log")

        raise typer.Exit(launch_training(nproc, options, out=out, resume=resume, config=config, quiet=quiet))
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone reports
    with _Reporter(quiet=quiet or not main_process) as reporter:
        result = api.train(out=out, resume=resume, config=config, on_log=reporter.log, log=log, **options)
    if not main_process:
        raise typer.Exit(130 if result.interrupted else 0)
    if result.interrupted:
        again = f" --nproc {result.world_size}" if result.world_size > 1 else ""
        errors.print(
            f"interrupted: saved step {result.step} in {result.run_dir}; continue with: "
            f"vrnnkit train --resume {result.run_dir}{again}", soft_wrap=True, highlight=False,
        )
        raise typer.Exit(130)
    _summary(result, result.run_dir)


train_command.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
app.command("train")(friendly_errors(train_command))


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
        if "val_elbo_per_step" in record:
            line += f"  {record['val_elbo_per_step']:.3f} nats/step"
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
    notes = "; padded batches of sequences of different lengths" if record.get("padded") else ""
    if record.get("output_bias"):
        notes += "; output bias started at the logit of the training data's mean (--no-output-bias to skip)"
    return (f"training on {record['device']}: {per_step}; {record['parameters']:,} parameters; "
            f"{begin}to step {record['total']} -> {record['run_dir']}{notes}")


def _summary(result: Any, run_dir: Path) -> None:
    table = Table(title=f"vrnnkit train: {result.step} steps", show_header=False)
    for key in ("loss", "nll", "kl", "bits_per_dim", "val_loss", "val_bits_per_dim", "val_elbo_per_step", "sequences_per_s"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4f}")
    table.add_row("run folder", str(run_dir))
    for name in ("model.safetensors", "samples.gif"):
        if (run_dir / name).exists():
            table.add_row(name, str(run_dir / name))
    console.print(table)


@app.command()
def blocks() -> None:
    """List the registered blocks of every kind, plug-ins included."""
    table = Table(title="Registered blocks")
    table.add_column("kind")
    table.add_column("names")
    for kind, names in list_blocks().items():
        table.add_row(kind, ", ".join(names))
    console.print(table)
