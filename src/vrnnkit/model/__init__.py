"""The model: the VRNN, its configuration, its time loop and the objectives built on it.

``VRNN`` (``vrnn``) is the model and its step-level interface; ``objectives`` (IWAE, FIVO) are
written on that interface and register themselves by name (``objective_registry``), so the
model looks them up and never imports them.
"""

from vrnnkit.model import objectives
from vrnnkit.model.config import VRNNConfig
from vrnnkit.model.outputs import Filtered, VRNNOutput
from vrnnkit.model.vrnn import VRNN

__all__ = ["VRNN", "Filtered", "VRNNConfig", "VRNNOutput", "objectives"]
