"""ConFIG (conflict-free inverse gradients), on the K × K Gramian."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from torch import Tensor

from ._gramian import from_numpy
from .base import GramianWeighting


def con_fig_weights(gramian: np.ndarray, rtol: float) -> np.ndarray:
    """Weights w with ConFIG's update d = wᵀJ, from the Gramian (float64).

    With n_i = ‖g_i‖, unit rows u_i = g_i/n_i (zero rows: u_i = 0) and their Gramian
    Ĝ = N⁺GN⁺, the direction δ = U⁺1 = Uᵀ Ĝ⁺ 1 = Jᵀ(N⁺ Ĝ⁺ 1), ‖δ‖² = vᵀĜv (v = Ĝ⁺1), and
    the length Σ_i ⟨g_i, δ/‖δ‖⟩ = 1ᵀG N⁺v / ‖δ‖.

    "No direction" is decided relative to the data, not by an absolute threshold:
    Ĝ⁺1 = Σ_i (q_iᵀ1 / λ_i) q_i over the eigenpairs of Ĝ keeps only those with
    ``λ_i > rtol · λ_max`` (rank) and ``|q_iᵀ1| > 8 rtol √K`` (a component of 1 that is
    rounding noise, as for anti-parallel rows where 1 ⟂ range(Ĝ) exactly, would otherwise
    be normalised into a unit direction). Without any, δ = 0 and so is the update — the
    exact answer, whatever the row order and scale.
    """
    k = gramian.shape[0]
    norms = np.sqrt(np.clip(np.diag(gramian), 0.0, None))
    inv = np.divide(1.0, norms, out=np.zeros(k), where=norms > 0)
    unit = inv[:, None] * gramian * inv[None, :]
    ones = (norms > 0).astype(float)
    lam, vec = np.linalg.eigh(unit)
    top = float(lam[-1]) if lam.size else 0.0
    if not top > 0 or not math.isfinite(top):
        return np.zeros(k)
    coef = vec.T @ ones
    keep = (lam > rtol * top) & (np.abs(coef) > 8.0 * rtol * math.sqrt(float(ones.sum())))
    v = vec[:, keep] @ (coef[keep] / lam[keep])
    dnorm2 = float(v @ unit @ v)
    if not dnorm2 > 0 or not math.isfinite(dnorm2):
        return np.zeros(k)
    direction = inv * v / math.sqrt(dnorm2)  # δ/‖δ‖ = directionᵀ J
    length = float((gramian @ direction).sum())
    weights: np.ndarray = length * direction
    return weights


class ConFIG(GramianWeighting):
    r"""ConFIG: the conflict-free direction with equal cosine to every task gradient,
    scaled by the sum of the gradients' projections (Liu, Chu, Thuerey, 2024/2025,
    "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks",
    ICLR 2025; arXiv 2408.11104).

    With unit rows :math:`u_i = g_i/\lVert g_i\rVert` stacked in U,

    .. math:: g_u = \frac{U^+\mathbf 1}{\lVert U^+\mathbf 1\rVert},\qquad
              d = \Big(\sum_i g_i^\top g_u\Big)\, g_u ,

    so :math:`\langle d, u_i\rangle` is the same positive number for every task when
    :math:`U d = \mathbf 1` is solvable (U of full row rank, or consistent duplicates);
    with K > rank the pseudo-inverse gives the least-squares direction. Computed from the
    Gramian (:func:`con_fig_weights`): U⁺1 = Uᵀ(UUᵀ)⁺1 and UUᵀ = N⁻¹GN⁻¹. Equal preference
    weights (the official default); zero rows are left out of U.

    Properties: **permutation-invariant**; **scale-linear** (g_u is scale-free, the
    length linear).
    """

    name = "con_fig"

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        return from_numpy(con_fig_weights(gramian.numpy(), len(names) * eps))
