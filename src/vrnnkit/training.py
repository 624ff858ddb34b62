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

import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from vrnnkit._atomic import atomic_path, write_json
from vrnnkit.checkpoint import load, save
from vrnnkit.config import VRNNConfig
from vrnnkit.errors import CheckpointError, ConfigError, RunError
from vrnnkit.model import VRNN

BUILTIN_DATA = ("bouncing-balls", "moving-mnist", "seq-mnist")
TRAINER_FORMAT = "vrnnkit-trainer"
TRAINER_FORMAT_VERSION = "1"
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
    compile: bool = False
    skip_nonfinite: bool = False
    block_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = ("num_sequences", "h_dim", "z_dim", "layers", "batch_size", "seq_len", "every")
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if not _positive_int(getattr(self, k))]
        bad += [f"{k}={getattr(self, k)!r}" for k in ("steps", "epochs") if getattr(self, k) is not None and not _positive_int(getattr(self, k))]
        if not _non_negative_int(self.kl_anneal):
            bad.append(f"kl_anneal={self.kl_anneal!r}")
        for name in ("workers", "seed"):
            if not _non_negative_int(getattr(self, name)):
                bad.append(f"{name}={getattr(self, name)!r}")
        if bad:
            raise ConfigError(f"expected positive whole numbers (kl_anneal, workers and seed may be 0), got {', '.join(bad)}")
        for name in ("lr", "clip", "free_bits"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ConfigError("lr must be > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (a TOML file, say), rejecting unknown keys and wrong types."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown options: {', '.join(unknown)}; valid options: {', '.join(sorted(fields))}")
        for f in dataclasses.fields(cls):
            if f.name in data and not _type_fits(data[f.name], f.type):
                raise ConfigError(f"option {f.name!r} must be {f.type}, got {data[f.name]!r}")
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
    if config.val_fraction > 0 and len(sequences) >= 2:
        train_ids, val_ids = train_val_split(len(sequences), config.val_fraction, seed=config.seed)
        validation = WindowDataset(sequences, config.seq_len, indices=val_ids)
    else:
        train_ids, validation = None, None
    training = WindowDataset(sequences, config.seq_len, indices=train_ids)
    return training, validation, tuple(sequences.frame_shape)


def _epoch_batches(size: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation drawn from (seed, epoch) alone, so a resumed run
    sees the same order; the last partial batch is dropped."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, size - batch_size + 1, batch_size)]


# ----------------------------------------------------------------------------- the loop


def resolve_device(name: str) -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda``/``mps``, or a one-line reason it is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is available to this PyTorch build on this machine")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise TrainingError("--device mps: Apple's Metal backend is not available on this machine")
    return torch.device(name)


def model_config(config: TrainConfig, frame_shape: tuple[int, ...]) -> VRNNConfig:
    options = config.block_options
    return VRNNConfig(
        frame_shape=frame_shape, h_dim=config.h_dim, z_dim=config.z_dim, rnn_layers=config.layers,
        encoder=config.encoder, decoder=config.decoder, prior=config.prior, posterior=config.posterior,
        rnn=config.rnn, likelihood=config.likelihood,
        **{f"{kind}_options": dict(options.get(kind, {})) for kind in ("encoder", "decoder", "prior", "posterior", "rnn", "likelihood")},
    )


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a VRNN as ``config`` says, writing the run folder ``out``.

    With ``resume=True`` the run continues from the checkpoint in ``out``. ``on_log`` receives
    every metrics record (also written to ``metrics.jsonl``). SIGINT (Ctrl-C) stops the run at
    the end of the current step, saves it and returns with ``interrupted=True``.
    """
    run_dir = Path(out)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    training, validation, frame_shape = build_dataset(config)
    model = VRNN(model_config(config, frame_shape)).to(device)
    if config.compile:
        # The blocks that run once over all B*T frames: one static shape each, so they compile
        # once. (On this project's 2-core CPU it took ~50 s and gave no speed; it is for GPUs.)
        model.encoder.compile()
        model.decoder.compile()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    noise = torch.Generator(device="cpu").manual_seed(config.seed + 1)
    batches_per_epoch = len(training) // config.batch_size
    if batches_per_epoch == 0:
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the {len(training)} training windows; lower --batch-size"
        )
    if config.steps is not None:
        total = config.steps
    elif config.epochs is not None:
        total = config.epochs * batches_per_epoch
    else:
        total = DEFAULT_STEPS
    step = 0
    if resume:
        step = _load_state(run_dir, model, optimizer, noise, device)
        _repair_metrics(run_dir / "metrics.jsonl", step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    write_json(run_dir / "config.json", {"train": dataclasses.asdict(config), "model": model.config.to_dict()})

    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    stop = _InterruptFlag()
    metrics: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    timings = {"loop": 0.0, "model": 0.0, "periodic": 0.0}
    loop_start = last_live = time.perf_counter()
    with stop:
        for epoch, batch in _batches(training, config, step, batches_per_epoch, total):
            model_start = time.perf_counter()
            x = batch.to(device, non_blocking=True)
            kl_weight = min(1.0, (step + 1) / config.kl_anneal) if config.kl_anneal else 1.0
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out_ = model(x, kl_weight=kl_weight, free_bits=config.free_bits, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(out_.loss))
            if finite:
                scaler.scale(out_.loss).backward()
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip if config.clip > 0 else float("inf"))
                finite = bool(torch.isfinite(norm)) or config.precision == "fp16"
            if not finite and not config.skip_nonfinite:
                raise TrainingError(
                    f"the loss or its gradient is not finite at step {step + 1}; the last checkpoint in {run_dir} "
                    "is intact. Lower --lr, raise --clip, check the data, or pass --skip-nonfinite"
                )
            if finite:
                scaler.step(optimizer)
                scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # so the model time below is the GPU's too
            timings["model"] += time.perf_counter() - model_start
            step += 1
            window_steps += 1
            if step % config.every == 0 or step == total or stop.raised:
                periodic_start = time.perf_counter()
                elapsed = time.perf_counter() - window_start
                metrics = {
                    "step": step, "epoch": epoch, "loss": out_.loss.item(), "nll": out_.nll.item(),
                    "kl": out_.kl.item(), "bits_per_dim": out_.bits_per_dim.item(), "kl_weight": kl_weight,
                    "lr": optimizer.param_groups[0]["lr"],
                    "sequences_per_s": window_steps * config.batch_size / max(elapsed, 1e-9),
                }
                if validation is not None and len(validation) > 0:
                    metrics.update(evaluate_loss(model, validation, config, device))
                _save_state(run_dir, model, optimizer, noise, step, epoch, config)
                _append_jsonl(run_dir / "metrics.jsonl", metrics)
                if on_log:
                    on_log({**metrics, "total": total})
                timings["periodic"] += time.perf_counter() - periodic_start
                window_start, window_steps = time.perf_counter(), 0
            elif on_log and time.perf_counter() - last_live > 0.25:
                # Live figures for a progress bar, a few times a second: .item() waits for the
                # device, which every step would slow a GPU down.
                last_live = time.perf_counter()
                on_log({"step": step, "total": total, "loss": out_.loss.item(), "nll": out_.nll.item(), "kl": out_.kl.item(), "live": True})
            if stop.raised:
                break
    timings["loop"] = time.perf_counter() - loop_start
    if not stop.raised and model.config.is_image:
        write_samples_gif(model, run_dir / "samples.gif", steps=config.seq_len, seed=config.seed)
    return TrainResult(run_dir, step, stop.raised, metrics, timings)


def _batches(training: Dataset, config: TrainConfig, step: int, per_epoch: int, total: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, batch) from global step ``step`` up to ``total``, in the seed's order."""
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        batches = _epoch_batches(len(training), config.batch_size, config.seed, epoch)[offset:]
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


def _save_state(run_dir: Path, model: VRNN, optimizer: torch.optim.Optimizer, noise: torch.Generator, step: int, epoch: int, config: TrainConfig) -> None:
    for parameter in model.parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingError(f"the weights hold NaN or inf at step {step}; nothing was saved, the last checkpoint is intact")
    tensors = {"rng.noise": noise.get_state(), "rng.torch": torch.get_rng_state()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {"format": TRAINER_FORMAT, "format_version": TRAINER_FORMAT_VERSION, "step": str(step), "epoch": str(epoch)}
    # The trainer state first, then the model: a crash between the two leaves a model one
    # period older than its trainer state, which _load_state refuses rather than mixing.
    with atomic_path(run_dir / "trainer.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    save(model, run_dir / "model.safetensors", metadata={"step": str(step), "train_config": json.dumps(dataclasses.asdict(config))})


def _load_state(run_dir: Path, model: VRNN, optimizer: torch.optim.Optimizer, noise: torch.Generator, device: torch.device) -> int:
    model_path, trainer_path = run_dir / "model.safetensors", run_dir / "trainer.safetensors"
    for path in (model_path, trainer_path):
        if not path.is_file():
            raise CheckpointError(f"cannot resume: {path} is missing (was {run_dir} written by vrnnkit train?)")
    saved = load(model_path, device=device)
    if saved.config != model.config:
        raise ConfigError(
            f"cannot resume {run_dir}: its model was built with a different configuration; "
            "resume with the options the run was started with"
        )
    model.load_state_dict(saved.state_dict())
    try:
        with safe_open(str(trainer_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{trainer_path} is not a readable trainer state ({error})") from None
    if metadata.get("format") != TRAINER_FORMAT or metadata.get("format_version") != TRAINER_FORMAT_VERSION:
        raise CheckpointError(f"{trainer_path} is not a vrnnkit trainer state of format {TRAINER_FORMAT_VERSION}")
    step = int(metadata["step"])
    model_step = _header(model_path).get("step")
    if model_step != str(step):
        raise CheckpointError(
            f"cannot resume {run_dir}: model.safetensors is at step {model_step} but trainer.safetensors at step {step}"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor.to(device) if key != "step" else tensor
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    noise.set_state(tensors["rng.noise"])
    torch.set_rng_state(tensors["rng.torch"])
    return step


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


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
    """While active, SIGINT sets ``raised`` instead of interrupting: the loop stops at the end
    of a step, so the saved optimizer and weights are never half-updated."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _type_fits(value: Any, annotation: str) -> bool:
    text = str(annotation)
    if value is None:
        return "None" in text
    if isinstance(value, bool):
        return text.startswith("bool")
    if isinstance(value, int):
        return "int" in text or "float" in text
    if isinstance(value, float):
        return "float" in text
    if isinstance(value, str):
        return "str" in text
    if isinstance(value, dict):
        return "dict" in text
    return False
