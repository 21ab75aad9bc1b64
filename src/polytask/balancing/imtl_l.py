"""IMTL-L: learned loss scales that make every scaled loss equal (Liu et al., ICLR 2021)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .base import LossWeighting
from ._options import finite
from ._state import check_state_keys
from .uw import LearnedTaskScalars


class LearnedLogScales:
    """The learned log-scales s_i of IMTL-L, shared with the IMTL hybrid: created at
    ``bind``, optimised with the model (``parameters()``), saved in ``state_dict``."""

    name: str

    def __init__(self, init_scale: float = 0.0) -> None:
        init = finite("init_scale", init_scale, "give the initial log-scale s as a number, e.g. 0")
        self.scales = LearnedTaskScalars(self.name, init)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)  # type: ignore[misc]
        self.scales.bind(tasks)

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.scales.parameters()

    def loss_scales(self) -> dict[str, float]:
        """Current e^{s_i} per task."""
        return {t: math.exp(v) for t, v in self.scales.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scales.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"scale"})
        self.scales.load_state_dict(state.get("scale", {}))


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
        terms = []
        for t, loss in losses.items():
            s = self.scales.get(t).to(loss.dtype)
            terms.append(torch.exp(s) * loss - s)
        return torch.stack(terms).sum()
