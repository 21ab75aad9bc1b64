"""Nash-MTL (bargaining weights solving G α = 1/α), by Newton's method on the K × K system."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from torch import Tensor

from ._gramian import from_numpy
from ._options import is_integer, is_real, require
from ._power_equation import (
    fallback_power_weights,
    solve_power_equation,
    solves_power_equation,
)
from ._qp import conflict_free_part, resolved
from ._state import check_state_keys
from .base import GramianWeighting


class NashMTL(GramianWeighting):
    r"""Nash-MTL: the Nash bargaining solution among tasks (Navon, Shamsian, Achituve,
    Maron, Kawaguchi, Chechik, Fetaya, 2022, "Multi-Task Learning as a Bargaining Game",
    ICML).

    The update :math:`d = J^\top\alpha` with :math:`\alpha > 0` solving

    .. math:: G\alpha = 1/\alpha \quad (\text{elementwise}),\qquad G = JJ^\top ,

    i.e. each task's directional derivative along d is :math:`g_i^\top d = 1/\alpha_i`
    (Theorem 5.1). Solved directly on the K × K system by damped Newton on the strictly
    convex :math:`F(\alpha) = \tfrac12\alpha^\top G\alpha - \sum_i\log\alpha_i`
    (:func:`solve_power_equation`): ~10 iterations of a K × K solve, no convex-solver
    sequence as in the official code (which stops at ‖Gα − 1/α‖ < 1e-3 on G/‖G‖_F).

    Options as in the paper's code: ``update_every`` (default 1) re-solves every that many
    calls and reuses the cached α in between (the cache and the call counter are state,
    keyed by task name; a task without a cached α forces a solve); ``max_norm`` (default
    1.0, 0 disables) rescales α so that ‖d‖ = √(αᵀGα) ≤ max_norm — the update's norm in the
    space where the Gramian was taken (the official code clips the parameter gradient
    instead). Note ‖d‖² = Σ α_i (Gα)_i = K at the exact solution.

    Deviation: the official code returns the weights of the normalised system
    (G/‖G‖_F) β = 1/β, i.e. √‖G‖_F · α, which makes its update scale-linear before
    clipping; here the weights are the paper's α. Singular G and zero rows: see
    :func:`solve_power_equation`.

    **No conflicting update.** A fresh solve is certified
    (:func:`._power_equation.solves_power_equation`: ``α_i ⟨g_i, d⟩ = 1`` for every task,
    to 1e-3). Where it fails — no solution exists when 0 is in the conic hull of the rows
    (a Pareto-stationary point, which the paper's analysis sets aside), and rounding can
    make a nearly stationary J behave so — the update is the part of the direction of the
    ridge-regularised equation's weights (:func:`._power_equation.fallback_power_weights`:
    unique, and stable under rounding where Newton's stopped iterate is not) that
    conflicts with no task (:func:`._qp.conflict_free_part`: its projection onto the dual
    cone of the rows, 0 at a strongly stationary J), clipped as usual. An update the
    Gramian does not tell apart from 0 (:func:`._qp.resolved`) is 0. Weights reused under
    ``update_every`` are not re-certified (they solve an earlier step's equation).

    Properties: **permutation-invariant**; **scale-invariant**: J → sJ (s > 0) gives
    α/s and the same update (degree 0), with or without clipping.
    """

    name = "nash_mtl"

    def __init__(self, update_every: int = 1, max_norm: float = 1.0) -> None:
        require(
            is_integer(update_every) and update_every >= 1,
            "update_every",
            f"{update_every!r} is not an integer ≥ 1",
            "1 solves every step, n reuses the weights for n steps",
        )
        require(
            is_real(max_norm) and max_norm >= 0,
            "max_norm",
            f"{max_norm!r} is not a finite number ≥ 0",
            "0 disables clipping, e.g. 1.0 as in the paper's code",
        )
        self.update_every = update_every
        self.max_norm = float(max_norm)
        self.step = 0
        self.cache: dict[str, float] = {}

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        g = gramian.numpy()
        fresh = self.step % self.update_every == 0 or any(t not in self.cache for t in names)
        if fresh:
            alpha = solve_power_equation(g)
            self.cache.update({t: float(a) for t, a in zip(names, alpha)})
        else:
            alpha = np.array([self.cache[t] for t in names])
        self.step += 1
        if fresh and not solves_power_equation(g, alpha):
            alpha = fallback_power_weights(g, 1.0, eps)
            alpha = conflict_free_part(gramian, from_numpy(alpha), eps).numpy()
        elif not resolved(gramian, from_numpy(alpha), eps):
            alpha = np.zeros_like(alpha)
        if self.max_norm > 0:
            norm = math.sqrt(max(float(alpha @ g @ alpha), 0.0))
            if norm > self.max_norm:
                alpha = alpha * (self.max_norm / norm)
        return from_numpy(alpha)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "alpha": dict(self.cache)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"step", "alpha"})
        self.step = int(state.get("step", 0))
        self.cache = {str(t): float(a) for t, a in dict(state.get("alpha", {})).items()}
