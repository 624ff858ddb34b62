"""The GPU check: one command that runs everything vrnnkit's GPU path needs measured, in order,
within one deadline, and leaves one JSON and one table whatever fails.

    bash benchmarks/device_check.sh --out gpu-check                  # on the GPU machine
    python benchmarks/device_check.py --device cuda --out gpu-check  # the same, a Python at hand
    python benchmarks/device_check.py --device cpu --tiny --out cpu-check   # the script itself, on a CPU

The stages, each with its own time budget under one overall deadline (8 minutes by default):

  environment        Python, PyTorch, CUDA, the device, the packages found (no install); a
                     matrix product on the device. With --device cuda and no CUDA here, the
                     check stops at once (exit 2) and says so: the other stages would only fail.
  cuda_tests         the tests marked ``cuda`` (``pytest tests -m cuda``); on a CPU, the CPU
                     twins of the same test bodies (``tests/test_cuda.py -m "not cuda"``).
  train              ``vrnnkit train --decoder convT --device DEVICE --steps 300``, then
                     ``vrnnkit sample`` from its run (on the CPU: a checkpoint saved on the device).
  train_bf16         the same with ``--precision bf16``.
  train_compile      the same with ``--compile``.
  throughput_vector  training steps/s of the vector model (x 28, h 100, z 16, 28 steps) at
                     batch 8/32/128/512: vrnnkit (fused loop), vrnnkit's autograd loop, and a
                     plain per-step PyTorch loop of the same layers (benchmarks/bench_mlp_loop.py),
                     in alternating rounds; the ratio vrnnkit / plain loop; peak GPU memory.
  throughput_conv    the same for the conv model at 64x64, 20 frames, batch 16/64, beside the
                     per-step loop of benchmarks/bench_train.py.
  evaluation         prediction and the ELBO/IWAE/FIVO bounds (``vrnnkit.evaluate``) on the
                     device, with the train stage's model; the same bounds on the CPU beside them.

Every stage runs in a subprocess with a timeout (this process imports no torch), so a crash or a
hang in one is recorded and the next still runs. After each stage ``OUT/device_check.json`` and
``OUT/device_check.md`` are rewritten (atomically), so a run cut short still leaves its figures;
``OUT/device_check.log`` holds every stage's output. A stage whose packages are missing is
recorded as skipped with the reason. Exit status: 0 when no stage failed, 1 when one did, 2 when
the device is not there.

``--tiny`` shrinks every stage (tiny data, a few steps, small batches) so that the whole check
runs on a CPU in about a minute; ``tests/test_device_check.py`` runs it so. In tiny mode
``train_compile`` runs with ``TORCHDYNAMO_DISABLE=1``: it checks the ``--compile`` path, not the
compiler (compiling on a small CPU takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCHEMA = "vrnnkit.device_check/1"
DEADLINE_S = 480.0
MIN_STAGE_S = 10.0
PACKAGES = ("numpy", "safetensors", "typer", "rich", "imageio", "matplotlib", "platformdirs",
            "onnx", "onnxscript", "onnxruntime", "pytest", "hypothesis", "tensorboard")
TINY_TOML = ('num_sequences = 24\nseq_len = 6\nbatch_size = 4\nevery = 4\n'
             '[block_options.encoder]\nchannels = 4\n[block_options.decoder]\nchannels = 4\n')


# ----------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class Stage:
    name: str
    budget_s: float
    tiny_budget_s: float
    needs: tuple[str, ...]
    run: Callable[[Context, float], dict[str, Any]]


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    log: Path
    env: dict[str, str]

    @property
    def tiny(self) -> bool:
        return self.args.tiny


def run_command(ctx: Context, name: str, command: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` in its own process group, killed with its children after ``timeout``;
    its output goes to WORK/NAME.log and OUT/device_check.log. Returns rc, seconds, timed_out
    and the output's last lines."""
    path = ctx.work / f"{name}.log"
    start = time.monotonic()
    with path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**ctx.env, **(env or {})}, start_new_session=True)
        try:
            rc, timed_out = process.wait(timeout=max(timeout, 1.0)), False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            rc, timed_out = process.wait(), True
    seconds = time.monotonic() - start
    text = path.read_text(errors="replace")
    with ctx.log.open("a") as log:
        log.write(f"\n===== {name}: {' '.join(command)}\n===== rc {rc}{' (timed out)' if timed_out else ''}, {seconds:.1f} s\n{text}")
    return {"rc": rc, "seconds": round(seconds, 2), "timed_out": timed_out, "tail": text.splitlines()[-15:]}


