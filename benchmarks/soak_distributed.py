"""Soak: end many two-process training runs and count the clean ones.

Runs ``vrnnkit train --nproc 2`` on a tiny model N times, then the torchrun worker of the
tests (``tests/distributed_worker.py`` under ``torchrun --standalone --nproc-per-node 2``) N
times, one run at a time, and prints for each kind how many exited with 0 and how many left
a traceback or an abort ("terminate called", SIGABRT) in stderr.

    python benchmarks/soak_distributed.py              # 50 runs of each kind
    python benchmarks/soak_distributed.py -n 10 --provoke

``--provoke`` (Linux) makes the end of a run as hostile as this machine allows: every process
of the run on one core beside a busy loop, and, once the run has logged, gloo's threads moved
to SCHED_IDLE, so that they run only when nothing else on that core can. A gloo worker thread
may then still hold the last collective's tensors when its process reaches interpreter exit:
the window in which a process group left alive aborts the process (issue 32).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIGNS_OF_TROUBLE = ("Traceback", "terminate called", "SIGABRT")
TIMEOUT = 600
GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")


def write_bits(path: Path) -> None:
    """The tests' data: 64 binary vector sequences of 12 steps, quick to learn."""
    rng = np.random.default_rng(0)
    on = np.where(np.arange(8) < 4, 0.95, 0.05)
    np.save(path, (rng.random((64, 12, 8)) < on).astype(np.float32))


def commands(kind: str, bits: Path, folder: Path) -> list[str]:
    if kind == "launcher":
        return [sys.executable, "-m", "vrnnkit", "train", str(bits), "--layout", "NTD", "--nproc", "2", "--steps", "4",
                "--every", "2", "--h-dim", "12", "--z-dim", "3", "--seq-len", "6", "--batch-size", "8", "--device", "cpu",
                "--quiet", "--out", str(folder / "run")]
    worker = str(ROOT / "tests" / "distributed_worker.py")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker,
            str(bits), str(folder / "run"), str(folder / "summary.json"), "4"]


def descendants(root: int) -> set[int]:
    """``root`` and the processes below it (torchrun starts each worker in a session of its own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # "pid (name) state ppid ...": the name may hold spaces, so split after it.
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def starve_gloo_threads(root: int, metrics: Path, done: threading.Event) -> None:
    """Once the run has logged (``metrics`` holds a line), move the gloo threads of ``root``
    and its descendants to SCHED_IDLE, until ``done``."""
    seen: set[int] = set()
    while not done.wait(0.05):
        if not (metrics.is_file() and metrics.stat().st_size):
            continue
        for pid in descendants(root):
            with contextlib.suppress(OSError, ValueError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    tid = int(task.name)
                    if tid not in seen and (task / "comm").read_text().strip() in GLOO_THREADS:
                        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                        seen.add(tid)


def one_run(kind: str, bits: Path, folder: Path, provoke: bool) -> tuple[int, str]:
    """The exit code and stderr of one run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p))
    env.pop("WORLD_SIZE", None)
    pin = None
    if provoke:
        core = {min(os.sched_getaffinity(0))}

        def pin() -> None:
            os.sched_setaffinity(0, core)

    process = subprocess.Popen(commands(kind, bits, folder), cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=pin)
    done = threading.Event()
    hog = None
    if provoke:
        threading.Thread(target=starve_gloo_threads, args=(process.pid, folder / "run" / "metrics.jsonl", done),
                         daemon=True).start()
        # Busy work on the same core: the idle-class threads then wait until it yields.
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        stderr += f"\n(soak: killed after {TIMEOUT} s)"
    finally:
        done.set()
        if hog is not None:
            hog.kill()
            hog.wait()
    return process.returncode, stderr


def soak(kind: str, runs: int, bits: Path, work: Path, provoke: bool) -> None:
    clean = exited_0 = troubled = 0
    first_trouble = ""
    started = time.perf_counter()
    for index in range(runs):
        folder = work / f"{kind}-{index:03d}"
        folder.mkdir()
        code, stderr = one_run(kind, bits, folder, provoke)
        trouble = [sign for sign in SIGNS_OF_TROUBLE if sign in stderr]
        exited_0 += code == 0
        troubled += bool(trouble)
        clean += code == 0 and not trouble
        if (code != 0 or trouble) and not first_trouble:
            first_trouble = f"run {index + 1}: exit {code}\n" + "\n".join(stderr.strip().splitlines()[-8:])
        print(f"  {kind} run {index + 1}/{runs}: exit {code}{'  ' + ', '.join(trouble) if trouble else ''}", flush=True)
    label = "vrnnkit train --nproc 2" if kind == "launcher" else "torchrun tests/distributed_worker.py"
    print(f"{label}: {exited_0}/{runs} exited 0, {troubled}/{runs} left a traceback or abort in stderr, "
          f"{clean}/{runs} clean ({time.perf_counter() - started:.0f} s)", flush=True)
    if first_trouble:
        print(f"first failure, {first_trouble}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--runs", type=int, default=50, help="runs of each kind (default 50)")
    parser.add_argument("--kind", choices=("launcher", "torchrun", "both"), default="both")
    parser.add_argument("--provoke", action="store_true", help="one core, a busy loop beside, gloo's threads at SCHED_IDLE (Linux)")
    args = parser.parse_args()
    if args.provoke and not hasattr(os, "SCHED_IDLE"):
        parser.error("--provoke needs Linux's SCHED_IDLE")
    kinds = ("launcher", "torchrun") if args.kind == "both" else (args.kind,)
    with tempfile.TemporaryDirectory(prefix="vrnnkit-soak-") as tmp:
        work = Path(tmp)
        bits = work / "bits.npy"
        write_bits(bits)
        print(f"{args.runs} runs of each of: {', '.join(kinds)}{' (provoked)' if args.provoke else ''}", flush=True)
        for kind in kinds:
            soak(kind, args.runs, bits, work, args.provoke)


if __name__ == "__main__":
    main()
