"""Training throughput of `vrnnkit train`'s loop, and the share of its wall time spent outside
the model (data loading, logging, progress), at the default settings unless told otherwise.

    python benchmarks/bench_train_overhead.py [--steps 60] [--batch-size 32] [--seq-len 20]

The loop times itself (``TrainResult.timings``): the model's forward, backward and optimizer
steps; the periodic validation and checkpoint; and the rest, which is the overhead measured here.
Validation and saving run once, at the end (``every`` = ``steps``).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from vrnnkit.training import TrainConfig, train


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    args = parser.parse_args()
    config = TrainConfig(steps=args.steps, every=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                         workers=args.workers, num_sequences=max(200, 2 * args.batch_size))
    with tempfile.TemporaryDirectory() as folder:
        result = train(config, folder)
    t = result.timings
    outside = t["loop"] - t["model"] - t["periodic"]
    frames = args.steps * args.batch_size * args.seq_len
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; bouncing balls 32x32, conv VRNN, "
          f"batch {args.batch_size}, {args.seq_len} frames, {args.steps} steps")
    print(f"training loop: {t['loop']:.2f} s, {frames / t['loop']:.0f} frames/s "
          f"({args.steps * args.batch_size / t['loop']:.1f} sequences/s)")
    print(f"  model (forward, backward, optimizer): {t['model']:.2f} s ({100 * t['model'] / t['loop']:.1f}%)")
    print(f"  validation and checkpoint (once):    {t['periodic']:.2f} s ({100 * t['periodic'] / t['loop']:.1f}%)")
    print(f"  outside the model (data, logging):   {outside:.2f} s ({100 * outside / t['loop']:.1f}%)")


if __name__ == "__main__":
    main()
