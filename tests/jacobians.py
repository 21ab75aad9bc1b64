"""Jacobians for property tests of gradient aggregators: many shapes, scales and structures.

Every generator is deterministic for a given seed. ``K_VALUES`` are the task counts every
method is tested at (LibMTL's CAGrad crashed for K != 3: ours must not).
"""

from __future__ import annotations

from typing import Iterator

import torch

K_VALUES = (2, 3, 10, 40)
SCALES = (1e-6, 1.0, 1e6)
DTYPES = (torch.float32, torch.float64)


def random_jacobian(
    k: int, p: int, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """i.i.d. normal rows times ``scale``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(k, p, generator=g, dtype=torch.float64) * scale).to(dtype)


def structured_jacobian(
    k: int,
    p: int = 200,
    rank: int = 3,
    noise: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Ill-conditioned: rank-``rank`` rows plus small noise, row norms spread over 1e-1 … 1e3.

    The case where iterative min-norm solvers with loose tolerances fail.
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, p, generator=g, dtype=torch.float64)
    coeff = torch.randn(k, rank, generator=g, dtype=torch.float64)
    rows = coeff @ basis + noise * torch.randn(k, p, generator=g, dtype=torch.float64)
    rows = rows / rows.norm(dim=1, keepdim=True)
    norms = torch.logspace(-1, 3, k, dtype=torch.float64)[torch.randperm(k, generator=g)]
    return (rows * norms.unsqueeze(1)).to(dtype)


def non_conflicting_jacobian(
    k: int, p: int = 50, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Rows with pairwise non-negative inner products (a common positive direction plus noise)."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(p, generator=g, dtype=torch.float64)
    common = common / common.norm()
    rows = 3.0 * common + 0.1 * torch.randn(k, p, generator=g, dtype=torch.float64) / p**0.5
    rows = rows * torch.rand(k, 1, generator=g, dtype=torch.float64).add(0.5)
    assert bool(((rows @ rows.T) >= 0).all())
    return rows.to(dtype)


def conflicting_pair(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Two gradients at an obtuse angle, in the plane (hand-checkable)."""
    return torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=dtype)


def jacobian_cases(p: int = 30) -> Iterator[tuple[str, torch.Tensor]]:
    """(id, J) over K_VALUES × SCALES × DTYPES for random rows, and the structured ones."""
    for k in K_VALUES:
        for scale in SCALES:
            for dtype in DTYPES:
                yield (
                    f"random-K{k}-s{scale:g}-{str(dtype)[6:]}",
                    random_jacobian(k, p, seed=k, scale=scale, dtype=dtype),
                )
        yield f"structured-K{k}", structured_jacobian(k, seed=k)
        yield f"wide-K{k}", random_jacobian(k, max(2, k // 2), seed=k + 1)  # K > P: rank-deficient
