"""ConFIG: ⟨d, g_i/‖g_i‖⟩ is the same positive number for every task; the length is the
sum of the gradients' projections; equal to the P-dimensional pseudo-inverse formula,
also for rank-deficient Jacobians."""

from __future__ import annotations

import torch
from jacobians import DTYPES, K_VALUES, SCALES, jacobian_cases, random_jacobian, structured_jacobian

from polytask.balancing.con_fig import ConFIG


def reference_con_fig(jac: torch.Tensor) -> torch.Tensor:
    """Liu et al.'s Eq. 2 on the rows: g_u = U⁺1/‖U⁺1‖, d = (Σ_i g_iᵀg_u) g_u (float64)."""
    jac = jac.double()
    units = jac / jac.norm(dim=1, keepdim=True)
    direction = torch.linalg.pinv(units) @ torch.ones(jac.shape[0], dtype=torch.float64)
    unit = direction / direction.norm()
    return (jac @ unit).sum() * unit


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


def test_equal_positive_projections_on_unit_gradients() -> None:
    for case, jac in _full_rank_cases():
        d = ConFIG().aggregate(jac).double()
        jac = jac.double()
        proj = (jac / jac.norm(dim=1, keepdim=True)) @ d
        assert float(proj.min()) > 0, case
        rtol = 1e-8 if "float32" not in case else 1e-3
        assert float(proj.max() - proj.min()) <= rtol * float(proj.max()), (case, proj)
        # the length is the sum of the gradients' projections on d's direction
        unit = d / d.norm()
        assert torch.allclose(d.norm(), (jac @ unit).sum(), rtol=rtol), case


def test_equals_the_pseudo_inverse_formula_on_the_rows() -> None:
    """Every case, K > P (rank-deficient: least-squares direction) included."""
    for case, jac in jacobian_cases():
        d = ConFIG().aggregate(jac).double()
        ref = reference_con_fig(jac)
        rtol = 1e-7 if jac.dtype == torch.float64 else 1e-3
        if "structured" in case:
            rtol = 1e-4  # the unit rows' Gramian is ill-conditioned (rank 3 plus 1e-3 noise)
        assert (d - ref).norm() <= rtol * ref.norm(), (case, float((d - ref).norm() / ref.norm()))


def test_rank_deficient_consistent_rows() -> None:
    """Duplicated and rescaled rows (singular Gramian, Ud = 1 still solvable): the property
    holds and the update is that of the distinct directions' ConFIG with their norms."""
    base = random_jacobian(3, 8, seed=1)
    jac = torch.cat([base, 3 * base[:2]])
    d = ConFIG().aggregate(jac)
    proj = (jac / jac.norm(dim=1, keepdim=True)) @ d
    assert float(proj.min()) > 0 and float(proj.max() - proj.min()) <= 1e-9 * float(proj.max())
    assert torch.allclose(d, reference_con_fig(jac), rtol=1e-9)


def test_two_tasks_by_hand() -> None:
    """g₁ = (1, 0), g₂ = (0, 3): g_u = (1, 1)/√2, length = (1 + 3)/√2, d = (2, 2)."""
    jac = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    assert torch.allclose(
        ConFIG().aggregate(jac), torch.tensor([2.0, 2.0], dtype=torch.float64), rtol=1e-14
    )
