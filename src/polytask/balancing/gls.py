"""GLS: the geometric mean of the task losses (Chennupati et al., CVPR Workshops 2019)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..errors import DataError
from .base import LossWeighting


class GeometricLossStrategy(LossWeighting):
    r"""Geometric loss strategy (Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++:
    Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning",
    CVPR Workshops 2019).

    .. math::

        L = \Big(\prod_{i=1}^{K} L_i\Big)^{1/K}
          = \exp\Big(\tfrac1K \sum_i \log L_i\Big),
        \qquad \frac{\partial L}{\partial L_i} = \frac{L}{K\, L_i},

    over the K tasks present in the batch: a task's effective weight is inversely
    proportional to its own loss, so the update does not depend on the losses' units.
    Computed in log space in float64 (a product of 40 small losses would underflow) and
    returned in the losses' dtype. The losses must be non-negative; a zero loss is read as
    the smallest positive float64, so ``L`` is then about 0 and every gradient stays finite.
    """

    name = "gls"

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        stacked = torch.stack(list(losses.values()))
        if bool((stacked.detach() < 0).any()):
            negative = [t for t, v in losses.items() if float(v.detach()) < 0]
            raise DataError(
                "losses",
                "gls: the geometric mean needs non-negative losses, got "
                f"negative ones for {negative}",
                "use a method that accepts them (e.g. mean)",
            )
        logs = torch.log(stacked.double().clamp_min(torch.finfo(torch.float64).tiny))
        return torch.exp(logs.mean()).to(stacked.dtype)
