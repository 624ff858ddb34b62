"""vrnnkit from Python: train, sample, predict and evaluate, without the command line.

    python examples/quickstart.py [--steps 300] [--out RUN_FOLDER]

Each call here is what a `vrnnkit` command runs: `vrnnkit.train` is `vrnnkit train`,
`vrnnkit.evaluate` is `vrnnkit eval --json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import vrnnkit
from vrnnkit.data import bouncing_balls
from vrnnkit.io.render import write_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="a new run folder (default runs/<timestamp>)")
    parser.add_argument("--eval-sequences", type=int, default=64)
    args = parser.parse_args()

    # 1. Train: the same options and defaults as `vrnnkit train`.
    result = vrnnkit.train("bouncing-balls", out=args.out, steps=args.steps, every=max(1, args.steps // 3))
    print(f"trained {result.step} steps: validation {result.metrics['val_bits_per_dim']:.4f} bits/dim")

    # 2. Load the model back from its one checkpoint file.
    model = vrnnkit.load(result.run_dir / "model.safetensors")
    generator = torch.Generator().manual_seed(0)

    # 3. Sample new clips from the prior and write them as a GIF.
    clips = model.sample(4, 10, generator=generator)
    write_clips(result.run_dir / "quickstart-samples.gif", clips)
    print(f"sampled clips {tuple(clips.shape)} -> {result.run_dir / 'quickstart-samples.gif'}")

    # 4. Predict three futures of held-out clips from their first 5 frames.
    test = torch.from_numpy(bouncing_balls(args.eval_sequences, length=15, size=32, seed=123))[:, :, None]
    futures = model.predict(test[:2, :5], horizon=10, samples=3, generator=generator)
    print(f"predicted futures {tuple(futures.shape)}  (sequences, samples, steps, C, H, W)")

    # 5. Evaluate: likelihood bounds and prediction metrics against the copy-last baseline.
    report = vrnnkit.evaluate(model, test, iwae_samples=10, context=5, samples=10)
    psnr = report["prediction"]["psnr"]
    print(f"ELBO {report['likelihood']['elbo']:.1f} nats/sequence, IWAE(10) {report['likelihood']['iwae']['bound']:.1f}")
    print(f"PSNR best of 10: {psnr['best_of_n']['mean']:.2f} dB, copy-last baseline: "
          f"{report['prediction']['baseline']['psnr']['mean']:.2f} dB")


if __name__ == "__main__":
    main()
