"""A balancing method: ``L = Σ_i L_i / sg(L_i)``, every task's loss rescaled to 1."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from polytask.balancing import LossWeighting

#: every instance built, so that a test can see the one a config made
BUILT: list[InverseLoss] = []


class InverseLoss(LossWeighting):
    """``λ_i = 1 / max(L_i, eps)`` (not differentiated): each task contributes 1 to ``L``.

    ``history`` keeps the weights of every step; :data:`BUILT` every instance (for the test).
    """

    name = "inverse_loss"

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = float(eps)
        self.history: list[dict[str, float]] = []
        BUILT.append(self)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        weights = {t: 1.0 / max(float(loss.detach()), self.eps) for t, loss in losses.items()}
        self.history.append(weights)
        return torch.stack([weights[t] * loss for t, loss in losses.items()]).sum()
