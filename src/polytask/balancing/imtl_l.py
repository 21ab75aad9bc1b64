"""IMTL-L: learned loss scales that make every scaled loss equal (Liu et al., ICLR 2021)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ._state import LearnedLogScales
from .base import LossWeighting


class IMTLL(LearnedLogScales, LossWeighting):
    r"""Loss balancing of Impartial Multi-Task Learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao &
    Zhang, "Towards Impartial Multi-task Learning", ICLR 2021, §3.2).

    Each task learns a scale :math:`s_i` (initialised to ``init_scale``) and the model
    minimises

    .. math::

        L = \sum_i \left( e^{s_i} L_i - s_i \right).

    For fixed ``L_i`` the minimiser is :math:`s_i^\star = -\log L_i`, where every scaled loss
    :math:`e^{s_i} L_i` equals 1 — the scales remove the losses' units ("impartial" loss
    magnitudes). ``∂L/∂s_i = e^{s_i} L_i - 1``; the model receives ``e^{s_i} ∇L_i``. The
    losses must be positive. The s_i are exposed by :meth:`parameters` (the Trainer optimises
    them with the model) and saved by :meth:`state_dict`.
    """

    name = "imtl_l"

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        stacked = torch.stack(list(losses.values()))  # one expression whatever K
        s = torch.stack([self.scales.get(t) for t in losses]).to(stacked.device, stacked.dtype)
        return (torch.exp(s) * stacked - s).sum()
