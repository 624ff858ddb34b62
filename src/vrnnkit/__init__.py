"""vrnnkit: variational recurrent neural networks for sequences and video.

    import vrnnkit
    model = vrnnkit.VRNN(vrnnkit.VRNNConfig(frame_shape=(28,), likelihood="bernoulli"))
    out = model(x)            # x: (batch, time, 28); out.loss, out.nll, out.kl
    vrnnkit.save(model, "model.safetensors")
"""

from vrnnkit._version import __version__
from vrnnkit.api import evaluate, generate_dataset, predict, predict_file, sample, train
from vrnnkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    RegistryError,
    VRNNKitError,
    WriteError,
)
from vrnnkit.io.checkpoint import load, read_metadata, save
from vrnnkit.model import VRNN, VRNNConfig, VRNNOutput
from vrnnkit.registry import build, list_blocks, register

__all__ = [
    "VRNN",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "RegistryError",
    "VRNNConfig",
    "VRNNKitError",
    "VRNNOutput",
    "WriteError",
    "__version__",
    "build",
    "evaluate",
    "generate_dataset",
    "list_blocks",
    "load",
    "predict",
    "predict_file",
    "read_metadata",
    "register",
    "sample",
    "save",
    "train",
]
