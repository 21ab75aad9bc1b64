"""PCGrad (projecting conflicting gradients), computed on the K × K Gramian."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ._gramian import from_numpy
from ._state import Seeded, check_state_keys, random_orders
from .base import GramianWeighting


def pcgrad_coefficients(gramian: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Rows c_i with g_i^PC = c_iᵀ J, from the Gramian alone (float64 in, float64 out).

    Task i starts from c_i = e_i and, for j in ``orders[i]`` (j ≠ i), if
    ⟨g_i^PC, g_j⟩ = c_iᵀ G e_j < 0 sets c_i ← c_i − (c_iᵀ G e_j / G_jj) e_j, i.e.
    g_i^PC ← g_i^PC − ⟨g_i^PC, g_j⟩ / ‖g_j‖² g_j (the projection onto the normal plane of
    the *original* g_j, as in Yu et al.'s Algorithm 1). All i advance together: step t
    handles the t-th entry of every row of ``orders``.
    """
    k = gramian.shape[0]
    coeff = np.eye(k)
    inner = gramian.copy()  # row i: ⟨g_i^PC, g_j⟩ for every j
    diag = np.diag(gramian)
    rows = np.arange(k)
    for t in range(k):
        j = orders[:, t]
        dots = inner[rows, j]
        project = (j != rows) & (dots < 0) & (diag[j] > 0)
        if not project.any():
            continue
        step = np.where(project, dots / np.where(diag[j] > 0, diag[j], 1.0), 0.0)
        coeff[rows, j] -= step
        inner -= step[:, None] * gramian[j]
    return coeff


class PCGrad(GramianWeighting, Seeded):
    r"""PCGrad: project each task's gradient onto the normal plane of the gradients it
    conflicts with, then sum (Yu, Kumar, Gupta, Levine, Hausman, Finn, 2020, "Gradient
    Surgery for Multi-Task Learning", NeurIPS).

    For each task i, ``g_i^PC ← g_i``; for every other task j in a random order,

    .. math:: \text{if } g_i^{PC} \cdot g_j < 0:\quad
              g_i^{PC} \leftarrow g_i^{PC} - \frac{g_i^{PC} \cdot g_j}{\lVert g_j\rVert^2} g_j ,

    and the update is :math:`d = \sum_i g_i^{PC}`.

    Here every projected gradient is tracked as coefficients over the rows of J
    (:math:`g_i^{PC} = c_i^\top J`), so all inner products come from the Gramian
    :math:`G = J J^\top` and the update is :math:`w^\top J` with :math:`w = \sum_i c_i`:
    the engine never needs J. Cost O(K³) on the K × K matrix.

    Orders are drawn from ``generator`` (or ``seed``; default: torch's global generator):
    one call draws K² uniforms, row i's argsort is task i's order (see
    :func:`random_orders`). Task i skips itself (j ≠ i, as in the paper's Algorithm 1;
    popular PyTorch ports also visit j = i, which only matters if earlier projections
    turned g_i^PC against g_i).

    Properties: equals the sum when no pair conflicts; **scale-linear** (J → sJ, s > 0,
    gives s·d with the same draws); **permutation-invariant** exactly for K = 2 and in
    distribution for K > 2 (the result depends on the random orders).
    """

    name = "pcgrad"

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        self._init_generator(seed, generator)

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        k = len(names)
        coeff = pcgrad_coefficients(gramian.numpy(), random_orders(k, self.generator))
        return from_numpy(coeff.sum(axis=0))

    def state_dict(self) -> dict[str, Any]:
        return self.random_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"generator"})
        self.load_random_state(state)
