"""polytask: multi-task learning for PyTorch.

One model, several tasks: ``f_i = g_i ∘ h_i ∘ h_0``. polytask keeps three concerns apart:
what is shared (:mod:`polytask.sharing`), how the task signals become one update
(:mod:`polytask.balancing`), and how training runs (:mod:`polytask.engine`).
"""

__version__ = "0.1.0"

from . import balancing, data, nn, sharing, tasks  # noqa: E402
from .data.base import Batch, Example  # noqa: E402
from .engine import Trainer, TrainerConfig  # noqa: E402
from .runs import load  # noqa: E402
from .tasks import (  # noqa: E402
    Classification,
    Multilabel,
    Regression,
    Tagging,
    Task,
    TokenClassification,
)

__all__ = [
    "Batch",
    "Classification",
    "Example",
    "Multilabel",
    "Regression",
    "Tagging",
    "Task",
    "TokenClassification",
    "Trainer",
    "TrainerConfig",
    "balancing",
    "data",
    "load",
    "nn",
    "sharing",
    "tasks",
    "__version__",
]
