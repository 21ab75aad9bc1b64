"""Tasks: a name, a kind (loss, decoding, metrics) and a primary metric.

``make_kind("classification", labels=[...])`` builds a kind from a config; a name of the
form ``"package.module:Class"`` imports a user-defined :class:`TaskKind` subclass.
"""

from __future__ import annotations

from typing import Any

from polytask.options import check_options
from polytask.registry import Registry
from polytask.tasks.base import TagScores, Task, TaskKind
from polytask.tasks.classification import Classification
from polytask.tasks.multilabel import Multilabel
from polytask.tasks.regression import Regression
from polytask.tasks.tagging import Tagging
from polytask.tasks.token_classification import TokenClassification

#: the task kinds: a name or ``package.module:Class`` -> a :class:`TaskKind` subclass
KINDS: Registry[type[TaskKind]] = Registry(
    "task kind",
    base=TaskKind,
    option="kind",
    expects="a subclass of polytask.tasks.TaskKind",
    builtins={
        "classification": Classification,
        "multilabel": Multilabel,
        "regression": Regression,
        "tagging": Tagging,
        "token_classification": TokenClassification,
    },
)


def make_kind(name: str, **options: Any) -> TaskKind:
    """Build a task kind by registry name or ``"package.module:Class"`` import path.

    The class is checked (:data:`KINDS`) before it is called.
    """
    cls = KINDS.resolve(name)
    check_options(cls, options, owner=f"task kind {name!r}")
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"task kind {name!r}: bad options {sorted(options)} ({err})") from err


__all__ = [
    "KINDS",
    "Classification",
    "Multilabel",
    "Regression",
    "TagScores",
    "Tagging",
    "Task",
    "TaskKind",
    "TokenClassification",
    "make_kind",
]
