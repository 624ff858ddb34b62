"""The stages of benchmarks/device_check.py that run PyTorch, one per process:

    python benchmarks/_device_workers.py STAGE --device cuda --work DIR [--tiny]

Each writes its figures to DIR/STAGE.json as it goes (rewritten atomically after every row),
so that device_check.py finds what was measured even when it had to stop the process.
Timing and the reference loops come from bench_train.py and bench_mlp_loop.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_check import PACKAGES, atomic_write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=sorted(WORKERS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    path = args.work / f"{args.stage}.json"
    figures: dict[str, Any] = {}

    def save() -> None:
        atomic_write(path, json.dumps(figures, indent=2))

    WORKERS[args.stage](args, figures, save)
    save()
    return 0


def environment_worker(args: argparse.Namespace, figures: dict[str, Any], save: Callable[[], None]) -> None:
    from importlib import metadata

    figures.update(python=sys.version.split()[0], executable=sys.executable, platform=platform.platform(),
                   packages={name: importlib.util.find_spec(name) is not None for name in PACKAGES},
                   versions={})
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            figures["versions"][name] = metadata.version(name)
    save()
    import torch

    figures.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                   device_count=torch.cuda.device_count(), threads=torch.get_num_threads())
    save()
    try:
        import vrnnkit

        figures.update(vrnnkit=vrnnkit.__version__, vrnnkit_path=str(Path(vrnnkit.__file__).parent))
    except Exception as error:
        figures["vrnnkit_error"] = f"{type(error).__name__}: {error}"
    save()
    device = torch.device(args.device)
    if device.type == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(device)
        figures.update(device_name=properties.name, capability=f"{properties.major}.{properties.minor}",
                       memory_gib=round(properties.total_memory / 2**30, 1), bf16_supported=torch.cuda.is_bf16_supported(),
                       cudnn=torch.backends.cudnn.version())
        save()
    if device.type == "cpu" or torch.cuda.is_available():
        size = 4096 if device.type == "cuda" and not args.tiny else 256
        figures["matmul_gflops"] = {name: matmul_gflops(device, dtype, size) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def matmul_gflops(device: Any, dtype: Any, size: int) -> float:
    """GFLOP/s of a size x size matrix product on the device (TF32 off for fp32): what the
    device itself does, for the figures below to be read against."""
    import torch

    def synchronize(device: Any) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    repeats, start = 10, time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return round(2 * size**3 * repeats / (time.perf_counter() - start) / 1e9, 1)


def alternate(steps: dict[str, Callable[[], None]], device: Any, *, warm: int, rounds: int, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per step of each step function over alternating rounds, and each one's
    peak GPU memory in MiB (over its warm-up; CUDA only)."""
    import torch
    from bench_train import timed

    peaks = {}
    for name, step in steps.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timed(step, warm, device)
        if device.type == "cuda":
            peaks[name] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            seconds[name].append(timed(step, n, device))
    return {name: statistics.median(values) for name, values in seconds.items()}, peaks


def throughput_row(model: str, batch: int, frames: int, seconds: dict[str, float], peaks: dict[str, float]) -> dict[str, Any]:
    rate = {name: round(batch / value, 1) for name, value in seconds.items()}
    return {"model": model, "batch": batch, "frames": frames, "ms_per_step": {k: round(1000 * v, 2) for k, v in seconds.items()},
            "sequences_per_s": rate, "ratio": round(rate["vrnnkit"] / rate["plain loop"], 3), "peak_mib": peaks}


def rows_of(figures: dict[str, Any], save: Callable[[], None], batches: list[int], row: Callable[[int], dict[str, Any]]) -> None:
    """One row per batch size, saved as it comes; a failing row (out of memory, say) records its error."""
    import torch

    figures["rows"] = []
    for batch in batches:
        try:
            figures["rows"].append(row(batch))
        except Exception as error:
            figures["rows"].append({"batch": batch, "model": figures.get("model", "?"), "error": f"{type(error).__name__}: {str(error)[:300]}"})
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        save()


def vector_worker(args: argparse.Namespace, figures: dict[str, Any], save: Callable[[], None]) -> None:
    import torch
    from bench_mlp_loop import STEPS, X_DIM, NaiveVRNN, make_step, vrnnkit_model

    device = torch.device(args.device)
    warm, rounds, n = (1, 1, 2) if args.tiny else (3, 3, 10)
    figures.update(model="vector", config=f"x {X_DIM}, h 100, z 16, GRU, {STEPS} steps, fused Adam, clip 10 (bench_mlp_loop.py)",
                   timing=f"{rounds} alternating rounds of {n} steps after {warm} warm-up")
    save()

    def row(batch: int) -> dict[str, Any]:
        torch.manual_seed(0)
        x = (torch.rand(batch, STEPS, X_DIM) > 0.5).float().to(device)
        models = {"vrnnkit": vrnnkit_model(True), "autograd loop": vrnnkit_model(False), "plain loop": NaiveVRNN()}
        steps = {}
        for name, model in models.items():
            step = make_step(model.to(device), (lambda m, x: m(x)) if name == "plain loop" else (lambda m, x: m(x).loss))
            steps[name] = lambda step=step: step(x)
        seconds, peaks = alternate(steps, device, warm=warm, rounds=rounds, n=n)
        return throughput_row("vector", batch, STEPS, seconds, peaks)

    rows_of(figures, save, [8, 32] if args.tiny else [8, 32, 128, 512], row)


