"""``TrainState``: everything about a run's progress that a checkpoint must restore.

The loop reads and advances one :class:`TrainState`; a checkpoint saves it as JSON
(``checkpoints/last/state.json``) beside the tensors (weights, optimiser moments, RNG
states, the balancing method's tensors) and the scheduler's and method's JSON state.
Resuming, logging and reporting all read the same object, never loose variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..evaluation.criterion import EarlyStopping

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Position in training, selection so far, and the per-epoch history.

    Attributes:
        epoch: the epoch being trained (the number of finished epochs).
        step_in_epoch: steps of ``epoch`` already taken; the loader resumes there.
        step: steps taken in the whole run (as numbered in ``train_log.csv``).
        selection: best epoch, best score and epochs without improvement.
        history: one entry per evaluated epoch: epoch, step, score, metrics.
        task_steps: per task, the steps that carried its loss.
        multi_task_steps: steps that carried the losses of two tasks or more (what a
            balancing method needs to have something to balance).
        skipped_steps: fp16 updates skipped because the scaled gradients overflowed (the
            GradScaler lowers its scale and the run goes on).
        seconds: training time so far (kept across resumes).
        best_metrics: validation metrics of the best epoch.
        done: early stopping has ended the run.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    selection: EarlyStopping = field(default_factory=EarlyStopping)
    history: list[dict[str, Any]] = field(default_factory=list)
    task_steps: dict[str, int] = field(default_factory=dict)
    multi_task_steps: int = 0
    skipped_steps: int = 0
    seconds: float = 0.0
    best_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    done: bool = False

    @classmethod
    def start(cls, tasks: list[str], patience: int | None) -> TrainState:
        return cls(selection=EarlyStopping(patience), task_steps={t: 0 for t in tasks})

    def count_step(self, tasks: list[str]) -> None:
        """One step taken, carrying the losses of ``tasks``."""
        for t in tasks:
            self.task_steps[t] = self.task_steps.get(t, 0) + 1
        self.multi_task_steps += len(tasks) >= 2
        self.step += 1
        self.step_in_epoch += 1

    def end_epoch(self, metrics: dict[str, dict[str, float]], score: float) -> bool:
        """Record the epoch's validation result; True when it is the best so far."""
        self.history.append(
            {"epoch": self.epoch, "step": self.step, "score": score, "metrics": metrics}
        )
        improved = self.selection.update(self.epoch, score)
        if improved:
            self.best_metrics = metrics
        self.done = self.selection.stop
        self.epoch += 1
        self.step_in_epoch = 0
        return improved

    def to_json(self) -> dict[str, Any]:
        """A flat JSON object (the layout of ``state.json`` since the first release)."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "best_score": self.selection.best_score,
            "best_epoch": self.selection.best_epoch,
            "bad_epochs": self.selection.bad_epochs,
            "history": self.history,
            "task_steps": dict(self.task_steps),
            "multi_task_steps": self.multi_task_steps,
            "skipped_steps": self.skipped_steps,
            "seconds": self.seconds,
            "best_metrics": self.best_metrics,
            "done": self.done,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], patience: int | None) -> TrainState:
        """The state saved by :meth:`to_json` (extra keys, e.g. the scheduler's, ignored)."""
        selection = EarlyStopping(
            patience, data["best_score"], int(data["best_epoch"]), int(data["bad_epochs"])
        )
        return cls(
            epoch=int(data["epoch"]),
            step_in_epoch=int(data["step_in_epoch"]),
            step=int(data["step"]),
            selection=selection,
            history=list(data["history"]),
            task_steps={t: int(n) for t, n in data["task_steps"].items()},
            # checkpoints written before the count existed: their steps are not recounted
            multi_task_steps=int(data.get("multi_task_steps", 0)),
            skipped_steps=int(data.get("skipped_steps", 0)),
            seconds=float(data["seconds"]),
            best_metrics=dict(data["best_metrics"]),
            done=bool(data["done"]),
        )
