"""The one Gramian path of the Gramian methods, and its precision policy.

A :class:`~polytask.balancing.base.GramianWeighting` turns per-task gradients J (K × P,
possibly in B blocks ``[J_1 … J_B]``, one per shared tensor) into the update ``wᵀJ`` with
weights computed from the Gramian ``G = J Jᵀ = Σ_b J_b J_bᵀ`` alone. Both its
``aggregate(J)`` and the engine (:func:`polytask.balancing.backward`) go through
:func:`combine`, so a method gives the same update whoever calls it. The policy:

1. **Accumulation in float32 or better** (:func:`accumulation_dtype`, :func:`gramian`):
   float64 rows give a float64 Gramian and float32 rows a float32 one; bfloat16 / float16
   rows are upcast to float32 *before* the product (their products are exact in float32,
   while a bf16 Gramian keeps 8 bits of each entry and an fp16 one overflows past 65504).
   The product runs on the rows' device; a block that must be upcast is upcast in column
   chunks of at most :data:`CHUNK_BYTES`, so a large J is never copied whole. Accumulating
   float32 rows in float64 would make G the Gramian of the given rows to float64's
   precision, but costs ~20 % of a feature-level training step at K = 40 (measured with
   ``benchmarks/balancing/step_cost.py``), so a float32 model gets a float32 Gramian and
   the guarantees of the exact solvers below hold to float32's rounding.
2. **The solve in float64** (:func:`for_solver`): the K × K Gramian is symmetrised and
   copied to float64 on the CPU — the problems are tiny and every solver here branches on
   its data, so the one read-back is needed anyway — and the method's ``_solve`` works
   there, handed the unit roundoff of the Gramian's dtype (:func:`input_eps`) for its rank
   cut-offs and KKT tolerances (a Gramian a caller formed in float32 is not known to
   better than float32's).
3. **The weights are applied in J's dtype**: ``w`` (returned by ``weights()`` in the
   Gramian's dtype and device) is cast to each block's dtype and ``wᵀJ_b`` formed there.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .base import GramianWeighting

__all__ = [
    "accumulation_dtype",
    "gramian",
    "for_solver",
    "input_eps",
    "check_gramian",
    "from_numpy",
    "psd_pinv_apply",
    "canonical_order",
    "combine",
]

_EPS = torch.finfo(torch.float64).eps


#: the largest upcast copy of a block :func:`gramian` makes at once (bytes)
CHUNK_BYTES = 16 * 2**20


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the Gramian of rows in ``dtype`` is accumulated in: float64 for float64
    rows, float32 for everything else (float32, bf16, fp16)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def gramian(blocks: Sequence[Tensor]) -> Tensor:
    """``G = Σ_b J_b J_bᵀ`` (K × K, detached) of the (K, P_b) blocks, accumulated in
    :func:`accumulation_dtype` of their widest dtype on their device; J is never
    concatenated, and a block that must be upcast is upcast :data:`CHUNK_BYTES` at a time."""
    dtypes = {b.dtype for b in blocks}
    dtype = accumulation_dtype(functools.reduce(torch.promote_types, dtypes))
    total: Tensor | None = None
    with torch.no_grad():  # (each operation here is a kernel launch on a GPU: few of them)
        for block in blocks:
            if block.dtype == dtype or not block.shape[1]:
                parts = [block.to(dtype)]
            else:
                parts = list(torch.split(block, max(1, CHUNK_BYTES // (4 * block.shape[0])), 1))
            for part in parts:
                part = part.to(dtype)
                if total is None:
                    total = part @ part.T
                else:
                    total.addmm_(part, part.T)
    assert total is not None
    return total


def check_gramian(name: str, gramian: Tensor) -> int:
    """K of a (K, K) Gramian, or a ``ValueError`` naming the method."""
    if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"{name}: the Gramian must be (K, K), got shape {tuple(gramian.shape)}")
    return int(gramian.shape[0])


def for_solver(gramian: Tensor) -> Tensor:
    """The Gramian in float64 on the CPU, symmetrised (a product computed in finite
    precision is symmetric only up to rounding); detached."""
    g = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    return torch.from_numpy(0.5 * (g + g.T))  # (numpy: a third of torch's host time here)


def input_eps(dtype: torch.dtype) -> float:
    """Unit roundoff of a Gramian held in ``dtype`` (float64's at best)."""
    return max(_EPS, torch.finfo(dtype).eps) if dtype.is_floating_point else _EPS


def from_numpy(weights: np.ndarray) -> Tensor:
    """Weights computed with numpy as a float64 CPU tensor."""
    return torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float64))


def psd_pinv_apply(gramian: np.ndarray, vector: np.ndarray, rtol: float) -> np.ndarray:
    """G⁺ v for a symmetric PSD G, eigenvalues ≤ rtol · λ_max treated as 0 (float64)."""
    lam, vec = np.linalg.eigh(gramian)
    top = float(lam[-1]) if lam.size else 0.0
    if not top > 0:
        return np.zeros_like(vector)
    keep = lam > rtol * top
    vk = vec[:, keep]
    out: np.ndarray = vk @ ((vk.T @ vector) / lam[keep])
    return out


def canonical_order(gramian: np.ndarray) -> np.ndarray:
    """A row order of G that depends on its values only, not on the order the rows came in:
    by squared norm ``G_kk``, then by row sum ``Σ_j G_kj`` (both invariant to permuting the
    rows), ties kept in their given order (exact duplicates: either order gives the same
    matrix). A solver whose rounding depends on the order of the rows, run on
    ``G[order][:, order]``, is then permutation-invariant to the last bit wherever the keys
    differ — which they do for rows a rounding error apart from degenerate, where the
    rounding decides the most."""
    order: np.ndarray = np.lexsort((gramian.sum(axis=1), np.diag(gramian)))
    return order


def combine(
    method: GramianWeighting,
    blocks: Sequence[Tensor],
    losses: Mapping[str, Tensor] | None,
    seen: Callable[[Tensor, Tensor], None] | None = None,
) -> list[Tensor]:
    """The update ``[wᵀJ_1, …, wᵀJ_B]`` of a Gramian method, with ``w = method.weights(G)``
    and G from :func:`gramian`: the one path of ``aggregate()`` and of the engine.
    ``seen(G, w)``, when given, is called with both (monitoring reuses them)."""
    k = blocks[0].shape[0]
    g = gramian(blocks)
    w = method.weights(g, losses)
    if tuple(w.shape) != (k,):
        raise ValueError(
            f"{method.name}: weights() returned shape {tuple(w.shape)}, expected ({k},)"
        )
    if seen is not None:
        seen(g, w)
    cast: dict[tuple[torch.device, torch.dtype], Tensor] = {}
    out = []
    for b in blocks:  # d_b = wᵀJ_b, with w cast once per device and dtype
        key = (b.device, b.dtype)
        if key not in cast:
            cast[key] = w.to(device=b.device, dtype=b.dtype)
        out.append(cast[key] @ b)
    return out
