"""The power equation ``G w = w^(−p)`` (elementwise) on a K × K Gramian, solved by damped
Newton: Nash-MTL's bargaining weights (p = 1; Navon et al., ICML 2022) and FairGrad's α-fair
allocation (p = 1/α; Ban & Ji, ICML 2024)."""

from __future__ import annotations

import math

import numpy as np

from ._gramian import canonical_order

__all__ = ["solve_power_equation", "solves_power_equation", "fallback_power_weights"]

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
            if (
                objective(trial) <= f0 + 1e-4 * t * slope
                or np.linalg.norm(a @ trial - trial ** (-power)) < (1.0 - 1e-4 * t) * rnorm
            ):
                break
            t *= 0.5
        else:
            return beta, backward_error(beta) <= 1e-10  # no decrease left: rounding level or stuck
        beta = trial
        if beta.max() > 1e150:
            return beta, False
    return beta, backward_error(beta) <= 1e-10


def solve_power_equation(
    gramian: np.ndarray, power: float = 1.0, max_iter: int = 100
) -> np.ndarray:
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
    (Jᵀv = 0), so the update stays bounded. Solved in :func:`._gramian.canonical_order`, so
    the result is invariant to the order of the rows to the last bit.
    """
    k = gramian.shape[0]
    out = np.zeros(k)
    if k == 0:
        return out
    order = canonical_order(gramian)  # the same rounding whatever the row order
    gramian = gramian[np.ix_(order, order)]
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
    result = np.empty(k)
    result[order] = out
    return result


def fallback_power_weights(
    gramian: np.ndarray, power: float = 1.0, eps: float = float(np.finfo(np.float64).eps)
) -> np.ndarray:
    """The weights a method falls back on where the power equation has no solution (a
    Pareto-stationary point to working precision): :func:`solve_power_equation` on
    ``G + √eps · max_i G_ii · I`` (``eps``: the unit roundoff G was accumulated in).

    Without a solution, Newton's iterate grows along the directions v ≥ 0 with Jᵀv ≈ 0 and
    where it stops depends on the rounding noise of G's smallest eigenvalues: its other
    weights move by ~1e-4 relative when G changes by one unit in the last place (the same J
    in another row order, whose Gramian a BLAS may round differently), and by far more in
    float32. The ridge makes the problem strictly convex, so its solution is unique and moves
    by about ``eps / √eps = √eps`` relative under such a change; it changes the weights of a
    well-conditioned G by ~√eps only. Computed in :func:`._gramian.canonical_order`, as the
    solve itself.
    """
    k = gramian.shape[0]
    if k == 0:
        return np.zeros(0)
    ridge = math.sqrt(eps) * max(float(np.diag(gramian).max()), 0.0)
    return solve_power_equation(gramian + ridge * np.eye(k), power)


#: a solution has w_i^p (Gw)_i = 1 for every row; accepted within this
_SOLUTION_RTOL = 1e-3


def solves_power_equation(gramian: np.ndarray, w: np.ndarray, power: float = 1.0) -> bool:
    """Whether w solves ``G w = w^(−power)`` on its support: ``|w_i^power (Gw)_i − 1| ≤ 1e-3``
    where ``w_i > 0`` (rows given weight 0 are zero rows, see :func:`solve_power_equation`).

    Then every task improves, ``⟨g_i, d⟩ ≈ w_i^(−power) > 0``, by far more than the rounding
    error of ``Gw``: the test is scale-free, so a residual that rounding hides in
    ``|A|β`` (the weights Newton grows towards a Pareto-stationary point, where no solution
    exists) shows up here."""
    live = w > 0
    if not live.any():
        return False
    r = w[live] ** power * (gramian @ w)[live]
    return bool(np.all(np.abs(r - 1.0) <= _SOLUTION_RTOL))
