"""Generate a clip with onnxruntime and numpy alone, from a `vrnnkit export` file.

    vrnnkit export --out model.onnx            # writes model.onnx and model.filter.onnx
    python examples/onnx_inference.py model.onnx [--steps 20] [--out clip.npy]

No torch and no vrnnkit are imported here: the exported generative step is a function
(state, noise) -> (params, frame, next_state), and a clip is a loop over it.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort


def generate(path: str, steps: int, num: int, seed: int) -> np.ndarray:
    """``num`` clips of ``steps`` frames from the prior, starting from a zero state."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    state = np.zeros((num, inputs["state"][1]), np.float32)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(steps):
        noise = rng.standard_normal((num, inputs["noise"][1]), dtype=np.float32)
        _, frame, state = session.run(None, {"state": state, "noise": noise})
        frames.append(frame)
    return np.stack(frames, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .onnx file of the generative step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="clip.npy")
    args = parser.parse_args()
    clips = generate(args.model, args.steps, args.num, args.seed)
    np.save(args.out, clips)
    print(f"generated {clips.shape} in [{clips.min():.3f}, {clips.max():.3f}] -> {args.out}")


if __name__ == "__main__":
    main()
