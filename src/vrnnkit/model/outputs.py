"""What the model returns: the training objective's figures and the filtered latent path."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor


@dataclass
class VRNNOutput:
    """What ``VRNN.forward`` returns. Per-sequence figures are sums over time, in nats."""

    loss: Tensor
    """The scalar to minimise: batch mean of NLL + kl_weight * KL (with free bits applied)."""
    nll: Tensor
    """Batch mean of the per-sequence negative log-likelihood."""
    kl: Tensor
    """Batch mean of the per-sequence KL(q || p) (without free bits)."""
    elbo: Tensor
    """(B,) the ELBO of each sequence."""
    nll_per_step: Tensor
    """(T,) batch mean of the NLL at each step."""
    kl_per_step: Tensor
    """(T,) batch mean of the KL at each step."""
    dims: Tensor
    """(B,) number of observed elements in each sequence (steps x frame size)."""
    surrogate: Tensor | None = None
    """With IWAE's ``gradient="dreg"``: the scalar whose gradient the posterior's own parameters
    take (``vrnnkit.model.objectives``); every other parameter takes ``loss``'s. None otherwise."""

    @property
    def nats_per_dim(self) -> Tensor:
        """Negative ELBO per observed element, averaged over the batch."""
        return (-self.elbo / self.dims).mean()

    @property
    def bits_per_dim(self) -> Tensor:
        return self.nats_per_dim / math.log(2.0)


class Filtered(NamedTuple):
    """The recurrent path over a sequence, batch-first; ``h`` holds h_{t-1} for each step t."""

    h: Tensor
    mean: Tensor
    std: Tensor
    z: Tensor
    f: Tensor
    state: Tensor
    actions: Tensor | None = None
    """The input embedding a_t of each step (rows, T, W) of a model with inputs
    (``vrnnkit.model.actions``), which the prior and the decoder read; None otherwise."""