def finished(result: dict[str, Any], details: dict[str, Any], timeout: float) -> dict[str, Any]:
    """A stage's record from its command's result."""
    if result["timed_out"]:
        return {"status": "timeout", "reason": f"stopped after its budget of {timeout:.0f} s", "details": details, "log_tail": result["tail"]}
    if result["rc"] != 0:
        last = next((line for line in reversed(result["tail"]) if line.strip()), "")
        return {"status": "failed", "reason": f"exit status {result['rc']}: {last.strip()[:300]}", "details": details, "log_tail": result["tail"]}
    return {"status": "ok", "details": details}


def worker_stage(name: str) -> Callable[[Context, float], dict[str, Any]]:
    """A stage that runs ``_device_workers.py NAME`` (the code with torch) and reads the
    figures it wrote, as far as it got."""

    def run(ctx: Context, timeout: float) -> dict[str, Any]:
        partial = ctx.work / f"{name}.json"
        partial.unlink(missing_ok=True)
        command = [sys.executable, str(HERE / "_device_workers.py"), name, "--device", ctx.args.device,
                   "--work", str(ctx.work), *(["--tiny"] if ctx.tiny else [])]
        result = run_command(ctx, name, command, timeout)
        details = json.loads(partial.read_text()) if partial.exists() else {}
        return finished(result, details, timeout)

    return run


def pytest_stage(ctx: Context, timeout: float) -> dict[str, Any]:
    on_cuda = ctx.args.device.startswith("cuda")
    if on_cuda:
        selection = ["tests", "-m", "cuda", "--continue-on-collection-errors"]
    else:  # the CPU twins; in --tiny without the ONNX export's (the slowest, and export has its own tests)
        selection = ["tests/test_cuda.py", "-m", "not cuda", *(["-k", "not onnx"] if ctx.tiny else [])]
    command = [sys.executable, "-m", "pytest", *selection, "-v", "-v", "-p", "no:cacheprovider", "--tb=short"]
    result = run_command(ctx, "cuda_tests", command, timeout)
    text = (ctx.work / "cuda_tests.log").read_text(errors="replace")
    outcomes = dict(re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.M))
    counts = {outcome.lower(): list(outcomes.values()).count(outcome) for outcome in sorted(set(outcomes.values()))}
    details = {"command": "python -m pytest " + shlex.join(selection), "selection": "the cuda-marked tests" if on_cuda else
               "the CPU twins of tests/test_cuda.py (not on a GPU)", "counts": counts, "tests": outcomes,
               "failures": re.findall(r"^(?:FAILED|ERROR) (tests/\S+.*)$", text, re.M)[:20]}
    if result["rc"] == 5:  # pytest: no test collected
        return {"status": "failed", "reason": "no test was collected", "details": details, "log_tail": result["tail"]}
    return finished(result, details, timeout)


def train_stage(name: str, extra: list[str], tiny_env: dict[str, str] | None = None, note: str | None = None,
                tiny_sample: bool = False) -> Callable[[Context, float], dict[str, Any]]:
    """``vrnnkit train --decoder convT --device DEVICE`` (+ ``extra``) for --train-steps steps,
    then ``vrnnkit sample`` from the run it wrote (in --tiny, only where ``tiny_sample``)."""

    def run(ctx: Context, timeout: float) -> dict[str, Any]:
        run_dir = ctx.work / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        steps = 4 if ctx.tiny else ctx.args.train_steps
        options = ["--decoder", "convT", "--device", ctx.args.device, *extra]
        command = [sys.executable, "-m", "vrnnkit", "train", *options, "--steps", str(steps), "--out", str(run_dir), "--quiet"]
        details: dict[str, Any] = {"command": "vrnnkit train " + " ".join(options) + f" --steps {steps}"}
        if ctx.tiny:
            (ctx.work / "tiny.toml").write_text(TINY_TOML)
            command += ["--config", str(ctx.work / "tiny.toml")]
            details["command"] += " (tiny config)"
            if note:
                details["note"] = note
        sample = not ctx.tiny or tiny_sample
        train_timeout = timeout - min(60.0, 0.25 * timeout) if sample else timeout
        train = run_command(ctx, name, command, train_timeout, env=tiny_env if ctx.tiny else None)
        details["train_s"] = train["seconds"]
        details.update(last_metrics(run_dir / "metrics.jsonl"))
        if not sample or train["rc"] != 0 or train["timed_out"]:
            return finished(train, details, train_timeout)
        path, clips = run_dir / "sample.gif", ["--num", "2", "--steps", "5"] if ctx.tiny else ["--num", "4", "--steps", "10"]
        result = run_command(ctx, f"{name}_sample", [sys.executable, "-m", "vrnnkit", "sample", "--ckpt", str(run_dir),
                                                     "--out", str(path), *clips], timeout - train["seconds"])
        details.update(sample_s=result["seconds"], sample_bytes=path.stat().st_size if path.exists() else None)
        return finished(result, details, timeout - train["seconds"])

    return run


