"""FairGrad (α-fair resource allocation among tasks), solved on the K × K system."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from torch import Tensor

from ._gramian import from_numpy
from ._options import is_real, require
from ._power_equation import (
    fallback_power_weights,
    solve_power_equation,
    solves_power_equation,
)
from ._qp import conflict_free_part, resolved
from .base import GramianWeighting

#: the α for which the solver is tested to reach the equation (relative residual ≤ 1e-5)
ALPHA_RANGE = (0.1, 20.0)


class FairGrad(GramianWeighting):
    r"""FairGrad: the update that maximises the α-fair utility of the tasks' improvement
    rates (Ban & Ji, 2024, "Fair Resource Allocation in Multi-Task Learning", ICML).

    The update :math:`d = J^\top w` with :math:`w > 0` solving

    .. math:: G w = w^{-1/\alpha}\quad(\text{elementwise}),\qquad G = JJ^\top ,

    so that task i's improvement rate is :math:`g_i^\top d = w_i^{-1/\alpha}`. α = 1 is
    proportional fairness (Nash-MTL's equation, without its clipping); α → ∞ approaches
    max-min fairness; ``alpha = 0`` is linear scalarisation and returns the uniform
    weights 1/K (as torchjd does). Solved directly by damped Newton on the strictly convex
    :math:`\tfrac12 w^\top G w - \sum_i h(w_i)`, :math:`h'(w) = w^{-1/\alpha}`
    (:func:`~polytask.balancing._power_equation.solve_power_equation`), instead of the official
    code's SciPy ``least_squares``; zero rows and singular Gramians are handled as
    described there. Where the equation has no solution (0 in the conic hull of the rows:
    a Pareto-stationary point) the update is the part of the direction of the
    ridge-regularised equation's weights
    (:func:`~polytask.balancing._power_equation.fallback_power_weights`) that conflicts with
    no task (:func:`~polytask.balancing._qp.conflict_free_part`), as for Nash-MTL.

    ``alpha``: 0 or in [0.1, 20] (default 1.0; the paper tunes it per benchmark, e.g. 2.0).
    Deviation: values outside that range are refused — there the solution's weights
    span hundreds of orders of magnitude (w_i^(−1/α) with 1/α = 100 or 0.01) and the
    equation cannot be met in float64; α = 20 is already close to max-min fairness.

    Properties: **permutation-invariant**; **positively homogeneous of degree
    (1 − α)/(1 + α)**: J → sJ gives w · s^(−2α/(1+α)) and the update
    s^((1−α)/(1+α)) · d — scale-linear only at α = 0, scale-invariant at α = 1.
    """

    name = "fairgrad"

    def __init__(self, alpha: float = 1.0) -> None:
        low, high = ALPHA_RANGE
        require(
            is_real(alpha) and (alpha == 0 or low <= alpha <= high),
            "alpha",
            f"{alpha!r} is not 0 or in [{low:g}, {high:g}]",
            "give the fairness parameter, e.g. 1.0 (proportional) or 2.0 (0 is the mean)",
        )
        self.alpha = float(alpha)

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        if self.alpha == 0.0:
            return from_numpy(np.full(len(names), 1.0 / len(names)))
        g = gramian.numpy()
        w = solve_power_equation(g, 1.0 / self.alpha)
        if not solves_power_equation(g, w, 1.0 / self.alpha):
            w = fallback_power_weights(g, 1.0 / self.alpha, eps)
            return conflict_free_part(gramian, from_numpy(w), eps)
        if not resolved(gramian, from_numpy(w), eps):
            return from_numpy(np.zeros_like(w))
        return from_numpy(w)
