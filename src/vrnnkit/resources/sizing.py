"""How much memory a model takes, known before it is built: parameters counted on PyTorch's
``meta`` device (shapes only, no storage), and a floor worked out from the config alone for
sizes so large that even building the model's modules would take long.

    check_model_memory(config)                                  # the parameters fit, or ConfigError
    check_training_memory(config, batch_size=16, seq_len=10)    # + gradients, Adam, one batch

The figures are lower bounds (float32 parameters, a small share of a batch's activations):
a refusal means the work cannot fit, not that it might not. ``VRNNKIT_MEMORY`` overrides the
available memory (see :mod:`vrnnkit.resources.budget`).
"""

from __future__ import annotations

import math
import os

import torch

from vrnnkit.errors import ConfigError
from vrnnkit.model import VRNN
from vrnnkit.model.config import VRNNConfig
from vrnnkit.resources.budget import MEMORY_ENV, available_memory, checks_enabled, require_memory

FLOAT_BYTES = 4
TRAINING_COPIES = 4
"""Weights, gradients and Adam's two moments: four float32 values per parameter while training."""
ACTIVATION_FACTOR = 4
"""Values kept for backward per input value and per state value of a time step (a floor:
conv blocks keep many more)."""
SMALLER = "choose a smaller --h-dim, --z-dim, --layers or frame size"


def describe(config: VRNNConfig) -> str:
    """``"a model with h-dim 64, z-dim 16, 1 recurrent layer and frames of (1, 32, 32)"``."""
    layers = f"{config.rnn_layers} recurrent layer{'s' if config.rnn_layers != 1 else ''}"
    return f"a model with h-dim {config.h_dim}, z-dim {config.z_dim}, {layers} and frames of {config.frame_shape}"


def parameter_floor(config: VRNNConfig) -> int:
    """A lower bound on the parameters of ``config``'s model, from its sizes alone: phi_z and
    the recurrence's hidden-to-hidden weights (3 h^2 per GRU layer, 4 h^2 per LSTM layer)."""
    phi_z = (config.z_dim + 1) * (config.latent_feature_dim or config.h_dim)
    gates = {"gru": 3, "lstm": 4}.get(config.rnn)
    per_layer = gates * config.h_dim * config.h_dim if gates else config.h_dim
    return phi_z + config.rnn_layers * per_layer


def meta_model(config: VRNNConfig) -> VRNN:
    """``config``'s model on the ``meta`` device: every parameter's shape and dtype, no storage."""
    try:
        with torch.device("meta"):
            return VRNN(config)
    except (RuntimeError, OverflowError) as error:  # a size beyond what a tensor can hold
        raise ConfigError(f"{describe(config)} cannot be built: {str(error).strip().splitlines()[0]}") from None


def parameter_count(config: VRNNConfig) -> int:
    """The exact number of parameters of ``config``'s model (built on ``meta``)."""
    return sum(p.numel() for p in meta_model(config).parameters())


def check_model_memory(config: VRNNConfig, *, copies: int = 1, device: torch.device | None = None) -> int:
    """Raise ConfigError when ``copies`` float32 copies of the model's parameters cannot fit in
    the memory available (of ``device`` where it is a GPU); the parameter count otherwise."""
    if not checks_enabled():
        return parameter_count(config)
    available = _device_memory(device)
    purpose = "for its parameters" if copies == 1 else "for its parameters, their gradients and Adam's state"
    floor = parameter_floor(config) * FLOAT_BYTES * copies
    require_memory(floor, describe(config), purpose=purpose, available=available, fix=SMALLER,
                   floor=True)
    count = parameter_count(config)
    needed = count * FLOAT_BYTES * copies
    require_memory(needed, f"{describe(config)} ({count:,} parameters)", purpose=purpose, available=available,
                   fix=SMALLER)
    return count


def check_training_memory(
    config: VRNNConfig, *, batch_size: int, seq_len: int, ema: bool = False, device: torch.device | None = None,
    particles: int = 1,
) -> None:
    """Raise ConfigError when training ``config``'s model cannot fit: parameters, gradients,
    Adam's state (and an averaged copy with ``ema``) and one batch's activations, of
    ``particles`` latent paths per sequence (IWAE, FIVO)."""
    if not checks_enabled():
        return
    copies = TRAINING_COPIES + int(ema)
    count = check_model_memory(config, copies=copies, device=device)
    steps = max(seq_len, 1)
    state = config.h_dim * config.rnn_layers + config.z_dim + (config.feature_dim or 0) + (config.latent_feature_dim or 0)
    per_step = math.prod(config.frame_shape or (1,)) + state
    activations = particles * batch_size * steps * per_step * ACTIVATION_FACTOR * FLOAT_BYTES
    paths = f" x {particles} particles" if particles > 1 else ""
    require_memory(
        count * FLOAT_BYTES * copies + activations,
        f"training {describe(config)} on batches of {batch_size} sequences x {steps} steps{paths}",
        purpose="(parameters, gradients, Adam's state and one batch's activations)",
        available=_device_memory(device), fix="lower --batch-size, --seq-len or --particles, or choose a smaller model", floor=True,
    )


def _device_memory(device: torch.device | None) -> int | None:
    """The memory free on a GPU ``device`` (unless ``VRNNKIT_MEMORY`` gives a figure), else the host's."""
    host = available_memory()
    if device is None or device.type != "cuda" or host is None or os.environ.get(MEMORY_ENV, "").strip():
        return host
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)
