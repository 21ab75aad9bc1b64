"""Nash-MTL (bargaining weights solving G α = 1/α), by Newton's method on the K × K system."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from torch import Tensor

from ._gramian import from_numpy
from ._options import is_integer, is_real, require
from ._state import check_state_keys
from .base import GramianWeighting

#: rows whose squared norm is below this fraction of the largest one count as zero
_ZERO_ROW = 1e-24
#: regularisation (relative to the largest diagonal entry) used when no solution exists
_RIDGE = 1e-10


def _newton(a: np.ndarray, power: float, max_iter: int) -> tuple[np.ndarray, bool]:
    """Minimise F(β) = ½ βᵀAβ − Σ_i h(β_i) over β > 0, h' = β^(−power).

    F is strictly convex on the positive orthant (Hessian A + power·diag(β^(−power−1)),
    A ⪰ 0) and its stationary points are exactly the solutions of A β = β^(−power). Damped
    Newton: full step cut to stay positive (fraction-to-boundary 0.99), halved until F
    decreases (Armijo) or the residual does. Returns (β, converged).
    """
    beta = np.clip(np.diag(a), 1e-300, None) ** (-1.0 / (1.0 + power))

    def objective(x: np.ndarray) -> float:
        h = np.log(x) if power == 1.0 else x ** (1.0 - power) / (1.0 - power)
        return float(0.5 * x @ a @ x - h.sum())

    abs_a = np.abs(a)

    def backward_error(x: np.ndarray) -> float:
        """max_i |(Ax − x^(−p))_i| / ((|A| x)_i + x_i^(−p)): rounding level when solved."""
        rhs = x ** (-power)
        return float(np.max(np.abs(a @ x - rhs) / (abs_a @ x + rhs)))

    for _ in range(max_iter):
        rhs = beta ** (-power)
        resid = a @ beta - rhs
        rnorm = float(np.linalg.norm(resid))
        if backward_error(beta) <= 1e-13:
            return beta, True
        hess = a + np.diag(power * beta ** (-power - 1.0))
        try:
            step = -np.linalg.solve(hess, resid)
        except np.linalg.LinAlgError:
            return beta, False
        if not np.all(np.isfinite(step)):
            return beta, False
        neg = step < 0
        t = 1.0
        if neg.any():
            t = min(1.0, 0.99 * float(np.min(beta[neg] / -step[neg])))
        f0 = objective(beta)
        slope = float(resid @ step)
        while t > 1e-16:
            trial = beta + t * step
            if objective(trial) <= f0 + 1e-4 * t * slope or \
                    np.linalg.norm(a @ trial - trial ** (-power)) < (1.0 - 1e-4 * t) * rnorm:
                break
            t *= 0.5
        else:
            return beta, backward_error(beta) <= 1e-10  # no decrease left: rounding level or stuck
        beta = trial
        if beta.max() > 1e150:
            return beta, False
    return beta, backward_error(beta) <= 1e-10


def solve_power_equation(gramian: np.ndarray, power: float = 1.0, max_iter: int = 100) -> np.ndarray:
    """Positive w with G w = w^(−power) elementwise (float64 in and out).

    ``power = 1`` gives Nash-MTL's bargaining solution G α = 1/α; ``power = 1/α`` gives
    FairGrad's α-fair weights. G is scaled to unit largest diagonal first (the solution
    of G = s·A is w = s^(−1/(1+power)) β with A β = β^(−power)), so the iteration is
    scale-free.

    Stopping rule: the componentwise backward error max_i |(Aβ − β^(−p))_i| /
    ((|A|β)_i + β_i^(−p)) ≤ 1e-13, i.e. β solves the system to rounding level (on
    well-conditioned full-rank G the relative residual is then ~1e-15; on rank-3-plus-noise
    Gramians with eigenvalues down to 1e-15 · max it is ≤ 1e-5), typically in 5–30
    iterations.

    Zero rows (‖g_i‖² ≤ 1e-24 · max_j ‖g_j‖²) get weight 0: their equation has no
    solution and they do not move the update. Singular G: a unique solution still exists
    unless some non-negative combination v of the rows vanishes (0 in the rows' conic
    hull, a Pareto-stationary point). Then F is unbounded below along v and no solution
    exists: Newton grows the weights along v until the equation holds to rounding level
    (weights about 1/√ε larger than usual), and if it cannot reach that, the
    ridge-regularised system (G + 1e-10 · max_i G_ii · I) w = w^(−power) is solved instead.
    Either way the weights are finite and the update's component along v is zero
    (Jᵀv = 0), so the update stays bounded.
    """
    k = gramian.shape[0]
    out = np.zeros(k)
    if k == 0:
        return out
    diag = np.diag(gramian)
    scale = float(diag.max())
    if not scale > 0:
        return out
    live = np.flatnonzero(diag > _ZERO_ROW * scale)
    a = gramian[np.ix_(live, live)] / scale
    beta, ok = _newton(a, power, max_iter)
    if not ok:
        beta, _ = _newton(a + _RIDGE * np.eye(len(live)), power, max_iter)
    out[live] = beta * scale ** (-1.0 / (1.0 + power))
    return out


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

    Properties: **permutation-invariant**; **scale-invariant**: J → sJ (s > 0) gives
    α/s and the same update (degree 0), with or without clipping.
    """

    name = "nash_mtl"

    def __init__(self, update_every: int = 1, max_norm: float = 1.0) -> None:
        require(is_integer(update_every) and update_every >= 1, "update_every",
                f"{update_every!r} is not an integer ≥ 1",
                "1 solves every step, n reuses the weights for n steps")
        require(is_real(max_norm) and max_norm >= 0, "max_norm",
                f"{max_norm!r} is not a finite number ≥ 0",
                "0 disables clipping, e.g. 1.0 as in the paper's code")
        self.update_every = update_every
        self.max_norm = float(max_norm)
        self.step = 0
        self.cache: dict[str, float] = {}

    def _solve(self, gramian: Tensor, eps: float, names: list[str],
               losses: Mapping[str, Tensor] | None) -> Tensor:
        g = gramian.numpy()
        if self.step % self.update_every == 0 or any(t not in self.cache for t in names):
            alpha = solve_power_equation(g)
            self.cache.update({t: float(a) for t, a in zip(names, alpha)})
        else:
            alpha = np.array([self.cache[t] for t in names])
        self.step += 1
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
