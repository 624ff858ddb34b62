"""``vrnnkit sample``, ``predict``, ``eval`` and ``export``: using a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from vrnnkit import api
from vrnnkit.api import checkpoint_note_range
from vrnnkit.cli.common import app, console, friendly_errors, note, say
from vrnnkit.data.sources import BUILTIN_DATA

Opt = Optional  # typer reads the annotations at run time, where Python 3.10 has no "X | None"

Ckpt = Annotated[Opt[Path], typer.Option(help="A .safetensors checkpoint or a run folder (default: the newest run in ./runs).", show_default=False)]
Seed = Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives the same output.")]
Mean = Annotated[Opt[bool], typer.Option("--mean/--random", show_default=False, help=(
    "Frames are the likelihood's mean, or draws from it (default: the mean; draws for .mid)."))]
Feedback = Annotated[Opt[str], typer.Option(metavar="mean|draw", show_default=False, help=(
    "What each generated frame feeds back into the state: the likelihood's mean, or a draw from it (ancestral "
    "sampling; keeps Bernoulli samples moving, see docs/prediction.md). Default: the frame written."))]
SampleFeedback = Annotated[Opt[str], typer.Option("--feedback", metavar="mean|draw", show_default=False, help=(
    "What each generated frame feeds back into the state: the likelihood's mean, or a draw from it (ancestral "
    "sampling). Default: a draw for Bernoulli models (keeps sampled objects moving, see docs/prediction.md), "
    "the frame written for the others."))]
Split = Annotated[Opt[str], typer.Option(help="The split of a note-list .json file (default: test).", show_default=False)]
Flag = {"metavar": ""}  # a flag takes no value: show none
Size = Annotated[Opt[str], typer.Option(metavar="SIZE|HxW", show_default=False, help=(
    "Resize frames as they are read: SIZE (square, e.g. 64) or HEIGHTxWIDTH (e.g. 64x48); area averaging "
    "when shrinking, bilinear when enlarging; at least 8."))]
Grey = Annotated[bool, typer.Option("--grey", help="Convert colour frames to grey (BT.601 luma) as they are read.", **Flag)]
Actions = Annotated[Opt[Path], typer.Option("--actions", show_default=False, help=(
    "World models: an action plan, .npy or .npz, (T, A) or (K, T, A) for K plans (integer class ids (T,) or (K, T) "
    "are one-hot encoded); row t is the action before the t-th generated frame (docs/world_models.md)."))]


def _load(ckpt: Path | None) -> Any:
    return _load_music(ckpt)[0]


def _load_music(ckpt: Path | None) -> tuple[Any, Any]:
    """The model and the note range its checkpoint records (None when it has none)."""
    model, path = api.load_model(ckpt)
    note(f"using {path}")
    return model, checkpoint_note_range(path)


@app.command()
@friendly_errors
def sample(
    out: Annotated[Opt[Path], typer.Option("--out", "-o", show_default=False, help=(
        "Output file: .gif, .png, .mp4 or .npy (vector models: .npy, .csv, .png; piano-roll models also .mid, "
        "one file per clip, and .png draws a piano roll); "
        "default samples.gif (vector models: samples.npy) in the current folder, replaced if it exists."))] = None,
    ckpt: Ckpt = None,
    num: Annotated[int, typer.Option(min=1, help="Number of clips.")] = 8,
    steps: Annotated[Opt[int], typer.Option(min=1, show_default=False, help="Frames per clip (default 20; with --actions, the plan's steps).")] = None,
    seed: Seed = 0,
    mean: Mean = None,
    feedback: SampleFeedback = None,
    actions: Actions = None,
) -> None:
    """Sample new clips from a trained model's prior, starting from h_0 (a world model: under --actions, --num clips per plan)."""
    model, note_range = _load_music(ckpt)
    out = out or Path(api.DEFAULT_SAMPLES[model.config.is_image])
    clips = api.sample(model, num, steps, seed=seed, mean=mean, out=out, note_range=note_range, feedback=feedback, actions=actions)
    num, steps = clips.shape[:2]
    say(f"wrote {_written(out, num)}: {num} {'clip' if num == 1 else 'clips'} of {steps} frames")


