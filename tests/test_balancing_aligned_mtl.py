"""Aligned-MTL: the aligned gradient matrix BJ has equal singular values on its non-null
space (condition number 1) and the rank of J; weights are B·1; scale modes."""

from __future__ import annotations

import pytest
import torch
from jacobians import jacobian_cases, random_jacobian

from polytask.balancing.aligned_mtl import AlignedMTL, aligned_mtl_transform


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
def test_aligned_matrix_has_equal_singular_values_on_its_non_null_space(mode: str) -> None:
    """B G B = σ V_r V_rᵀ: the non-zero singular values of Â = BJ all equal √σ, the others
    vanish, and rank(Â) is G's numerical rank (the official cut-off λ_max · K · ε₃₂).
    Checked on the Gramian the method receives (float32 inputs: their float32 Gramian),
    every K, scale, dtype, structured and K > P."""
    for case, jac in jacobian_cases():
        g = jac @ jac.T
        k = g.shape[0]
        g64 = g.double()
        b = torch.from_numpy(aligned_mtl_transform(0.5 * (g64 + g64.T).numpy(), mode))
        lam = torch.linalg.eigvalsh(g64)
        kept = lam[lam > lam.max() * k * torch.finfo(torch.float32).eps]
        sigma = {"min": kept.min(), "median": kept.median(), "rmse": kept.mean()}[mode]
        if mode == "median":  # numpy's median averages the middle pair
            sigma = kept.sort().values[(len(kept) - 1) // 2 : len(kept) // 2 + 1].mean()
        aligned_gram = b @ g64 @ b  # = Â Âᵀ
        sv = torch.linalg.eigvalsh(aligned_gram).flip(0)
        r = len(kept)
        assert torch.allclose(sv[:r], sigma.expand(r), rtol=1e-6), (case, sv[:r] / sigma)
        assert bool((sv[r:].abs() <= 1e-6 * sigma).all()), case
        w = AlignedMTL(scale_mode=mode).weights(g)
        assert torch.allclose(
            w.double(), b.sum(1), rtol=1e-5 if jac.dtype == torch.float32 else 1e-12
        ), case


def test_full_rank_aligned_rows_are_orthogonal_with_equal_norms() -> None:
    """K ≤ P, full rank: Â Âᵀ = σ I, checked on the P-dimensional aligned rows."""
    for k in (2, 3, 10, 40):
        jac = random_jacobian(k, 2 * k + 5, seed=k)
        b = torch.from_numpy(aligned_mtl_transform((jac @ jac.T).numpy(), "min"))
        aligned = b @ jac
        gram = aligned @ aligned.T
        sigma = torch.linalg.eigvalsh(jac @ jac.T).min()
        assert torch.allclose(
            gram, sigma * torch.eye(k, dtype=torch.float64), rtol=1e-8, atol=1e-8 * float(sigma)
        )
        assert torch.allclose(AlignedMTL().aggregate(jac), aligned.sum(0), rtol=1e-10)


def test_orthogonal_tasks_by_hand() -> None:
    """J = diag(1, 4): Λ = diag(1, 16), σ = 1, B = diag(1, ¼): the aligned rows are e₁ and
    e₂ — every task counts equally whatever its gradient's norm — and d = (1, 1)."""
    jac = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(
        AlignedMTL().weights(jac @ jac.T), torch.tensor([1.0, 0.25], dtype=torch.float64)
    )
    assert torch.allclose(AlignedMTL().aggregate(jac), torch.ones(2, dtype=torch.float64))
    rmse = AlignedMTL(scale_mode="rmse").aggregate(jac)  # σ = mean(1, 16) = 8.5
    assert torch.allclose(rmse, 8.5**0.5 * torch.ones(2, dtype=torch.float64))
