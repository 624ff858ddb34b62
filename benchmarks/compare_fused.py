"""The fused time loop of this tree against the one of another git revision, side by side.

Loads ``src/vrnnkit/model/fused.py`` (``src/vrnnkit/fused.py`` before 0.2) as it was at ``--rev`` into a separate module and times a
training step of the vector model (x 28, h 100, z 16, GRU, 28 steps, Adam, clipping) with
each loop in alternating rounds, in one process: the ratio is what to read, the absolute
figures move with the machine's load.

    OMP_NUM_THREADS=1 python benchmarks/compare_fused.py --rev 7180191 --threads 1 --batch 128
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _vector_step import seconds_per_step, vector_setup

import vrnnkit.model.vrnn as vrnn

ROOT = Path(__file__).resolve().parents[1]


def load_fused(rev: str):
    for where in ("src/vrnnkit/model/fused.py", "src/vrnnkit/fused.py"):  # the second: revisions before 0.2
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{where}"], capture_output=True, text=True)
        if shown.returncode == 0:
            break
    shown.check_returncode()
    source = shown.stdout
    path = Path(tempfile.mkdtemp()) / "fused_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("fused_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fused_baseline"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="main")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loops = {f"fused loop at {args.rev}": load_fused(args.rev).fused_filter, "fused loop of this tree": vrnn.fused_filter}
    model, optimizer, x = vector_setup(args.batch)

    def round_of(loop, n: int) -> float:
        vrnn.fused_filter = loop
        return seconds_per_step(model, optimizer, x, n)

    for loop in loops.values():
        round_of(loop, 3)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            times[name].append(round_of(loop, args.steps))
    print(f"{torch.get_num_threads()} thread(s), batch {args.batch}, median of {args.rounds} rounds of {args.steps} steps; "
          f"load average {os.getloadavg()[0]:.2f}")
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<32}{1e3 * median:8.1f} ms/step{args.batch / median:8.0f} seq/s{base / median:7.2f}x")
    # Each round's two timings are adjacent in time: their ratio cancels most of the load.
    before, after = times.values()
    pairs = sorted(b / a for b, a in zip(before, after, strict=True))
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    print(f"speed-up, median of the rounds' ratios: {quartiles[1]:.2f}x (quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f})")


if __name__ == "__main__":
    main()