def _written(out: Path, count: int) -> str:
    """The file(s) a command wrote: MIDI goes one file per clip (piece-1.mid ...)."""
    if out.suffix.lower() in (".mid", ".midi") and count > 1:
        return f"{out.with_name(f'{out.stem}-1{out.suffix}')} .. {out.with_name(f'{out.stem}-{count}{out.suffix}')}"
    return str(out)


@app.command()
@friendly_errors
def predict(
    input: Annotated[Path, typer.Argument(help=(
        "A video or sequence file: .npy, .npz, .gif, .mp4; a folder of clips (every window of each clip is scored, "
        "the first of each drawn); or sequences of different lengths: a note-list .json (--split), a .npz of "
        "several arrays, a folder of .npy/.mid files."), show_default=False)],
    out: Annotated[Opt[Path], typer.Option("--out", "-o", show_default=False, help=(
        "Output file: .gif, .png, .mp4 or .npy (vector models: .npy, .csv, .png; piano-roll models also .mid, "
        "context then future, one file per sequence and sample, and .png draws a piano roll); default "
        "<INPUT stem>-predicted.gif (vector models: .npy) in the current folder, never INPUT itself."))] = None,
    ckpt: Ckpt = None,
    context: Annotated[int, typer.Option(min=1, help="Real frames the model sees before predicting.")] = 5,
    horizon: Annotated[Opt[int], typer.Option(min=1, help="Frames to predict (default: the frames after the context, or 10).", show_default=False)] = None,
    samples: Annotated[int, typer.Option(min=1, help="Futures per sequence.")] = 3,
    layout: Annotated[Opt[str], typer.Option(help="Layout of INPUT, e.g. THW, NTHW, TNHW, NTD (guessed by default).", show_default=False)] = None,
    size: Size = None,
    grey: Grey = False,
    resize: Annotated[bool, typer.Option("--resize", help=(
        "Match the model's frame shape: --size and --grey taken from the model, and a grey channel "
        "repeated for a colour model."), **Flag)] = False,
    json_out: Annotated[Opt[Path], typer.Option("--json", help="Also save the PSNR/SSIM figures here.", show_default=False)] = None,
    split: Split = None,
    seed: Seed = 0,
    mean: Mean = None,
    feedback: Feedback = None,
    actions: Actions = None,
) -> None:
    """Predict several futures of each sequence in INPUT from its first --context frames; a world model,
    under INPUT's recorded actions or under the plans of --actions (rows of futures per plan)."""
    model, note_range = _load_music(ckpt)
    result = api.predict_file(model, input, out, json_out=json_out, layout=layout, resize=resize, size=size,
                              grey=grey, context=context, horizon=horizon, samples=samples, seed=seed, mean=mean,
                              split=split, note_range=note_range, feedback=feedback, actions=actions)
    count = result.futures.shape[0] * result.futures.shape[1]
    plans = f" ({count // result.futures.shape[0] // samples} plans x {samples})" if actions is not None else ""
    say(f"wrote {_written(result.path, count)}: {result.futures.shape[0]} sequence(s) x {result.futures.shape[1]} futures{plans} "
        f"of {result.horizon} frames")
    if result.no_metrics:
        note(f"no PSNR/SSIM: {result.no_metrics}")
    if result.metrics is not None:
        console.print(_prediction_table(result.metrics))
        if result.metrics.get("per_group"):
            console.print(_per_clip_table(result.metrics["per_group"]))
        if json_out is not None:
            say(f"wrote {json_out}")


