"""Training: the Trainer, checkpoints, logs."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .optim import ParamGroupRule
from .trainer import FitReport, Trainer, TrainerConfig, TrainingError

__all__ = [
    "Trainer",
    "TrainerConfig",
    "FitReport",
    "TrainingError",
    "ParamGroupRule",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
]
