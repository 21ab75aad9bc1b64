"""Sharing architectures: which modules each task passes through."""

from .base import MultiTaskModel, MultiTaskOutput
from .custom import Custom
from .hierarchical import HardSharing, Hierarchical
from .task_layers import TASK_LAYERS, DenseLayer, SequenceLayer

ARCHITECTURES = {"hard": HardSharing, "hierarchical": Hierarchical}

__all__ = ["MultiTaskModel", "MultiTaskOutput", "Custom", "HardSharing", "Hierarchical",
           "DenseLayer", "SequenceLayer", "TASK_LAYERS", "ARCHITECTURES"]
