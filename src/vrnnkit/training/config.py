"""The training configuration: the run's own options, and the model it trains as a VRNNConfig.

Users write the options flat, in one namespace shared by a TOML file, the command line and
the keywords of ``vrnnkit.train``: ``h_dim = 32``, ``layers = 2``, ``decoder = "convT"``,
``[block_options.decoder] channels = 64``. ``TrainConfig.from_dict`` files the model's options
into ``TrainConfig.model`` (so the block names are checked against the registry before any
data is read) and the rest into the training fields; ``to_dict`` writes the flat form back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrnnkit.data.frames import format_size, parse_size
from vrnnkit.errors import ConfigError, is_count
from vrnnkit.model.config import VRNNConfig
from vrnnkit.model.objectives import GRADIENTS, OBJECTIVES
from vrnnkit.registry import KINDS

DEFAULT_STEPS = 1200  # with neither steps nor epochs: the default run, a few minutes on a CPU
OLD_DEFAULT_STEPS = 1500  # the default run's length in run folders that did not record theirs

# The defaults make `vrnnkit train` with no arguments a run of a few minutes on a 2-core CPU
# that ends with recognisable, moving balls; larger data wants larger settings.
MODEL_DEFAULTS: dict[str, Any] = {"frame_difference": None}  # None: on for image frames

MODEL_OPTIONS = {
    "encoder": "encoder", "decoder": "decoder", "prior": "prior", "posterior": "posterior", "rnn": "rnn",
    "likelihood": "likelihood", "h_dim": "h_dim", "z_dim": "z_dim", "feature_dim": "feature_dim",
    "latent_feature_dim": "latent_feature_dim", "layers": "rnn_layers",
    "skip_context": "skip_context", "skip_residual": "skip_residual", "frame_difference": "frame_difference",
    "action_embedding": "action_embedding",
}
"""The flat options that describe the model, and the VRNNConfig field each one sets."""
LR_SCHEDULES = ("constant", "cosine")
DROPOUT_BLOCKS = ("mlp", "smoothing", "gru", "lstm")
"""The blocks ``dropout`` (``--dropout``) applies to."""
BLOCK_OPTIONS = "block_options"
"""The flat option holding each block's own options: ``{kind: {name: value}}``."""


def default_model() -> VRNNConfig:
    """The model of ``vrnnkit train`` with no options: its frames come from the data."""
    return VRNNConfig(**MODEL_DEFAULTS)


