"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from ._qp import min_norm_weights, prepare_gramian
from .base import GramianWeighting


class MGDA(GramianWeighting):
    r"""Multiple-gradient descent: the update is the min-norm element of the rows' convex hull.

    .. math::

        w^* = \arg\min_{w \ge 0,\ \mathbf 1^\top w = 1} w^\top G w, \qquad G = J J^\top,
        \qquad d = J^\top w^* = \arg\min_{d \in \operatorname{conv}\{g_1, \dots, g_K\}} |d|.

    ``d`` is characterised by ``⟨g_k, d⟩ ≥ |d|²`` for every task k: it decreases every loss at
    the same or a faster first-order rate than its own norm, and ``d = 0`` exactly at
    Pareto-stationary points (Désidéri, "Multiple-gradient descent algorithm (MGDA) for
    multiobjective optimization", Comptes Rendus Mathématique, 2012; Sener & Koltun,
    "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018). Applied to the
    gradients w.r.t. the shared features instead of the shared parameters (the engine's
    ``level="features"``), this is Sener & Koltun's MGDA-UB: the same weights applied to an
    upper bound of the parameter-level objective.

    The weights are computed exactly (:mod:`._qp`: an active-set method on the K × K
    Gramian, KKT conditions satisfied to rounding), not by Sener & Koltun's Frank–Wolfe
    iterations, whose loose tolerance can stop far from the min-norm point on
    ill-conditioned Gramians. Invariant to the order and to the common scale of the rows.
    An all-zero Jacobian gets uniform weights (d = 0 either way). Where the computed d is
    0 to working precision (:func:`._qp.min_norm_weights`: it conflicts with a task, which
    the certificate allows only when ``|d|²`` is within the solver's tolerance, or the
    Gramian does not resolve it — a Pareto-stationary point to working precision) the
    weights are 0, so the update is exactly 0 rather than rounding noise, whose direction
    would conflict with some task.
    """

    name = "mgda"

    def __init__(self) -> None:
        pass

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        k = len(names)
        g, scale = prepare_gramian(gramian)
        if math.isnan(scale):  # non-finite Gramian: no meaningful update
            return torch.full((k,), float("nan"), dtype=torch.float64)
        if scale == 0.0:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        return min_norm_weights(g, eps)
