"""IMTL-G (impartial multi-task learning, gradient part), on the K × K Gramian."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from torch import Tensor

from ._gramian import from_numpy, psd_pinv_apply
from .base import GramianWeighting


def imtl_g_weights(gramian: Tensor) -> Tensor:
    r"""IMTL-G's weights α (summing to 1) from the Gramian: α = G⁺n / 1ᵀG⁺n, n_i = ‖g_i‖
    (:func:`imtl_g_alpha`), computed in float64 with the pseudo-inverse cut-off of the
    input dtype and returned in the Gramian's dtype (what :meth:`IMTLG.weights` returns)."""
    return IMTLG().weights(gramian)


def imtl_g_alpha(gramian: np.ndarray, rtol: float) -> np.ndarray:
    r"""IMTL-G's weights α (summing to 1) from a float64 Gramian: α = G⁺n / 1ᵀG⁺n, n_i = ‖g_i‖.

    Then d = Jᵀα satisfies (Gα)_i = ⟨d, g_i⟩ = n_i / 1ᵀG⁺n, i.e. d has the same
    projection 1/1ᵀG⁺n onto every unit task gradient u_i = g_i/‖g_i‖. For invertible G
    this is Liu et al.'s closed form α_{2:K} = g₁Uᵀ(DUᵀ)⁻¹, α₁ = 1 − Σα_{2:K}; the
    pseudo-inverse extends it to rank-deficient G (as in Quinton & Rey 2024), where the
    equal-projection property holds whenever n lies in G's range (e.g. duplicated rows).
    If 1ᵀG⁺n = 0 (no normalisation possible) or every row is zero, the weights are 0.
    ``rtol``: eigenvalues ≤ rtol · λ_max count as 0 (K times the Gramian's unit roundoff,
    as ``torch.linalg.pinv``'s default). Used by ``imtl_g`` and by the IMTL hybrid.
    """
    norms = np.sqrt(np.clip(np.diag(gramian), 0.0, None))
    v = psd_pinv_apply(gramian, norms, rtol)
    total = float(v.sum())
    if not np.isfinite(total) or abs(total) <= 1e-12 * float(np.abs(v).sum()) or total == 0.0:
        return np.zeros(len(norms))
    return v / total


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

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        return from_numpy(imtl_g_alpha(gramian.numpy(), len(names) * eps))
