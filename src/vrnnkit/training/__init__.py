"""Training: the configuration, the processes, the run folder and the loop, one module each.

    from vrnnkit.training import TrainConfig, train
    run = train(TrainConfig.from_dict({"steps": 500, "h_dim": 32}), "runs/demo")

- ``config``: ``TrainConfig`` (the run's options, with the model as a ``VRNNConfig``), TOML
  and run-folder configs, and how their sources merge;
- ``distributed``: ``World`` and the process group of a ``torchrun`` launch;
- ``run_dir``: what a run folder holds, how it is saved and how a run resumes from it;
- ``loop``: ``train`` and ``train_step``.
"""

from vrnnkit.errors import TrainingError
from vrnnkit.training.config import (
    DEFAULT_STEPS,
    TrainConfig,
    read_config,
    read_toml,
    resolve_config,
)
from vrnnkit.training.distributed import World, current_world, process_group
from vrnnkit.training.loop import StepResult, TrainResult, make_scaler, train, train_step

__all__ = [
    "DEFAULT_STEPS",
    "StepResult",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "World",
    "current_world",
    "make_scaler",
    "process_group",
    "read_config",
    "read_toml",
    "resolve_config",
    "train",
    "train_step",
]
