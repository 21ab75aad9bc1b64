"""Sharing architectures: which modules each task passes through.

hard and hierarchical sharing (shared stack, task taps and task layers), soft sharing
(towers tied by a penalty), cross-stitch units, attention (MTAN), gated experts (MMoE,
CGC, PLE), and a representation-similarity penalty around any of them.
"""

from ..registry import Registry
from .base import MultiTaskModel, MultiTaskOutput
from .cross_stitch import CrossStitch
from .custom import Custom
from .experts import CGC, PLE, MMoE
from .hierarchical import HardSharing, Hierarchical
from .mtan import MTAN
from .similarity import RepresentationSimilarity, linear_cka
from .soft import SoftSharing
from .task_layers import TASK_LAYERS, DenseLayer, SequenceLayer

#: the architectures: a name or ``package.module:Class`` -> a :class:`MultiTaskModel` subclass
ARCHITECTURES: Registry[type[MultiTaskModel]] = Registry(
    "architecture",
    base=MultiTaskModel,
    option="sharing",
    expects="a subclass of polytask.sharing.MultiTaskModel",
    builtins={
        "hard": HardSharing,
        "hierarchical": Hierarchical,
        "soft": SoftSharing,
        "cross_stitch": CrossStitch,
        "mtan": MTAN,
        "mmoe": MMoE,
        "cgc": CGC,
        "ple": PLE,
    },
)

__all__ = [
    "MultiTaskModel",
    "MultiTaskOutput",
    "Custom",
    "HardSharing",
    "Hierarchical",
    "SoftSharing",
    "CrossStitch",
    "MTAN",
    "MMoE",
    "CGC",
    "PLE",
    "RepresentationSimilarity",
    "linear_cka",
    "DenseLayer",
    "SequenceLayer",
    "TASK_LAYERS",
    "ARCHITECTURES",
]
