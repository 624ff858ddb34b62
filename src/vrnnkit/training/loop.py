"""The training loop: ``train`` runs a whole run, ``train_step`` one optimizer step of it.

    run = vrnnkit.training.train(TrainConfig(steps=500), "runs/demo")

Runs are reproducible: the data order of each epoch comes from the seed and the epoch, the
latent noise from a generator whose state is saved, so on the CPU a resumed run ends with the
same weights as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vrnnkit.data.sources import build_dataset
from vrnnkit.errors import ConfigError, TrainingError
from vrnnkit.model import VRNN, VRNNOutput
from vrnnkit.training.config import DEFAULT_STEPS, TrainConfig
from vrnnkit.training.distributed import (
    World,
    any_rank,
    current_world,
    gather_states,
    noise_seed,
    require_group,
    resolve_device,
)
from vrnnkit.training.run_dir import RunFolder, load_state

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What ``train`` returns."""

    run_dir: Path
    step: int
    interrupted: bool
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds of the training loop: ``loop`` in all, of which ``model`` in forward, backward
    and optimizer steps, ``periodic`` in validation and saving; the rest is data and logging."""
    model: VRNN | None = None
    """The trained model, in memory (the run folder holds the same weights)."""
    world_size: int = 1
    """How many processes trained together (``torchrun``); each step saw ``batch_size * world_size`` sequences."""


@dataclass
class StepResult:
    """What ``train_step`` returns."""

    output: VRNNOutput
    kl_weight: float
    finite: bool
    """Whether the loss and the gradient norm were finite (the optimizer stepped only then)."""


def make_scaler(config: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of ``config.precision``: active for fp16 only."""
    return torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")


def train_step(
    model: nn.Module,
    batch: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    *,
    step: int,
    generator: torch.Generator | None = None,
    distributed: bool = False,
) -> StepResult:
    """One optimizer step on ``batch`` (B, T, *frame), already on the model's device, as
    ``vrnnkit train`` takes it: KL annealing, autocast, backward through the grad scaler,
    gradient clipping, and the step only when the loss and the gradient norm are finite.

    ``model`` may be wrapped in ``DistributedDataParallel`` (then pass ``distributed=True``):
    every rank must run backward, which holds the gradient all-reduce; the gradients are then
    the same everywhere, so their norm decides the same on every rank."""
    kl_weight = min(1.0, (step + 1) / config.kl_anneal) if config.kl_anneal else 1.0
    dtype = AUTOCAST_DTYPES.get(config.precision)
    device_type = batch.device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        output = model(batch, kl_weight=kl_weight, free_bits=config.free_bits, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    finite = distributed or bool(torch.isfinite(output.loss))
    if finite:
        scaler.scale(output.loss).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip if config.clip > 0 else float("inf"))
        # fp16's scaler finds inf gradients itself, skips the step and lowers its scale.
        finite = bool(torch.isfinite(norm)) or config.precision == "fp16"
    if finite:
        scaler.step(optimizer)
        scaler.update()
    return StepResult(output, kl_weight, finite)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, VRNN], None] | None = None,
    world: World | None = None,
) -> TrainResult:
    """Train a VRNN as ``config`` says, writing the run folder ``out``.

    With ``resume=True`` the run continues from the checkpoint in ``out``. ``on_log`` receives
    every metrics record (also written to ``metrics.jsonl``), and a first record with
    ``event: "start"``; ``on_step(step, model)`` is called after every optimizer step. SIGINT
    (Ctrl-C) and SIGTERM stop the run at the end of the current step, save it and return with
    ``interrupted=True``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this function inside a process
    group (``vrnnkit.train`` sets one up; see ``process_group``): the model is wrapped in
    ``DistributedDataParallel``, each process trains on its own share of every epoch's batches
    with latent noise of its own, and rank 0 alone logs and writes the run folder. The batch
    size is per process: a step sees ``batch_size * world_size`` sequences.
    """
    world = world or current_world()
    require_group(world)
    run = _Run(config, Path(out), world, resume, on_log if world.is_main else None)
    interrupted = False
    loop_start = time.perf_counter()
    with _InterruptFlag() as stop:
        for epoch, batch in _batches(run.training, config, world, run.step, run.per_epoch, run.total):
            model_start = time.perf_counter()
            result = train_step(
                run.trained, batch.to(run.device, non_blocking=True), run.optimizer, run.scaler, config,
                step=run.step, generator=run.noise, distributed=world.distributed,
            )
            if not result.finite and not config.skip_nonfinite:
                raise run.non_finite()
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)  # so the model time below is the GPU's too
            run.timings["model"] += time.perf_counter() - model_start
            run.step += 1
            if on_step:
                on_step(run.step, run.model)
            stopping = any_rank(stop.raised, world)
            run.after_step(epoch, result, periodic=run.step % config.every == 0 or run.step == run.total or stopping)
            if stopping:
                interrupted = True
                break
    run.timings["loop"] = time.perf_counter() - loop_start
    if run.folder is not None and not interrupted and run.model.config.is_image:
        run.folder.write_samples(run.model, run.step)
    return TrainResult(run.run_dir, run.step, interrupted, run.metrics, run.timings, model=run.model, world_size=world.size)


