"""1 thread against N threads for the same training step, interleaved in one process.

The vector model of ``bench_mlp_loop.py`` (x 28, h 100, z 16, GRU, 28 steps, Adam, clipping)
at each batch size; rounds alternate ``torch.set_num_threads(1)`` and ``(N)`` so that both see
the same load. Prints ms/step for each and N threads' speed-up over 1 (below 1: slower), with
the load average: the evidence for ``vrnnkit.resources.threads``' default.

    python benchmarks/bench_threads.py [--threads 2] [--batches 8 32 128]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from _vector_step import seconds_per_step, vector_setup


def time_batch(batch: int, threads: int, steps: int, rounds: int) -> tuple[float, float]:
    """Median seconds per training step on 1 thread and on ``threads``, alternating rounds."""
    model, optimizer, x = vector_setup(batch)

    def round_of(count: int, n: int) -> float:
        torch.set_num_threads(count)
        return seconds_per_step(model, optimizer, x, n)

    round_of(1, 2)
    round_of(threads, 2)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for count, store in zip((1, threads), times, strict=True):
            store.append(round_of(count, steps))
    one, many = (statistics.median(store) for store in times)
    return one, many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--steps", type=int, default=5, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"median of {args.rounds} alternating rounds of {args.steps} steps")
    print(f"{'batch':>5} {'1 thread':>12} {f'{args.threads} threads':>12} {'speed-up':>9}")
    for batch in args.batches:
        one, many = time_batch(batch, args.threads, args.steps, args.rounds)
        print(f"{batch:>5} {1e3 * one:>9.1f} ms {1e3 * many:>9.1f} ms {one / many:>8.2f}x", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
