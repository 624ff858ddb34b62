"""The built-in blocks. Importing this package registers them all."""

from vrnnkit.blocks import autoregressive, conv, likelihoods, mlp, rnn, smoothing, warp
from vrnnkit.blocks.base import Likelihood, Posterior, RecurrentCell

__all__ = ["Likelihood", "Posterior", "RecurrentCell", "autoregressive", "conv", "likelihoods", "mlp", "rnn", "smoothing", "warp"]
