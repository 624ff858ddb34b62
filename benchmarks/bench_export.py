"""Generation speed: onnxruntime running the exported step against PyTorch eager.

    python benchmarks/bench_export.py [--size 32] [--steps 20] [--batches 1 64]

Exports the default conv model (untrained: speed does not depend on the weights) and times a
``--steps``-frame generation from the prior at each batch size, in both runtimes, the same
loop over the same step function: frames per second, best of 3.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import vrnnkit
from vrnnkit.export import GenerativeStep, export


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def rollout_onnx(session: ort.InferenceSession, noise: np.ndarray, state_size: int) -> None:
    state = np.zeros((noise.shape[1], state_size), np.float32)
    for step_noise in noise:
        state = session.run(None, {"state": state, "noise": step_noise})[2]


@torch.no_grad()
def rollout_torch(step: GenerativeStep, noise: np.ndarray, state_size: int) -> None:
    state = torch.zeros(noise.shape[1], state_size)
    for step_noise in noise:
        state = step(state, torch.from_numpy(step_noise))[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(1, args.size, args.size))).eval()
    step = GenerativeStep(model).eval()
    z_dim, state_size = model.config.z_dim, model.rnn.state_size
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} threads; "
          f"default conv VRNN at {args.size}x{args.size}, {model.num_parameters():,} parameters; {args.steps} frames")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        report = export(model, path, steps=5)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in args.batches:
            noise = np.random.default_rng(0).standard_normal((args.steps, batch, z_dim), dtype=np.float32)
            frames = batch * args.steps
            ours = best_of(3, functools.partial(rollout_torch, step, noise, state_size))
            theirs = best_of(3, functools.partial(rollout_onnx, session, noise, state_size))
            print(f"batch {batch:3d}: PyTorch eager {frames / ours:8.0f} frames/s, onnxruntime {frames / theirs:8.0f} "
                  f"frames/s ({ours / theirs:.2f}x)")
    print(f"export parity: {report['max_abs_difference']:.2g} (per step), free-rollout drift {report['free_rollout_drift']:.2g}")


if __name__ == "__main__":
    main()
