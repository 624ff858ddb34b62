"""``vrnnkit sample``, ``vrnnkit predict`` and ``vrnnkit eval``: using a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from vrnnkit.cli import app, console, errors, friendly_errors
from vrnnkit.errors import CheckpointError, ConfigError, DataError, output_problem, pickle_hint

Opt = Optional  # typer reads the annotations at run time, where Python 3.10 has no "X | None"

Ckpt = Annotated[Opt[Path], typer.Option(help="A .safetensors checkpoint or a run folder (default: the newest run in ./runs).", show_default=False)]
Seed = Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives the same output.")]
Mean = Annotated[bool, typer.Option("--mean/--random", help="Frames are the likelihood's mean, or draws from it.")]


def _load_model(ckpt: Path | None) -> Any:
    import vrnnkit
    from vrnnkit.checkpoint import find_checkpoint

    path = find_checkpoint(ckpt)
    foreign = pickle_hint(path)
    if foreign:
        raise CheckpointError(f"{path} is {foreign}; --ckpt takes a .safetensors file written by vrnnkit")
    errors.print(f"using {path}", highlight=False, soft_wrap=True)
    return vrnnkit.load(path).eval()


def _check_json_out(path: Path | None) -> None:
    problem = None if path is None else output_problem(path)
    if problem:
        raise ConfigError(f"cannot write {path} (--json): {problem}")


@app.command()
@friendly_errors
def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .gif, .png, .mp4 or .npy (vector models: .npy, .csv, .png).")],
    ckpt: Ckpt = None,
    num: Annotated[int, typer.Option(min=1, help="Number of clips.")] = 8,
    steps: Annotated[int, typer.Option(min=1, help="Frames per clip.")] = 20,
    seed: Seed = 0,
    mean: Mean = True,
) -> None:
    """Sample new clips from a trained model's prior, starting from h_0."""
    from vrnnkit.render import check_output, write_clips

    model = _load_model(ckpt)
    check_output(out, image=model.config.is_image)
    clips = model.sample(num, steps, generator=torch.Generator().manual_seed(seed), mean=mean)
    write_clips(out, clips)
    console.print(f"wrote {out}: {num} clips of {steps} frames", highlight=False)


@app.command()
@friendly_errors
def predict(
    input: Annotated[Path, typer.Argument(help="A video or sequence file: .npy, .npz, .gif, .mp4.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .gif, .png, .mp4 or .npy (vector models: .npy, .csv, .png).")],
    ckpt: Ckpt = None,
    context: Annotated[int, typer.Option(min=1, help="Real frames the model sees before predicting.")] = 5,
    horizon: Annotated[Opt[int], typer.Option(min=1, help="Frames to predict (default: the frames after the context, or 10).", show_default=False)] = None,
    samples: Annotated[int, typer.Option(min=1, help="Futures per sequence.")] = 3,
    layout: Annotated[Opt[str], typer.Option(help="Layout of INPUT, e.g. THW, NTHW, TNHW, NTD (guessed by default).", show_default=False)] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Resize and convert frames to the model's frame shape.")] = False,
    json_out: Annotated[Opt[Path], typer.Option("--json", help="Also save the PSNR/SSIM figures here.", show_default=False)] = None,
    seed: Seed = 0,
    mean: Mean = True,
) -> None:
    """Predict several futures of each sequence in INPUT from its first --context frames."""
    from vrnnkit.render import check_output, write_clips

    model = _load_model(ckpt)
    check_output(out, image=model.config.is_image)
    videos = _read_input(input, model, layout, resize)
    length = videos.shape[1]
    if context >= length and horizon is None:
        horizon = 10
    if context > length:
        raise DataError(f"--context {context} is longer than the {length} frames of {input}")
    horizon = horizon if horizon is not None else length - context
    truth = videos[:, context : context + horizon]
    has_truth = truth.shape[1] == horizon
    if json_out is not None and not (has_truth and model.config.is_image):
        reason = "PSNR and SSIM apply to image frames" if not model.config.is_image else f"{input} has no {horizon} frames after the context to compare with"
        raise DataError(f"--json needs metrics: {reason}")
    _check_json_out(json_out)
    futures = model.predict(videos[:, :context], horizon, samples, generator=torch.Generator().manual_seed(seed), mean=mean)
    if out.suffix.lower() == ".npy" or not model.config.is_image:
        write_clips(out, futures if out.suffix.lower() == ".npy" else futures.flatten(0, 1))
    else:
        rows, borders = _prediction_rows(videos[:, :context], truth if has_truth else None, futures)
        write_clips(out, rows, borders)
    console.print(f"wrote {out}: {videos.shape[0]} sequence(s) x {samples} futures of {horizon} frames", highlight=False)
    if has_truth and model.config.is_image:
        _report_prediction(futures, truth, videos[:, context - 1], json_out)


