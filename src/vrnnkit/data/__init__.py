"""Data for vrnnkit: generated data sets, MNIST, video and sequence files, training data sets.

Conventions shared with the model: a video batch is float32 ``(N, T, C, H, W)`` in [0, 1]
(channels-first frames), a vector-sequence batch is ``(N, T, D)``; uint8 maps to [0, 1] by /255.
Every bad input raises :class:`vrnnkit.errors.DataError` naming the file, what was expected and
what was found.
"""

from vrnnkit.data.balls import bouncing_balls
from vrnnkit.data.checks import check_unit_range
from vrnnkit.data.datasets import WindowDataset, train_val_split
from vrnnkit.data.files import load_sequences, open_sequences
from vrnnkit.data.layout import LayoutWarning
from vrnnkit.data.mnist import load_mnist, read_idx, sequential_mnist
from vrnnkit.data.moving_mnist import moving_mnist
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.data.trajectories import Trajectories

__all__ = [
    "LayoutWarning",
    "SequenceArray",
    "Trajectories",
    "WindowDataset",
    "bouncing_balls",
    "check_unit_range",
    "load_mnist",
    "load_sequences",
    "moving_mnist",
    "open_sequences",
    "read_idx",
    "sequential_mnist",
    "train_val_split",
]
