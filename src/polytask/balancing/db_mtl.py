"""DB-MTL: log-loss scale balancing plus gradient-magnitude balancing (Lin et al., 2023)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..errors import DataError
from ._options import number, require
from ._state import check_state_keys
from .base import GradientAggregator, task_names


class DBMTL(GradientAggregator):
    r"""Dual-Balancing Multi-Task Learning (Lin, Ye, Xu, Shi, Zhang & Kwok, "Dual-Balancing for
    Multi-Task Learning", arXiv:2308.12029, 2023, Algorithm 1).

    *Loss-scale balancing*: every task is trained on :math:`\log(L_i + ε)`, whose gradient
    is :math:`g_i = ∇L_i / (L_i + ε)`, so the losses' units drop out. *Gradient-magnitude
    balancing*: an exponential moving average of each task's gradient,

    .. math::

        \hat g_i^{(t)} = β_t\, \hat g_i^{(t-1)} + (1 - β_t)\, g_i^{(t)}, \qquad
        β_t = β / t^{σ}, \quad \hat g_i^{(0)} = 0,

    is rescaled to the norm of the largest one:

    .. math::

        d = \sum_i \frac{\max_j \|\hat g_j\|}{\|\hat g_i\| + ε}\, \hat g_i .

    ``beta`` is β (0.9), ``beta_sigma`` σ (0: a constant β), t counts the calls.
    :meth:`aggregate` takes the Jacobian of the *plain* losses together with their values
    (``losses``) and divides row i by :math:`L_i + ε` itself; without ``losses`` the rows
    are taken to be the gradients of the log-losses already.

    Needs the Jacobian (the EMA is over gradient vectors, not Gramians) at the level of the
    shared *parameters*: shared features change meaning from one batch to the next, so an
    average of their gradients across steps is not defined. The EMA buffers (one P-vector
    per task, in the Jacobian's dtype; norms in float64) are saved by :meth:`state_dict`,
    keyed by task; a task absent from a step keeps its buffer. Deviation: the paper also
    trains task-specific parameters on :math:`\log L_i`; under the engine they receive
    :math:`∇L_i`, as for every gradient aggregator.
    """

    name = "db_mtl"
    needs = "jacobian"
    levels = ("params",)

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8) -> None:
        beta_fix = "the EMA factor β in [0, 1), e.g. 0.9"
        self.beta = number("beta", beta, low=0.0, strict=False, fix=beta_fix)
        require(self.beta < 1, "beta", f"{beta!r} must be < 1", beta_fix)
        self.beta_sigma = number(
            "beta_sigma",
            beta_sigma,
            low=0.0,
            strict=False,
            fix="the decay exponent σ ≥ 0 of β_t = β / t^σ, e.g. 0",
        )
        self.eps = number(
            "eps", eps, low=0.0, strict=True, fix="a small positive number, e.g. 1e-8"
        )
        self.step = 0
        self.buffers: dict[str, Tensor] = {}

    def aggregate(self, jacobian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        if jacobian.dim() != 2:
            raise ValueError(
                f"db_mtl: the Jacobian must be (K, P), got shape {tuple(jacobian.shape)}"
            )
        names = task_names(jacobian.shape[0], losses)
        if not names:  # no task in this step: nothing to balance, no state to advance
            return jacobian.detach().new_zeros(jacobian.shape[1])
        rows = jacobian.detach()
        if losses is not None:
            scale = torch.tensor(
                [float(v.detach()) + self.eps for v in losses.values()], dtype=torch.float64
            )
            rows = rows / scale.to(rows.device, rows.dtype).unsqueeze(1)
        for t in names:
            b = self.buffers.get(t)
            if b is not None and b.shape != rows.shape[1:]:
                raise DataError(
                    f"task {t!r}",
                    f"db_mtl: {rows.shape[1]} gradient entries but "
                    f"the task's average has {b.shape[0]}",
                    "keep the shared parameters fixed during a run (and use level=params)",
                )
        self.step += 1
        beta = self.beta / self.step**self.beta_sigma
        averaged = []
        for i, t in enumerate(names):
            b = self.buffers.get(t)
            b = torch.zeros_like(rows[i]) if b is None else b.to(rows.device, rows.dtype)
            b = beta * b + (1 - beta) * rows[i]
            self.buffers[t] = b
            averaged.append(b)
        g = torch.stack(averaged)
        norms = g.double().norm(dim=1)
        alpha = norms.max() / (norms + self.eps)
        update: Tensor = (alpha.to(g.device) @ g.double()).to(g.dtype)
        return update

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "buffers": {t: b.detach().cpu().clone() for t, b in self.buffers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"step", "buffers"})
        self.step = int(state.get("step", 0))
        self.buffers = {
            t: (b.clone() if torch.is_tensor(b) else torch.tensor(b, dtype=torch.float64))
            for t, b in state.get("buffers", {}).items()
        }
