"""The Python API in one place: the functions the command line calls, for notebooks too.

    import vrnnkit
    result = vrnnkit.train(steps=500, out="runs/demo")           # the options of `vrnnkit train`
    model = vrnnkit.load(result.run_dir / "model.safetensors")
    clips = model.sample(8, 20)
    futures = model.predict(context, horizon=10, samples=5)
    report = vrnnkit.evaluate(model, test_videos, iwae_samples=100)   # as `vrnnkit eval --json`
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vrnnkit.errors import ConfigError
from vrnnkit.training import TrainConfig, TrainResult, broadcast_text, join_world
from vrnnkit.training import train as _train_loop


def train(
    data: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, Any], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a VRNN with the options and defaults of ``vrnnkit train`` (see ``TrainConfig``).

    ``data`` is a file or ``bouncing-balls`` (default), ``moving-mnist``, ``seq-mnist``;
    ``out`` the run folder (default ``runs/<timestamp>``, then linked as ``runs/latest``);
    ``resume`` a run folder to continue, with its own options unless ``options`` override them;
    ``config`` a TOML file of options, which ``options`` override;
    ``on_log(record)`` and ``on_step(step, model)`` as in ``vrnnkit.training.train``.
    Under ``torchrun`` every process calls this; see ``vrnnkit.training.train``.
    """
    if data is not None:
        options["data"] = data
    train_config = merged_config(options, resume=resume, config=config)
    # Under torchrun every process gets here: they join their group first, so that they can
    # agree on a new run folder's name (rank 0's).
    world, owns_group = join_world(train_config.device)
    try:
        if resume is not None:
            run_dir = Path(resume)
        elif out is not None:
            run_dir = Path(out)
        else:
            run_dir = Path(broadcast_text(str(_new_run_dir()) if world.is_main else "", world))
        if resume is None and (run_dir / "model.safetensors").exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or another --out")
        result = _train_loop(train_config, run_dir, resume=resume is not None, on_log=on_log, on_step=on_step)
        if resume is None and world.is_main:
            _link_latest(run_dir)
        return result
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def merged_config(
    options: dict[str, Any],
    *,
    resume: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """The training config from its sources, last one winning: the defaults, a resumed run's
    own options, a TOML file, then ``options``."""
    settings: dict[str, Any] = {}
    if resume is not None:
        settings.update(_resumed_settings(Path(resume)))
    if config is not None:
        settings.update(read_toml(Path(config)))
    settings.update(options)
    return TrainConfig.from_dict(settings)


def _resumed_settings(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"cannot resume {run_dir}: it has no config.json (was it written by vrnnkit train?)")
    try:
        return json.loads(path.read_text())["train"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"cannot resume {run_dir}: {path} is not a vrnnkit run config") from None


def read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; expected a .toml file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    # TOML keys may use the command line's dashes.
    return {key.replace("-", "_"): value for key, value in data.items()}


def _new_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{stamp}-{suffix}"
    return path


def _link_latest(run_dir: Path) -> None:
    """Point runs/latest at the newest run (a relative symlink, replaced atomically)."""
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / ".latest.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        tmp.replace(latest)
    except OSError:  # a file system without symlinks: the run itself is fine
        tmp.unlink(missing_ok=True)
