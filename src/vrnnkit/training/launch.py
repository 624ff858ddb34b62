"""``vrnnkit train --nproc N``: the same processes as ``torchrun --standalone --nproc-per-node N``.

It uses torchrun's own engine (``torch.distributed.launcher``) with two differences: the
processes read the configuration resolved here from the run folder's config.json (one
source of truth, not options turned back into command-line arguments), and when a process
fails the user sees that process's own message and exit code, not the launcher's report
with its traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from vrnnkit.data.sources import check_source
from vrnnkit.io.atomic import write_json
from vrnnkit.training.config import resolve_config
from vrnnkit.training.distributed import FINISHED_ENV, finished_step
from vrnnkit.training.lock import HELD_ENV, run_lock
from vrnnkit.training.run_dir import check_new_run, new_run_dir


def launch_training(
    nproc: int,
    options: dict[str, Any],
    *,
    out: Path | None,
    resume: Path | None,
    config: Path | None,
    quiet: bool,
) -> int:
    """Run ``vrnnkit train`` with ``options`` in ``nproc`` processes; return the exit code."""
    # Check the options and the data here, once, rather than letting every process fail on them.
    train_config = resolve_config(options, resume=resume, config=config)
    train_config.check_processes(nproc)
    check_source(train_config.data, train_config.layout, train_config.frame_size, train_config.grey)
    run_dir = resume if resume is not None else out if out is not None else new_run_dir()
    if resume is None:
        check_new_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        os.environ[HELD_ENV] = str(run_dir.resolve())  # the processes below train under this lock
        try:
            return _launch(nproc, train_config, run_dir, resume=resume, quiet=quiet)
        finally:
            os.environ.pop(HELD_ENV, None)


def _launch(nproc: int, train_config: Any, run_dir: Path, *, resume: Path | None, quiet: bool) -> int:
    """Start the processes of a checked config, in a locked run folder; their exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    resolved = run_dir / "config.json"
    write_json(resolved, {"train": train_config.to_dict()})
    args = ["-m", "vrnnkit", "train", "--config", str(resolved)]
    args += ["--resume", str(resume)] if resume is not None else ["--out", str(run_dir)]
    args += ["--quiet"] if quiet else []
    if "OMP_NUM_THREADS" not in os.environ:
        # N processes share the cores: without this each would start a thread per core.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    launch = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
    )
    # The processes print their own errors; the launcher's log lines would repeat them.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="vrnnkit-launch-") as notes:
        finished = Path(notes) / "finished.json"
        os.environ[FINISHED_ENV] = str(finished)  # where rank 0 notes that the run finished
        try:
            elastic_launch(launch, sys.executable)(*args)
        except ChildFailedError as error:
            return report_failures(error.failures, run_dir, nproc, finished_step(finished))
        except SignalException:
            # Ctrl-C reached the processes too: they stopped at the end of the same step, saved,
            # and rank 0 said how to continue; the launcher has waited for them.
            return 130
        finally:
            os.environ.pop(FINISHED_ENV, None)
    return 0


def report_failures(failures: dict[int, Any], run_dir: Path, nproc: int, finished: int | None) -> int:
    """Name the processes a signal killed (they could not say it themselves) and return the
    launcher's exit code. ``finished`` is the step of rank 0's note that the run finished with
    its final state saved (None without one): a process killed after that leaves a complete
    run, which is a warning and exit 0, not a run to continue."""
    codes = {rank: failure.exitcode for rank, failure in sorted(failures.items())}
    # A SIGTERM beside another failure is the launcher stopping the other processes: not news.
    causes = {rank: code for rank, code in codes.items() if code != -signal.SIGTERM} or codes
    killed = {rank: _signal_name(code) for rank, code in causes.items() if code < 0}
    if finished is not None and len(killed) == len(causes):
        for rank, name in killed.items():
            print(f"warning: training process {rank} was killed ({name}) after the run had finished; step {finished} "
                  f"is saved in {run_dir} and the run is complete", file=sys.stderr, flush=True)
        return 0
    for rank, name in killed.items():
        print(f"error: training process {rank} was killed ({name}); the others stopped; continue from the last save "
              f"with: vrnnkit train --resume {run_dir} --nproc {nproc}", file=sys.stderr, flush=True)
    return next((code for code in causes.values() if code in (1, 2, 130)), 1)


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"
