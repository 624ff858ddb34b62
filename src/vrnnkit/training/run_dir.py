"""The run folder: what training writes, and how a run is resumed from it.

    model.safetensors    the model, self-contained (``vrnnkit.load`` reads it alone)
    trainer.safetensors  optimizer state, step, epoch, random-generator states (no pickle)
    config.json          the resolved training configuration ({"train": options, "model": ...})
    metrics.jsonl        one JSON line per logging step
    best.safetensors     the model of the lowest validation loss so far
    checkpoints/         the models of the last ``keep`` saves
    samples.gif          clips sampled at the end (image models)

Every file is replaced atomically, and the trainer state (which holds the weights too) is
written before the model: a crash at any moment leaves a complete checkpoint to resume from.
A save writes all its files to temporary files first, so one that fails (a full disk) changes
nothing: the previous save stays the one that ``--resume`` and ``vrnnkit.load`` find.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vrnnkit.data.music import NoteRange
from vrnnkit.errors import CheckpointError, ConfigError, TrainingError, WriteError, WriteWarning
from vrnnkit.io.atomic import (
    append_bytes,
    atomic_paths,
    reported_as,
    truncate,
    write_bytes,
    write_json,
)
from vrnnkit.io.checkpoint import write_checkpoint
from vrnnkit.model import VRNN
from vrnnkit.model.config import VRNNConfig
from vrnnkit.model.inputs import sample_feedback
from vrnnkit.training.config import TrainConfig
from vrnnkit.training.distributed import World, noise_seed

TRAINER_FORMAT = "vrnnkit-trainer"
TRAINER_FORMAT_VERSION = "2"
NOTE_RANGE_KEY = "note_range"
"""The checkpoint header entry of a piano-roll model's notes: JSON {"low": 21, "high": 108}."""


