"""Task affinity during training (Fifty et al., "Efficiently Identifying Task Groupings for
Multi-Task Learning", NeurIPS 2021): how a step along one task's gradient changes every
other task's loss.

Every ``every`` steps, for each pair of tasks (i, j) present in the step, with θ the shared
parameters, g_i = ∇_θ L_i on the step's batch of task i and η the current learning rate,

    θ⁺_i = θ − η g_i                                  (one SGD step along task i alone)
    Z_ij = 1 − L_j(θ⁺_i) / L_j(θ)                    (L_j on the step's batch of task j)

positive when task i's step lowers task j's loss. The lookahead re-evaluates the step's
losses with the step's own dropout masks (the training RNG is replayed, module buffers
kept) and restores θ exactly: the training itself is untouched, and the optimiser's state
is not used. The matrix averages Z over the samples (``counts`` says how many saw each
pair). It costs, per sample, K backward passes through the step's graph and K forward
passes. ``Z_ii`` (a task's step onto itself) is recorded too: a task's affinity with an
exact duplicate of itself is its own diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["AffinityRecorder"]

Lookahead = Callable[[], Mapping[str, torch.Tensor]]


@dataclass
class Gradients:
    """What a sample takes before the step's backward pass: each task's loss value and its
    gradient at the shared parameters."""

    losses: dict[str, float]
    grads: dict[str, tuple[torch.Tensor | None, ...]]


class AffinityRecorder:
    """Accumulates Z over the sampled steps of one training run."""

    def __init__(self, tasks: Sequence[str], every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.tasks = list(tasks)
        self.every = every
        k = len(self.tasks)
        self.sums = [[0.0] * k for _ in range(k)]
        self.counts = [[0] * k for _ in range(k)]
        self.samples = 0
        #: the learning rate of the step being sampled (set by the trainer)
        self.lr = 0.0

    def due(self, step: int) -> bool:
        """Whether 1-based step ``step`` is sampled (steps 1, 1 + every, ...)."""
        return (step - 1) % self.every == 0

    @torch.no_grad()
    def _lookahead(
        self,
        shared: Sequence[torch.nn.Parameter],
        grads: Sequence[torch.Tensor | None],
        evaluate: Lookahead,
    ) -> dict[str, float]:
        saved = [p.detach().clone() for p in shared]
        try:
            for p, g in zip(shared, grads):
                if g is not None:
                    p.sub_(self.lr * g)
            return {t: float(v) for t, v in evaluate().items()}
        finally:
            for p, s in zip(shared, saved):
                p.copy_(s)

    def gradients(
        self, losses: Mapping[str, torch.Tensor], shared: Sequence[torch.nn.Parameter]
    ) -> Gradients | None:
        """The first half of a sample: each present task's loss and its gradient at the
        shared parameters (``losses`` keep their graph). Take it before the step's backward
        pass, and :meth:`measure` after it: the lookahead moves the parameters in place,
        which the backward pass of a graph that saved them (any layer above the first) would
        refuse."""
        present = [t for t in self.tasks if t in losses]
        if not present or self.lr <= 0:
            return None
        return Gradients(
            {t: float(losses[t].detach()) for t in present},
            {
                t: tuple(
                    torch.autograd.grad(
                        losses[t], list(shared), retain_graph=True, allow_unused=True
                    )
                )
                for t in present
            },
        )

    def record(
        self,
        losses: Mapping[str, torch.Tensor],
        shared: Sequence[torch.nn.Parameter],
        evaluate: Lookahead,
    ) -> None:
        """One sample at once (:meth:`gradients`, then :meth:`measure`): for callers whose
        graph is not needed after it."""
        taken = self.gradients(losses, shared)
        if taken is not None:
            self.measure(taken, shared, evaluate)

    def measure(
        self, taken: Gradients, shared: Sequence[torch.nn.Parameter], evaluate: Lookahead
    ) -> None:
        """The second half of a sample: for each task i, ``evaluate()`` (the step's losses,
        no gradient, same batches and dropout masks) at θ − η g_i, and θ restored."""
        base = taken.losses
        present = list(base)
        index = {t: n for n, t in enumerate(self.tasks)}
        for i in present:
            after = self._lookahead(shared, taken.grads[i], evaluate)
            for j in present:
                if base[j] > 0 and j in after:
                    z = 1.0 - after[j] / base[j]
                    self.sums[index[i]][index[j]] += z
                    self.counts[index[i]][index[j]] += 1
        self.samples += 1

    def matrix(self) -> list[list[float | None]]:
        """The mean Z (``None`` for a pair never seen together)."""
        return [
            [s / c if c else None for s, c in zip(row, counts)]
            for row, counts in zip(self.sums, self.counts)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "matrix": self.matrix(),
            "counts": self.counts,
            "samples": self.samples,
            "every": self.every,
            "definition": "Z[i][j] = 1 - L_j(theta - lr * grad L_i) / L_j(theta), shared "
            "parameters, the step's batches (Fifty et al. 2021)",
        }
