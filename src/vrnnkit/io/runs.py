"""Runs and checkpoints at a glance, from their files alone (no model is built, torch is not
imported): the figures of a run folder, the runs under a folder, what a checkpoint holds.

    summarize_run("runs/quick")   # {"name", "data", "steps", "best_val_loss", "wall_s", "size_bytes", ...}
    list_runs("runs")             # every run under runs/, newest first
    checkpoint_info("runs/quick/model.safetensors")   # config, parameters per block, versions
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from vrnnkit.errors import CheckpointError, DataError, file_problem

METRICS, CONFIG, MODEL = "metrics.jsonl", "config.json", "model.safetensors"
_MAX_HEADER_BYTES = 100_000_000


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a half-written last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def run_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` is not a run folder written by ``vrnnkit train`` (as a phrase), or None."""
    folder = Path(folder)
    if not folder.exists():
        return "no such folder"
    if not folder.is_dir():
        return "a file, not a run folder"
    missing = [name for name in (CONFIG, METRICS) if not (folder / name).is_file()]
    if missing:
        return f"not a run folder: it holds no {' and no '.join(missing)} (written by vrnnkit train)"
    return None


def summarize_run(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """One run's figures: name, data, steps, best validation loss (and its bits/dim or nats
    per step), wall time, size on disk and when it last changed."""
    folder = Path(folder)
    problem = run_problem(folder)
    if problem:
        raise DataError(f"{folder}: {problem}")
    records = read_metrics(folder / METRICS)
    try:
        train = json.loads((folder / CONFIG).read_text(encoding="utf-8")).get("train", {})
    except (json.JSONDecodeError, AttributeError, OSError):
        train = {}
    validated = [r for r in records if isinstance(r.get("val_loss"), (int, float)) and math.isfinite(r["val_loss"])]
    best = min(validated, key=lambda r: r["val_loss"]) if validated else {}
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return {
        "name": folder.name,
        "path": str(folder),
        "data": train.get("data"),
        "steps": records[-1]["step"] if records else 0,
        "best_val_loss": best.get("val_loss"),
        "best_step": best.get("step"),
        "best_val_bits_per_dim": best.get("val_bits_per_dim"),
        "best_val_elbo_per_step": best.get("val_elbo_per_step"),
        "wall_s": records[-1].get("wall_s") if records else None,
        "size_bytes": sum(_size(p) for p in files),
        "modified": max((p.stat().st_mtime for p in files), default=folder.stat().st_mtime),
    }


def list_runs(root: str | os.PathLike[str] = "runs") -> list[dict[str, Any]]:
    """The runs directly under ``root`` (``latest``, a link, is left out), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of runs, found {'a file' if root.exists() else 'no such folder'}")
    runs = [summarize_run(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink() and run_problem(p) is None]
    return sorted(runs, key=lambda run: run["modified"], reverse=True)


def _size(path: Path) -> int:
    """Bytes on disk; the hard links of checkpoints/ count once (their inode's first name)."""
    stat = path.stat()
    return stat.st_size if stat.st_nlink == 1 or path.parent.name != "checkpoints" else 0


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file: tensor names, dtypes and shapes, and the
    ``__metadata__`` strings; no tensor is read."""
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise CheckpointError(f"checkpoint {path}: expected a .safetensors file, found {problem}")
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size <= min(_MAX_HEADER_BYTES, path.stat().st_size - 8):
            raise CheckpointError(f"{path} is not a safetensors file (its first 8 bytes are not a header length)")
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    return header


def checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a vrnnkit checkpoint holds, from its header: the model config, the number of
    values per block (the first part of each tensor name), vrnnkit and format versions, and
    the training metadata (step, validation loss) where there is some."""
    header = read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if metadata.get("format") != "vrnnkit" or "config" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a vrnnkit checkpoint (its header has no vrnnkit format tag)")
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: the config in its header is not valid JSON") from None
    blocks: dict[str, int] = {}
    for name, entry in header.items():
        shape = entry.get("shape", []) if isinstance(entry, dict) else []
        blocks[name.split(".")[0]] = blocks.get(name.split(".")[0], 0) + math.prod(shape)
    extra = {key: value for key, value in metadata.items() if key not in ("format", "format_version", "vrnnkit_version", "config", "train_config")}
    return {
        "path": str(path),
        "vrnnkit_version": metadata.get("vrnnkit_version"),
        "format_version": metadata.get("format_version"),
        "config": config,
        "parameters": dict(sorted(blocks.items())),
        "total_parameters": sum(blocks.values()),
        "metadata": extra,
        "size_bytes": Path(path).stat().st_size,
    }
