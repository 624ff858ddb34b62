"""Training: one loop that the command line and notebooks share.

    run = vrnnkit.training.train(TrainConfig(steps=500, out="runs/demo"))

A run folder holds everything needed to use or continue the run:

    model.safetensors    the model, self-contained (``vrnnkit.load`` reads it alone)
    trainer.safetensors  optimizer state, step, epoch, random-generator states (no pickle)
    config.json          the resolved training configuration
    metrics.jsonl        one JSON line per logging step
    samples.gif          clips sampled at the end (image models)

Runs are reproducible: the data order of each epoch comes from the seed and the epoch, the
latent noise from a generator whose state is saved, so on the CPU a resumed run ends with the
same weights as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vrnnkit._atomic import atomic_path, write_json
from vrnnkit.checkpoint import save
from vrnnkit.config import VRNNConfig
from vrnnkit.errors import CheckpointError, ConfigError, RunError
from vrnnkit.model import VRNN
from vrnnkit.registry import KINDS

BUILTIN_DATA = ("bouncing-balls", "moving-mnist", "seq-mnist")
TRAINER_FORMAT = "vrnnkit-trainer"
TRAINER_FORMAT_VERSION = "2"
DEFAULT_STEPS = 1500  # with neither steps nor epochs: the default run, a few minutes on a CPU


class TrainingError(RunError):
    """Training cannot go on: a non-finite loss, a device that is not there, a broken run folder."""


@dataclass
class TrainConfig:
    """Every option of ``vrnnkit train``, with its default."""

    data: str = "bouncing-balls"
    mnist_dir: str | None = None
    layout: str | None = None
    num_sequences: int = 2000  # generated datasets: how many sequences
    encoder: str = "auto"
    decoder: str = "auto"
    prior: str = "mlp"
    posterior: str = "mlp"
    rnn: str = "gru"
    likelihood: str = "bernoulli"
    # The defaults make `vrnnkit train` with no arguments a run of a few minutes on a 2-core
    # CPU that ends with recognisable, moving balls; larger data wants larger settings.
    h_dim: int = 64
    z_dim: int = 16
    layers: int = 1
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    clip: float = 10.0
    kl_anneal: int = 200
    free_bits: float = 0.0
    seq_len: int = 10
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 0
    every: int = 250
    keep: int = 3  # checkpoints/ keeps the model of the last `keep` saves; 0 keeps none
    compile: bool = False
    skip_nonfinite: bool = False
    block_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = ("num_sequences", "h_dim", "z_dim", "layers", "batch_size", "seq_len", "every")
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if not _positive_int(getattr(self, k))]
        bad += [f"{k}={getattr(self, k)!r}" for k in ("steps", "epochs") if getattr(self, k) is not None and not _positive_int(getattr(self, k))]
        if not _non_negative_int(self.kl_anneal):
            bad.append(f"kl_anneal={self.kl_anneal!r}")
        for name in ("workers", "seed", "keep"):
            if not _non_negative_int(getattr(self, name)):
                bad.append(f"{name}={getattr(self, name)!r}")
        if bad:
            raise ConfigError(f"expected positive whole numbers (kl_anneal, workers, seed and keep may be 0), got {', '.join(bad)}")
        for name in ("lr", "clip", "free_bits"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ConfigError("lr must be > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if not isinstance(self.block_options, dict):
            raise ConfigError(f"block_options must be a table of tables keyed by block kind ({', '.join(KINDS)}), got {self.block_options!r}")
        for kind, options in self.block_options.items():
            if kind not in KINDS:
                raise ConfigError(f"block_options has an unknown block kind {kind!r}; expected one of {', '.join(KINDS)}")
            if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
                raise ConfigError(f"block_options.{kind} must be a table of named options, got {options!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (a TOML file, say), rejecting unknown keys and wrong types."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a table of options, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k if isinstance(k, str) else repr(k) for k in set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown options: {', '.join(unknown)}; valid options: {', '.join(sorted(fields))}")
        for f in dataclasses.fields(cls):
            if f.name in data and not _type_fits(data[f.name], f.type):
                raise ConfigError(f"option {f.name!r} must be {_type_words(str(f.type))}, got {data[f.name]!r}")
        return cls(**data)


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


# ----------------------------------------------------------------------------- data


MNIST_TRAIN_DIGITS = 8000  # of the 10,000 test digits: the first for training, the rest held out


def open_source(
    data: str,
    *,
    count: int,
    length: int,
    seed: int,
    mnist_dir: str | None = None,
    layout: str | None = None,
    held_out: bool = False,
) -> Any:
    """The sequences a data argument names, as a ``vrnnkit.data.SequenceArray``.

    Built-in datasets are generated (``count`` sequences of ``length`` frames); ``held_out``
    gives evaluation data that training never sees: other random draws for bouncing balls,
    the last 2,000 MNIST digits for the MNIST datasets. Anything else is a file.
    """
    from vrnnkit.data import SequenceArray, open_sequences

    rng = np.random.default_rng([seed, 1] if held_out else seed)
    if data == "bouncing-balls":
        from vrnnkit.data import bouncing_balls

        videos = bouncing_balls(count, length=length, size=32, seed=rng)
        return SequenceArray(np.rint(videos * 255).astype(np.uint8), layout="NTHW", source="bouncing-balls")
    if data in ("moving-mnist", "seq-mnist"):
        from vrnnkit.data import load_mnist, moving_mnist, sequential_mnist

        if mnist_dir is None:
            raise ConfigError(f"data {data!r} needs --mnist-dir: a folder with the MNIST IDX files")
        images, _ = load_mnist(mnist_dir, split="test")
        digits = np.arange(MNIST_TRAIN_DIGITS, len(images)) if held_out else np.arange(min(MNIST_TRAIN_DIGITS, len(images)))
        if data == "moving-mnist":
            videos = moving_mnist(images, count, length=length, stochastic=True, indices=digits, seed=rng)
            return SequenceArray(videos, layout="NTHW", source="moving-mnist")
        return SequenceArray(sequential_mnist(images[digits]), layout="NTD", source="seq-mnist")
    path = Path(data)
    if not path.exists() and "." not in path.name:
        raise ConfigError(f"data {data!r} is neither a file nor a built-in dataset ({', '.join(BUILTIN_DATA)})")
    return open_sequences(path, layout=layout)


def build_dataset(config: TrainConfig) -> tuple[Dataset, Dataset | None, tuple[int, ...]]:
    """The training and validation windows and the frame shape, from ``config.data``."""
    from vrnnkit.data import WindowDataset, train_val_split

    sequences = open_source(
        config.data, count=config.num_sequences, length=config.seq_len, seed=config.seed,
        mnist_dir=config.mnist_dir, layout=config.layout,
    )
    if config.likelihood == "bernoulli" and sequences.dtype not in (np.uint8, np.bool_):
        sequences.check_unit_range()  # before the run folder exists
    if config.val_fraction > 0 and len(sequences) >= 2:
        train_ids, val_ids = train_val_split(len(sequences), config.val_fraction, seed=config.seed)
        validation = WindowDataset(sequences, config.seq_len, indices=val_ids)
    else:
        train_ids, validation = None, None
    training = WindowDataset(sequences, config.seq_len, indices=train_ids)
    return training, validation, tuple(sequences.frame_shape)


# ----------------------------------------------------------------------------- the loop


def resolve_device(name: str, world: World | None = None) -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda``/``mps``, or a one-line reason it is absent.

    Under ``torchrun`` each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is available to this PyTorch build on this machine")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise TrainingError("--device mps: Apple's Metal backend is not available on this machine")
    if name == "cuda" and world is not None and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"process {world.rank} has local rank {world.local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPUs; start at most one process per GPU"
            )
        name = f"cuda:{world.local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def model_config(config: TrainConfig, frame_shape: tuple[int, ...]) -> VRNNConfig:
    options = config.block_options
    return VRNNConfig(
        frame_shape=frame_shape, h_dim=config.h_dim, z_dim=config.z_dim, rnn_layers=config.layers,
        encoder=config.encoder, decoder=config.decoder, prior=config.prior, posterior=config.posterior,
        rnn=config.rnn, likelihood=config.likelihood,
        **{f"{kind}_options": dict(options.get(kind, {})) for kind in KINDS},
    )


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one, or those ``torchrun`` started)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    """The world as ``torch.distributed`` or ``torchrun``'s environment describes it."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def join_world(device_name: str) -> tuple[World, bool]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    gloo on the CPU, nccl on CUDA. Returns the world and whether this call created the group
    (and so should destroy it)."""
    world = current_world()
    if not world.distributed or dist.is_initialized():
        return world, False
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    if backend == "nccl" and world.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(world.local_rank)  # before any collective: one GPU per process
    try:
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    except (RuntimeError, ValueError) as error:
        raise TrainingError(f"could not join the {world.size} training processes over {backend}: {error}") from None
    return current_world(), True


def broadcast_text(text: str, world: World) -> str:
    """Rank 0's ``text`` on every rank (a run folder name, say): bytes in a tensor, no pickle."""
    if not world.distributed:
        return text
    data = torch.zeros(1024, dtype=torch.uint8, device=_collective_device())
    encoded = text.encode("utf-8")[:1023]
    if world.is_main:
        data[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).rstrip(b"\0").decode("utf-8")


