"""ExcessMTL: task weights that follow estimated excess risks (He et al., ICML 2024)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from ..errors import DataError
from ._options import is_integer, number, require
from ._state import check_state_keys
from .base import GradientAggregator, task_names


class ExcessMTL(GradientAggregator):
    r"""Excess-risk weighting (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust
    Multi-Task Learning with Excess Risks", ICML 2024, §3).

    The excess risk of task i is estimated by a second-order expansion around the optimum,
    :math:`\hat E_i ≈ g_i^\top H_i^{-1} g_i` (eq. 6), with the Hessian replaced by the
    AdaGrad diagonal accumulated over the calls (eq. 7):

    .. math::

        S_i \mathrel{+}= g_i ⊙ g_i, \qquad
        \hat E_i = \sum_p \frac{g_{ip}^2}{\sqrt{S_{ip} + 10^{-7}}},

    divided by its value at the start of training, :math:`\hat E_i^{(0)}` (scale
    processing, §3.2: makes tasks with different loss units comparable; the ratio is capped
    at 10⁶, and a zero baseline makes it 1). The weights take an
    exponentiated-gradient step on the simplex (eq. 9) and the update is their combination:

    .. math::

        α_i \leftarrow \frac{α_i \exp(η\, \hat E_i / \hat E_i^{(0)})}{\sum_j α_j \exp(η\,
        \hat E_j / \hat E_j^{(0)})}, \qquad d = \sum_i α_i g_i,

    with α initially uniform and ``robust_step_size`` η. Tasks far from their optimum
    (large excess risk) gain weight, unlike loss-based weights that favour noisy tasks.

    It needs the per-task gradients themselves (the AdaGrad statistic is per coordinate, so
    a Gramian does not suffice): a :class:`GradientAggregator` on the Jacobian, at the
    level of the shared *parameters* (feature gradients of different batches are not the
    same coordinates). State (:meth:`state_dict`, keyed by task): the accumulated squares
    S_i (one P-vector per task), log α_i, :math:`\hat E_i^{(0)}` and the step count.

    ``warmup_steps``: during the first calls the weights stay uniform and
    :math:`\hat E_i^{(0)}` is the mean estimate over them (the paper, App. C.1, collects
    statistics for 3 epochs); with 0 (default, as the official code) it is the first
    call's estimate. Deviations: (a) the official code (and LibMTL) does not divide the
    very first estimate by itself, so its first step depends on the gradients' absolute
    scale; here it is divided, so the first step leaves the weights uniform; (b) the
    weights live on the simplex as in the paper (sum 1; the official code rescales them
    to sum K, i.e. a K times larger step). A task absent from a batch keeps its state; the
    weights of the present tasks are renormalised over them.
    """

    name = "excess_mtl"
    needs = "jacobian"
    levels = ("params",)

    def __init__(self, robust_step_size: float = 1.0, warmup_steps: int = 0) -> None:
        self.robust_step_size = number(
            "robust_step_size",
            robust_step_size,
            low=0.0,
            strict=True,
            fix="the step η > 0 of the weights' exponentiated update, e.g. 1.0",
        )
        require(
            is_integer(warmup_steps) and warmup_steps >= 0,
            "warmup_steps",
            f"{warmup_steps!r} must be an integer ≥ 0",
            "e.g. 0, or 3 epochs' worth of steps as in the paper",
        )
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.sq_sum: dict[str, Tensor] = {}
        self.log_alpha: dict[str, float] = {}
        self.baseline: dict[str, float] = {}
        self.warm_sum: dict[str, float] = {}
        self.warm_count: dict[str, int] = {}
        self.last_weights: Tensor | None = None

    def aggregate(self, jacobian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        if jacobian.dim() != 2:
            raise ValueError(
                f"excess_mtl: the Jacobian must be (K, P), got shape {tuple(jacobian.shape)}"
            )
        names = task_names(jacobian.shape[0], losses)
        if not names:  # no task in this step: nothing to balance, no state to advance
            return jacobian.detach().new_zeros(jacobian.shape[1])
        g = jacobian.detach()
        for t in names:
            s = self.sq_sum.get(t)
            if s is not None and s.shape != g.shape[1:]:
                raise DataError(
                    f"task {t!r}",
                    f"excess_mtl: {g.shape[1]} gradient entries but "
                    f"the task's statistics have {s.shape[0]}",
                    "keep the shared parameters fixed during a run (and use level=params)",
                )
        sq = g * g
        sums = []
        for i, t in enumerate(names):
            s = self.sq_sum.get(t)
            if s is None:
                s = sq[i].clone()
            else:  # in place: state_dict() hands out copies
                s = s.to(g.device, g.dtype)
                s.add_(sq[i])
            self.sq_sum[t] = s
            sums.append((sq[i] / torch.sqrt(s + 1e-7)).sum(dtype=torch.float64))
        excess = torch.stack(sums).tolist()  # one host synchronisation for every task
        in_warmup = self.steps < self.warmup_steps
        self.steps += 1
        if in_warmup:
            for t, e in zip(names, excess):
                self.warm_sum[t] = self.warm_sum.get(t, 0.0) + e
                self.warm_count[t] = self.warm_count.get(t, 0) + 1
        else:
            for t, e in zip(names, excess):
                if t not in self.baseline:
                    n = self.warm_count.get(t, 0)
                    self.baseline[t] = self.warm_sum[t] / n if n else e
                b = self.baseline[t]
                # relative excess risk; a zero baseline (a task that started at a stationary
                # point) counts any later excess as 1
                ratio = min(e / b, 1e6) if b > 0 else (0.0 if e == 0 else 1.0)
                self.log_alpha[t] = self.log_alpha.get(t, 0.0) + self.robust_step_size * ratio
            # keep log α bounded: only differences matter
            top = max(self.log_alpha.values())
            if math.isfinite(top):
                self.log_alpha = {t: v - top for t, v in self.log_alpha.items()}
        alpha = torch.softmax(
            torch.tensor([self.log_alpha.get(t, 0.0) for t in names], dtype=torch.float64), 0
        )
        self.last_weights = alpha
        # in J's dtype, as every aggregator applies its weights (no float64 copy of J)
        return alpha.to(g.device, g.dtype) @ g

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "log_alpha": dict(self.log_alpha),
            "baseline": dict(self.baseline),
            "warm_sum": dict(self.warm_sum),
            "warm_count": dict(self.warm_count),
            "sq_grad_sum": {t: s.detach().cpu().clone() for t, s in self.sq_sum.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(
            self.name,
            state,
            {"steps", "log_alpha", "baseline", "warm_sum", "warm_count", "sq_grad_sum"},
        )
        self.steps = int(state.get("steps", 0))
        self.log_alpha = {t: float(v) for t, v in state.get("log_alpha", {}).items()}
        self.baseline = {t: float(v) for t, v in state.get("baseline", {}).items()}
        self.warm_sum = {t: float(v) for t, v in state.get("warm_sum", {}).items()}
        self.warm_count = {t: int(v) for t, v in state.get("warm_count", {}).items()}
        self.sq_sum = {
            t: (s.clone() if torch.is_tensor(s) else torch.tensor(s, dtype=torch.float64))
            for t, s in state.get("sq_grad_sum", {}).items()
        }
