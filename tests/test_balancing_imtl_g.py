"""IMTL-G: equal projections of d onto every unit task gradient, weights summing to 1, a
non-zero update, the paper's closed form, rank-deficient Gramians (pseudo-inverse)."""

from __future__ import annotations

import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian, structured_jacobian

from polytask.balancing.imtl_g import IMTLG, imtl_g_weights


def _full_rank_cases():
    for k in K_VALUES:
        for scale in SCALES:
            for dtype in DTYPES:
                yield (
                    f"K{k}-s{scale:g}-{dtype}",
                    random_jacobian(k, 2 * k + 5, seed=k, scale=scale, dtype=dtype),
                )
    for k in (2, 3, 10):
        yield f"structured-K{k}", structured_jacobian(k, p=60, seed=k, noise=0.05)


def _check_equal_projections(jac: torch.Tensor, d: torch.Tensor, rtol: float, case: str) -> None:
    jac, d = jac.double(), d.double()
    units = jac / jac.norm(dim=1, keepdim=True)
    proj = units @ d
    assert float(proj.min()) > 0, case  # equal and positive: d improves every task
    # relative to the projections, plus rounding of the largest row (ill-conditioned cases)
    atol = rtol * 1e-3 * float(jac.norm(dim=1).max())
    assert float(proj.max() - proj.min()) <= rtol * float(proj.abs().max()) + atol, (case, proj)


def test_equal_projections_weights_sum_to_one_non_zero() -> None:
    for case, jac in _full_rank_cases():
        w = imtl_g_weights(jac @ jac.T)
        assert w.dtype == jac.dtype
        assert abs(float(w.double().sum()) - 1.0) <= (
            1e-12 if jac.dtype == torch.float64 else 1e-5
        ), case
        d = IMTLG().aggregate(jac)
        assert float(d.double().norm()) > 0.01 * float(jac.double().norm(dim=1).min()), case
        _check_equal_projections(jac, d, 1e-8 if jac.dtype == torch.float64 else 1e-2, case)


def test_matches_the_papers_closed_form() -> None:
    """α_{2:K} = g₁Uᵀ(DUᵀ)⁻¹, α₁ = 1 − Σα_{2:K} with D = [g₁ − g_i], U = [u₁ − u_i]."""
    for k in K_VALUES:
        jac = random_jacobian(k, 2 * k + 5, seed=k)
        units = jac / jac.norm(dim=1, keepdim=True)
        dmat = jac[0] - jac[1:]
        umat = units[0] - units[1:]
        rest = jac[0] @ umat.T @ torch.linalg.inv(dmat @ umat.T)
        alpha = torch.cat([1 - rest.sum().reshape(1), rest])
        assert torch.allclose(imtl_g_weights(jac @ jac.T), alpha, rtol=1e-8, atol=1e-10), k


def test_rank_deficient_gramians_use_the_pseudo_inverse() -> None:
    """Duplicated rows (G singular, the equal-projection system still consistent): the
    property holds and the duplicates share their weight. K > P generic rows: finite, and
    Gα equals the projection of n onto G's range times 1/1ᵀG⁺n."""
    base = random_jacobian(3, 8, seed=1)
    jac = torch.cat([base, base[:2], 2 * base[:1]])  # rows 0, 3, 5 point the same way
    w = imtl_g_weights(jac @ jac.T)
    assert abs(float(w.sum()) - 1) < 1e-12
    _check_equal_projections(jac, w @ jac, 1e-9, "duplicates")
    for k in (10, 40):
        wide = random_jacobian(k, 4, seed=k)
        g = wide @ wide.T
        w = imtl_g_weights(g)
        assert torch.isfinite(w).all() and abs(float(w.sum()) - 1) < 1e-9
        n = g.diagonal().sqrt()
        proj = torch.linalg.pinv(g, hermitian=True) @ g  # projector onto range(G)
        expected = proj @ n / float(torch.linalg.pinv(g, hermitian=True).mv(n).sum())
        assert torch.allclose(g @ w, expected, rtol=1e-6, atol=1e-9 * float(n.max())), k


def test_two_tasks_by_hand() -> None:
    """g₁ = (1, 0), g₂ = (0, 2): equal projections need α₁ = 2α₂ → α = (⅔, ⅓), d = (⅔, ⅔)."""
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(
        IMTLG().weights(jac @ jac.T), torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    )
    assert torch.allclose(IMTLG().aggregate(jac), torch.tensor([2 / 3, 2 / 3], dtype=torch.float64))


def test_degenerate_normalisation_gives_zero_weights() -> None:
    """1ᵀG⁺n = 0 cannot be normalised: g₂ = −g₁ gives G⁺n ∝ (1, −1)·…, summing to 0."""
    jac = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    assert torch.equal(imtl_g_weights(jac @ jac.T), torch.zeros(2, dtype=torch.float64))