@dataclass
class TrainConfig:
    """Every option of ``vrnnkit train``, with its default; ``model`` holds the model's."""

    data: str = "bouncing-balls"
    mnist_dir: str | None = None
    layout: str | None = None
    size: str | int | list[int] | None = None  # HEIGHTxWIDTH ("64x48") or a square (64); kept as "HxW"
    grey: bool = False
    skip_unreadable: bool = False  # a folder of clips: leave out a clip that cannot be read, with a warning
    flip: bool = False  # mirror each training window left to right at random (half of them)
    transpose: int = 0  # vectors (piano rolls): shift each training window by up to this many steps along D
    num_sequences: int = 2000  # generated datasets: how many sequences
    fps: float | None = None  # MIDI folders: steps per second (default: one step per quarter note)
    action_classes: int | None = None  # data with integer actions: their classes, one-hot encoded
    model: VRNNConfig = field(default_factory=default_model)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0  # > 0: AdamW's decoupled weight decay (0: Adam)
    lr_schedule: str = "cosine"  # from lr down to 5% of it at the last step, or "constant"
    dropout: float | None = None  # sets the dropout of every mlp block and of the gru/lstm
    ema: float = 0.99  # > 0: validate and save an exponential moving average of the weights (0: off)
    output_bias: bool = True  # Bernoulli + mlp decoder: start the output bias at the data's rates
    clip: float = 10.0
    kl_anneal: int = 200
    free_bits: float = 0.0
    objective: str = "elbo"  # or "iwae" / "fivo" with `particles` latent paths per sequence
    particles: int = 1
    resample_threshold: float = 0.5  # fivo: resample when the effective sample size < this * particles
    gradient: str = "reparam"  # or "dreg": iwae's doubly reparameterised gradient for the posterior
    seq_len: str | int = 10  # 0 or "full": whole sequences (data of different lengths)
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 0
    every: int = 250
    keep: int = 3  # checkpoints/ keeps the model of the last `keep` saves; 0 keeps none
    compile: bool = False
    skip_nonfinite: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, VRNNConfig):
            raise ConfigError(f"model must be a VRNNConfig, got {type(self.model).__name__}")
        self.seq_len = _seq_len(self.seq_len)
        self._check_music_options()
        positive = ("num_sequences", "batch_size", "every")
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if not is_count(getattr(self, k))]
        bad += [f"{k}={getattr(self, k)!r}" for k in ("steps", "epochs", "action_classes") if getattr(self, k) is not None and not is_count(getattr(self, k))]
        bad += [f"{k}={getattr(self, k)!r}" for k in ("kl_anneal", "workers", "seed", "keep") if not is_count(getattr(self, k), 0)]
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
        if self.size is not None:
            self.size = format_size(parse_size(self.size))
        self._check_objective()

    def _check_music_options(self) -> None:
        for name, top in (("weight_decay", math.inf), ("ema", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < top:
                raise ConfigError(f"{name} must be a number >= 0{' and < 1' if top == 1.0 else ''}, got {value!r}")
        if self.dropout is not None and (isinstance(self.dropout, bool) or not 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if isinstance(self.transpose, bool) or not isinstance(self.transpose, int) or self.transpose < 0:
            raise ConfigError(f"transpose must be a whole number of semitones >= 0 (0: off), got {self.transpose!r}")
        if self.fps is not None and (isinstance(self.fps, bool) or not self.fps > 0):
            raise ConfigError(f"fps must be a positive number, got {self.fps!r}")

    def _check_objective(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not is_count(self.particles):
            raise ConfigError(f"particles must be a whole number >= 1, got {self.particles!r}")
        threshold = self.resample_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"resample_threshold must be a number in [0, 1], got {threshold!r}")
        if self.objective == "elbo" and self.particles != 1:
            raise ConfigError(
                f"particles = {self.particles} needs objective iwae or fivo (the ELBO uses one latent path); "
                "add --objective iwae or --objective fivo"
            )
        if self.gradient not in GRADIENTS:
            raise ConfigError(f"gradient must be one of {', '.join(GRADIENTS)}, got {self.gradient!r}")
        if self.gradient == "dreg" and self.objective != "iwae":
            raise ConfigError(
                f"gradient dreg is the doubly reparameterised estimator of the IWAE bound; objective is {self.objective}. "
                "Add --objective iwae --particles K, or drop --gradient"
            )
        if self.gradient == "dreg" and self.model.posterior_options.get("dropout", self.dropout or 0) > 0:
            raise ConfigError(
                "gradient dreg evaluates the posterior twice and needs it without dropout: "
                "add --posterior-option dropout=0 (or drop --dropout)"
            )
        if self.objective != "elbo" and self.free_bits > 0:
            raise ConfigError(
                f"free_bits applies to the ELBO's KL term only; objective {self.objective} has no separate KL "
                "term to floor. Drop --free-bits, or use kl_anneal (it scales the latent terms of the weights)"
            )

    def check_processes(self, count: int) -> None:
        """Refuse what training in ``count`` processes (DistributedDataParallel) cannot take."""
        if count > 1 and self.gradient == "dreg":
            raise ConfigError("--gradient dreg runs two backward passes, which DistributedDataParallel does not take: use --nproc 1")

    def model_config(self, frame_shape: tuple[int, ...], *, action_dim: int = 0) -> VRNNConfig:
        """The model for frames of ``frame_shape`` (and actions of ``action_dim`` values, the
        data's), with ``dropout`` set on every mlp block and on a gru/lstm recurrence whose own
        options do not set it."""
        model = dataclasses.replace(self.model.with_frame_shape(frame_shape), action_dim=action_dim)
        if self.dropout is None:
            return model
        for kind in ("encoder", "decoder", "prior", "posterior", "rnn"):
            options = getattr(model, f"{kind}_options")
            if getattr(model, kind) in DROPOUT_BLOCKS and "dropout" not in options:
                setattr(model, f"{kind}_options", {**options, "dropout": self.dropout})
        return model

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``size`` as ``(height, width)``, or None to keep the data's own frame size."""
        return parse_size(self.size)

    @classmethod
    def option_types(cls) -> dict[str, str]:
        """Every flat option's name and type annotation, in the order of ``vrnnkit train``."""
        model_fields = {f.name: str(f.type) for f in dataclasses.fields(VRNNConfig)}
        types: dict[str, str] = {}
        for f in dataclasses.fields(cls):
            if f.name == "model":
                types.update({option: model_fields[name] for option, name in MODEL_OPTIONS.items()})
                types[BLOCK_OPTIONS] = "dict[str, dict[str, Any]]"
            else:
                types[f.name] = str(f.type)
        return types

    @classmethod
    def option_names(cls) -> list[str]:
        """The keys a TOML file (or ``vrnnkit.train``) may set."""
        return list(cls.option_types())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from flat options (a TOML file, say), rejecting unknown keys and wrong types."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a table of options, got {type(data).__name__}")
        types = cls.option_types()
        unknown = sorted(k if isinstance(k, str) else repr(k) for k in set(data) - set(types))
        if unknown:
            raise ConfigError(f"unknown options: {', '.join(unknown)}; valid options: {', '.join(sorted(types))}")
        for name, annotation in types.items():
            if name in data and not _type_fits(data[name], annotation):
                raise ConfigError(f"option {name!r} must be {_type_words(annotation)}, got {data[name]!r}")
        model = {MODEL_OPTIONS[k]: v for k, v in data.items() if k in MODEL_OPTIONS}
        model.update(_block_options(data.get(BLOCK_OPTIONS, {})))
        training = {k: v for k, v in data.items() if k not in MODEL_OPTIONS and k != BLOCK_OPTIONS}
        return cls(model=VRNNConfig(**{**MODEL_DEFAULTS, **model}), **training)

    def to_dict(self) -> dict[str, Any]:
        """The flat options, JSON-ready; ``from_dict`` reads them back."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "model":
                data.update({option: getattr(self.model, name) for option, name in MODEL_OPTIONS.items()})
            else:
                data[f.name] = getattr(self, f.name)
        blocks = {kind: dict(getattr(self.model, f"{kind}_options")) for kind in KINDS}
        data[BLOCK_OPTIONS] = {kind: options for kind, options in blocks.items() if options}
        return data


def _seq_len(value: Any) -> int:
    """``seq_len`` as a whole number: 0 (or "full") for whole sequences."""
    if isinstance(value, str) and value.strip().lower() in ("full", "0"):
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if not is_count(value, 0):
        raise ConfigError(f"seq_len must be a whole number of steps, or 0 or 'full' for whole sequences, got {value!r}")
    return int(value)


def _block_options(tables: Any) -> dict[str, dict[str, Any]]:
    """``block_options`` ({kind: {name: value}}) as VRNNConfig's ``{kind}_options`` fields."""
    if not isinstance(tables, dict):
        raise ConfigError(f"block_options must be a table of tables keyed by block kind ({', '.join(KINDS)}), got {tables!r}")
    for kind, options in tables.items():
        if kind not in KINDS:
            raise ConfigError(f"block_options has an unknown block kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise ConfigError(f"block_options.{kind} must be a table of named options, got {options!r}")
    return {f"{kind}_options": dict(options) for kind, options in tables.items()}


def block_options_from_pairs(pairs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """``{"decoder": ["channels=64"]}`` (``--decoder-option channels=64``) as block options;
    each value is read as JSON where it can be (``64``, ``0.5``, ``true``, ``"x"``) and is text
    otherwise."""
    tables: dict[str, dict[str, Any]] = {}
    for kind, items in pairs.items():
        for item in items:
            key, equals, text = item.partition("=")
            if not equals or not key.strip():
                raise ConfigError(f"--{kind}-option takes KEY=VALUE, got {item!r}")
            tables.setdefault(kind, {})[key.strip()] = _scalar(text.strip())
    return tables


def _scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (bool, int, float, str)) else text


def merge_options(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``; block options merge option by option, kind by kind."""
    merged = {**base, **update}
    old, new = base.get(BLOCK_OPTIONS), update.get(BLOCK_OPTIONS)
    if isinstance(old, dict) and isinstance(new, dict):
        blocks = {kind: dict(options) if isinstance(options, dict) else options for kind, options in old.items()}
        for kind, options in new.items():
            current = blocks.get(kind)
            both = isinstance(current, dict) and isinstance(options, dict)
            blocks[kind] = {**current, **options} if both else options
        merged[BLOCK_OPTIONS] = blocks
    return merged


def resolve_config(
    options: dict[str, Any],
    *,
    resume: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """The training config from its sources, last one winning: the defaults, a resumed run's
    own options, a config file (TOML, or a run folder's config.json), then ``options``."""
    settings: dict[str, Any] = {}
    if resume is not None:
        settings = merge_options(settings, resumed_options(Path(resume)))
    if config is not None:
        settings = merge_options(settings, read_config(Path(config)))
    return TrainConfig.from_dict(merge_options(settings, options))


def resumed_options(run_dir: Path) -> dict[str, Any]:
    """The flat options a run folder was trained with (its config.json)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"cannot resume {run_dir}: it has no config.json (was it written by vrnnkit train?)")
    return _run_config(path, f"cannot resume {run_dir}: {path} is not a vrnnkit run config")


def _run_config(path: Path, problem: str) -> dict[str, Any]:
    try:
        options = json.loads(path.read_text(encoding="utf-8"))["train"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(problem) from None
    if not isinstance(options, dict):
        raise ConfigError(problem)
    # Runs written before these options existed, or before their defaults changed, trained
    # without frame differences, with a constant rate, no weight average, 1,500 default steps.
    options.setdefault("frame_difference", False)
    options.setdefault("lr_schedule", "constant")
    options.setdefault("ema", 0.0)
    if options.get("steps") is None and options.get("epochs") is None:
        options["steps"] = OLD_DEFAULT_STEPS
    return options


def read_config(path: Path) -> dict[str, Any]:
    """The options of a config file: TOML, or the config.json of a run folder."""
    if path.suffix == ".json" and path.is_file():
        return _run_config(path, f"config file {path} is not a vrnnkit run config (a config.json with a 'train' table)")
    return read_toml(path)


def read_toml(path: Path) -> dict[str, Any]:
    """The options of a TOML file; keys may use the command line's dashes."""
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
    return {key.replace("-", "_"): value for key, value in data.items()}


def _type_words(annotation: str) -> str:
    """``int | None`` -> "a whole number (or left out)": a field's type in plain words."""
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
    if isinstance(value, (list, tuple)):
        return "list" in names
    return False
