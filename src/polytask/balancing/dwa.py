"""DWA: weights from the rate at which each task's epoch loss falls (Liu, Johns & Davison, CVPR
2019)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ._options import number
from ._state import check_state_keys, weighted_sum
from .base import Closure, LossWeighting


class DynamicWeightAverage(LossWeighting):
    r"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019, eq. 7).

    With :math:`\bar L_k(t)` the mean training loss of task k over epoch t,

    .. math::

        w_k(t-1) = \frac{\bar L_k(t-1)}{\bar L_k(t-2)}, \qquad
        λ_k(t) = \frac{K \exp(w_k(t-1)/T)}{\sum_i \exp(w_i(t-1)/T)},
        \qquad L = \sum_k λ_k(t)\, L_k,

    and :math:`w_k = 1` while task k has fewer than two finished epochs (so the first two
    epochs use λ = 1). A task whose loss falls more slowly gets a larger weight;
    ``temperature`` T softens the weights (T → ∞: all 1). K is the number of tasks present
    in the batch, so the weights of a batch sum to K.

    Lifecycle: :meth:`after_step` adds each step's (detached) losses to the running epoch
    means; :meth:`on_epoch_end` closes the epoch and keeps the last two means per task
    (a task that had no labelled batch in an epoch keeps its previous history). A
    non-positive mean makes that task's ratio 1. :meth:`state_dict` holds the history and
    the running sums, keyed by task.
    """

    name = "dwa"

    def __init__(self, temperature: float = 2.0) -> None:
        self.temperature = number(
            "temperature", temperature, low=0.0, strict=True, fix="use e.g. 2.0 (the paper's value)"
        )
        self.history: dict[str, list[float]] = {}
        #: per task, the sum of this epoch's losses: a tensor on the losses' device until
        #: the epoch ends (no host synchronisation per step)
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def after_step(self, losses: Mapping[str, Tensor], closure: Closure | None = None) -> None:
        for t, v in losses.items():
            self.sums[t] = self.sums.get(t, 0.0) + v.detach().double()
            self.counts[t] = self.counts.get(t, 0) + 1

    def on_epoch_end(self) -> None:
        for t, n in self.counts.items():
            if n > 0:
                self.history[t] = (self.history.get(t, []) + [float(self.sums[t]) / n])[-2:]
        self.sums, self.counts = {}, {}

    def ratio(self, task: str) -> float:
        """w_k(t-1): last epoch mean over the one before, 1 without two epochs of history."""
        h = self.history.get(task, [])
        if len(h) < 2 or h[0] <= 0 or h[1] <= 0:
            return 1.0
        return h[1] / h[0]

    def weights(self, tasks: list[str]) -> Tensor:
        """λ_k for the given tasks (float64), summing to ``len(tasks)``."""
        w = torch.tensor([self.ratio(t) for t in tasks], dtype=torch.float64)
        return len(tasks) * torch.softmax(w / self.temperature, dim=0)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        lam = self.weights(list(losses))
        return weighted_sum(losses, lam.tolist())  # the same each step of an epoch: cached

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": {t: list(h) for t, h in self.history.items()},
            "sums": {t: float(v) for t, v in self.sums.items()},
            "counts": dict(self.counts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"history", "sums", "counts"})
        self.history = {t: [float(x) for x in h] for t, h in state.get("history", {}).items()}
        self.sums = {t: float(v) for t, v in state.get("sums", {}).items()}
        self.counts = {t: int(v) for t, v in state.get("counts", {}).items()}
