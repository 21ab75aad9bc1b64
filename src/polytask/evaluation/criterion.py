"""The selection criterion: which epoch is best, and when training stops.

After each epoch the Trainer scores the validation metrics with :func:`criterion_score`
(higher is better), keeps the weights of the best epoch and, with a patience, stops when
the score has not improved for that many epochs (:class:`EarlyStopping`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import OptionError
from ..tasks.base import Task
from .delta_m import delta_m
from .evaluate import primary_scores

__all__ = ["EarlyStopping", "criterion_score", "validate_criterion"]

Metrics = Mapping[str, Mapping[str, float]]


def validate_criterion(
    criterion: str, tasks: Mapping[str, Task], baselines: Mapping[str, float]
) -> None:
    """Raise :class:`~polytask.errors.OptionError` (option ``criterion`` or ``baselines``)
    unless :func:`criterion_score` can score every epoch under ``criterion``."""
    if criterion == "mean":
        return
    if criterion == "delta_m":
        missing = [t for t in tasks if t not in baselines]
        if missing:
            raise OptionError(
                "baselines",
                f"no single-task score for {missing}",
                "give baselines {task: score} or run `polytask compare` first",
            )
        return
    task, _, metric = criterion.partition(".")
    if task not in tasks:
        raise OptionError(
            "criterion",
            f"{criterion!r} names no task",
            f"use mean, delta_m, or one of {sorted(tasks)} (optionally TASK.METRIC)",
        )
    names = tasks[task].kind.metric_names()
    if metric and names and metric not in names:
        raise OptionError(
            "criterion",
            f"task {task!r} has no metric {metric!r}",
            f"use {task} or one of {[f'{task}.{m}' for m in names]}",
        )


def criterion_score(
    criterion: str, metrics: Metrics, tasks: Mapping[str, Task], baselines: Mapping[str, float]
) -> float:
    """Higher-is-better score used for early stopping and best-checkpoint selection.

    ``"mean"``: mean over tasks of the primary metric, negated where lower is better;
    ``"delta_m"``: Δm of the primary metrics against ``baselines`` (single-task scores);
    ``"TASK"`` or ``"TASK.METRIC"``: one task's (primary or named) metric, negated where
    lower is better.
    """
    if criterion == "mean":
        prim = primary_scores(metrics, tasks)
        return sum(v if tasks[t].higher_is_better else -v for t, v in prim.items()) / len(prim)
    if criterion == "delta_m":
        prim = primary_scores(metrics, tasks)
        return delta_m(
            prim,
            {t: baselines[t] for t in prim},
            {t: bool(tasks[t].higher_is_better) for t in prim},
        )
    task, _, metric = criterion.partition(".")
    metric = metric or str(tasks[task].primary_metric)
    value = float(metrics[task][metric])
    return value if tasks[task].kind.higher_is_better(metric) else -value


@dataclass
class EarlyStopping:
    """Best-epoch selection and patience over criterion scores (higher is better).

    :meth:`update` takes an epoch's score and says whether it is the best so far; after
    ``patience`` epochs in a row without improvement :attr:`stop` turns true (never with
    ``patience=None``). Its fields are part of the train state a checkpoint saves.
    """

    patience: int | None = None
    best_score: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        improved = self.best_score is None or score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience
