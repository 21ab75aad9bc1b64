"""Families of Jacobians for the aggregators' property tests (test_balancing_properties.py).

Every matrix is built in float64 from a fixed seed, so a failure names a reproducible case.
The families follow the stationarity classes of Quinton & Rey ("Jacobian Descent for
Multi-Objective Optimization", arXiv:2406.16232, 2024, section 2): J (K × P) is

* **strongly stationary** when some v > 0 has vᵀJ = 0 (then no x has Jx ≥ 0 with Jx ≠ 0,
  by Stiemke's theorem: no update helps a task without hurting another);
* **weakly stationary** when some v ≥ 0, v ≠ 0, has vᵀJ = 0 (0 is in the convex hull of
  the rows: a Pareto-stationary point); *strictly* weakly when it is not strongly so;
* **non-stationary** otherwise.

Beside random, rank-deficient and the three stationarity classes, the near-degenerate
family holds the hand-made cases that broke solvers before: rows a rounding error away
from each other or from anti-parallel, cones a rounding error wide, row norms over twelve
orders of magnitude.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

__all__ = [
    "Case",
    "random_family",
    "rank_deficient_family",
    "strongly_stationary_family",
    "weakly_stationary_family",
    "non_stationary_family",
    "near_degenerate_family",
    "all_cases",
    "is_strongly_stationary",
]

#: (id, J in float64)
Case = tuple[str, Tensor]

_F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthonormal_complement(q: Tensor, g: torch.Generator) -> Tensor:
    """(m, m − k) columns completing the orthonormal columns of q (m, k) to a basis."""
    m, k = q.shape
    a = torch.randn(m, m - k, generator=g, dtype=_F64)
    a = a - q @ (q.T @ a)
    a = a - q @ (q.T @ a)  # twice is enough (Kahan)
    basis, _ = torch.linalg.qr(a)
    return basis


def _orthonormal(n: int, g: torch.Generator) -> Tensor:
    return _orthonormal_complement(torch.zeros(n, 0, dtype=_F64), g)


def _singular_values(r: int, g: torch.Generator, spread: float = 1.0) -> Tensor:
    """r positive singular values, log-uniform over ``spread`` decades around 1."""
    return 10.0 ** (spread * (torch.rand(r, generator=g, dtype=_F64) - 0.5))


def _with_left_basis(u: Tensor, p: int, r: int, g: torch.Generator, spread: float) -> Tensor:
    """U[:, :r] diag(s) Vᵀ[:r] for the given left basis U (K × ≥r) and a random V."""
    s = _singular_values(r, g, spread)
    vt = _orthonormal(p, g)[:r]
    return (u[:, :r] * s) @ vt


def random_family() -> Iterator[Case]:
    """i.i.d. normal rows, tall, square and wide (K > P, rank P)."""
    for i, (k, p) in enumerate([(2, 5), (3, 3), (4, 9), (5, 3), (7, 20), (10, 6)]):
        yield f"random-{k}x{p}", torch.randn(k, p, generator=_gen(100 + i), dtype=_F64)


def rank_deficient_family() -> Iterator[Case]:
    """Rank r < min(K, P), singular values over two decades."""
    for i, (k, p, r) in enumerate([(3, 6, 1), (4, 4, 2), (6, 10, 3), (8, 5, 2)]):
        g = _gen(200 + i)
        yield f"rank{r}-{k}x{p}", _with_left_basis(_orthonormal(k, g), p, r, g, spread=2.0)


def strongly_stationary_family() -> Iterator[Case]:
    """Rows orthogonal to a positive v: U = [v/|v|, complement], J = U[:, 1:r+1] S Vᵀ."""
    for i, (k, p, r) in enumerate([(2, 3, 1), (3, 5, 2), (4, 2, 2), (5, 8, 4), (7, 4, 3)]):
        g = _gen(300 + i)
        v = torch.rand(k, generator=g, dtype=_F64) + 0.1
        first = (v / v.norm()).unsqueeze(1)
        rest = _orthonormal_complement(first, g)
        yield f"strong-{k}x{p}r{r}", _with_left_basis(rest, p, r, g, spread=1.0)
    # by hand: two opposite rows; three rows whose positive combination is 0
    yield "strong-opposite", torch.tensor([[1.0, -2.0, 0.5], [-3.0, 6.0, -1.5]], dtype=_F64)
    yield (
        "strong-triangle",
        torch.tensor([[1.0, 0.0], [-0.5, 0.75**0.5], [-0.5, -(0.75**0.5)]], dtype=_F64),
    )


def weakly_stationary_family() -> Iterator[Case]:
    """Strictly weakly stationary: vᵀJ = 0 for some v ≥ 0 with zeros, and a non-negative
    left singular vector v' (disjoint support, positive singular value) rules out any w > 0
    with wᵀJ = 0 (0 = wᵀJJᵀv' = s² wᵀv' > 0 otherwise)."""
    for i, (k, p, r) in enumerate([(3, 4, 2), (4, 6, 3), (5, 3, 3), (6, 8, 4)]):
        g = _gen(400 + i)
        order = torch.randperm(k, generator=g)
        split = 1 + int(torch.randint(0, k - 1, (1,), generator=g))
        v = torch.zeros(k, dtype=_F64)
        w = torch.zeros(k, dtype=_F64)
        v[order[:split]] = torch.rand(split, generator=g, dtype=_F64) + 0.1
        w[order[split:]] = torch.rand(k - split, generator=g, dtype=_F64) + 0.1
        pair = torch.stack([v / v.norm(), w / w.norm()], dim=1)
        left = torch.cat([pair[:, 1:], _orthonormal_complement(pair, g)], dim=1)
        yield f"weak-{k}x{p}r{r}", _with_left_basis(left, p, r, g, spread=1.0)
    # by hand: an opposite pair and a third task orthogonal to both
    yield "weak-pair-plus-one", torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0]], dtype=_F64)


def non_stationary_family() -> Iterator[Case]:
    """A positive left singular vector u (positive singular value): no v ≥ 0, v ≠ 0, has
    vᵀJ = 0 (0 = vᵀJJᵀu = s² vᵀu > 0 otherwise)."""
    for i, (k, p, r) in enumerate([(2, 2, 1), (3, 6, 3), (5, 4, 3), (8, 10, 6)]):
        g = _gen(500 + i)
        u = torch.rand(k, generator=g, dtype=_F64) + 0.1
        first = (u / u.norm()).unsqueeze(1)
        left = torch.cat([first, _orthonormal_complement(first, g)], dim=1)
        yield f"nonstationary-{k}x{p}r{r}", _with_left_basis(left, p, r, g, spread=1.0)


def near_degenerate_family() -> Iterator[Case]:
    """Hand-made cases a rounding error away from a degenerate one."""
    # issue 13: the exact dual cone is {0}; a solver on the rounded Gramian finds a cone
    yield "thin-cone-closed", torch.tensor([[1.0, 1e-8], [-1.0, 1e-8], [0.0, -1.0]], dtype=_F64)
    # a cone 2e-8 wide around e2 (nonzero exact answer)
    yield "thin-cone-open", torch.tensor([[1.0, 1e-8], [-1.0, 1e-8], [0.0, 0.5]], dtype=_F64)
    # anti-parallel rows (issue 13, ConFIG), in both orders
    anti = torch.tensor([[0.1, 0.2, 0.3], [-0.03, -0.06, -0.09]], dtype=_F64)
    yield "anti-parallel", anti
    yield "anti-parallel-flipped", anti.flip(0)
    g = _gen(600)
    base = torch.randn(3, 6, generator=g, dtype=_F64)
    # near-duplicates and a near-opposite of one row
    near = torch.cat([base, base[:1] * (1 + 1e-9), -base[1:2] + 1e-9 * base[2:3]])
    yield "near-duplicates", near
    # row norms from 1e-6 to 1e6, and a zero row
    spread = (
        torch.randn(5, 7, generator=g, dtype=_F64) * torch.logspace(-6, 6, 5, dtype=_F64)[:, None]
    )
    yield "norms-1e-6..1e6", spread
    with_zero = torch.randn(4, 5, generator=g, dtype=_F64)
    with_zero[1] = 0
    yield "zero-row", with_zero
    # strongly stationary up to a perturbation of 1e-7
    v = torch.rand(5, generator=g, dtype=_F64) + 0.1
    first = (v / v.norm()).unsqueeze(1)
    stat = _with_left_basis(_orthonormal_complement(first, g), 6, 3, g, spread=1.0)
    yield "almost-strong", stat + 1e-7 * torch.randn(5, 6, generator=g, dtype=_F64)
    # rank 2 plus 1e-6 noise, row norms over four decades
    low = torch.randn(8, 2, generator=g, dtype=_F64) @ torch.randn(2, 30, generator=g, dtype=_F64)
    low = low + 1e-6 * torch.randn(8, 30, generator=g, dtype=_F64)
    yield "rank2-plus-noise", low * torch.logspace(-2, 2, 8, dtype=_F64)[:, None]


def all_cases() -> Iterator[Case]:
    """Every family, in a fixed order."""
    for family in (
        random_family,
        rank_deficient_family,
        strongly_stationary_family,
        weakly_stationary_family,
        non_stationary_family,
        near_degenerate_family,
    ):
        yield from family()


def is_strongly_stationary(case_id: str) -> bool:
    return case_id.startswith("strong-")
