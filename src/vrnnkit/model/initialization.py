"""Data-dependent initialisation of a model's parameters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vrnnkit.blocks.autoregressive import AutoregressiveBernoulli
from vrnnkit.blocks.likelihoods import Bernoulli
from vrnnkit.errors import ConfigError


def has_logit_output(model: nn.Module) -> bool:
    """Whether the model's likelihood reads channel 0 of the decoder as Bernoulli logits
    (``bernoulli``, ``ar-bernoulli``): what ``init_output_bias`` sets."""
    return isinstance(model.likelihood, (Bernoulli, AutoregressiveBernoulli))


def init_output_bias(model: nn.Module, sequences: Sequence[np.ndarray], *, eps: float = 1e-3) -> Tensor:
    """Start a Bernoulli model's output at the data: the decoder's final bias for the logits
    (channel 0: all of it for ``bernoulli``, the base logits of ``ar-bernoulli``) becomes the
    logit of each dimension's mean over every step of ``sequences`` (clamped to [eps, 1 - eps]).

    For sparse data such as piano rolls (about 4 of 88 keys sound at once) an untrained model
    predicts 0.5 everywhere, about 61 nats a step on 88 keys; starting at the data's rates
    removes most of that before the first step, so early training goes to structure instead
    of to the rates. Returns the bias that was set. Sequences are ``(T_i, *frame)`` arrays.

    Raises:
        ConfigError: the model's likelihood is not Bernoulli, or its decoder has no final
            linear ``head`` of P outputs per frame element (the ``mlp`` decoder has one).
    """
    if not has_logit_output(model):
        raise ConfigError(
            f"the output-bias initialisation is for a Bernoulli likelihood, found {type(model.likelihood).__name__}")
    head = getattr(model.decoder, "head", None)
    frame_size = int(np.prod(model.config.frame_shape))
    outputs = frame_size * model.likelihood.params_per_element
    if not isinstance(head, nn.Linear) or head.out_features != outputs:
        raise ConfigError(
            f"the output-bias initialisation needs a decoder ending in a linear 'head' of {outputs} "
            f"outputs (the mlp decoder), found {type(model.decoder).__name__}"
        )
    total = np.zeros(frame_size, np.float64)
    steps = 0
    for sequence in sequences:
        total += np.asarray(sequence, np.float64).reshape(len(sequence), -1).sum(0)
        steps += len(sequence)
    if steps == 0:
        raise ConfigError("the output-bias initialisation needs at least one step of data")
    mean = np.clip(total / steps, eps, 1.0 - eps)
    bias = torch.from_numpy(np.log(mean) - np.log1p(-mean))
    with torch.no_grad():
        head.bias[:frame_size].copy_(bias.to(head.bias.dtype))
    return head.bias[:frame_size].detach().clone()