def conv_worker(args: argparse.Namespace, figures: dict[str, Any], save: Callable[[], None]) -> None:
    import torch
    from bench_train import CONFIGS, make_step, make_train_step, naive_loss

    import vrnnkit

    device = torch.device(args.device)
    spec = dict(frame_shape=(1, 32, 32), h_dim=32, z_dim=8, steps=4) if args.tiny else dict(CONFIGS["conv"])
    frames = spec.pop("steps")
    spec.pop("batch", None)
    warm, rounds, n = (1, 1, 1) if args.tiny else (2, 3, 5)
    figures.update(model="conv", config=f"{spec}, {frames} frames, Bernoulli (bench_train.py's conv)",
                   timing=f"{rounds} alternating rounds of {n} steps after {warm} warm-up")
    save()

    def row(batch: int) -> dict[str, Any]:
        torch.manual_seed(0)
        model = vrnnkit.VRNN(vrnnkit.VRNNConfig(**spec, likelihood="bernoulli")).to(device)
        x = (torch.rand(batch, frames, *model.config.frame_shape) > 0.5).float().to(device)
        noise = torch.randn(frames, batch, model.config.z_dim).to(device)
        with torch.no_grad():  # the plain loop computes the same loss as vrnnkit: how close, here
            ours = model(x, generator=torch.Generator().manual_seed(5)).loss.item()
            theirs = naive_loss(model, x, torch.randn(frames, batch, model.config.z_dim, generator=torch.Generator().manual_seed(5)).to(device)).item()
        fused = make_train_step(model, x, torch.Generator().manual_seed(0), "fp32", device)
        unfused = make_train_step(model, x, torch.Generator().manual_seed(0), "fp32", device)

        def autograd_loop() -> None:
            model.fused_loop = False
            try:
                unfused()
            finally:
                model.fused_loop = True

        steps = {"vrnnkit": fused, "autograd loop": autograd_loop,
                 "plain loop": make_step(list(model.parameters()), lambda: naive_loss(model, x, noise), None, device)}
        seconds, peaks = alternate(steps, device, warm=warm, rounds=rounds, n=n)
        return {**throughput_row(f"conv {spec['frame_shape'][1]}x{spec['frame_shape'][2]}", batch, frames, seconds, peaks),
                "loss_vrnnkit": ours, "loss_plain_loop": theirs, "loss_relative_difference": abs(ours - theirs) / abs(theirs)}

    rows_of(figures, save, [2, 4] if args.tiny else [16, 64], row)


def evaluation_worker(args: argparse.Namespace, figures: dict[str, Any], save: Callable[[], None]) -> None:
    import torch
    from bench_train import synchronize

    import vrnnkit

    device = torch.device(args.device)
    checkpoint = args.work / "runs" / "train" / "model.safetensors"
    if checkpoint.exists():
        model, figures["model"] = vrnnkit.load(checkpoint, device=device), "the train stage's model"
    else:
        torch.manual_seed(0)
        model, figures["model"] = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, 32, 32))).to(device), "untrained (no train stage model)"
    model.eval()
    sequences, k, samples = (4, 4, 2) if args.tiny else (64, 100, 20)
    height = model.config.frame_shape[-1]
    data = torch.from_numpy(vrnnkit.generate_dataset("bouncing-balls", sequences, seed=1, size=height)).float().div(255).unsqueeze(2)
    figures.update(sequences=sequences, frames=data.shape[1], K=k, samples=samples)
    save()

    context = data[: min(4, sequences), :5].to(device)
    model.predict(context, 2, 2, generator=torch.Generator().manual_seed(0))  # warm-up
    synchronize(device)
    start = time.perf_counter()
    model.predict(context, 10, samples, generator=torch.Generator().manual_seed(0))
    synchronize(device)
    figures["predict_ms_per_frame"] = round(1000 * (time.perf_counter() - start) / (context.shape[0] * samples * 10), 3)
    save()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    report = vrnnkit.evaluate(model, data, bounds=("elbo", "iwae", "fivo"), iwae_samples=k, context=5, horizon=10, samples=samples, device=device)
    synchronize(device)
    likelihood = report["likelihood"]
    figures.update(evaluate_s=round(time.perf_counter() - start, 2), elbo=likelihood["elbo"], iwae=likelihood["iwae"]["bound"],
                   fivo=likelihood["fivo"]["bound"], psnr_best_of_n=report["prediction"].get("psnr", {}).get("best_of_n", {}).get("mean"))
    if device.type == "cuda":
        figures["peak_mib_evaluate"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    save()
    # The same bounds on the CPU, with the same seed (CPU generators: the same draws on every
    # device), in float32 on both sides. On a CPU run this compares the CPU with itself.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    subset, options = data[:8], dict(bounds=("elbo", "iwae"), iwae_samples=8, horizon=10, samples=2)
    on_device = vrnnkit.evaluate(model, subset, device=device, **options)["likelihood"]
    on_cpu = vrnnkit.evaluate(model, subset, device="cpu", **options)["likelihood"]
    difference = max(abs(on_device["elbo"] - on_cpu["elbo"]) / abs(on_cpu["elbo"]),
                     abs(on_device["iwae"]["bound"] - on_cpu["iwae"]["bound"]) / abs(on_cpu["iwae"]["bound"]))
    figures.update(cpu_relative_difference=difference, cpu_agrees=difference < 1e-4)
    save()
    if difference >= 1e-4:
        raise SystemExit(f"the ELBO and IWAE bound on {args.device} differ from the CPU's by {difference:.2g} (relative)")


WORKERS = {"environment": environment_worker, "throughput_vector": vector_worker,
           "throughput_conv": conv_worker, "evaluation": evaluation_worker}


if __name__ == "__main__":
    sys.exit(main())
