"""The built-in blocks. Importing this package registers them all."""

from vrnnkit.blocks import conv, likelihoods, mlp, rnn
from vrnnkit.blocks.base import Likelihood, Posterior, RecurrentCell

__all__ = ["Likelihood", "Posterior", "RecurrentCell", "conv", "likelihoods", "mlp", "rnn"]
