"""GradDrop (gradient sign dropout) on the per-task gradients of the shared features."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ._options import is_real, known_tasks, require
from ._state import Seeded, check_state_keys
from .base import GradientAggregator, task_names


class GradDrop(GradientAggregator, Seeded):
    r"""GradDrop: keep, at every feature coordinate, only the gradients of one sign, drawn
    with the probability of that sign's share (Chen, Ngiam, Huang, Luong, Kretzschmar,
    Chai, Anguelov, 2020, "Just Pick a Sign: Optimizing Deep Multitask Models with
    Gradient Sign Dropout", NeurIPS).

    With :math:`G_i` task i's feature gradient summed over the batch (the paper's
    batch-separated case), the positive sign purity per coordinate is

    .. math:: \mathcal P = \tfrac12\Big(1 + \frac{\sum_i G_i}{\sum_i |G_i|}\Big)\in[0,1],

    and with :math:`U\sim\mathcal U(0,1)` drawn once per coordinate,
    :math:`M_i = \mathbb 1[\mathcal P > U]\,\mathbb 1[G_i > 0] + \mathbb 1[\mathcal P < U]\,
    \mathbb 1[G_i < 0]` and the feature gradient becomes
    :math:`\sum_i (\ell_i + (1-\ell_i) M_i) \circ \nabla L_i`: at each coordinate either all
    positive or all negative task gradients pass, the positive ones with probability
    :math:`\mathcal P`. Leak :math:`\ell_i` ∈ [0, 1] (``leak``: one number, or a mapping task
    name → number, missing tasks 0) lets that fraction of task i's gradient through
    unconditionally; 0 is pure GradDrop, 1 the plain sum.

    Input: ``aggregate(J)`` takes the per-task feature gradients either flattened,
    J of shape (K, P) — every column its own coordinate —, or batch-separated,
    J of shape (K, B, *F): then P and the masks are computed from the batch sums
    (K, *F) and broadcast over the B examples, and the result has shape (B, *F). GradDrop
    is elementwise, hence not a function of the Gramian, and works on shared features
    only (``levels = ("features",)``), as its paper defines it.

    Deviations: f (the paper's optional monotone map of P) is the identity, as in the
    paper's experiments; the paper multiplies G_i by sign(A) of the layer's input
    activations A before summing, which an aggregator that sees gradients only cannot do
    (torchjd and LibMTL omit it too). U is drawn from ``generator`` (or ``seed``; default
    torch's global generator) on the CPU, in float64, one value per coordinate.

    Properties: **permutation-invariant** (P is symmetric and U does not depend on the
    task order; leaks follow the task names); **scale-linear** for positive factors (P and
    the masks are scale-free) — both exactly, given the same draws.
    """

    name = "graddrop"
    needs = "jacobian"
    levels = ("features",)

    def __init__(
        self,
        leak: float | Mapping[str, float] = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        values = leak.items() if isinstance(leak, Mapping) else [(None, leak)]
        for task, value in values:
            require(
                is_real(value) and 0.0 <= value <= 1.0,
                "leak" if task is None else f"leak.{task}",
                f"{value!r} is not in [0, 1]",
                "0 is pure GradDrop, 1 lets the task's whole gradient through",
            )
        self.leak: float | dict[str, float] = (
            dict(leak) if isinstance(leak, Mapping) else float(leak)
        )
        self._init_generator(seed, generator)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)
        if isinstance(self.leak, dict):
            known_tasks("leak", self.leak, self.tasks)

    def _leaks(self, names: list[str]) -> list[float]:
        if isinstance(self.leak, dict):
            return [float(self.leak.get(t, 0.0)) for t in names]
        return [self.leak] * len(names)

    def aggregate(self, jacobian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        if jacobian.dim() < 2:
            raise ValueError(
                f"{self.name}: the Jacobian must be (K, P) or (K, B, *F), "
                f"got shape {tuple(jacobian.shape)}"
            )
        k = int(jacobian.shape[0])
        names = task_names(k, losses)
        if k == 0:
            return jacobian.new_zeros(jacobian.shape[1:])
        batched = jacobian.dim() >= 3
        summed = jacobian.sum(dim=1) if batched else jacobian  # (K, *F)
        total = summed.sum(dim=0)
        spread = summed.abs().sum(dim=0)
        purity = 0.5 * (
            1.0
            + torch.where(
                spread > 0, total / torch.where(spread > 0, spread, 1.0), torch.zeros_like(total)
            )
        )
        draws = torch.rand(tuple(purity.shape), generator=self.generator, dtype=torch.float64)
        draws = draws.to(device=purity.device, dtype=purity.dtype)
        keep = ((purity > draws) & (summed > 0)) | ((purity < draws) & (summed < 0))  # (K, *F)
        leak = torch.tensor(self._leaks(names), dtype=jacobian.dtype, device=jacobian.device)
        leak = leak.reshape((k,) + (1,) * (summed.dim() - 1))
        factor = leak + (1.0 - leak) * keep.to(jacobian.dtype)
        if batched:
            factor = factor.unsqueeze(1)
        return (factor * jacobian).sum(dim=0)

    def state_dict(self) -> dict[str, Any]:
        return self.random_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"generator"})
        self.load_random_state(state)
