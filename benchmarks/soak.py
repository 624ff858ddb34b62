"""Soak: train for a long time with frequent checkpoints; memory and disk must stay flat.

Trains the default conv model on bouncing balls for ``--minutes`` with a checkpoint about
every ``--save-seconds`` (the save period in steps is set from a short calibration run) and
``--keep 3``, then prints the resident memory (after warm-up, at the end, its growth) and the
run folder's size after every save.

    python benchmarks/soak.py --minutes 60 --save-seconds 60 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import time
from pathlib import Path

import torch

import vrnnkit


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def folder_mib(path: Path) -> float:
    # Hard links (checkpoints/ and best.safetensors share the model file) count once.
    seen, total = set(), 0
    for file in path.rglob("*"):
        if file.is_file():
            stat = file.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--save-seconds", type=float, default=60.0)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/vrnnkit-soak"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shutil.rmtree(args.out, ignore_errors=True)

    calibration = vrnnkit.train(out=args.out / "calibration", steps=60, every=60)
    seconds_per_step = calibration.timings["model"] / 60
    every = max(1, round(args.save_seconds / seconds_per_step))
    print(f"calibration: {1000 * seconds_per_step:.1f} ms/step -> a save every {every} steps", flush=True)

    deadline = time.monotonic() + 60 * args.minutes
    records: list[tuple[float, int, float, float]] = []
    started = time.monotonic()

    def on_log(record: dict) -> None:
        if "val_loss" in record:
            records.append((time.monotonic() - started, record["step"], rss_mib(), folder_mib(args.out / "run")))
            t, step, rss, size = records[-1]
            print(f"{t / 60:6.1f} min  step {step:7d}  rss {rss:7.1f} MiB  run folder {size:6.2f} MiB  "
                  f"val {record['val_bits_per_dim']:.4f} bits/dim", flush=True)

    def on_step(step: int, model: torch.nn.Module) -> None:
        if time.monotonic() > deadline:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop saves and stops at the end of the step

    result = vrnnkit.train(out=args.out / "run", steps=10**9, every=every, keep=args.keep, on_log=on_log, on_step=on_step)
    warm = records[min(2, len(records) - 1)]
    end = records[-1]
    growth = 100 * (end[2] - warm[2]) / warm[2]
    intervals = [b[0] - a[0] for a, b in itertools.pairwise(records)]
    print(f"trained {result.step} steps in {end[0] / 60:.1f} min, {len(records)} saves, "
          f"median interval {sorted(intervals)[len(intervals) // 2]:.0f} s")
    print(f"resident memory: {warm[2]:.1f} MiB after warm-up (save 3), {end[2]:.1f} MiB at the end "
          f"({growth:+.1f}%), max {max(r[2] for r in records):.1f} MiB")
    print(f"run folder: {min(r[3] for r in records):.2f} to {max(r[3] for r in records):.2f} MiB; "
          f"files: {sorted(p.name for p in (args.out / 'run').iterdir())}, "
          f"checkpoints: {sorted(p.name for p in (args.out / 'run' / 'checkpoints').iterdir())}")


if __name__ == "__main__":
    main()
