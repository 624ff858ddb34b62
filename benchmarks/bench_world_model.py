"""A world model trained and evaluated through the CLI: the built-in pushed-ball data, or
recorded episodes (CarRacing) with their recipe.

    python benchmarks/bench_world_model.py                    # examples/pushed_ball.toml
    python benchmarks/bench_world_model.py --steps 300        # a quick check
    python benchmarks/bench_world_model.py --ckpt runs/pushed # evaluate a run again, no training
    python benchmarks/bench_world_model.py --recipe examples/car_racing.toml \
        --train-data cars.npz --test-data cars-test.npz --out runs/cars

It runs the commands a user runs, each in a subprocess. Built-in data: ``vrnnkit data
pushed-ball`` for a training set (seed 0) and a separate test set (seed 1). Recorded data
(``--train-data``, ``--test-data``: ``vrnnkit data gym`` files, which need the gym extra and
so are made beforehand, see the recipe's header): the test episodes are scored on every
non-overlapping window of 15 steps (``vrnnkit eval --windows``). Then ``vrnnkit train`` with
the recipe, and ``vrnnkit eval`` on the test set (5 context frames, 10 predicted, N futures
per clip), which scores the futures under the recorded actions, the same model with the
actions shuffled between clips, and copy-last. It prints PSNR and SSIM per predicted step for
the three (the mean and the best of the N futures), the training wall and CPU time and the
machine's load average. The targets: on pushed-ball, recorded actions at least 3 dB above
shuffled ones at step 10; on CarRacing, recorded actions above copy-last and above shuffled
actions at every step 1..10, training within 60 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "pushed_ball.toml"


def vrnnkit(*args: object, quiet: bool = False) -> None:
    """One ``vrnnkit`` command in a subprocess, as a user runs it."""
    output = subprocess.DEVNULL if quiet else None
    subprocess.run([sys.executable, "-m", "vrnnkit", *map(str, args)], check=True, stdout=output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    parser.add_argument("--ckpt", type=Path, help="evaluate this run instead of training one")
    parser.add_argument("--steps", type=int, help="override the recipe's training steps")
    parser.add_argument("--train-sequences", type=int, default=2000)
    parser.add_argument("--test-sequences", type=int, default=256)
    parser.add_argument("--samples", type=int, default=10, help="futures per test clip")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the TOML recipe (default: examples/pushed_ball.toml)")
    parser.add_argument("--train-data", type=Path, help="recorded training data (.npz with frames and actions) "
                        "instead of generated pushed-ball sequences")
    parser.add_argument("--test-data", type=Path, help="recorded test data, scored window by window")
    args = parser.parse_args()
    if (args.train_data is None) != (args.test_data is None) and args.ckpt is None:
        parser.error("--train-data and --test-data go together (or --test-data with --ckpt)")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        train, test, report_path = folder / "train.npz", folder / "test.npz", folder / "report.json"
        train, test = args.train_data or train, args.test_data or test
        seconds, load, cpu = None, None, 0.0
        if args.ckpt is None:
            if args.train_data is None:
                vrnnkit("data", "pushed-ball", "--sequences", args.train_sequences, "--steps", 15, "--seed", 0, "--out", train, quiet=True)
            args.ckpt = args.out or folder / "run"
            extra = ["--steps", args.steps] if args.steps else []
            start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
            vrnnkit("train", train, "--config", args.recipe, "--out", args.ckpt, *extra)
            seconds, load = time.perf_counter() - start, os.getloadavg()
            cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu
        if args.test_data is None:
            vrnnkit("data", "pushed-ball", "--sequences", args.test_sequences, "--steps", 15, "--seed", 1, "--out", test, quiet=True)
        windows = [] if args.test_data is None else ["--windows"]
        vrnnkit("eval", test, "--ckpt", args.ckpt, "--context", 5, "--horizon", 10, "--samples", args.samples,
                "--bound", "elbo", "--json", report_path, *windows, quiet=True)
        report = json.loads(report_path.read_text())
    name = "pushed ball" if args.test_data is None else args.test_data.name
    print_report(report, args.samples, seconds, load, cpu, name)


def print_report(report: dict, samples: int, seconds: float | None, load: tuple[float, ...] | None, cpu: float,
                 name: str = "pushed ball") -> None:
    """PSNR and SSIM per predicted step: recorded actions, shuffled actions, copy-last."""
    recorded, shuffled = report["prediction"], report["shuffled_actions"]["prediction"]
    baseline = recorded["baseline"]
    print(f"{name}: {report['num_sequences']} test clips, 5 context frames, 10 predicted, {samples} futures each")
    if seconds is not None:
        print(f"training: {seconds / 60:.1f} min wall, {cpu / 60:.1f} min of CPU (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
              f"load average after it {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"ELBO per clip: recorded actions {report['likelihood']['elbo']:.1f}, shuffled {report['shuffled_actions']['likelihood']['elbo']:.1f}")
    for metric, unit in (("psnr", "dB"), ("ssim", "")):
        print(f"{metric.upper()} {unit}".rstrip() + ": step, recorded mean/best, shuffled mean/best, copy-last, recorded - shuffled (mean)")
        for step in range(len(baseline[metric]["per_step"])):
            ours = [recorded[metric][k]["per_step"][step] for k in ("mean_of_n", "best_of_n")]
            theirs = [shuffled[metric][k]["per_step"][step] for k in ("mean_of_n", "best_of_n")]
            print(f"  {step + 1:2d}  {ours[0]:7.3f} {ours[1]:7.3f}   {theirs[0]:7.3f} {theirs[1]:7.3f}   "
                  f"{baseline[metric]['per_step'][step]:7.3f}   {ours[0] - theirs[0]:+7.3f}")
        for kind in ("mean_of_n", "best_of_n"):
            ours, theirs = recorded[metric][kind]["per_step"], shuffled[metric][kind]["per_step"]
            above_copy = sum(o > c for o, c in zip(ours, baseline[metric]["per_step"], strict=True))
            above_shuffled = sum(o > t for o, t in zip(ours, theirs, strict=True))
            paired = recorded["versus_baseline"][metric][kind]
            low = sum(m - c > 0 for m, c in zip(paired["per_step"], paired["per_step_ci95"], strict=True))
            print(f"  {kind.replace('_', ' ')}: above copy-last at {above_copy} of {len(ours)} steps (paired 95% interval "
                  f"above zero at {low}), above shuffled actions at {above_shuffled} of {len(ours)}")


if __name__ == "__main__":
    main()
