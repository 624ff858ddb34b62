"""``train``: the options of ``vrnnkit train`` -> a run folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vrnnkit.errors import WriteError
from vrnnkit.resources.budget import out_of_memory
from vrnnkit.tracking import check_tracker, open_tracker
from vrnnkit.training import loop
from vrnnkit.training.config import resolve_config
from vrnnkit.training.distributed import (
    World,
    broadcast_text,
    lost_process,
    note_finished,
    process_group,
)
from vrnnkit.training.lock import run_lock
from vrnnkit.training.run_dir import check_new_run, link_latest, new_run_dir, stopped_by


def train(
    data: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, Any], None] | None = None,
    log: str | None = None,
    **options: Any,
) -> loop.TrainResult:
    """Train a VRNN with the options and defaults of ``vrnnkit train``.

    ``options`` are the flat options of ``TrainConfig.from_dict`` (``h_dim=32``,
    ``block_options={"decoder": {"channels": 64}}``, ...). ``data`` is a file or
    ``bouncing-balls`` (default), ``moving-mnist``, ``seq-mnist``; ``out`` the run folder
    (default ``runs/<timestamp>``, then linked as ``runs/latest``); ``resume`` a run folder to
    continue, with its own options unless ``options`` override them; ``config`` a TOML file
    (or a run folder's config.json) of options, which ``options`` override; ``on_log(record)``
    and ``on_step(step, model)`` as in ``vrnnkit.training.train``; ``log`` a tracker
    (``tensorboard``, see ``vrnnkit.tracking``) that also receives the figures and samples.

    The options are checked, block names included, before any data is read. Under
    ``torchrun`` every process calls this; it owns the process group for the run.
    """
    if data is not None:
        options["data"] = data
    if log is not None:
        check_tracker(log)
    train_config = resolve_config(options, resume=resume, config=config)
    with process_group(train_config.device) as world:
        run_dir = _run_dir(out, resume, world)
        if resume is None:
            check_new_run(run_dir)
        # Rank 0 alone writes the run folder, so it alone holds the lock.
        with _locked(run_dir, resume is not None) if world.is_main else contextlib.nullcontext():
            tracker = open_tracker(log, run_dir) if log is not None and world.is_main else None
            try:
                result = loop.train(train_config, run_dir, resume=resume is not None, on_log=on_log, on_step=on_step,
                                    world=world, tracker=tracker)
            except RuntimeError as error:  # gloo and nccl say a peer is gone with a RuntimeError
                if not world.distributed or out_of_memory(error):
                    raise
                raise lost_process(error, run_dir, world) from error
            finally:
                if tracker is not None:
                    tracker.close()
        if resume is None and world.is_main:
            link_latest(run_dir)
        if not result.interrupted:
            note_finished(result.step, world)
        return result


@contextlib.contextmanager
def _locked(run_dir: Path, resuming: bool) -> Iterator[None]:
    """``run_lock``; a lock file that cannot be written (a read-only folder) on a resume says
    which save is intact and how to resume once the folder is writable."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_lock(run_dir))
        except WriteError as error:
            if not resuming:
                raise
            raise stopped_by(error, run_dir) from None
        yield


def _run_dir(out: str | os.PathLike[str] | None, resume: str | os.PathLike[str] | None, world: World) -> Path:
    if resume is not None:
        return Path(resume)
    if out is not None:
        return Path(out)
    # Every process agrees on rank 0's name for a new run folder.
    return Path(broadcast_text(str(new_run_dir()) if world.is_main else "", world))