def _prediction_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"prediction: {report['num_sequences']} sequence(s); PSNR in dB, best and mean of the samples")
    for column in ("step", "PSNR best", "PSNR mean", "SSIM best", "SSIM mean", "copy-last PSNR", "copy-last SSIM", "PSNR best - copy"):
        table.add_column(column, justify="right")
    figures = [report["psnr"]["best_of_n"], report["psnr"]["mean_of_n"], report["ssim"]["best_of_n"],
               report["ssim"]["mean_of_n"], report["baseline"]["psnr"], report["baseline"]["ssim"],
               report["versus_baseline"]["psnr"]["best_of_n"]]  # sequence by sequence: a paired interval
    formats = ("{:.2f}", "{:.2f}", "{:.4f}", "{:.4f}", "{:.2f}", "{:.4f}", "{:+.2f}")
    for step in range(len(figures[0]["per_step"])):
        table.add_row(str(step + 1), *(f.format(fig["per_step"][step]) for f, fig in zip(formats, figures, strict=True)))
    table.add_row("mean", *(f"{f.format(fig['mean'])} ± {f.format(fig['ci95']).lstrip('+')}" for f, fig in zip(formats, figures, strict=True)), style="bold")
    return table


@app.command("eval")
@friendly_errors
def evaluate_command(
    data: Annotated[str, typer.Argument(help="A data file, a folder of clips (every window of each clip, figures per clip), or bouncing-balls / moving-mnist / seq-mnist (held-out sequences) / jsb-chorales (test split).")] = "bouncing-balls",
    ckpt: Ckpt = None,
    bound: Annotated[str, typer.Option(help="Bounds on log p(x) to report, comma-separated: elbo, iwae, fivo (the ELBO always).")] = "elbo,iwae",
    particles: Annotated[Opt[int], typer.Option(min=1, help="K, the samples of the IWAE bound and the particles of FIVO (default --iwae-samples).", show_default=False)] = None,
    iwae_samples: Annotated[int, typer.Option(min=1, help="K of the IWAE and FIVO bounds when --particles is not given.")] = 100,
    context: Annotated[int, typer.Option(min=1, help="Real frames given before predicting.")] = 5,
    horizon: Annotated[Opt[int], typer.Option(min=1, help="Frames predicted (default: the rest of each sequence; 10 for built-in data).", show_default=False)] = None,
    samples: Annotated[int, typer.Option(min=1, help="Futures per sequence; the best of them is scored.")] = 10,
    num_sequences: Annotated[int, typer.Option(min=1, help="Built-in data: how many test sequences to generate.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per batch.")] = 16,
    chunk_size: Annotated[Opt[int], typer.Option(min=1, help="Importance samples per pass (bounds memory).", show_default=False)] = None,
    mnist_dir: Annotated[Opt[str], typer.Option(help="Folder with the MNIST IDX files (moving-mnist, seq-mnist); default: the MNIST download in the data cache.", show_default=False)] = None,
    layout: Annotated[Opt[str], typer.Option(help="Layout of a data file (guessed by default).", show_default=False)] = None,
    size: Size = None,
    grey: Grey = False,
    json_out: Annotated[Opt[Path], typer.Option("--json", help="Save the figures here (schema: vrnnkit.evaluation; vrnnkit.evaluation.sequences for sequences of different lengths).", show_default=False)] = None,
    split: Split = None,
    per_sequence: Annotated[Opt[Path], typer.Option(help="Sequences of different lengths: write each sequence's ELBO and IWAE bound here (.csv or .json).", show_default=False)] = None,
    per_step: Annotated[bool, typer.Option("--per-step", help="Add each time step's ELBO term to the --per-sequence file.", **Flag)] = False,
    plot: Annotated[Opt[Path], typer.Option(help="Draw PSNR and SSIM per predicted step (best-of-N, mean-of-N with 95% bands, copy-last) to this .png/.pdf/.svg.", show_default=False)] = None,
    windows: Annotated[bool, typer.Option("--windows", help="Frames with actions: score every non-overlapping window of context + horizon steps of each sequence (long recordings, e.g. gym episodes), not each sequence from its start.", **Flag)] = False,
    seed: Seed = 0,
) -> None:
    """Measure a model: ELBO, the IWAE and FIVO bounds (--bound), and video prediction (SRVP protocol);
    for sequences of different lengths (a note-list .json, ...), the bounds per time step."""
    model = _load(ckpt)
    if plot is not None:
        _check_plot(plot, model)
    report = api.evaluate(
        model, data, num_sequences=num_sequences, mnist_dir=mnist_dir, layout=layout, json_out=json_out, size=size, grey=grey,
        iwae_samples=iwae_samples, bounds=bound, particles=particles, context=context, horizon=horizon, samples=samples, batch_size=batch_size,
        chunk_size=chunk_size, seed=seed, split=split, per_sequence=per_sequence, per_step=per_step, windows=windows,
    )
    if "num_steps" in report:
        _print_step_report(report, per_sequence)
    else:
        if data in BUILTIN_DATA:
            note(f"evaluated on {report['num_sequences']} held-out {data} sequences")
        _print_report(report)
        _print_shuffled(report)
    if json_out is not None:
        say(f"wrote {json_out}")
    if plot is not None:
        from vrnnkit.io.plots import plot_prediction

        say(f"wrote {plot_prediction(report.get('prediction', {'skipped': 'no prediction for this data'}), plot)}")


