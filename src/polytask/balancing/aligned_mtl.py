"""Aligned-MTL (independent component alignment), on the K × K Gramian."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from ._gramian import from_numpy
from ._options import require
from .base import GramianWeighting

SCALE_MODES = ("min", "median", "rmse")
#: the official code's rank cut-off: λ_max · K · ε(float32), whatever the dtype
_RANK_EPS = float(torch.finfo(torch.float32).eps)


def aligned_mtl_transform(gramian: np.ndarray, scale_mode: str = "min") -> np.ndarray:
    """The balance matrix B = √σ V Λ^(−1/2) Vᵀ over the non-null eigenpairs of G (float64).

    With G = VΛVᵀ (eigenvalues ≤ λ_max · K · ε₃₂ dropped, as in the official code) and
    σ the smallest (``"min"``), median (``"median"``) or mean (``"rmse"``) kept
    eigenvalue, the aligned gradients are the rows of Â = BJ, whose Gramian is
    BGB = σ V_r V_rᵀ: every non-zero singular value of Â equals √σ (condition number 1).
    A zero Gramian gives B = 0.
    """
    k = gramian.shape[0]
    if k == 0:
        return np.zeros((0, 0))
    lam, vec = np.linalg.eigh(gramian)
    top = float(lam[-1])
    if not top > 0:
        return np.zeros((k, k))
    keep = lam > top * k * _RANK_EPS
    lam, vec = lam[keep], vec[:, keep]
    sigma = {"min": float(lam.min()), "median": float(np.median(lam)), "rmse": float(lam.mean())}[
        scale_mode
    ]
    transform: np.ndarray = np.sqrt(sigma) * (vec / np.sqrt(lam)) @ vec.T
    return transform


class AlignedMTL(GramianWeighting):
    r"""Aligned-MTL: align the task gradients to an orthogonal system with equal singular
    values, then sum (Senushkin, Patakin, Kuznetsov, Konushin, 2023, "Independent
    Component Alignment for Multi-Task Learning", CVPR).

    With :math:`G = JJ^\top = V\Lambda V^\top` restricted to its non-zero eigenvalues and
    σ the smallest of them (``scale_mode="min"``, default; ``"median"`` and ``"rmse"`` —
    the mean eigenvalue — as in the official code),

    .. math:: B = \sqrt{\sigma}\, V\Lambda^{-1/2}V^\top ,\qquad \hat J = BJ ,\qquad
              d = \mathbf 1^\top \hat J = (B\mathbf 1)^\top J ,

    so the weights are :math:`B\mathbf 1`. The stated property: the aligned matrix
    :math:`\hat J` has all non-zero singular values equal to √σ — condition number 1 on
    its non-null space (:math:`\hat J\hat J^\top = \sigma V V^\top`). The update is the sum
    of the aligned gradients as in the official code (torchjd 0.18 takes their mean, K
    times smaller). Rank cut-off as in the official code, λ_max · K · ε(float32).

    Properties: **permutation-invariant**; **scale-linear** (B is scale-free).
    """

    name = "aligned_mtl"

    def __init__(self, scale_mode: str = "min") -> None:
        require(
            scale_mode in SCALE_MODES,
            "scale_mode",
            f"{scale_mode!r} is not one of {list(SCALE_MODES)}",
            "'min' (the paper's choice) rescales by the smallest singular value",
        )
        self.scale_mode = scale_mode

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        b = aligned_mtl_transform(gramian.numpy(), self.scale_mode)
        return from_numpy(b.sum(axis=1))
