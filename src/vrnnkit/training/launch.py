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
import sys
import uuid
from pathlib import Path
from typing import Any

from vrnnkit.data.sources import check_source
from vrnnkit.io.atomic import write_json
from vrnnkit.training.config import resolve_config
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
    try:
        elastic_launch(launch, sys.executable)(*args)
    except ChildFailedError as error:
        _report_killed(error.failures, run_dir, nproc)
        codes = [failure.exitcode for failure in error.failures.values()]
        return next((code for code in codes if code in (1, 2, 130)), 1)
    except SignalException:
        # Ctrl-C reached the processes too: they stopped at the end of the same step, saved,
        # and rank 0 said how to continue; the launcher has waited for them.
        return 130
    return 0


def _report_killed(failures: dict[int, Any], run_dir: Path, nproc: int) -> None:
    """Name the processes a signal killed (they could not say it themselves)."""
    import signal

    for rank, failure in sorted(failures.items()):
        if failure.exitcode < 0:
            try:
                name = signal.Signals(-failure.exitcode).name
            except ValueError:
                name = f"signal {-failure.exitcode}"
            print(f"error: training process {rank} was killed ({name}); the others stopped; continue from the last save "
                  f"with: vrnnkit train --resume {run_dir} --nproc {nproc}", file=sys.stderr, flush=True)
