"""Data for vrnnkit: generated data sets, MNIST, video and sequence files, sequences of different
lengths (piano-roll music among them), training data sets.

Conventions shared with the model: a video batch is float32 ``(N, T, C, H, W)`` in [0, 1]
(channels-first frames), a vector-sequence batch is ``(N, T, D)``; uint8 maps to [0, 1] by /255.
Every bad input raises :class:`vrnnkit.errors.DataError` naming the file, what was expected and
what was found.
"""

from vrnnkit.data.actions import ActionSequences, has_actions, load_action_data, load_action_plan
from vrnnkit.data.balls import bouncing_balls
from vrnnkit.data.checks import check_unit_range
from vrnnkit.data.datasets import WindowDataset, train_val_split
from vrnnkit.data.files import load_sequences, open_sequences
from vrnnkit.data.layout import LayoutWarning
from vrnnkit.data.mnist import load_mnist, read_idx, sequential_mnist
from vrnnkit.data.moving_mnist import moving_mnist
from vrnnkit.data.music import (
    PIANO_KEYS,
    NoteRange,
    load_piano_roll_json,
    plot_piano_roll,
    read_midi,
    write_midi,
)
from vrnnkit.data.sequences import SequenceArray
from vrnnkit.data.trajectories import Trajectories
from vrnnkit.data.varlen import (
    LengthBucketSampler,
    VariableLengthDataset,
    load_variable_length,
    pad_collate,
)

__all__ = [
    "PIANO_KEYS",
    "ActionSequences",
    "LayoutWarning",
    "LengthBucketSampler",
    "NoteRange",
    "SequenceArray",
    "Trajectories",
    "VariableLengthDataset",
    "WindowDataset",
    "bouncing_balls",
    "check_unit_range",
    "has_actions",
    "load_action_data",
    "load_action_plan",
    "load_mnist",
    "load_piano_roll_json",
    "load_sequences",
    "load_variable_length",
    "moving_mnist",
    "open_sequences",
    "pad_collate",
    "plot_piano_roll",
    "read_idx",
    "read_midi",
    "sequential_mnist",
    "train_val_split",
    "write_midi",
]
