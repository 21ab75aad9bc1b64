"""UPGrad: average of the task gradients, each projected onto the dual cone of all of them."""

from __future__ import annotations

import numpy as np

from ._dual_cone import DualConeWeighting


class UPGrad(DualConeWeighting):
    r"""Unconflicting projection of gradients (Quinton & Rey, "Jacobian Descent for
    Multi-Objective Optimization", arXiv:2406.16232, 2024).

    Each task gradient is projected onto the dual cone of all of them, the set of updates
    that conflict with no task, and the projections are combined with the preference
    weights ``p`` (default ``p_k = 1/K``, the paper's average):

    .. math::

        d = \sum_k p_k\, \pi_J(g_k), \qquad
        \pi_J(x) = \arg\min_{y:\ J y \ge 0} |y - x|^2 .

    By the paper's Proposition 1, ``π_J(J^\top u) = J^\top v`` with ``v`` solving
    ``min_v vᵀGv s.t. v ≥ u``, so the weights are ``w = Σ_k v_k`` with ``v_k ≥ p_k e_k``:
    computed from the Gramian ``G = J Jᵀ`` alone. Properties: ``⟨g_k, d⟩ ≥ 0`` for every task
    (non-conflicting: certified, :class:`~polytask.balancing._dual_cone.DualConeWeighting`);
    ``d = 0`` exactly where J is strongly stationary (some v > 0 has vᵀJ = 0); ``d`` equals
    ``Σ_k p_k g_k`` when no two rows conflict; linear under positive scaling of J; invariant
    to the order of the rows (with ``p`` permuted alike).

    ``pref_vector``: a list of K weights ≥ 0, or a mapping task name -> weight (needed when
    batches hold varying sets of tasks). Weights are used as given (no renormalisation), as
    in torchjd's implementation.

    Exact solve (:mod:`._qp`, KKT conditions to rounding) in float64 on the Gramian scaled
    by its largest diagonal, without torchjd's ``reg_eps`` ridge (which trades exact
    non-conflict for solver stability: with it, ``⟨g_k, d⟩`` may be slightly negative) or its
    absolute ``norm_eps`` threshold (under which torchjd returns the plain mean, conflicts
    included, for Jacobians of Frobenius norm below 1e-2).
    """

    name = "upgrad"

    def targets(self, p: np.ndarray) -> np.ndarray:
        """Each row p_k e_k on its own (tasks with p_k = 0 project nothing); the projections add
        up."""
        out: np.ndarray = np.diag(p)[p > 0]
        return out
