"""GradVac (Gradient Vaccine), computed on the K × K Gramian with EMA similarity targets."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ._gramian import from_numpy
from ._options import is_real, require
from ._state import Seeded, check_state_keys, random_orders
from .base import GramianWeighting


def gradvac_coefficients(
    gramian: np.ndarray, orders: np.ndarray, targets: np.ndarray, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows c_i with g_i' = c_iᵀ J, and the updated targets φ̂ (both float64).

    For task i and each j ≠ i in ``orders[i]``: φ_ij = cos(g_i', g_j) from the Gramian;
    if φ_ij < φ̂_ij, g_i' ← g_i' + a g_j with
    a = ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)), which makes
    cos(g_i', g_j) = φ̂_ij; then φ̂_ij ← (1−β) φ̂_ij + β φ_ij. Pairs with a zero gradient
    have no cosine and are left alone; a target of ±1 (no finite correction reaches it)
    is not enforced. ``targets`` is not modified.
    """
    k = gramian.shape[0]
    coeff = np.eye(k)
    inner = gramian.copy()  # row i: ⟨g_i', g_j⟩ for every j
    sq = np.clip(np.diag(gramian), 0.0, None)
    norms = np.sqrt(sq)
    own = (
        sq.copy()
    )  # ‖g_i'‖², kept up to date: ‖g_i' + a g_j‖² = ‖g_i'‖² + 2a⟨g_i', g_j⟩ + a²‖g_j‖²
    phi_hat = targets.copy()
    rows = np.arange(k)
    for t in range(k):
        j = orders[:, t]
        norm_i = np.sqrt(np.clip(own, 0.0, None))
        norm_j = norms[j]
        valid = (j != rows) & (norm_i > 0) & (norm_j > 0)
        if not valid.any():
            continue
        dots = inner[rows, j]
        phi = np.zeros(k)
        phi[valid] = np.clip(dots[valid] / (norm_i[valid] * norm_j[valid]), -1.0, 1.0)
        target = phi_hat[rows, j]
        room = np.sqrt(np.clip(1.0 - target * target, 0.0, None))
        fix = valid & (phi < target) & (room > 1e-12)
        if fix.any():
            a = np.zeros(k)
            a[fix] = (
                norm_i[fix]
                * (target[fix] * np.sqrt(1.0 - phi[fix] ** 2) - phi[fix] * room[fix])
                / (norm_j[fix] * room[fix])
            )
            coeff[rows, j] += a
            own += 2.0 * a * dots + a * a * sq[j]
            inner += a[:, None] * gramian[j]
        r, c = rows[valid], j[valid]
        phi_hat[r, c] = (1.0 - beta) * phi_hat[r, c] + beta * phi[valid]
    return coeff, phi_hat


class GradVac(GramianWeighting, Seeded):
    r"""Gradient Vaccine: raise each pair's gradient cosine to an EMA target (Wang,
    Tsvetkov, Firat, Cao, 2021, "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR).

    For each task i, :math:`g_i' \leftarrow g_i`; for every other task j in a random order,
    with :math:`\phi_{ij} = \cos(g_i', g_j)` and the target :math:`\hat\phi_{ij}`:

    .. math::
        \text{if } \phi_{ij} < \hat\phi_{ij}:\quad
        g_i' \leftarrow g_i' + \frac{\lVert g_i'\rVert\,(\hat\phi_{ij}\sqrt{1-\phi_{ij}^2}
              - \phi_{ij}\sqrt{1-\hat\phi_{ij}^2})}
             {\lVert g_j\rVert \sqrt{1-\hat\phi_{ij}^2}}\, g_j,
        \qquad \hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\,\phi_{ij},

    and the update is :math:`d = \sum_i g_i'`. Targets start at 0, so the first step is
    PCGrad. Everything is computed from the Gramian (g_i' = c_iᵀ J), as in
    :class:`~polytask.balancing.pcgrad.PCGrad`; the paper applies the rule per layer
    group, here it is applied to the gradient the engine hands over (all shared
    parameters, or the shared features).

    State: the targets φ̂_ij, keyed by ordered task-name pairs (``state_dict()["targets"]
    [task_i][task_j]``), so batches with different task subsets update only the pairs
    present; plus the generator state when the method owns one.

    ``beta`` is the EMA rate: default 0.01, a slowly moving target as in the paper's
    experiments (β = 1e-2); LibMTL and torchjd default to 0.5. Properties: **scale-linear**
    (cosines and the correction coefficients are scale-free); **permutation-invariant**
    exactly for K = 2 (with the targets relabelled) and in distribution for K > 2.
    """

    name = "gradvac"

    def __init__(
        self, beta: float = 0.01, seed: int | None = None, generator: torch.Generator | None = None
    ) -> None:
        require(
            is_real(beta) and 0.0 <= beta <= 1.0,
            "beta",
            f"{beta!r} is not in [0, 1]",
            "give the EMA rate, e.g. 0.01",
        )
        self.beta = float(beta)
        self._init_generator(seed, generator)
        self.targets: dict[str, dict[str, float]] = {}

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        k = len(names)
        g = gramian.numpy()
        before = np.zeros((k, k))
        for i, a in enumerate(names):
            row = self.targets.get(a)
            if row:
                before[i] = [row.get(b, 0.0) for b in names]
        coeff, after = gradvac_coefficients(g, random_orders(k, self.generator), before, self.beta)
        changed = after != before
        np.fill_diagonal(changed, False)
        rows, cols = np.nonzero(changed)
        for i, j, value in zip(rows.tolist(), cols.tolist(), after[rows, cols].tolist()):
            self.targets.setdefault(names[i], {})[names[j]] = value
        return from_numpy(coeff.sum(axis=0))

    def state_dict(self) -> dict[str, Any]:
        return {"targets": {a: dict(row) for a, row in self.targets.items()}, **self.random_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"targets", "generator"})
        targets = state.get("targets", {})
        for a, row in targets.items():
            for b, value in row.items():
                if not math.isfinite(float(value)) or abs(float(value)) > 1.0:
                    raise ValueError(f"gradvac state: target {a}->{b} = {value!r} is not a cosine")
        self.targets = {
            str(a): {str(b): float(v) for b, v in row.items()} for a, row in targets.items()
        }
        self.load_random_state(state)
