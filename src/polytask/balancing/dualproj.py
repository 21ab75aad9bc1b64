"""DualProj: the (weighted) mean of the task gradients, projected onto their dual cone."""

from __future__ import annotations

import numpy as np

from ._dual_cone import DualConeWeighting


class DualProj(DualConeWeighting):
    r"""Projection of the averaged gradient onto the dual cone of the task gradients.

    .. math::

        d = \pi_J\Big(\sum_k p_k g_k\Big), \qquad
        \pi_J(x) = \arg\min_{y:\ J y \ge 0} |y - x|^2,

    with preference weights ``p`` (default ``p_k = 1/K``: the mean). This is the projection
    of Gradient Episodic Memory (Lopez-Paz & Ranzato, NeurIPS 2017, Eq. 11) applied to the
    mean gradient, as named and analysed beside UPGrad by Quinton & Rey ("Jacobian Descent
    for Multi-Objective Optimization", arXiv:2406.16232, 2024). By their Proposition 1 the
    weights are ``v ≥ p`` minimising ``vᵀGv``, from the Gramian ``G = J Jᵀ`` alone.
    Properties: ``⟨g_k, d⟩ ≥ 0`` for every task (certified); ``d = 0`` exactly where J is
    strongly stationary; ``d`` equals ``Σ_k p_k g_k`` whenever that
    conflicts with no task (in particular when no two rows conflict); linear under positive
    scaling of J; invariant to the order of the rows (with ``p`` permuted alike).

    ``pref_vector`` as for :class:`~polytask.balancing.upgrad.UPGrad` (a list of K weights
    ≥ 0, or task name -> weight; used as given). Exact solve in float64, without torchjd's
    ``reg_eps`` ridge and absolute ``norm_eps`` threshold (see UPGrad).
    """

    name = "dualproj"

    def targets(self, p: np.ndarray) -> np.ndarray:
        """The one preferred combination pᵀJ."""
        return p[None, :]
