"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): one learned noise scale per task."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ._options import finite, known_tasks, require
from ._state import LearnedTaskScalars, check_state_keys, host_values_on
from .base import LossWeighting

KINDS = ("regression", "classification")


class UncertaintyWeighting(LossWeighting):
    r"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018).

    Each task i learns :math:`s_i = \log σ_i^2` (initialised to ``init_log_var``) jointly
    with the model, as the negative log-likelihood of the task under an observation noise
    σ_i:

    .. math::

        L = \sum_i c_i\, e^{-s_i} L_i + \tfrac12 s_i, \qquad
        c_i = \begin{cases} \tfrac12 & \text{regression (Gaussian likelihood, eq. 5)} \\
                            1 & \text{classification (scaled softmax, eq. 10)} \end{cases}

    For a regression task whose ``L_i`` is a mean squared error, ``∂L/∂s_i = 0`` at
    :math:`σ_i^2 = L_i` (the maximum-likelihood noise variance); for classification at
    :math:`σ_i^2 = 2 L_i`. The model receives ``c_i / σ_i^2 · ∇L_i``. (LibMTL applies the
    regression form to every task, with s initialised to −0.5.)

    Options: ``kind`` — ``"regression"`` or ``"classification"`` for every task, or a
    mapping task -> kind (unlisted tasks are regression); ``init_log_var`` — initial s_i.
    The s_i are exposed by :meth:`parameters` (the Trainer optimises them with the model,
    without weight decay) and saved by :meth:`state_dict`.
    """

    name = "uw"

    def __init__(
        self, kind: str | Mapping[str, str] = "regression", init_log_var: float = 0.0
    ) -> None:
        kinds = {"*": kind} if isinstance(kind, str) else dict(kind)
        for t, k in kinds.items():
            require(
                k in KINDS,
                "kind" if t == "*" else f"kind.{t}",
                f"{k!r} is not a task kind",
                f"use one of {list(KINDS)}",
            )
        self.kinds = kinds
        init = finite("init_log_var", init_log_var, "give the initial log σ² as a number, e.g. 0")
        self.log_vars = LearnedTaskScalars(self.name, init)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)
        known_tasks("kind", set(self.kinds) - {"*"}, tasks)
        self.log_vars.bind(tasks)

    def kind(self, task: str) -> str:
        return self.kinds.get(task, self.kinds.get("*", "regression"))

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.log_vars.parameters()

    def variances(self) -> dict[str, float]:
        """Current σ_i² = e^{s_i} per task."""
        return {t: math.exp(v) for t, v in self.log_vars.state_dict().items()}

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        # one expression over the stacked tasks: a few kernels whatever K
        stacked = torch.stack(list(losses.values()))
        s = torch.stack([self.log_vars.get(t) for t in losses]).to(stacked.device, stacked.dtype)
        c = [0.5 if self.kind(t) == "regression" else 1.0 for t in losses]
        factor = host_values_on(c, stacked)
        return (factor * torch.exp(-s) * stacked + 0.5 * s).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"log_var": self.log_vars.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"log_var"})
        self.log_vars.load_state_dict(state.get("log_var", {}))