def _read_input(path: Path, model: Any, layout: str | None, resize: bool) -> torch.Tensor:
    from vrnnkit.data import check_unit_range, load_sequences

    shape = tuple(model.config.frame_shape)
    image = model.config.is_image
    data = load_sequences(path, layout=layout, resize=shape[1:] if (resize and image) else None)
    if model.config.likelihood == "bernoulli":
        check_unit_range(data, str(path))
    videos = torch.from_numpy(data)
    if resize and image and videos.dim() == 5 and videos.shape[2] != shape[0]:
        if shape[0] == 1:
            videos = videos.mean(dim=2, keepdim=True)  # colour to grey
        elif videos.shape[2] == 1:
            videos = videos.expand(-1, -1, shape[0], -1, -1)  # grey to colour
    if tuple(videos.shape[2:]) != shape:
        hint = " (pass --resize to convert it)" if image and videos.dim() == 5 else ""
        raise DataError(f"{path} has frames of shape {tuple(videos.shape[2:])}; the model was trained on {shape}{hint}")
    return videos.contiguous()


def _prediction_rows(context: torch.Tensor, truth: torch.Tensor | None, futures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of [context, future] clips per sequence: ground truth first where there is one."""
    batch, samples, horizon = futures.shape[:3]
    steps = context.shape[1]
    rows = []
    for b in range(batch):
        if truth is not None:
            rows.append(torch.cat([context[b], truth[b]]))
        rows.extend(torch.cat([context[b], futures[b, s]]) for s in range(samples))
    truth_rows = 1 if truth is not None else 0
    from vrnnkit.render import prediction_borders

    per_sequence = prediction_borders(samples + truth_rows, steps, horizon, truth_rows)
    return torch.stack(rows), per_sequence.repeat(batch, 1, 1)


def _report_prediction(futures: torch.Tensor, truth: torch.Tensor, last_context: torch.Tensor, json_out: Path | None) -> None:
    from vrnnkit.evaluation import prediction_metrics

    try:
        report = prediction_metrics(futures, truth, last_context)
    except DataError as error:  # e.g. frames too small for SSIM's window
        errors.print(f"no PSNR/SSIM: {error}", highlight=False, soft_wrap=True)
        return
    console.print(_prediction_table(report))
    if json_out is not None:
        _write_json(json_out, report)


def _prediction_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"prediction: {report['num_sequences']} sequence(s); PSNR in dB, best and mean of the samples")
    for column in ("step", "PSNR best", "PSNR mean", "SSIM best", "SSIM mean", "copy-last PSNR", "copy-last SSIM"):
        table.add_column(column, justify="right")
    figures = [report["psnr"]["best_of_n"], report["psnr"]["mean_of_n"], report["ssim"]["best_of_n"],
               report["ssim"]["mean_of_n"], report["baseline"]["psnr"], report["baseline"]["ssim"]]
    formats = ("{:.2f}", "{:.2f}", "{:.4f}", "{:.4f}", "{:.2f}", "{:.4f}")
    for step in range(len(figures[0]["per_step"])):
        table.add_row(str(step + 1), *(f.format(fig["per_step"][step]) for f, fig in zip(formats, figures, strict=True)))
    table.add_row("mean", *(f"{f.format(fig['mean'])} ± {f.format(fig['ci95'])}" for f, fig in zip(formats, figures, strict=True)), style="bold")
    return table


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from vrnnkit._atomic import write_json

    _check_json_out(path)
    write_json(path, data)
    console.print(f"wrote {path}", highlight=False)


@app.command("eval")
@friendly_errors
def evaluate_command(
    data: Annotated[str, typer.Argument(help="A data file, or bouncing-balls / moving-mnist / seq-mnist (held-out sequences).")] = "bouncing-balls",
    ckpt: Ckpt = None,
    iwae_samples: Annotated[int, typer.Option(min=1, help="K, importance samples of the IWAE bound.")] = 100,
    context: Annotated[int, typer.Option(min=1, help="Real frames given before predicting.")] = 5,
    horizon: Annotated[Opt[int], typer.Option(min=1, help="Frames predicted (default: the rest of each sequence; 10 for built-in data).", show_default=False)] = None,
    samples: Annotated[int, typer.Option(min=1, help="Futures per sequence; the best of them is scored.")] = 10,
    num_sequences: Annotated[int, typer.Option(min=1, help="Built-in data: how many test sequences to generate.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Sequences per batch.")] = 16,
    chunk_size: Annotated[Opt[int], typer.Option(min=1, help="Importance samples per pass (bounds memory).", show_default=False)] = None,
    mnist_dir: Annotated[Opt[str], typer.Option(help="Folder with the MNIST IDX files (moving-mnist, seq-mnist).", show_default=False)] = None,
    layout: Annotated[Opt[str], typer.Option(help="Layout of a data file (guessed by default).", show_default=False)] = None,
    json_out: Annotated[Opt[Path], typer.Option("--json", help="Save the figures here (schema: vrnnkit.evaluation).", show_default=False)] = None,
    seed: Seed = 0,
) -> None:
    """Measure a model: ELBO, the importance-weighted bound, and video prediction (SRVP protocol)."""
    from vrnnkit.evaluation import evaluate
    from vrnnkit.training import BUILTIN_DATA, open_source

    _check_json_out(json_out)
    model = _load_model(ckpt)
    length = context + (horizon or 10) if model.config.is_image else 28
    sequences = open_source(data, count=num_sequences, length=length, seed=seed, mnist_dir=mnist_dir,
                            layout=layout, held_out=True)
    if data in BUILTIN_DATA:
        errors.print(f"evaluating on {len(sequences)} held-out {data} sequences", highlight=False)
    if tuple(sequences.frame_shape) != tuple(model.config.frame_shape):
        raise DataError(f"{data} has frames of shape {tuple(sequences.frame_shape)}; the model was trained on {tuple(model.config.frame_shape)}")
    report = evaluate(model, sequences, iwae_samples=iwae_samples, context=context, horizon=horizon,
                      samples=samples, batch_size=batch_size, chunk_size=chunk_size, seed=seed)
    _print_report(report)
    if json_out is not None:
        _write_json(json_out, report)


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    likelihood = report["likelihood"]
    iwae = likelihood["iwae"]
    table = Table(title=f"likelihood: {report['num_sequences']} sequences of {report['sequence_length']} frames", show_header=False)
    rows = [
        ("ELBO (nats per sequence)", f"{likelihood['elbo']:.2f}"),
        ("  NLL / KL (nats per sequence)", f"{likelihood['nll']:.2f} / {likelihood['kl']:.2f}"),
        ("  nats / bits per dim", f"{likelihood['nats_per_dim']:.5f} / {likelihood['bits_per_dim']:.5f}"),
        (f"IWAE bound, K={iwae['K']} (nats per sequence)", f"{iwae['bound']:.2f}"),
        ("  nats / bits per dim", f"{iwae['nats_per_dim']:.5f} / {iwae['bits_per_dim']:.5f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    prediction = report["prediction"]
    if prediction.get("skipped"):
        console.print(f"prediction skipped: {prediction['skipped']}", highlight=False)
    else:
        console.print(_prediction_table(prediction))


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
    from vrnnkit.export import export

    model = _load_model(ckpt)
    report = export(model, out, fmt, steps=steps, tolerance=tolerance)
    for path in report["files"]:
        console.print(f"wrote {path}", highlight=False)
    if fmt == "onnx":
        console.print(
            f"checked: over a {report['parity_steps']}-step filtering and {report['parity_steps']}-step generation "
            f"rollout, onnxruntime matches PyTorch to {report['max_abs_difference']:.2g} at every step "
            f"(tolerance {report['tolerance']:g}); left to roll out on its own it drifts by {report['free_rollout_drift']:.2g}",
            highlight=False,
        )
