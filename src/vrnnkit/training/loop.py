"""The training loop: ``train`` runs a whole run, ``train_step`` one optimizer step of it.

    run = vrnnkit.training.train(TrainConfig(steps=500), "runs/demo")

Runs are reproducible: the data order of each epoch comes from the seed and the epoch, the
latent noise from a generator whose state is saved, so on the CPU a resumed run ends with the
same weights as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from vrnnkit.errors import TrainingError
from vrnnkit.io.runs import read_metrics
from vrnnkit.model import VRNN, VRNNOutput
from vrnnkit.model.initialization import has_logit_output, init_output_bias
from vrnnkit.model.inputs import sample_feedback
from vrnnkit.resources.sizing import check_training_memory
from vrnnkit.training.batching import (
    TrainingData,
    augmented,
    batches_per_epoch,
    iterate_batches,
    load_training_data,
    to_device,
    validation_batches,
)
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
    mask: torch.Tensor | None = None,
    actions: torch.Tensor | None = None,
) -> StepResult:
    """One optimizer step on ``batch`` (B, T, *frame), already on the model's device, as
    ``vrnnkit train`` takes it: KL annealing, autocast, backward through the grad scaler,
    gradient clipping, and the step only when the loss and the gradient norm are finite.
    ``mask`` (B, T) marks the real steps of a padded batch; the loss counts only those. ``actions`` (B, T, A): the inputs.

    ``model`` may be wrapped in ``DistributedDataParallel`` (then pass ``distributed=True``):
    every rank must run backward, which holds the gradient all-reduce; the gradients are then
    the same everywhere, so their norm decides the same on every rank."""
    kl_weight = min(1.0, (step + 1) / config.kl_anneal) if config.kl_anneal else 1.0
    dtype = AUTOCAST_DTYPES.get(config.precision)
    device_type = batch.device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        output = model(
            batch, mask=mask, actions=actions, kl_weight=kl_weight, free_bits=config.free_bits, generator=generator,
            objective=config.objective, particles=config.particles, resample_threshold=config.resample_threshold,
            gradient=config.gradient,
        )
    optimizer.zero_grad(set_to_none=True)
    finite = distributed or bool(torch.isfinite(output.loss))
    if finite and output.surrogate is not None:  # dreg: the posterior's parameters take the surrogate's gradient
        own = {id(p) for p in getattr(model, "module", model).posterior.parameters()}
        split = [[p for p in model.parameters() if p.requires_grad and (id(p) in own) == side] for side in (False, True)]
        scaler.scale(output.loss).backward(inputs=split[0], retain_graph=bool(split[1]))
        if split[1]:  # a posterior block may have no parameters of its own
            scaler.scale(output.surrogate).backward(inputs=split[1])
    elif finite:
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
    tracker: Any = None,
) -> TrainResult:
    """Train a VRNN as ``config`` says, writing the run folder ``out``.

    With ``resume=True`` the run continues from the checkpoint in ``out``. ``on_log`` receives
    every metrics record (also written to ``metrics.jsonl``), and a first record with
    ``event: "start"``; ``on_step(step, model)`` is called after every optimizer step. SIGINT
    (Ctrl-C) and SIGTERM stop the run at the end of the current step, save it and return with
    ``interrupted=True``. ``tracker`` (a ``vrnnkit.tracking`` tracker, rank 0's) receives the
    figures of every metrics record and, at each validation, a few clips sampled from the prior.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this function inside a process
    group (``vrnnkit.train`` sets one up; see ``process_group``): the model is wrapped in
    ``DistributedDataParallel``, each process trains on its own share of every epoch's batches
    with latent noise of its own, and rank 0 alone logs and writes the run folder. The batch
    size is per process: a step sees ``batch_size * world_size`` sequences.
    """
    world = world or current_world()
    require_group(world)
    run = _Run(config, Path(out), world, resume, on_log if world.is_main else None)
    run.tracker = tracker if world.is_main else None
    try:
        interrupted = _loop(run, on_step)
    finally:
        # The DDP wrapper's reducer holds the process group, which its owner destroys next.
        run.trained = run.model
    published = run.average or run.model
    if run.folder is not None and not interrupted and published.config.is_image:
        run.folder.write_samples(published, run.step, actions=run.data.plans(8, config.seq_len))
    return TrainResult(run.run_dir, run.step, interrupted, run.metrics, run.timings, model=published, world_size=world.size)


def _loop(run: _Run, on_step: Callable[[int, VRNN], None] | None) -> bool:
    """The steps from ``run.step`` to ``run.total``; whether Ctrl-C or SIGTERM stopped them."""
    config, world = run.config, run.world
    loop_start, stopped = time.perf_counter(), False
    with _InterruptFlag() as stop:
        for epoch, batch in iterate_batches(run.data, config, world, run.step, run.per_epoch, run.total):
            model_start = time.perf_counter()
            frames, mask, actions = augmented(to_device(batch, run.device), config, run.noise)
            run.set_lr()
            result = train_step(
                run.trained, frames, run.optimizer, run.scaler, config,
                step=run.step, generator=run.noise, distributed=world.distributed, mask=mask, actions=actions,
            )
            if not result.finite and not config.skip_nonfinite:
                raise run.non_finite()
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)  # so the model time below is the GPU's too
            run.update_average()
            run.timings["model"] += time.perf_counter() - model_start
            run.step += 1
            if on_step:
                on_step(run.step, run.model)
            stopping = any_rank(stop.raised, world)
            run.after_step(epoch, result, periodic=run.step % config.every == 0 or run.step == run.total or stopping)
            if stopping:
                stopped = True
                break
    run.timings["loop"] = time.perf_counter() - loop_start
    return stopped


class _Run:
    """The state of one run: data, model, optimizer, noise and the run folder, set up in the
    order that makes runs reproducible, and what happens after each step."""

    def __init__(
        self, config: TrainConfig, run_dir: Path, world: World, resume: bool,
        on_log: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        if config.steps is None and config.epochs is None:
            config = dataclasses.replace(config, steps=DEFAULT_STEPS)  # recorded: a resumed run keeps its length
        config.check_processes(world.size)  # under torchrun as under --nproc, before anything is written
        self.config, self.run_dir, self.world, self.on_log = config, run_dir, world, on_log
        self.device = resolve_device(config.device, world)
        torch.manual_seed(config.seed)  # the same initial weights in every process
        self.data = load_training_data(config)  # before the run folder exists
        self.training, self.validation = self.data.training, self.data.validation
        model_config = config.model_config(self.data.frame_shape, action_dim=self.data.action_dim)
        check_training_memory(model_config, batch_size=config.batch_size, seq_len=config.seq_len,
                              ema=config.ema > 0, device=self.device, particles=config.particles)
        self.model = VRNN(model_config).to(self.device)
        self.output_bias = not resume and _init_bias(self.model, self.data, config)
        if config.compile:
            self.model.compile_blocks()
        self.optimizer = _optimizer(self.model, config)
        self.noise = torch.Generator(device="cpu").manual_seed(noise_seed(config.seed, world.rank))
        self.per_epoch = batches_per_epoch(self.data, config, world)
        self.total = config.steps or config.epochs * self.per_epoch
        self.folder = RunFolder(run_dir, config, world, note_range=self.data.note_range) if world.is_main else None
        self.step, self.wall_offset, self.started, self.tracker = 0, 0.0, time.perf_counter(), None
        # The averaged weights (--ema) start from the trained ones; resuming continues the saved average.
        self.average = copy.deepcopy(self.model) if config.ema > 0 else None
        self.averaged_steps = 0
        if resume:
            self.step, best, self.averaged_steps = load_state(run_dir, self.model, self.optimizer, self.noise, self.device,
                                                              world, config.seed, average=self.average)
            if self.folder is not None:
                self.folder.resume(self.step, best)
                self.wall_offset = _last_wall(run_dir)
        elif self.folder is not None:
            self.folder.start()
        if self.folder is not None:
            self.folder.write_config(self.model.config)
        self._log({
            "event": "start", "step": self.step, "total": self.total, "device": str(self.device), "world_size": world.size,
            "batch_size": config.batch_size, "effective_batch_size": config.batch_size * world.size,
            "parameters": self.model.num_parameters(), "run_dir": str(run_dir), "output_bias": self.output_bias,
            "padded": self.data.padded,
        })
        self.scaler = make_scaler(config, self.device)
        self.metrics: dict[str, float] = {}
        self.timings = {"loop": 0.0, "model": 0.0, "periodic": 0.0}
        self.window_start, self.window_steps, self.last_live = time.perf_counter(), 0, time.perf_counter()
        self.trained: nn.Module = self.model
        if world.distributed:
            # Every parameter takes part in every loss, so no find_unused_parameters.
            self.trained = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def set_lr(self) -> None:
        """The learning rate of this step: constant, or a cosine from ``lr`` down to 5% of it."""
        if self.config.lr_schedule == "cosine":
            progress = min(1.0, self.step / max(1, self.total - 1))
            rate = self.config.lr * (0.05 + 0.475 * (1.0 + math.cos(math.pi * progress)))
            for group in self.optimizer.param_groups:
                group["lr"] = rate

    def update_average(self) -> None:
        """Move the averaged weights (``ema``) towards the trained ones; the decay warms up as
        ``(1 + n) / (10 + n)`` over the n steps averaged so far, so early averages do not
        linger on the initial weights."""
        if self.average is None:
            return
        self.averaged_steps += 1
        decay = min(self.config.ema, (1 + self.averaged_steps) / (10 + self.averaged_steps))
        with torch.no_grad():
            for averaged, current in zip(self.average.parameters(), self.model.parameters(), strict=True):
                averaged.lerp_(current, 1.0 - decay)

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
                "wall_s": self.wall_offset + start - self.started,
            }
            published = self.average or self.model
            if self.validation is not None and len(self.validation) > 0:
                self.metrics.update(evaluate_loss(published, self.validation, config, self.device, padded=self.data.padded))
            try:
                self.folder.save(self.model, self.optimizer, states, self.step, epoch, self.metrics, published=published,
                                 averaged_steps=self.averaged_steps)
            except TrainingError as error:
                failure = error
            if failure is None:
                self._log({**self.metrics, "total": self.total})
                self._track(published)
        if any_rank(failure is not None, self.world):
            raise failure or TrainingError(f"rank 0 could not save step {self.step}; see its message")
        self.timings["periodic"] += time.perf_counter() - start
        self.window_start, self.window_steps = time.perf_counter(), 0

    def _track(self, published: VRNN) -> None:
        """The figures to the tracker; at a validation, also four clips sampled from the prior."""
        if self.tracker is None:
            return
        self.tracker.log_scalars(self.step, self.metrics)
        if "val_loss" in self.metrics:
            was_training = published.training
            published.eval()
            try:
                with torch.no_grad():
                    generator = torch.Generator().manual_seed(self.config.seed)
                    steps = self.config.seq_len or 32
                    clips = published.sample(4, steps, generator=generator, feedback=sample_feedback(published), actions=self.data.plans(4, steps))
            finally:
                published.train(was_training)
            self.tracker.log_samples(self.step, clips)


@torch.no_grad()
def evaluate_loss(
    model: VRNN, dataset: Dataset, config: TrainConfig, device: torch.device, max_batches: int = 8, *, padded: bool = False,
) -> dict[str, float]:
    """Validation ELBO figures, in eval mode (no dropout) with fixed noise: over up to
    ``max_batches`` batches, or over every item of ``padded`` data (sequences of different
    lengths), which also gives ``val_elbo_per_step``, nats per real time step. A run trained
    on ``iwae`` or ``fivo`` also gets that bound (``val_iwae``, ``val_fivo``, with the
    training's particles), and its ``val_loss`` (which picks best.safetensors) is minus that
    bound: the figure the run optimises."""
    generator = torch.Generator().manual_seed(config.seed + 2)
    bound_name = None if config.objective == "elbo" else f"val_{config.objective}"
    totals = {"val_loss": 0.0, "val_nll": 0.0, "val_kl": 0.0, "val_bits_per_dim": 0.0}
    count, sums, steps = 0, {"elbo": 0.0, "bound": 0.0}, 0.0
    was_training = model.training
    model.eval()
    try:
        for batch in validation_batches(dataset, config.batch_size, padded, max_batches):
            x, mask, actions = to_device(batch, device)
            out = model(x, mask=mask, actions=actions, generator=generator)
            loss = out.nll + out.kl
            if bound_name is not None:
                bound = model(x, mask=mask, actions=actions, generator=generator, objective=config.objective,
                              particles=config.particles, resample_threshold=config.resample_threshold).elbo
                sums["bound"] += float(bound.double().sum())
                loss = -bound.mean()
            n = x.shape[0]
            for key, value in (("val_loss", loss), ("val_nll", out.nll), ("val_kl", out.kl), ("val_bits_per_dim", out.bits_per_dim)):
                totals[key] += value.item() * n
            count += n
            sums["elbo"] += float(out.elbo.double().sum())
            steps += float(mask.sum()) if mask is not None else x.shape[0] * x.shape[1]
    finally:
        model.train(was_training)
    figures = {key: value / max(count, 1) for key, value in totals.items()}
    if bound_name is not None:
        figures[bound_name] = sums["bound"] / max(count, 1)
    if padded:
        figures["val_elbo_per_step"] = sums["elbo"] / max(steps, 1.0)
        if bound_name is not None:
            figures[f"{bound_name}_per_step"] = sums["bound"] / max(steps, 1.0)
    return figures


def _last_wall(run_dir: Path) -> float:
    """The training time a resumed run had already spent (its last metrics record's)."""
    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else []
    return float(records[-1].get("wall_s", 0.0)) if records else 0.0


def _optimizer(model: VRNN, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or AdamW with ``weight_decay`` > 0."""
    if config.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def _init_bias(model: VRNN, data: TrainingData, config: TrainConfig) -> bool:
    """Start a Bernoulli model's mlp-decoder output bias at the logit of the training data's
    mean (``output_bias``); whether it was set."""
    c = model.config
    if not config.output_bias or not has_logit_output(model) or c.decoder != "mlp":
        return False
    init_output_bias(model, data.bias_sequences())
    return True


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

