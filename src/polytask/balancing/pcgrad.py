"""PCGrad (projecting conflicting gradients), computed on the K × K Gramian."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from .base import GramianWeighting, task_names


class Seeded:
    """Mixin for randomised methods: draws come from ``generator`` (or one made from
    ``seed``), else from torch's global generator (reproducible under ``torch.manual_seed``).

    An owned generator's state is part of :meth:`random_state`, so a checkpoint restores
    the exact sequence of draws.
    """

    generator: torch.Generator | None

    def _init_generator(self, seed: int | None, generator: torch.Generator | None) -> None:
        if seed is not None and generator is not None:
            raise ValueError("balancing.seed: give a seed or a generator, not both; fix: drop one of them")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"balancing.seed: {seed!r} is not an integer; fix: give an integer seed or none")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"balancing.generator: {generator!r} is not a torch.Generator; "
                             "fix: pass torch.Generator().manual_seed(n) or use the seed option")
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else generator

    def random_state(self) -> dict[str, Any]:
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_random_state(self, state: Mapping[str, Any]) -> None:
        if "generator" in state:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator"])


def random_orders(k: int, generator: torch.Generator | None = None) -> np.ndarray:
    """(K, K) integer array whose row i is a uniformly random order of the K tasks.

    Each task i visits the others in the order of row i and skips itself when met, which
    is a uniform order of the K − 1 others. One draw of K² uniforms per call.
    """
    keys = torch.rand(k, k, generator=generator, dtype=torch.float64)
    return keys.argsort(dim=1).numpy()


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

    def weights(self, gramian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        k = check_gramian(self.name, gramian)
        task_names(k, losses)
        if k == 0:
            return gramian.new_zeros(0)
        g = gramian_float64(gramian)
        coeff = pcgrad_coefficients(g, random_orders(k, self.generator))
        return weights_like(coeff.sum(axis=0), gramian)

    def state_dict(self) -> dict[str, Any]:
        return self.random_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"generator"})
        if unknown:
            raise ValueError(f"balancing method {self.name!r}: unknown state keys {unknown}")
        self.load_random_state(state)


def check_gramian(name: str, gramian: Tensor) -> int:
    if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"{name}: the Gramian must be (K, K), got shape {tuple(gramian.shape)}")
    return int(gramian.shape[0])


def gramian_float64(gramian: Tensor) -> np.ndarray:
    """The Gramian in float64 on the CPU, symmetrised (J Jᵀ computed in low precision is
    symmetric only up to rounding)."""
    g = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    return 0.5 * (g + g.T)


def weights_like(weights: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float64)).to(device=like.device, dtype=like.dtype)