def _collective_device() -> torch.device:
    """Where tensors for collectives live: this process's GPU under nccl, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _gather_states(state: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Every rank's random-generator state, on every rank (the checkpoint keeps them all)."""
    if not world.distributed:
        return [state]
    on = _collective_device()
    gathered = [torch.empty_like(state, device=on) for _ in range(world.size)]
    dist.all_gather(gathered, state.to(on))
    return [g.cpu() for g in gathered]


def noise_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s latent noise: each process draws other noise, all from the run's seed."""
    return seed + 1 + 1_000_003 * rank


# ----------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, VRNN], None] | None = None,
) -> TrainResult:
    """Train a VRNN as ``config`` says, writing the run folder ``out``.

    With ``resume=True`` the run continues from the checkpoint in ``out``. ``on_log`` receives
    every metrics record (also written to ``metrics.jsonl``), and a first record with
    ``event: "start"``; ``on_step(step, model)`` is called after every optimizer step. SIGINT
    (Ctrl-C) and SIGTERM stop the run at the end of the current step, save it and return with
    ``interrupted=True``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this function: the model is
    wrapped in ``DistributedDataParallel``, each process trains on its own share of every
    epoch's batches with latent noise of its own, and rank 0 alone logs and writes the run
    folder. The batch size is per process: a step sees ``batch_size * world_size`` sequences.
    """
    world, owns_group = join_world(config.device)
    try:
        return _train(config, Path(out), world, resume, on_log if world.is_main else None, on_step)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    run_dir: Path,
    world: World,
    resume: bool,
    on_log: Callable[[dict[str, Any]], None] | None,
    on_step: Callable[[int, VRNN], None] | None,
) -> TrainResult:
    device = resolve_device(config.device, world)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    training, validation, frame_shape = build_dataset(config)
    model = VRNN(model_config(config, frame_shape)).to(device)
    if config.compile:
        model.compile_blocks()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    noise = torch.Generator(device="cpu").manual_seed(noise_seed(config.seed, world.rank))
    batches_per_epoch = len(training) // world.size // config.batch_size
    if batches_per_epoch == 0:
        share = f" (of which each of the {world.size} processes gets {len(training) // world.size})" if world.distributed else ""
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the {len(training)} training windows{share}; lower --batch-size"
        )
    if config.steps is not None:
        total = config.steps
    elif config.epochs is not None:
        total = config.epochs * batches_per_epoch
    else:
        total = DEFAULT_STEPS
    saver = _Saver(run_dir, config, world) if world.is_main else None
    step, best = 0, math.inf
    if resume:
        step, best = _load_state(run_dir, model, optimizer, noise, device, world, config.seed)
        if saver is not None:
            saver.saved_step, saver.best = step, best
            saver.remove_stale_temporaries()
            _repair_metrics(run_dir / "metrics.jsonl", step)
    elif saver is not None:
        saver.start()
    if saver is not None:
        saver.write_config(model.config)
    if on_log:
        on_log({
            "event": "start", "step": step, "total": total, "device": str(device), "world_size": world.size,
            "batch_size": config.batch_size, "effective_batch_size": config.batch_size * world.size,
            "parameters": model.num_parameters(), "run_dir": str(run_dir),
        })
    trained: nn.Module = model
    if world.distributed:
        # Every parameter takes part in every loss, so no find_unused_parameters.
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    stop = _InterruptFlag()
    interrupted = False
    metrics: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    timings = {"loop": 0.0, "model": 0.0, "periodic": 0.0}
    loop_start = last_live = time.perf_counter()
    with stop:
        for epoch, batch in _batches(training, config, world, step, batches_per_epoch, total):
            model_start = time.perf_counter()
            x = batch.to(device, non_blocking=True)
            kl_weight = min(1.0, (step + 1) / config.kl_anneal) if config.kl_anneal else 1.0
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out_ = trained(x, kl_weight=kl_weight, free_bits=config.free_bits, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            # With several processes every rank must run backward (it holds the gradient
            # all-reduce); the gradients are then the same everywhere, so their norm decides
            # the same on every rank.
            finite = world.distributed or bool(torch.isfinite(out_.loss))
            if finite:
                scaler.scale(out_.loss).backward()
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip if config.clip > 0 else float("inf"))
                finite = bool(torch.isfinite(norm)) or config.precision == "fp16"
            if not finite and not config.skip_nonfinite:
                if saver is None:
                    kept = "rank 0's last checkpoint is intact"
                elif saver.saved_step:
                    kept = f"the checkpoint of step {saver.saved_step} in {run_dir} is intact"
                else:
                    kept = "no checkpoint had been saved yet"
                raise TrainingError(
                    f"the loss or its gradient is not finite at step {step + 1}; {kept}. "
                    "Lower --lr, raise --clip, check the data, or pass --skip-nonfinite"
                )
            if finite:
                scaler.step(optimizer)
                scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # so the model time below is the GPU's too
            timings["model"] += time.perf_counter() - model_start
            step += 1
            window_steps += 1
            if on_step:
                on_step(step, model)
            stopping = _any_rank(stop.raised, world)
            if step % config.every == 0 or step == total or stopping:
                periodic_start = time.perf_counter()
                elapsed = time.perf_counter() - window_start
                states = _gather_states(noise.get_state(), world)
                failure = None
                if saver is not None:
                    metrics = {
                        "step": step, "epoch": epoch, "loss": out_.loss.item(), "nll": out_.nll.item(),
                        "kl": out_.kl.item(), "bits_per_dim": out_.bits_per_dim.item(), "kl_weight": kl_weight,
                        "lr": optimizer.param_groups[0]["lr"],
                        "sequences_per_s": window_steps * config.batch_size * world.size / max(elapsed, 1e-9),
                    }
                    if validation is not None and len(validation) > 0:
                        metrics.update(evaluate_loss(model, validation, config, device))
                    try:
                        saver.save(model, optimizer, states, step, epoch, metrics)
                    except TrainingError as error:
                        failure = error
                    if on_log and failure is None:
                        on_log({**metrics, "total": total})
                if _any_rank(failure is not None, world):
                    raise failure or TrainingError(f"rank 0 could not save step {step}; see its message")
                timings["periodic"] += time.perf_counter() - periodic_start
                window_start, window_steps = time.perf_counter(), 0
            elif on_log and time.perf_counter() - last_live > 0.25:
                # Live figures for a progress bar, a few times a second: .item() waits for the
                # device, which every step would slow a GPU down.
                last_live = time.perf_counter()
                on_log({"step": step, "total": total, "loss": out_.loss.item(), "nll": out_.nll.item(), "kl": out_.kl.item(), "live": True})
            if stopping:
                interrupted = True
                break
    timings["loop"] = time.perf_counter() - loop_start
    if saver is not None and not interrupted and model.config.is_image:
        try:
            write_samples_gif(model, run_dir / "samples.gif", steps=config.seq_len, seed=config.seed)
        except OSError as error:
            raise TrainingError(
                f"trained and saved step {step} in {run_dir}, but could not write samples.gif: {error.strerror or error}"
            ) from None
    return TrainResult(run_dir, step, interrupted, metrics, timings, model=model, world_size=world.size)


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


