"""DualProj: the (weighted) mean of the task gradients, projected onto their dual cone."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ._qp import ExactGramianWeighting, dual_cone_weights, input_eps, prepare_gramian
from .upgrad import Preference, check_preference, check_preference_tasks, preference_weights


class DualProj(ExactGramianWeighting):
    r"""Projection of the averaged gradient onto the dual cone of the task gradients.

    .. math::

        d = \pi_J\Big(\sum_k p_k g_k\Big), \qquad
        \pi_J(x) = \arg\min_{y:\ J y \ge 0} |y - x|^2,

    with preference weights ``p`` (default ``p_k = 1/K``: the mean). This is the projection
    of Gradient Episodic Memory (Lopez-Paz & Ranzato, NeurIPS 2017, Eq. 11) applied to the
    mean gradient, as named and analysed beside UPGrad by Quinton & Rey ("Jacobian Descent
    for Multi-Objective Optimization", arXiv:2406.16232, 2024). By their Proposition 1 the
    weights are ``v ≥ p`` minimising ``vᵀGv``, from the Gramian ``G = J Jᵀ`` alone.
    Properties: ``⟨g_k, d⟩ ≥ 0`` for every task; ``d`` equals ``Σ_k p_k g_k`` whenever that
    conflicts with no task (in particular when no two rows conflict); linear under positive
    scaling of J; invariant to the order of the rows (with ``p`` permuted alike).

    ``pref_vector`` as for :class:`~polytask.balancing.upgrad.UPGrad` (a list of K weights
    ≥ 0, or task name -> weight; used as given). Exact solve in float64, without torchjd's
    ``reg_eps`` ridge and absolute ``norm_eps`` threshold (see UPGrad).
    """

    name = "dualproj"

    def __init__(self, pref_vector: Preference = None) -> None:
        self.pref_vector = check_preference(pref_vector)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)
        check_preference_tasks(self.pref_vector, tasks)

    def weights(self, gramian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        k = gramian.shape[0]
        p = preference_weights(self.pref_vector, k, losses)
        g, scale = prepare_gramian(gramian)
        if k == 0 or scale == 0.0:
            w = p
        elif math.isnan(scale):  # non-finite Gramian: no meaningful update
            w = torch.full((k,), float("nan"), dtype=torch.float64)
        else:
            w = dual_cone_weights(g, p.unsqueeze(0), input_eps(gramian.dtype))[0]
        return w.to(device=gramian.device, dtype=gramian.dtype)