def _check_plot(plot: Path, model: Any) -> None:
    """--plot: a writable figure path, and a model whose predictions are images."""
    from vrnnkit.errors import ConfigError
    from vrnnkit.io.plots import check_plot_path

    check_plot_path(plot, "--plot")
    if not model.config.is_image:
        raise ConfigError("--plot draws PSNR and SSIM per predicted step, which need a model of image frames; "
                          "this model's frames are vectors")


def _print_step_report(report: dict[str, Any], per_sequence: Path | None) -> None:
    likelihood = report["likelihood"]
    split = f" ({report['split']} split)" if report.get("split") else ""
    table = Table(title=f"likelihood: {report['num_sequences']} sequences{split}, {report['num_steps']:,} time steps", show_header=False)
    table.add_row("ELBO (nats per time step)", f"{likelihood['elbo_per_step']:.4f}")
    for name in _BOUND_NAMES:
        if name in likelihood:
            table.add_row(f"{_BOUND_NAMES[name]} bound, K={likelihood[name]['K']} (nats per time step)", f"{likelihood[name]['bound_per_step']:.4f}")
    table.add_row("ELBO (nats per sequence)", f"{likelihood['elbo']:.2f}")
    table.add_row("  NLL / KL (nats per sequence)", f"{likelihood['nll']:.2f} / {likelihood['kl']:.2f}")
    table.add_row("ELBO (bits per dim)", f"{likelihood['bits_per_dim']:.5f}")
    for name in _BOUND_NAMES:
        if name in likelihood:
            table.add_row(f"{_BOUND_NAMES[name]} (nats per sequence / bits per dim)", f"{likelihood[name]['bound']:.2f} / {likelihood[name]['bits_per_dim']:.5f}")
    console.print(table)
    if per_sequence is not None:
        say(f"wrote {per_sequence}")


_BOUND_NAMES = {"iwae": "IWAE", "fivo": "FIVO"}


