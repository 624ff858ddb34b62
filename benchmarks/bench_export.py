"""Inference speed: ``sample`` and ``predict`` in PyTorch eager beside onnxruntime.

    OMP_NUM_THREADS=1 python benchmarks/bench_export.py [--models vector conv] [--batches 1 64]
        [--size 32] [--steps 20] [--context 10]

For the vector model (28-dim frames, MLP blocks, h 100, z 16, Bernoulli) and the default conv
model at ``--size`` x ``--size`` (both untrained: speed does not depend on the weights), it
exports the ONNX graphs and times, at each batch size, best of 3:

- sample: ``--steps`` frames from the prior. Eager: ``VRNN.sample``; onnxruntime: the exported
  generative step in a loop (the way ``examples/onnx_inference.py`` runs it).
- predict: filter ``--context`` real frames, then generate ``--steps`` frames. Eager:
  ``VRNN.predict`` (the context runs as one batched pass plus the time loop); onnxruntime:
  the filtering graph over the context, then the generative graph.

Frames/s counts the frames generated (sample: batch x steps; predict: batch x steps, the
context frames not counted). onnxruntime gets as many intra-op threads as PyTorch has.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import vrnnkit
from vrnnkit.io.export import export, filter_path, state_size


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def onnx_sample(generative: ort.InferenceSession, noise: np.ndarray, size: int) -> None:
    state = np.zeros((noise.shape[1], size), np.float32)
    for step_noise in noise:
        state = generative.run(None, {"state": state, "noise": step_noise})[2]


def onnx_predict(sessions: tuple[ort.InferenceSession, ort.InferenceSession], context: np.ndarray, noise: np.ndarray,
                 size: int) -> None:
    filtering, generative = sessions
    state = np.zeros((context.shape[0], size), np.float32)
    for t in range(context.shape[1]):
        state = filtering.run(None, {"frame": np.ascontiguousarray(context[:, t]), "state": state, "noise": noise[t]})[0]
    for step_noise in noise[context.shape[1] :]:
        state = generative.run(None, {"state": state, "noise": step_noise})[2]


def build(kind: str, size: int) -> vrnnkit.VRNN:
    if kind == "vector":
        config = vrnnkit.VRNNConfig(frame_shape=(28,), h_dim=100, z_dim=16, encoder="mlp", decoder="mlp", likelihood="bernoulli")
    else:
        config = vrnnkit.VRNNConfig(frame_shape=(1, size, size))
    return vrnnkit.VRNN(config).eval()


def bench_model(kind: str, args: argparse.Namespace, options: ort.SessionOptions) -> None:
    model = build(kind, args.size)
    width, z_dim = state_size(model), model.config.z_dim
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        report = export(model, path, steps=5)
        generative, filtering = (ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                                 for p in (path, filter_path(path)))
        print(f"{kind} model {model.config.frame_shape}, {model.num_parameters():,} parameters; export parity "
              f"{report['max_abs_difference']:.2g}")
        for batch in args.batches:
            rng = np.random.default_rng(0)
            noise = rng.standard_normal((args.context + args.steps, batch, z_dim), dtype=np.float32)
            context = rng.random((batch, args.context, *model.config.frame_shape), dtype=np.float32)
            frames = batch * args.steps
            timings = {
                "sample, eager": functools.partial(torch.no_grad()(model.sample), batch, args.steps),
                "sample, onnxruntime": functools.partial(onnx_sample, generative, noise[: args.steps], width),
                "predict, eager": functools.partial(model.predict, torch.from_numpy(context), args.steps),
                "predict, onnxruntime": functools.partial(onnx_predict, (filtering, generative), context, noise, width),
            }
            rates = {name: frames / best_of(3, work) for name, work in timings.items()}
            for what in ("sample", "predict"):
                eager, onnx = rates[f"{what}, eager"], rates[f"{what}, onnxruntime"]
                print(f"  batch {batch:3d} {what:<8} eager {eager:9.0f} frames/s   onnxruntime {onnx:9.0f} frames/s   "
                      f"onnxruntime/eager {onnx / eager:5.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["vector", "conv"], default=["vector", "conv"])
    parser.add_argument("--size", type=int, default=32, help="the conv model's frame size")
    parser.add_argument("--steps", type=int, default=20, help="frames generated")
    parser.add_argument("--context", type=int, default=10, help="context frames predict filters first")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} thread(s) for both; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; best of 3")
    for kind in args.models:
        bench_model(kind, args, options)


if __name__ == "__main__":
    main()