# ----------------------------------------------------------------------------- files


def write_samples_gif(model: VRNN, path: Path, *, steps: int, seed: int, num: int = 8) -> None:
    """A looping GIF of ``num`` clips sampled from the prior, side by side (image models)."""
    from vrnnkit.render import write_clips

    write_clips(path, model.sample(num, steps, generator=torch.Generator().manual_seed(seed)))


class _Saver:
    """Rank 0's writes to the run folder. Every file is replaced atomically, and the trainer
    state (which holds the weights too) is written first: a crash at any moment leaves a
    complete checkpoint to resume from."""

    def __init__(self, run_dir: Path, config: TrainConfig, world: World) -> None:
        self.run_dir = run_dir
        self.config = config
        self.world = world
        self.saved_step = 0
        self.best = math.inf

    def _fail(self, action: str, error: OSError) -> TrainingError:
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        return TrainingError(f"cannot {action} in {self.run_dir}: {reason}{where}")

    def start(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        except FileExistsError:
            raise TrainingError(f"cannot create the run folder {self.run_dir}: a file of that name is in the way") from None
        except OSError as error:
            raise self._fail("create the run folder", error) from None

    def remove_stale_temporaries(self) -> None:
        """A killed process leaves the temporary file of the write it was in; drop them."""
        for folder in (self.run_dir, self.run_dir / "checkpoints"):
            for path in folder.glob(".*.tmp*"):
                path.unlink(missing_ok=True)

    def write_config(self, model_config: VRNNConfig) -> None:
        try:
            write_json(self.run_dir / "config.json", {"train": dataclasses.asdict(self.config), "model": model_config.to_dict()})
        except OSError as error:
            raise self._fail("write config.json", error) from None

    def save(
        self, model: VRNN, optimizer: torch.optim.Optimizer, noise_states: list[torch.Tensor],
        step: int, epoch: int, metrics: dict[str, float],
    ) -> None:
        for parameter in model.parameters():
            if not torch.isfinite(parameter).all():
                raise TrainingError(f"the weights hold NaN or inf at step {step}; nothing was saved, the last checkpoint is intact")
        val_loss = metrics.get("val_loss")
        best = min(self.best, val_loss) if val_loss is not None and math.isfinite(val_loss) else self.best
        try:
            # The metrics line first: a crash before the checkpoint leaves a line past it,
            # which resuming removes; the other order could lose a line.
            _append_jsonl(self.run_dir / "metrics.jsonl", metrics)
            _save_trainer(self.run_dir / "trainer.safetensors", model, optimizer, noise_states, step, epoch, best, self.world)
            header = {"step": str(step), "train_config": json.dumps(dataclasses.asdict(self.config))}
            if val_loss is not None:
                header["val_loss"] = repr(val_loss)
            latest = save(model, self.run_dir / "model.safetensors", metadata=header)
            if self.config.keep > 0:
                self._keep(latest, step)
            if val_loss is not None and val_loss == best and best < self.best:
                _link_or_copy(latest, self.run_dir / "best.safetensors")
        except (OSError, CheckpointError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            since = f"steps {self.saved_step + 1}-{step} are" if step > self.saved_step + 1 else f"step {step} is"
            kept = f"the checkpoint of step {self.saved_step}" if self.saved_step else "no earlier checkpoint"
            raise TrainingError(
                f"could not save step {step} in {self.run_dir}: {reason}. Training stopped; {since} not saved and "
                f"{kept} is intact. Free some space or fix the folder, then continue with: "
                f"vrnnkit train --resume {self.run_dir}"
            ) from None
        self.saved_step, self.best = step, best

    def _keep(self, latest: Path, step: int) -> None:
        """checkpoints/step-NNNNNNNN.safetensors for the last ``keep`` saves (hard links of the
        model file where the file system allows, so they cost no space until replaced)."""
        folder = self.run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        _link_or_copy(latest, folder / f"step-{step:08d}.safetensors")
        kept = sorted(folder.glob("step-*.safetensors"))
        for old in kept[: -self.config.keep]:
            old.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _save_trainer(
    path: Path, model: VRNN, optimizer: torch.optim.Optimizer, noise_states: list[torch.Tensor],
    step: int, epoch: int, best: float, world: World,
) -> None:
    tensors = {f"model.{name}": t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    for rank, state in enumerate(noise_states):
        tensors[f"rng.noise.{rank}"] = state
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "format": TRAINER_FORMAT, "format_version": TRAINER_FORMAT_VERSION, "step": str(step), "epoch": str(epoch),
        "best_val_loss": repr(best), "world_size": str(world.size), "model_config": model.config.to_json(),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _load_state(
    run_dir: Path, model: VRNN, optimizer: torch.optim.Optimizer, noise: torch.Generator, device: torch.device, world: World,
    seed: int,
) -> tuple[int, float]:
    """Restore weights, optimizer and random state from ``trainer.safetensors`` alone (it is
    written before ``model.safetensors``, so it is never the older of the two)."""
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
    if saved_config != model.config:
        raise ConfigError(
            f"cannot resume {run_dir}: its model was built with a different configuration; "
            "resume with the options the run was started with"
        )
    weights = {name[len("model."):]: t for name, t in tensors.items() if name.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(f"cannot resume: the weights in {trainer_path} do not fit the model") from None
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
    best = float(metadata.get("best_val_loss", "inf"))
    return step, best


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def _repair_metrics(path: Path, step: int) -> None:
    """Keep the complete lines up to ``step``: a crash may have left a half-written last line,
    and records after the checkpoint will be written again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _type_words(annotation: str) -> str:
    """``int | None`` -> "a whole number (or nothing)": a field's type in plain words."""
    words = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
             "dict": "a table of tables"}
    base = annotation.split("[", 1)[0].split("|")[0].strip()
    return words.get(base, base) + (" (or left out)" if "None" in annotation else "")


def _type_fits(value: Any, annotation: str) -> bool:
    """Whether ``value`` (from TOML or JSON) fits a field annotated ``annotation``, matched by
    whole type names ("str" does not fit "dict[str, ...]")."""
    text = str(annotation)
    names = set(re.findall(r"[A-Za-z_]+", text.split("[", 1)[0] if text.startswith("dict") else text))
    if value is None:
        return "None" in names
    if isinstance(value, bool):
        return "bool" in names
    if isinstance(value, int):
        return bool(names & {"int", "float"})
    if isinstance(value, float):
        return "float" in names
    if isinstance(value, str):
        return "str" in names
    if isinstance(value, dict):
        return "dict" in names
    return False
