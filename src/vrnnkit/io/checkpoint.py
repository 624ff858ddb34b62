"""Checkpoints: one self-contained ``.safetensors`` file per model.

The file holds the weights as tensors and, in the safetensors metadata (strings only), the
model's config as JSON, the vrnnkit version, a format version and any metadata the caller adds.
Loading parses that header and the tensors; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vrnnkit._version import __version__
from vrnnkit.errors import CheckpointError, VRNNKitError, file_problem
from vrnnkit.io.atomic import atomic_path
from vrnnkit.io.checkpoint_shapes import listed_tensors, materialise, model_for_header
from vrnnkit.model import VRNN
from vrnnkit.model.config import VRNNConfig

FORMAT_NAME = "vrnnkit"
FORMAT_VERSION = 1
_RESERVED = ("format", "format_version", "vrnnkit_version", "config")


def save(model: VRNN, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` to one ``.safetensors`` file at ``path``, atomically; return the path.

    ``metadata`` adds string entries to the file's header (for example the data's scaling);
    ``read_metadata`` gives them back. A write that fails (no space left, a read-only folder)
    raises ``vrnnkit.errors.WriteError`` and leaves the file at ``path`` as it was.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise CheckpointError(f"cannot write checkpoint {target}: folder {target.parent} does not exist")
    with atomic_path(target) as tmp:
        write_checkpoint(model, tmp, metadata)
    return target


def write_checkpoint(model: VRNN, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model`` (and ``metadata``) to ``path`` as it is, not atomically: the writer of
    ``save``, for a caller that writes several files as one (a run folder's save)."""
    extra = dict(metadata or {})
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"checkpoint metadata must map strings to strings, got {key!r}: {value!r}")
        if key in _RESERVED:
            raise ValueError(f"checkpoint metadata key {key!r} is reserved by vrnnkit")
    header = {
        **extra,
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "vrnnkit_version": __version__,
        "config": model.config.to_json(),
    }
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(path), metadata=header)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The header metadata of a vrnnkit checkpoint, validated, without loading the weights."""
    source = _check_file(path)
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{source} is not a readable safetensors file ({_reason(error)})") from None
    _check_header(source, metadata)
    return dict(metadata)


def load(path: str | os.PathLike[str], device: str | torch.device | None = None) -> VRNN:
    """Rebuild the model saved at ``path`` from that file alone, on ``device`` (default CPU).

    The header's config is checked against the tensors the header lists before any weight is
    read (:mod:`vrnnkit.io.checkpoint_shapes`), so a load takes about the file's size in memory."""
    source = _check_file(path)
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            _check_header(source, metadata)
            config = _config(source, metadata)
            model = model_for_header(source, config, listed_tensors(handle))
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{source} is not a readable safetensors file ({_reason(error)})") from None
    try:
        model = materialise(model, tensors, config)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"{source}: the weights do not fit the model its config describes: {detail}") from None
    if device is not None:
        model = model.to(device)
    return model


def _config(source: Path, metadata: Mapping[str, str]) -> VRNNConfig:
    try:
        return VRNNConfig.from_json(metadata["config"])
    except VRNNKitError as error:
        raise CheckpointError(f"{source}: its model config cannot be rebuilt: {error}") from None


def _check_file(path: str | os.PathLike[str]) -> Path:
    source = Path(path)
    problem = file_problem(source)
    if problem:
        raise CheckpointError(f"checkpoint {source}: expected a .safetensors file, found {problem}")
    return source


def _check_header(source: Path, metadata: Mapping[str, str]) -> None:
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(
            f"{source} is a safetensors file but not a vrnnkit checkpoint (its header has no vrnnkit format tag)"
        )
    version = metadata.get("format_version", "")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{source} has checkpoint format version {version!r}; this vrnnkit ({__version__}) "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        json.loads(metadata["config"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{source}: the config in its header is not valid JSON") from None


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def find_checkpoint(path: str | os.PathLike[str] | None = None, runs: str | os.PathLike[str] = "runs") -> Path:
    """The checkpoint a command should use: ``path`` itself (a file), its ``model.safetensors``
    (a run folder), or, with no path, the newest run under ``runs``."""
    if path is not None:
        candidate = Path(path)
        if candidate.is_dir():
            inner = candidate / "model.safetensors"
            if not inner.is_file():
                raise CheckpointError(f"run folder {candidate} holds no model.safetensors")
            return inner
        _check_file(candidate)
        return candidate
    runs = Path(runs)
    latest = runs / "latest" / "model.safetensors"
    if latest.is_file():
        return latest
    found = sorted(runs.glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise CheckpointError(
            f"no trained model in ./{runs}; train one with `vrnnkit train` or pass --ckpt PATH"
        )
    return found[-1]
