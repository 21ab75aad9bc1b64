"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from ._qp import ExactGramianWeighting, input_eps, min_norm_weights, prepare_gramian
from .base import task_names


class MGDA(ExactGramianWeighting):
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
    An all-zero Jacobian gets uniform weights (d = 0 either way).
    """

    name = "mgda"

    def __init__(self) -> None:
        pass

    def weights(self, gramian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        k = gramian.shape[0]
        task_names(k, losses)
        g, scale = prepare_gramian(gramian)
        if k == 0:
            w = torch.zeros(0, dtype=torch.float64)
        elif math.isnan(scale):  # non-finite Gramian: no meaningful update
            w = torch.full((k,), float("nan"), dtype=torch.float64)
        elif scale == 0.0:
            w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            w = min_norm_weights(g, input_eps(gramian.dtype))
        return w.to(device=gramian.device, dtype=gramian.dtype)
