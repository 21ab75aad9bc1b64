"""IMTL-G (impartial multi-task learning, gradient part), on the K × K Gramian."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from .base import GramianWeighting, task_names
from .pcgrad import check_gramian, gramian_float64, weights_like


def rank_rtol(dtype: torch.dtype, k: int) -> float:
    """Relative eigenvalue cut-off for pseudo-inverses of a K × K Gramian held in
    ``dtype``: K · ε(dtype), as ``torch.linalg.pinv``'s default (eigenvalues below it
    are rounding noise of the input)."""
    return max(k, 1) * float(torch.finfo(dtype).eps)


def psd_pinv_apply(gramian: np.ndarray, vector: np.ndarray, rtol: float) -> np.ndarray:
    """G⁺ v for a symmetric PSD G, eigenvalues ≤ rtol · λ_max treated as 0 (float64)."""
    lam, vec = np.linalg.eigh(gramian)
    top = float(lam[-1]) if lam.size else 0.0
    if not top > 0:
        return np.zeros_like(vector)
    keep = lam > rtol * top
    vk = vec[:, keep]
    return vk @ ((vk.T @ vector) / lam[keep])


def imtl_g_weights(gramian: Tensor) -> Tensor:
    r"""IMTL-G's weights α (summing to 1) from the Gramian: α = G⁺n / 1ᵀG⁺n, n_i = ‖g_i‖.

    Then d = Jᵀα satisfies (Gα)_i = ⟨d, g_i⟩ = n_i / 1ᵀG⁺n, i.e. d has the same
    projection 1/1ᵀG⁺n onto every unit task gradient u_i = g_i/‖g_i‖. For invertible G
    this is Liu et al.'s closed form α_{2:K} = g₁Uᵀ(DUᵀ)⁻¹, α₁ = 1 − Σα_{2:K}; the
    pseudo-inverse extends it to rank-deficient G (as in Quinton & Rey 2024), where the
    equal-projection property holds whenever n lies in G's range (e.g. duplicated rows).
    If 1ᵀG⁺n = 0 (no normalisation possible) or every row is zero, the weights are 0.
    Computed in float64 with the pseudo-inverse cut-off of the input dtype; returned in
    the Gramian's dtype. Used by ``imtl_g`` and by the IMTL hybrid.
    """
    k = check_gramian("imtl_g", gramian)
    if k == 0:
        return gramian.new_zeros(0)
    g = gramian_float64(gramian)
    norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
    v = psd_pinv_apply(g, norms, rank_rtol(gramian.dtype, k))
    total = float(v.sum())
    if not np.isfinite(total) or abs(total) <= 1e-12 * float(np.abs(v).sum()) or total == 0.0:
        return weights_like(np.zeros(k), gramian)
    return weights_like(v / total, gramian)


class IMTLG(GramianWeighting):
    r"""IMTL-G: the update with equal projections onto every task's unit gradient (Liu,
    Li, Kuang, Xue, Chen, Yang, Liao, Zhang, 2021, "Towards Impartial Multi-task
    Learning", ICLR).

    Find :math:`d = \sum_i\alpha_i g_i` with :math:`\sum_i\alpha_i = 1` and
    :math:`\langle d, u_1\rangle = \langle d, u_i\rangle` for all i
    (:math:`u_i = g_i/\lVert g_i\rVert`); in closed form, with
    :math:`D = [g_1 - g_i]_{i\ge2}`, :math:`U = [u_1 - u_i]_{i\ge2}`:

    .. math:: \alpha_{2:K} = g_1 U^\top (D U^\top)^{-1},\qquad
              \alpha_1 = 1 - \textstyle\sum_{i\ge 2}\alpha_i ,

    equivalently :math:`\alpha = G^+ n / \mathbf 1^\top G^+ n` with :math:`n_i = \lVert
    g_i\rVert` (:func:`imtl_g_weights`; pseudo-inverse for rank-deficient G). The loss
    scaling half of the paper is ``imtl_l``; both together are ``imtl``.

    Properties: **permutation-invariant**; **scale-linear** (α is scale-free).
    """

    name = "imtl_g"

    def weights(self, gramian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        task_names(check_gramian(self.name, gramian), losses)
        return imtl_g_weights(gramian)