def _print_report(report: dict[str, Any]) -> None:
    likelihood = report["likelihood"]
    table = Table(title=f"likelihood: {report['num_sequences']} sequences of {report['sequence_length']} frames", show_header=False)
    table.add_row("ELBO (nats per sequence)", f"{likelihood['elbo']:.2f}")
    table.add_row("  NLL / KL (nats per sequence)", f"{likelihood['nll']:.2f} / {likelihood['kl']:.2f}")
    table.add_row("  nats / bits per dim", f"{likelihood['nats_per_dim']:.5f} / {likelihood['bits_per_dim']:.5f}")
    for name, label in _BOUND_NAMES.items():
        if name in likelihood:
            bound = likelihood[name]
            table.add_row(f"{label} bound, K={bound['K']} (nats per sequence)", f"{bound['bound']:.2f}")
            table.add_row("  nats / bits per dim", f"{bound['nats_per_dim']:.5f} / {bound['bits_per_dim']:.5f}")
    console.print(table)
    prediction = report["prediction"]
    if prediction.get("skipped"):
        say(f"prediction skipped: {prediction['skipped']}")
    else:
        console.print(_prediction_table(prediction))
        if prediction.get("per_group"):
            console.print(_per_clip_table(prediction["per_group"]))


def _print_shuffled(report: dict[str, Any]) -> None:
    """A world model's figures with the actions shuffled between clips, and how far they fall."""
    if report.get("actions") and report["actions"] != "recorded":
        note(f"actions {report['actions']}")
    shuffled = report.get("shuffled_actions")
    if not shuffled:
        return
    if shuffled.get("skipped"):
        say(f"shuffled actions skipped: {shuffled['skipped']}")
        return
    say("the same model with the actions shuffled between clips (how much it uses them):")
    _print_report({**report, **shuffled})
    recorded, other = report["likelihood"]["elbo"], shuffled["likelihood"]["elbo"]
    line = f"ELBO {recorded:.2f} under the recorded actions, {other:.2f} shuffled ({recorded - other:+.2f} nats per sequence)"
    if not report["prediction"].get("skipped"):
        ours, theirs = (r["prediction"]["psnr"]["mean_of_n"]["per_step"][-1] for r in (report, shuffled))
        line += f"; PSNR at the last step, mean of the samples: {ours:.2f} vs {theirs:.2f} dB ({ours - theirs:+.2f})"
    say(line)


def _per_clip_table(per_clip: dict[str, Any]) -> Table:
    """One row per clip of a folder: its windows, and PSNR over its predicted steps."""
    table = Table(title="per clip: PSNR in dB over the predicted steps; best - copy sequence by sequence")
    for column in ("clip", "windows", "PSNR best", "PSNR mean", "copy-last", "best - copy", "mean - copy"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for name, report in per_clip.items():
        versus = report["versus_baseline"]["psnr"]
        table.add_row(name, str(report["num_sequences"]), f"{report['psnr']['best_of_n']['mean']:.2f}",
                      f"{report['psnr']['mean_of_n']['mean']:.2f}", f"{report['baseline']['psnr']['mean']:.2f}",
                      f"{versus['best_of_n']['mean']:+.2f}", f"{versus['mean_of_n']['mean']:+.2f}")
    return table


@app.command("export")
@friendly_errors
def export_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (.onnx, .safetensors or .pt2).")],
    ckpt: Ckpt = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx (step functions, checked in onnxruntime), safetensors (inference-only) or pt2 (torch.export).")] = "onnx",
    steps: Annotated[int, typer.Option(min=1, help="Steps of the ONNX parity rollout.")] = 10,
    tolerance: Annotated[float, typer.Option(min=0.0, help="Largest allowed ONNX-vs-PyTorch difference.")] = 1e-4,
) -> None:
    """Export a trained model: ONNX step functions, an inference-only checkpoint, or torch.export."""
    report = api.export(_load(ckpt), out, fmt, steps=steps, tolerance=tolerance)
    for path in report["files"]:
        say(f"wrote {path}")
    if fmt == "onnx":
        say(
            f"checked: over a {report['parity_steps']}-step filtering and {report['parity_steps']}-step generation "
            f"rollout, onnxruntime matches PyTorch to {report['max_abs_difference']:.2g} at every step "
            f"(tolerance {report['tolerance']:g}); left to roll out on its own it drifts by {report['free_rollout_drift']:.2g}"
        )
