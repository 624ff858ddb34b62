"""``vrnnkit train --nproc N``: the same processes as ``torchrun --standalone --nproc-per-node N``.

It uses torchrun's own engine (``torch.distributed.launcher``) with one difference: when a
process fails, the user sees that process's own message and exit code, not the launcher's
report with its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from vrnnkit.errors import ConfigError


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
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from vrnnkit.api import _new_run_dir, merged_config
    from vrnnkit.training import BUILTIN_DATA, open_source

    # Check the options here, once, rather than letting every process fail on them.
    train_config = merged_config(options, resume=resume, config=config)
    if train_config.data not in BUILTIN_DATA:
        open_source(train_config.data, count=1, length=1, seed=0, layout=train_config.layout)
    if out is None and resume is None:
        out = _new_run_dir()
    args = ["-m", "vrnnkit", "train", *_command_line(options)]
    args += ["--out", str(out)] if out is not None else []
    args += ["--resume", str(resume)] if resume is not None else []
    args += ["--config", str(config)] if config is not None else []
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
        codes = [failure.exitcode for failure in error.failures.values()]
        return next((code for code in codes if code in (1, 2, 130)), 1)
    except SignalException:
        # Ctrl-C reached the processes too: they stopped at the end of the same step, saved,
        # and rank 0 said how to continue; the launcher has waited for them.
        return 130
    return 0


def _command_line(options: dict[str, Any]) -> list[str]:
    """``vrnnkit train`` options back into command-line arguments."""
    args: list[str] = []
    for key, value in options.items():
        if key == "data":
            args.insert(0, str(value))
        elif isinstance(value, bool):
            if value:
                args.append(f"--{key.replace('_', '-')}")
        elif isinstance(value, (int, float, str, Path)):
            args += [f"--{key.replace('_', '-')}", str(value)]
        else:
            raise ConfigError(f"option {key} cannot be passed to the training processes")
    return args
