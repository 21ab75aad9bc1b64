"""Tasks: a name, a kind (loss, decoding, metrics) and a primary metric.

``make_kind("classification", labels=[...])`` builds a kind from a config; a name of the
form ``"package.module:Class"`` imports a user-defined :class:`TaskKind` subclass.
"""

from __future__ import annotations

from typing import Any

from polytask._imports import import_object
from polytask.tasks.base import TagScores, Task, TaskKind
from polytask.tasks.classification import Classification
from polytask.tasks.multilabel import Multilabel
from polytask.tasks.regression import Regression
from polytask.tasks.tagging import Tagging

KINDS: dict[str, type[TaskKind]] = {
    "classification": Classification,
    "multilabel": Multilabel,
    "regression": Regression,
    "tagging": Tagging,
}


def make_kind(name: str, **options: Any) -> TaskKind:
    """Build a task kind by registry name or ``"package.module:Class"`` import path."""
    if ":" in name:
        cls = import_object(name)
        if not (isinstance(cls, type) and issubclass(cls, TaskKind)):
            raise ValueError(f"task kind {name!r} is not a subclass of polytask.tasks.TaskKind")
    elif name in KINDS:
        cls = KINDS[name]
    else:
        raise ValueError(
            f"unknown task kind {name!r}: use one of {sorted(KINDS)} "
            "or an import path 'package.module:Class'"
        )
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
    "make_kind",
]