def last_metrics(path: Path) -> dict[str, Any]:
    """The figures of a run's last training record: loss, validation, speed."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    records = [record for record in records if "step" in record and "loss" in record]
    if not records:
        return {}
    last = records[-1]
    figures = {key: last[key] for key in ("step", "loss", "val_loss", "bits_per_dim", "sequences_per_s", "wall_s") if key in last}
    if last.get("wall_s"):
        figures["steps_per_s"] = round(last["step"] / last["wall_s"], 2)
    return figures


TRAINING = ("typer", "rich", "safetensors", "imageio")
STAGES = (  # name, budget (s), budget in --tiny (s, generous: a loaded CPU), the packages it needs, what it runs
    Stage("environment", 60, 90, (), worker_stage("environment")),
    Stage("cuda_tests", 120, 120, ("pytest",), pytest_stage),
    Stage("train", 75, 90, TRAINING, train_stage("train", [], tiny_sample=True)),
    Stage("train_bf16", 75, 90, TRAINING, train_stage("train_bf16", ["--precision", "bf16"])),
    Stage("train_compile", 150, 90, TRAINING,
          train_stage("train_compile", ["--compile"], tiny_env={"TORCHDYNAMO_DISABLE": "1"},
                      note="TORCHDYNAMO_DISABLE=1 in --tiny: the --compile path ran, the compiler did not")),
    Stage("throughput_vector", 60, 90, ("safetensors",), worker_stage("throughput_vector")),
    Stage("throughput_conv", 60, 90, ("safetensors",), worker_stage("throughput_conv")),
    Stage("evaluation", 60, 90, ("safetensors",), worker_stage("evaluation")),
)


# ----------------------------------------------------------------------------- the report


class Report:
    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "schema": SCHEMA, "started": now(), "finished": None, "complete": False, "device": args.device,
            "tiny": args.tiny, "deadline_s": args.deadline, "argv": sys.argv[1:], "host": platform.node(),
            "python": sys.version.split()[0], "load_average_start": load_average(), "stages": [],
        }

    def stage(self, record: dict[str, Any]) -> None:
        stages = self.data["stages"]
        if stages and stages[-1]["name"] == record["name"]:
            stages[-1] = record
        else:
            stages.append(record)
        if record["name"] == "environment" and record.get("details"):
            self.data["environment"] = record["details"]
        self.write()

    def finish(self) -> None:
        self.data.update(finished=now(), complete=True, load_average_end=load_average())
        peaks = [value for record in self.data["stages"] for value in peak_values(record.get("details", {}))]
        self.data["peak_gpu_memory_mib"] = max(peaks) if peaks else None
        self.write()

    def write(self) -> None:
        atomic_write(self.out / "device_check.json", json.dumps(self.data, indent=2) + "\n")
        atomic_write(self.out / "device_check.md", table(self.data))


def peak_values(value: Any) -> list[float]:
    """Every peak GPU memory figure in a stage's details: numbers under keys that start with
    ``peak_mib``, or in a dict under such a key."""
    found: list[float] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("peak_mib"):
                found += [float(v) for v in (item.values() if isinstance(item, dict) else [item]) if isinstance(v, (int, float))]
            else:
                found += peak_values(item)
    elif isinstance(value, list):
        found = [x for item in value for x in peak_values(item)]
    return found


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_average() -> float | None:
    """The one-minute load average (CPU timings move with it), where the system has one."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def table(data: dict[str, Any]) -> str:
    env = data.get("environment", {})
    lines = [f"# vrnnkit device check: {data['device']}{' (tiny)' if data['tiny'] else ''}", "",
             f"{env.get('device_name') or data['device']}; torch {env.get('torch', '?')}, CUDA {env.get('torch_cuda') or '-'}, "
             f"Python {data['python']}; started {data['started']}, "
             + (f"finished {data['finished']}" if data["complete"] else "**not finished** (cut short: the stages below are what ran)"), "",
             "| stage | status | seconds | result |", "|---|---|---:|---|"]
    for record in data["stages"]:
        result = summary(record)
        lines.append(f"| {record['name']} | {record['status']} | {record.get('seconds', 0):.1f} | {result} |")
    rows = [row for record in data["stages"] for row in record.get("details", {}).get("rows", [])]
    if rows:
        lines += ["", "Training throughput, sequences/s (median of alternating rounds); ratio = vrnnkit / plain loop:", "",
                  "| model | batch | vrnnkit | autograd loop | plain loop | ratio | peak MiB (vrnnkit) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            rate = row.get("sequences_per_s", {})
            peak = row.get("peak_mib", {}).get("vrnnkit")
            lines.append(f"| {row['model']} | {row['batch']} | {fmt(rate.get('vrnnkit'))} | {fmt(rate.get('autograd loop'))} | "
                         f"{fmt(rate.get('plain loop'))} | {fmt(row.get('ratio'), 2, 'x')} | {fmt(peak)} |"
                         + (f" error: {row['error']}" if "error" in row else ""))
    if data.get("peak_gpu_memory_mib") is not None:
        lines += ["", f"Peak GPU memory over the in-process stages: {data['peak_gpu_memory_mib']:.0f} MiB."]
    return "\n".join(lines) + "\n"


def fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def summary(record: dict[str, Any]) -> str:
    """One cell: what the stage found, or why it did not run."""
    details = record.get("details") or {}
    name, text = record["name"], ""
    if name == "environment" and "torch" in details:
        text = (f"torch {details['torch']}, CUDA available: {details['cuda_available']}"
                + (f", {details['device_name']}" if details.get("device_name") else "")
                + "".join(f", {name} matmul {value / 1000:.3g} TFLOP/s" for name, value in details.get("matmul_gflops", {}).items()))
    elif name == "cuda_tests":
        text = ", ".join(f"{n} {outcome}" for outcome, n in details.get("counts", {}).items()) or ("no test result" if details else "")
    elif name.startswith("train") and "step" in details:
        text = (f"{details['step']} steps, {fmt(details.get('steps_per_s'), 1)} steps/s, loss {fmt(details.get('loss'), 1)}, "
                f"val {fmt(details.get('val_loss'), 1)}" + (f"; sample {details['sample_s']:.1f} s" if "sample_s" in details else "")
                + (f" ({details['note']})" if "note" in details else ""))
    elif name.startswith("throughput"):
        text = "; ".join(f"b{row['batch']} {fmt(row.get('ratio'), 2, 'x')}" for row in details.get("rows", []))
    elif name == "evaluation" and details:
        text = (f"predict {fmt(details.get('predict_ms_per_frame'), 2)} ms/frame; evaluate {fmt(details.get('evaluate_s'), 1)} s "
                f"(ELBO {fmt(details.get('elbo'), 1)}, IWAE {fmt(details.get('iwae'), 1)}, FIVO {fmt(details.get('fivo'), 1)})"
                + (f"; CPU agrees: {details['cpu_agrees']}" if "cpu_agrees" in details else ""))
    reason = record.get("reason")
    return " ".join(part for part in (text, f"**{reason}**" if reason else "") if part).replace("|", "/")


# ----------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--out", type=Path, default=Path("device-check"), help="folder for device_check.json, .md and .log")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes everywhere: the whole check in about a minute on a CPU")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help=f"seconds for the whole check (default {DEADLINE_S:.0f})")
    parser.add_argument("--train-steps", type=int, default=300, help="steps of each train stage (default 300)")
    parser.add_argument("--stage-timeout", type=float, help="cap every stage's own budget at this many seconds")
    parser.add_argument("--stages", help=f"comma-separated subset of: {', '.join(stage.name for stage in STAGES)}")
    parser.add_argument("--work", type=Path, help="scratch folder for run folders and logs (default: a temporary one)")
    args = parser.parse_args(argv)
    chosen = set(args.stages.split(",")) if args.stages else {stage.name for stage in STAGES}
    unknown = chosen - {stage.name for stage in STAGES}
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="vrnnkit-device-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, work, args.out / "device_check.log", subprocess_env(work))
    ctx.log.write_text(f"vrnnkit device check, {now()}: {' '.join(sys.argv)}\n")
    report = Report(args.out, args)
    deadline = time.monotonic() + args.deadline
    stop_reason: str | None = None
    print(f"device check on {args.device}{' (tiny)' if args.tiny else ''}: {sys.executable}, deadline {args.deadline:.0f} s, "
          f"writing {args.out}/device_check.json", flush=True)
    for stage in STAGES:
        if stage.name not in chosen:
            continue
        record = run_stage(ctx, stage, report, deadline, stop_reason)
        print(f"  {stage.name:<18} {record['status']:<8} {record.get('seconds', 0):6.1f} s  {summary(record)}", flush=True)
        if stage.name == "environment" and device_missing(args.device, record):
            record.update(status="failed", reason=device_missing(args.device, record))
            report.stage(record)
            print(f"device check: {record['reason']}", flush=True)
            stop_reason = "not run: the environment stage failed (its row says why)"
    report.finish()
    print(f"wrote {args.out / 'device_check.json'} and {args.out / 'device_check.md'}")
    if stop_reason:
        return 2
    return 1 if any(record["status"] in ("failed", "timeout") for record in report.data["stages"]) else 0


def run_stage(ctx: Context, stage: Stage, report: Report, deadline: float, stop_reason: str | None) -> dict[str, Any]:
    """Run one stage within its budget and what is left of the deadline; record it."""
    budget = stage.tiny_budget_s if ctx.tiny else stage.budget_s
    record: dict[str, Any] = {"name": stage.name, "budget_s": min(budget, ctx.args.stage_timeout or budget)}
    left = deadline - time.monotonic()
    missing = [name for name in stage.needs if not report.data.get("environment", {}).get("packages", {}).get(name, True)]
    if stop_reason:
        record.update(status="skipped", reason=stop_reason)
    elif missing:
        record.update(status="skipped", reason=f"not installed here: {', '.join(missing)}")
    elif left < MIN_STAGE_S:
        record.update(status="skipped", reason=f"the overall deadline ({ctx.args.deadline:.0f} s) left {max(left, 0):.0f} s")
    else:
        timeout = min(record["budget_s"], left)
        report.stage({**record, "status": "running", "started": now()})
        start = time.monotonic()
        try:
            record.update(stage.run(ctx, timeout))
        except Exception as error:  # this script's own failure: recorded, and the next stage runs
            record.update(status="failed", reason=f"{type(error).__name__}: {error}")
        record["seconds"] = round(time.monotonic() - start, 2)
    report.stage(record)
    return record


def device_missing(device: str, record: dict[str, Any]) -> str | None:
    """Why the check cannot go on, or None: no torch, or no CUDA for --device cuda."""
    details = record.get("details") or {}
    if "torch" not in details and record["status"] == "failed":
        last = next((line.strip() for line in reversed(record.get("log_tail", [])) if line.strip()), "no output")
        return f"PyTorch cannot be imported by {sys.executable} ({last[:200]}); this check needs a PyTorch build with CUDA"
    if "torch" not in details:
        return f"the environment stage did not finish ({record['status']}: {record.get('reason', '')}); nothing else can be trusted to run"
    if device.startswith("cuda") and not details.get("cuda_available"):
        return (f"torch {details['torch']} (CUDA build: {details.get('torch_cuda') or 'none'}) sees no CUDA GPU; "
                "a CPU build of PyTorch (a carried .venv made on a CPU machine) cannot use the GPU")
    if details.get("vrnnkit_error"):
        return f"vrnnkit cannot be imported: {details['vrnnkit_error']}"
    return None


def subprocess_env(work: Path) -> dict[str, str]:
    """The stages' environment: this tree's src/ first on the path (nothing is installed), the
    data cache in the scratch folder, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("VRNNKIT_DATA", str(work / "data"))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COLUMNS", "160")
    return env


if __name__ == "__main__":
    sys.exit(main())