class _Run:
    """The state of one run: data, model, optimizer, noise and the run folder, set up in the
    order that makes runs reproducible, and what happens after each step."""

    def __init__(
        self, config: TrainConfig, run_dir: Path, world: World, resume: bool,
        on_log: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.config, self.run_dir, self.world, self.on_log = config, run_dir, world, on_log
        self.device = resolve_device(config.device, world)
        torch.manual_seed(config.seed)  # the same initial weights in every process
        self.training, self.validation, frame_shape = build_dataset(
            config.data, count=config.num_sequences, seq_len=config.seq_len, seed=config.seed,
            val_fraction=config.val_fraction, mnist_dir=config.mnist_dir, layout=config.layout,
            unit_interval=config.model.likelihood_support == "unit-interval", size=config.frame_size, grey=config.grey,
        )  # before the run folder exists
        self.model = VRNN(config.model.with_frame_shape(frame_shape)).to(self.device)
        if config.compile:
            self.model.compile_blocks()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.noise = torch.Generator(device="cpu").manual_seed(noise_seed(config.seed, world.rank))
        self.per_epoch = self._batches_per_epoch()
        self.total = config.steps or (config.epochs * self.per_epoch if config.epochs else DEFAULT_STEPS)
        self.folder = RunFolder(run_dir, config, world) if world.is_main else None
        self.step = 0
        if resume:
            self.step, best = load_state(run_dir, self.model, self.optimizer, self.noise, self.device, world, config.seed)
            if self.folder is not None:
                self.folder.resume(self.step, best)
        elif self.folder is not None:
            self.folder.start()
        if self.folder is not None:
            self.folder.write_config(self.model.config)
        self._log({
            "event": "start", "step": self.step, "total": self.total, "device": str(self.device), "world_size": world.size,
            "batch_size": config.batch_size, "effective_batch_size": config.batch_size * world.size,
            "parameters": self.model.num_parameters(), "run_dir": str(run_dir),
        })
        self.trained: nn.Module = self.model
        if world.distributed:
            # Every parameter takes part in every loss, so no find_unused_parameters.
            self.trained = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.scaler = make_scaler(config, self.device)
        self.metrics: dict[str, float] = {}
        self.timings = {"loop": 0.0, "model": 0.0, "periodic": 0.0}
        self.window_start, self.window_steps, self.last_live = time.perf_counter(), 0, time.perf_counter()

    def _batches_per_epoch(self) -> int:
        size, count = self.world.size, len(self.training)
        per_epoch = count // size // self.config.batch_size
        if per_epoch == 0:
            share = f" (of which each of the {size} processes gets {count // size})" if self.world.distributed else ""
            raise ConfigError(
                f"batch size {self.config.batch_size} is larger than the {count} training windows{share}; lower --batch-size"
            )
        return per_epoch

    def _log(self, record: dict[str, Any]) -> None:
        if self.on_log:
            self.on_log(record)

    def non_finite(self) -> TrainingError:
        kept = self.folder.kept_message() if self.folder is not None else "rank 0's last checkpoint is intact"
        return TrainingError(
            f"the loss or its gradient is not finite at step {self.step + 1}; {kept}. "
            "Lower --lr, raise --clip, check the data, or pass --skip-nonfinite"
        )

    def after_step(self, epoch: int, result: StepResult, *, periodic: bool) -> None:
        """Validate, save and log every ``every`` steps; live figures a few times a second."""
        self.window_steps += 1
        out = result.output
        if periodic:
            self._periodic(epoch, result)
        elif self.on_log and time.perf_counter() - self.last_live > 0.25:
            # .item() waits for the device, which every step would slow a GPU down.
            self.last_live = time.perf_counter()
            self._log({"step": self.step, "total": self.total, "loss": out.loss.item(), "nll": out.nll.item(),
                       "kl": out.kl.item(), "live": True})

    def _periodic(self, epoch: int, result: StepResult) -> None:
        start = time.perf_counter()
        elapsed = start - self.window_start
        states = gather_states(self.noise.get_state(), self.world)
        failure = None
        if self.folder is not None:
            out, config = result.output, self.config
            self.metrics = {
                "step": self.step, "epoch": epoch, "loss": out.loss.item(), "nll": out.nll.item(),
                "kl": out.kl.item(), "bits_per_dim": out.bits_per_dim.item(), "kl_weight": result.kl_weight,
                "lr": self.optimizer.param_groups[0]["lr"],
                "sequences_per_s": self.window_steps * config.batch_size * self.world.size / max(elapsed, 1e-9),
            }
            if self.validation is not None and len(self.validation) > 0:
                self.metrics.update(evaluate_loss(self.model, self.validation, config, self.device))
            try:
                self.folder.save(self.model, self.optimizer, states, self.step, epoch, self.metrics)
            except TrainingError as error:
                failure = error
            if failure is None:
                self._log({**self.metrics, "total": self.total})
        if any_rank(failure is not None, self.world):
            raise failure or TrainingError(f"rank 0 could not save step {self.step}; see its message")
        self.timings["periodic"] += time.perf_counter() - start
        self.window_start, self.window_steps = time.perf_counter(), 0


def _batches(
    training: Dataset, config: TrainConfig, world: World, step: int, per_epoch: int, total: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, batch) from global step ``step`` up to ``total``, in the seed's order.

    Each epoch is one permutation drawn from (seed, epoch) by a ``DistributedSampler``, whose
    ``set_epoch`` is called at every epoch; each process takes its own share of it (all of it
    when there is one process). A resumed run skips the batches it has already trained on."""
    sampler = DistributedSampler(
        training, num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        size = config.batch_size
        batches = [indices[i : i + size] for i in range(0, per_epoch * size, size)][offset:]
        batches = batches[: total - step]
        loader = DataLoader(training, batch_sampler=batches, num_workers=config.workers, persistent_workers=False)
        for batch in loader:
            yield epoch, batch
            step += 1


@torch.no_grad()
def evaluate_loss(model: VRNN, dataset: Dataset, config: TrainConfig, device: torch.device, max_batches: int = 8) -> dict[str, float]:
    """Validation ELBO figures over up to ``max_batches`` batches, with fixed noise."""
    generator = torch.Generator().manual_seed(config.seed + 2)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False)
    totals = {"val_loss": 0.0, "val_nll": 0.0, "val_kl": 0.0, "val_bits_per_dim": 0.0}
    count = 0
    for i, batch in enumerate(loader):
        if i == max_batches:
            break
        out = model(batch.to(device), generator=generator)
        n = batch.shape[0]
        for key, value in (("val_loss", out.nll + out.kl), ("val_nll", out.nll), ("val_kl", out.kl), ("val_bits_per_dim", out.bits_per_dim)):
            totals[key] += value.item() * n
        count += n
    return {key: value / max(count, 1) for key, value in totals.items()}


class _InterruptFlag:
    """While active, SIGINT (Ctrl-C) and SIGTERM (a scheduler's notice, torchrun stopping its
    workers) set ``raised`` instead of interrupting: the loop stops at the end of a step, so
    the saved optimizer and weights are never half-updated."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _InterruptFlag:
        for number in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave the signals alone
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