class RunFolder:
    """Rank 0's writes to the run folder."""

    def __init__(self, run_dir: Path, config: TrainConfig, world: World, *, note_range: NoteRange | None = None) -> None:
        self.run_dir = run_dir
        self.note_range = note_range
        self.config = config
        self.world = world
        self.saved_step = 0
        self.best = math.inf

    def stopped(self, error: WriteError) -> TrainingError:
        """A write outside a save failed (the folder, config.json): the run stops, and says
        what is safe and how to go on."""
        return stopped_by(error, self.run_dir, self.saved_step, self.world.size)

    def start(self) -> None:
        """A new run: the folder, without metrics of an earlier attempt."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        except FileExistsError:
            raise TrainingError(f"cannot create the run folder {self.run_dir}: a file of that name is in the way") from None
        except OSError as error:
            raise self.stopped(WriteError(error.filename or self.run_dir, error.errno)) from None

    def resume(self, step: int, best: float) -> None:
        """A resumed run: drop what a killed process left behind after the checkpoint of ``step``."""
        self.saved_step, self.best = step, best
        for folder in (self.run_dir, self.run_dir / "checkpoints"):
            # The temporary files of interrupted writes: ours (.NAME.tmpXXX.ext) and the
            # safetensors library's own (.tmpXXXXXX).
            for path in [*folder.glob(".*.tmp*"), *folder.glob(".tmp*")]:
                with contextlib.suppress(OSError):  # a read-only folder: the next write says so
                    path.unlink(missing_ok=True)
        try:
            repair_metrics(self.run_dir / "metrics.jsonl", step)
        except WriteError as error:
            raise self.stopped(error) from None

    def write_config(self, model_config: VRNNConfig) -> None:
        try:
            write_json(self.run_dir / "config.json", {"train": self.config.to_dict(), "model": model_config.to_dict()})
        except WriteError as error:
            raise self.stopped(error) from None

    def kept_message(self) -> str:
        """What is safe on disk, for an error that stops the run."""
        if self.saved_step:
            return f"the checkpoint of step {self.saved_step} in {self.run_dir} is intact"
        return "no checkpoint had been saved yet"

    def save(
        self, model: VRNN, optimizer: torch.optim.Optimizer, noise_states: list[torch.Tensor],
        step: int, epoch: int, metrics: dict[str, float], *, published: VRNN | None = None, averaged_steps: int = 0,
    ) -> None:
        """Save the trainer state of ``model`` and, as model.safetensors (and best.safetensors
        on a new best validation loss), ``published`` (the averaged weights of ``--ema``),
        by default ``model``; the trainer state keeps the average too, so that resuming continues
        it (``averaged_steps``: the steps it has averaged). All of it, or nothing: a write that
        fails (a full disk) leaves the previous save as it was and stops the run (TrainingError)."""
        published = published or model
        for parameter in [*model.parameters(), *published.parameters()]:
            if not torch.isfinite(parameter).all():
                raise TrainingError(f"the weights hold NaN or inf at step {step}; nothing was saved, the last checkpoint is intact")
        val_loss = metrics.get("val_loss")
        best = min(self.best, val_loss) if val_loss is not None and math.isfinite(val_loss) else self.best
        header = {"step": str(step), "train_config": json.dumps(self.config.to_dict())}
        if val_loss is not None:
            header["val_loss"] = repr(val_loss)
        if self.note_range is not None:
            header[NOTE_RANGE_KEY] = json.dumps(self.note_range.to_dict())
        copies = [self.run_dir / "checkpoints" / f"step-{step:08d}.safetensors"] if self.config.keep > 0 else []
        if val_loss is not None and val_loss == best and best < self.best:
            copies.append(self.run_dir / "best.safetensors")
        trainer, latest, line_start = self.run_dir / "trainer.safetensors", self.run_dir / "model.safetensors", None
        try:
            if self.config.keep > 0:
                with reported_as(self.run_dir / "checkpoints"):
                    (self.run_dir / "checkpoints").mkdir(exist_ok=True)
            # Replaced in this order once all are written: the trainer state, the model, its copies.
            with atomic_paths(trainer, latest, *copies) as temporary:
                tmp = dict(zip([trainer, latest, *copies], temporary, strict=True))
                with reported_as(trainer, tmp[trainer]):
                    save_trainer(tmp[trainer], model, optimizer, noise_states, step, epoch, best, self.world,
                                 average=published if published is not model else None, averaged_steps=averaged_steps)
                with reported_as(latest, tmp[latest]):
                    write_checkpoint(published, tmp[latest], metadata=header)
                for copy in copies:
                    with reported_as(copy, tmp[copy]):
                        _link_or_copy(tmp[latest], tmp[copy])
                # The metrics line before the files are replaced: a crash between the two leaves
                # a line past the checkpoint, which resuming removes; the other order could lose one.
                line_start = append_jsonl(self.run_dir / "metrics.jsonl", metrics)
        except WriteError as error:
            if line_start is not None:
                truncate(self.run_dir / "metrics.jsonl", line_start)
            raise self._save_failed(step, error) from None
        self.saved_step, self.best = step, best
        if self.config.keep > 0:
            kept = sorted((self.run_dir / "checkpoints").glob("step-*.safetensors"))
            for old in kept[: -self.config.keep]:
                with contextlib.suppress(OSError):
                    old.unlink(missing_ok=True)

    def _save_failed(self, step: int, error: WriteError) -> TrainingError:
        since = f"steps {self.saved_step + 1}-{step} are" if step > self.saved_step + 1 else f"step {step} is"
        kept = (f"the checkpoint of step {self.saved_step} is intact" if self.saved_step
                else "no checkpoint had been saved yet")
        then = (f"{_sentence(error.fix)}, then continue with: {resume_command(self.run_dir, self.world.size)}"
                if self.saved_step
                else f"{_sentence(error.fix)}, then run the command again")
        return TrainingError(
            f"could not save step {step} in {self.run_dir}: cannot write {error.path}: {error.cause}. "
            f"Training stopped; {since} not saved and {kept}. {then}"
        )

    def write_samples(self, model: VRNN, step: int, *, actions: torch.Tensor | None = None) -> None:
        """samples.gif: clips sampled from the prior at the end of an image model's run (a
        model with actions: under ``actions``, recorded ones). An optional file: a write that
        fails is a warning (the run is saved)."""
        from vrnnkit.io.render import write_clips

        generator = torch.Generator().manual_seed(self.config.seed)
        clips = model.sample(8, self.config.seq_len, generator=generator, feedback=sample_feedback(model), actions=actions)
        try:
            write_clips(self.run_dir / "samples.gif", clips)
        except (WriteError, ConfigError) as error:  # ConfigError: a folder of that name
            cause = error.cause if isinstance(error, WriteError) else str(error)
            warnings.warn(f"trained and saved step {step} in {self.run_dir}, but could not write samples.gif: {cause}",
                          WriteWarning, stacklevel=2)


def resume_command(run_dir: Path, world_size: int = 1) -> str:
    again = f" --nproc {world_size}" if world_size > 1 else ""
    return f"vrnnkit train --resume {run_dir}{again}"


def stopped_by(error: WriteError, run_dir: Path, saved_step: int | None = None, world_size: int = 1) -> TrainingError:
    """The message of a run that a failed write outside a save stopped (or kept from starting):
    the file, the cause, the last good save (``saved_step``; read from the trainer state when
    None) and the command that resumes from it."""
    if saved_step is None:
        saved_step = _saved_step(run_dir)
    if not saved_step:
        return TrainingError(f"cannot write {error.path}: {error.cause}. Nothing was trained; "
                             f"{error.fix}, then run the command again")
    return TrainingError(
        f"cannot write {error.path}: {error.cause}. Training stopped; the checkpoint of step {saved_step} in "
        f"{run_dir} is intact. {_sentence(error.fix)}, then continue with: {resume_command(run_dir, world_size)}"
    )


def _saved_step(run_dir: Path) -> int:
    """The step of the trainer state in ``run_dir`` (its header alone), or 0."""
    try:
        with safe_open(str(run_dir / "trainer.safetensors"), framework="pt") as handle:
            return int((handle.metadata() or {}).get("step", 0))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return 0


def _sentence(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:]


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link of ``source`` where the file system allows (no space taken
    until one is replaced), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def save_trainer(
    path: Path, model: VRNN, optimizer: torch.optim.Optimizer, noise_states: list[torch.Tensor],
    step: int, epoch: int, best: float, world: World, *, average: VRNN | None = None, averaged_steps: int = 0,
) -> None:
    """trainer.safetensors: weights, optimizer state, every rank's noise state and the averaged
    weights of ``--ema`` (``average``, over ``averaged_steps`` steps) when there are any; written
    to ``path`` as it is (``RunFolder.save`` gives it a temporary file)."""
    tensors = {f"model.{name}": t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    if average is not None:
        tensors.update({f"average.{name}": t.detach().cpu().contiguous() for name, t in average.state_dict().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    for rank, state in enumerate(noise_states):
        tensors[f"rng.noise.{rank}"] = state
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "format": TRAINER_FORMAT, "format_version": TRAINER_FORMAT_VERSION, "step": str(step), "epoch": str(epoch),
        "best_val_loss": repr(best), "world_size": str(world.size), "model_config": model.config.to_json(),
        "averaged_steps": str(averaged_steps if average is not None else 0),
    }
    save_file(tensors, str(path), metadata=metadata)


def _read_trainer(run_dir: Path) -> tuple[dict[str, str], dict[str, torch.Tensor], VRNNConfig]:
    trainer_path = run_dir / "trainer.safetensors"
    if not trainer_path.is_file():
        raise CheckpointError(f"cannot resume: {trainer_path} is missing (was {run_dir} written by vrnnkit train?)")
    try:
        with safe_open(str(trainer_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot resume: {trainer_path} is not a readable trainer state ({error})") from None
    if metadata.get("format") != TRAINER_FORMAT or metadata.get("format_version") != TRAINER_FORMAT_VERSION:
        raise CheckpointError(
            f"cannot resume: {trainer_path} is not a vrnnkit trainer state of format {TRAINER_FORMAT_VERSION}"
        )
    try:
        saved_config = VRNNConfig.from_json(metadata["model_config"])
    except (KeyError, ConfigError):
        raise CheckpointError(f"cannot resume: {trainer_path} holds no readable model config") from None
    return metadata, tensors, saved_config


def load_state(
    run_dir: Path, model: VRNN, optimizer: torch.optim.Optimizer, noise: torch.Generator, device: torch.device,
    world: World, seed: int, average: VRNN | None = None,
) -> tuple[int, float, int]:
    """Restore weights, optimizer and random state from ``trainer.safetensors`` alone (it is
    written before ``model.safetensors``, so it is never the older of the two), and into
    ``average`` the averaged weights of ``--ema`` (the trained ones when the run saved none: it
    trained without ``--ema``, or with an older vrnnkit); returns the step, the best validation
    loss so far and the steps the average has averaged."""
    metadata, tensors, saved_config = _read_trainer(run_dir)
    if saved_config != model.config:
        raise ConfigError(
            f"cannot resume {run_dir}: its model was built with a different configuration; "
            "resume with the options the run was started with"
        )
    weights = {name[len("model."):]: t for name, t in tensors.items() if name.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(f"cannot resume: the weights in {run_dir / 'trainer.safetensors'} do not fit the model") from None
    averaged_steps = 0
    if average is not None:
        saved = {name[len("average."):]: t for name, t in tensors.items() if name.startswith("average.")}
        try:
            average.load_state_dict(saved or model.state_dict())
        except RuntimeError:
            raise CheckpointError(f"cannot resume: the averaged weights in {run_dir / 'trainer.safetensors'} do not fit the model") from None
        averaged_steps = int(metadata.get("averaged_steps", "0")) if saved else 0
    step = int(metadata["step"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor.to(device) if key != "step" else tensor
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    own = tensors.get(f"rng.noise.{world.rank}")
    if own is not None and metadata.get("world_size", "1") == str(world.size):
        noise.set_state(own)
    else:
        # Another number of processes than the run had: fresh noise, still from the seed.
        noise.manual_seed(noise_seed(seed, world.rank) + 7919 * step)
    torch.set_rng_state(tensors["rng.torch"])
    return step, float(metadata.get("best_val_loss", "inf")), averaged_steps


def append_jsonl(path: Path, record: dict[str, Any]) -> int:
    """One JSON line at the end of ``path``, whole or not at all; returns where it begins."""
    return append_bytes(path, (json.dumps(record) + "\n").encode("utf-8"))


def repair_metrics(path: Path, step: int) -> None:
    """Keep the complete lines up to ``step``: a crash may have left a half-written last line,
    and records after the checkpoint will be written again."""
    if path.is_dir():  # it could be neither read nor written
        raise WriteError(path, errno.EISDIR)
    if not path.exists():
        return
    kept = []
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    repaired = "".join(line + "\n" for line in kept)
    if repaired != text:  # a file that needs no repair is not written (it may be on a full disk)
        write_bytes(path, repaired.encode("utf-8"))


def check_new_run(run_dir: Path) -> None:
    """A new run may not overwrite another: resuming it is explicit."""
    if (run_dir / "model.safetensors").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, or another --out")


def new_run_dir(parent: Path = Path("runs")) -> Path:
    """runs/<timestamp>, with a suffix when that folder exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = parent / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = parent / f"{stamp}-{suffix}"
    return path


def link_latest(run_dir: Path) -> None:
    """Point runs/latest at the newest run (a relative symlink, replaced atomically)."""
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / ".latest.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        tmp.replace(latest)
    except OSError:  # a file system without symlinks: the run itself is fine
        tmp.unlink(missing_ok=True)
