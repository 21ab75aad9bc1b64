"""Fixed linear scalarisation: ``L = Σ_i λ_i L_i`` with λ chosen by the user."""

from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor

from ._options import is_real, known_tasks, require
from ._state import weighted_sum
from .base import LossWeighting


class FixedWeights(LossWeighting):
    """``L = Σ_{i ∈ present} λ_i L_i``.

    ``weights`` maps task names to λ_i (missing tasks get ``default``, 1.0 unless given).
    Tasks without labels in a batch contribute nothing (they are absent from ``losses``);
    the remaining weights are *not* renormalised, so each task's gradient scale does not
    depend on which other tasks happen to share the batch.
    """

    name = "fixed"
    needs_several_tasks = False

    def __init__(self, weights: Mapping[str, float] | None = None, default: float = 1.0) -> None:
        self.weights = dict(weights or {})
        named = [(f"weights.{t}", w) for t, w in self.weights.items()]
        for where, w in [("default", default), *named]:
            require(
                is_real(w) and w >= 0,
                where,
                f"{w!r} is not a finite non-negative number",
                "give each task a weight ≥ 0",
            )
        self.default = float(default)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)
        known_tasks("weights", self.weights, tasks)

    def weight(self, task: str) -> float:
        return self.weights.get(task, self.default)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        return weighted_sum(losses, [self.weight(t) for t in losses])


class Sum(FixedWeights):
    """``L = Σ_i L_i`` (all λ_i = 1)."""

    name = "sum"

    def __init__(self) -> None:
        super().__init__({}, default=1.0)


class Mean(FixedWeights):
    """``L = (1/K) Σ_i L_i`` over the K tasks present in the batch."""

    name = "mean"

    def __init__(self) -> None:
        super().__init__({}, default=1.0)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        return super().combine(losses) / len(losses)
