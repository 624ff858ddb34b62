"""The model's configuration: a small dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import vrnnkit.blocks  # noqa: F401  (registers the built-in blocks before names are checked)
from vrnnkit.errors import ConfigError, is_count
from vrnnkit.model.skips import missing_maps
from vrnnkit.registry import build, get_builder, is_registered, list_blocks

_BLOCK_FIELDS = ("encoder", "decoder", "prior", "posterior", "rnn", "likelihood")
_SIZE_FIELDS = ("z_dim", "h_dim", "feature_dim", "latent_feature_dim", "rnn_layers")


@dataclass
class VRNNConfig:
    """Everything needed to rebuild a VRNN; shapes come from here, never from the data at hand.

    ``frame_shape`` is ``(D,)`` for vector frames or ``(C, H, W)`` for images. ``encoder`` and
    ``decoder`` default to ``"auto"``: ``conv``/``convT`` for images, ``mlp`` for vectors. Each
    block's ``*_options`` are passed to its builder as keywords (for example
    ``decoder_options={"channels": 64}`` or ``likelihood_options={"std": 0.1}``).

    ``frame_shape=None`` describes a model whose frames are not known yet (a training config,
    whose data decides them): its names are checked, ``auto`` blocks and the feature sizes stay
    unresolved until ``with_frame_shape``, and it cannot build a VRNN.

    ``frame_difference`` feeds phi_x the frame and its change from the previous frame
    (``[x_t, x_t - x_{t-1}]``, zeros before the first frame), so that motion is in what the
    encoder sees rather than something the recurrence must work out from two states; ``None``
    (the training default) turns it on for image frames.

    ``action_dim`` > 0 gives the model an input u_t per step (an action), embedded in
    ``action_embedding`` values that the prior, the posterior, the recurrence and the decoder
    read (``vrnnkit.model.actions``); training takes it from the data.
    """

    frame_shape: tuple[int, ...] | None = None
    z_dim: int = 16
    h_dim: int = 128
    feature_dim: int | None = None  # width of phi_x(x_t); defaults to h_dim
    latent_feature_dim: int | None = None  # width of phi_z(z_t); defaults to h_dim
    rnn_layers: int = 1
    skip_context: int = 0  # skip decoders: 0 = skips from the previous frame; N = held after frame N
    skip_residual: bool = False  # skip decoders: predict the change from the reference frame
    frame_difference: bool | None = False  # phi_x also reads x_t - x_{t-1}; None: on for image frames
    action_dim: int = 0  # width of the per-step input u_t (actions); 0: none (vrnnkit.model.actions)
    action_embedding: int = 32  # width of its embedding a_t, which the blocks read
    encoder: str = "auto"
    decoder: str = "auto"
    prior: str = "mlp"
    posterior: str = "mlp"
    rnn: str = "gru"
    likelihood: str = "bernoulli"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    prior_options: dict[str, Any] = field(default_factory=dict)
    posterior_options: dict[str, Any] = field(default_factory=dict)
    rnn_options: dict[str, Any] = field(default_factory=dict)
    likelihood_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.frame_shape
        if shape is not None:
            if not isinstance(shape, (tuple, list)) or len(shape) not in (1, 3) or not all(is_count(s) for s in shape):
                raise ConfigError(
                    f"frame_shape must be (D,) for vectors or (C, H, W) for images, "
                    f"with positive integer sizes; got {shape!r}"
                )
            self.frame_shape = tuple(int(s) for s in shape)
            if self.feature_dim is None:
                self.feature_dim = self.h_dim
            if self.latent_feature_dim is None:
                self.latent_feature_dim = self.h_dim
        bad = [
            f"{k}={getattr(self, k)!r}" for k in _SIZE_FIELDS
            if not is_count(getattr(self, k)) and not (shape is None and getattr(self, k) is None)
        ]
        if bad:
            raise ConfigError(f"sizes must be positive integers, got {', '.join(bad)}")
        if not is_count(self.skip_context, 0):
            raise ConfigError(f"skip_context must be a whole number >= 0, got {self.skip_context!r}")
        if not is_count(self.action_dim, 0) or not is_count(self.action_embedding):
            raise ConfigError(f"action_dim must be a whole number >= 0 and action_embedding one >= 1, "
                              f"got {self.action_dim!r} and {self.action_embedding!r}")
        if not isinstance(self.skip_residual, bool):
            raise ConfigError(f"skip_residual must be true or false, got {self.skip_residual!r}")
        if self.frame_difference is not None and not isinstance(self.frame_difference, bool):
            raise ConfigError(f"frame_difference must be true or false (or unset: on for image frames), got {self.frame_difference!r}")
        if shape is not None:
            if self.frame_difference is None:
                self.frame_difference = self.is_image
            if self.decoder == "auto":
                self.decoder = "convT" if self.is_image else "mlp"
            if self.encoder == "auto":  # a skip decoder gets the encoder that feeds it
                self.encoder = ("conv-skip" if _block_flag("decoder", self.decoder, "uses_skips") else "conv") if self.is_image else "mlp"
        for kind in _BLOCK_FIELDS:
            name = getattr(self, kind)
            unresolved = shape is None and kind in ("encoder", "decoder") and name == "auto"
            if not isinstance(name, str) or not (unresolved or is_registered(kind, name)):
                known = ", ".join(list_blocks(kind))
                raise ConfigError(f"unknown {kind} block {name!r}; registered {kind} blocks: {known}")
            options = getattr(self, f"{kind}_options")
            if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
                raise ConfigError(f"{kind}_options must be a mapping of option names to values, got {options!r}")
        if _block_flag("decoder", self.decoder, "uses_skips") and _block_flag("encoder", self.encoder, "provides_skips") is False:
            raise missing_maps(self.decoder, self.encoder)

    @property
    def is_image(self) -> bool:
        """Whether frames are images (C, H, W) rather than vectors (D,)."""
        return self.frame_shape is not None and len(self.frame_shape) == 3

    @property
    def likelihood_support(self) -> str:
        """Where the likelihood's data lives, as the block declares it (``support``):
        ``"unit-interval"`` (data must lie in [0, 1]) or ``"real"`` (the default)."""
        return getattr(get_builder("likelihood", self.likelihood), "support", "real")

    @property
    def likelihood_arguments(self) -> dict[str, Any]:
        """What the model passes the likelihood block: the frame shape to a block that declares
        ``needs_frame_shape`` (an autoregressive one), nothing to the others."""
        if _block_flag("likelihood", self.likelihood, "needs_frame_shape"):
            return {"frame_shape": self.frame_shape}
        return {}

    def with_frame_shape(self, frame_shape: tuple[int, ...]) -> VRNNConfig:
        """This config for frames of ``frame_shape``: ``auto`` blocks and sizes resolved."""
        return dataclasses.replace(self, frame_shape=tuple(frame_shape))

    def build_block(self, kind: str, **shape_arguments: Any) -> Any:
        """Build the block this config names for ``kind``, with the sizes the model passes and
        the user's options for it (which may not override those sizes)."""
        name = getattr(self, kind)
        options = getattr(self, f"{kind}_options")
        clash = sorted(set(options) & set(shape_arguments))
        if clash:
            raise ConfigError(f"{kind}_options may not set {', '.join(clash)}: the model sets it from the config")
        try:
            return build(kind, name, **shape_arguments, **options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"cannot build {kind} block {name!r} with options {options}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the frame shape as a list)."""
        data = dataclasses.asdict(self)
        data["frame_shape"] = None if self.frame_shape is None else list(self.frame_shape)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VRNNConfig:
        """Build from a dict, rejecting unknown keys and values of the wrong type."""
        if not isinstance(data, dict):
            raise ConfigError(f"a VRNN config must be a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(repr(key) if not isinstance(key, str) else key for key in set(data) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown config keys: {', '.join(unknown)}; valid keys: {', '.join(fields)}"
            )
        if data.get("frame_shape") is None:
            raise ConfigError("a VRNN config needs 'frame_shape'")
        for name in _BLOCK_FIELDS:
            if name in data and not isinstance(data[name], str):
                raise ConfigError(f"config key {name!r} must be a block name (a string), got {data[name]!r}")
        try:
            return cls(**data)
        except TypeError as error:  # e.g. an int compared with a string
            raise ConfigError(f"invalid VRNN config: {error}") from None

    @classmethod
    def from_json(cls, text: str) -> VRNNConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"the VRNN config is not valid JSON: {error}") from None
        return cls.from_dict(data)


def _block_flag(kind: str, name: str, flag: str) -> bool | None:
    """A class attribute a registered block declares (``uses_skips``, ``provides_skips``); None
    when the name is not resolved yet or the builder is not a class (a plug-in function: its
    blocks are checked once built)."""
    if name == "auto" or not is_registered(kind, name):
        return None
    builder = get_builder(kind, name)
    return bool(getattr(builder, flag, False)) if isinstance(builder, type) else None
