"""CAGrad: c = 0 is the mean; the simplex solution is optimal (duality certificate and
better than random simplex points) at every K, also on ill-conditioned Jacobians; the
update lies on the ball's boundary and improves the worst task at least as much as the
mean does; rescale options."""

from __future__ import annotations

import math

import pytest
import torch
from jacobians import K_VALUES, jacobian_cases, random_jacobian, structured_jacobian

from polytask.balancing.cagrad import CAGrad, cagrad_simplex_weights

C_VALUES = (0.1, 0.4, 0.7, 0.95)


def _objective(jac: torch.Tensor, w: torch.Tensor, c: float) -> float:
    g0 = jac.mean(0)
    gw = w @ jac
    return float(gw @ g0 + c * g0.norm() * gw.norm())


def _cases():
    yield from ((case, jac.double()) for case, jac in jacobian_cases())
    for seed in range(3):
        for k in (10, 40):
            yield f"structured-K{k}-seed{seed}", structured_jacobian(k, seed=100 + seed)


def test_c_zero_is_the_mean() -> None:
    for case, jac in jacobian_cases():
        d = CAGrad(c=0.0).aggregate(jac)
        assert torch.allclose(
            d,
            jac.mean(0),
            rtol=1e-5 if jac.dtype == torch.float32 else 1e-12,
            atol=1e-6 * float(jac.abs().max()),
        ), case


@pytest.mark.parametrize("c", C_VALUES)
def test_duality_certificate_at_every_k(c: float) -> None:
    """max_{‖d − g₀‖ ≤ c‖g₀‖} min_i g_iᵀd = min_{w ∈ Δ} g_wᵀg₀ + c‖g₀‖‖g_w‖ (strong
    duality): with d built from our w (rescale=0), min_i g_iᵀd equals the objective at w
    up to 1e-9 · max_i ‖g_i‖². Any suboptimal w would leave a positive gap. Random, wide
    (K > P: LibMTL's CAGrad crashed for K ≠ 3) and rank-3-plus-noise Jacobians."""
    for case, jac in _cases():
        g = jac @ jac.T
        w, _ = cagrad_simplex_weights(g.numpy(), c)
        w = torch.from_numpy(w)
        assert bool((w >= 0).all()) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-12), case
        d = CAGrad(c=c, rescale=0).aggregate(jac)
        gap = _objective(jac, w, c) - float((jac @ d).min())
        assert abs(gap) <= 1e-9 * float(g.diagonal().max()), (case, gap)


@pytest.mark.parametrize("c", (0.4, 0.9))
def test_objective_not_above_random_simplex_points(c: float) -> None:
    gen = torch.Generator().manual_seed(0)
    for case, jac in _cases():
        k = jac.shape[0]
        w, _ = cagrad_simplex_weights((jac @ jac.T).numpy(), c)
        best = _objective(jac, torch.from_numpy(w), c)
        points = -(
            torch.rand(200, k, generator=gen, dtype=torch.float64).log() ** 3
        )  # sparse-ish simplex points
        points = points / points.sum(1, keepdim=True)
        points = torch.cat([points, torch.eye(k, dtype=torch.float64)])  # and every vertex
        others = [_objective(jac, p, c) for p in points]
        assert best <= min(others) + 1e-12 * float((jac @ jac.T).diagonal().max()), case


@pytest.mark.parametrize("c", C_VALUES)
def test_properties_of_the_update(c: float) -> None:
    """‖d − g₀‖ = c‖g₀‖ (d on the ball's boundary), g₀ᵀd ≥ (1 − c)‖g₀‖² > 0 (d is a descent
    direction of the average loss), and min_i g_iᵀd ≥ min_i g_iᵀg₀ (the worst task gains
    at least as much as under the mean, since g₀ is in the ball)."""
    for case, jac in _cases():
        g0 = jac.mean(0)
        n0 = float(g0.norm())
        if n0 == 0:
            continue
        d = CAGrad(c=c, rescale=0).aggregate(jac)
        scale = float((jac @ jac.T).diagonal().max())
        assert math.isclose(float((d - g0).norm()), c * n0, rel_tol=1e-9), case
        assert float(g0 @ d) >= (1 - c) * n0**2 * (1 - 1e-9), case
        assert float((jac @ d).min()) >= float((jac @ g0).min()) - 1e-9 * scale, case


def test_rescale_options_as_in_the_official_code() -> None:
    jac = random_jacobian(5, 12, seed=3)
    d = CAGrad(c=0.5, rescale=0).aggregate(jac)
    assert torch.allclose(CAGrad(c=0.5).aggregate(jac), d / 1.25, rtol=1e-14)
    assert torch.allclose(CAGrad(c=0.5, rescale=1).aggregate(jac), d / 1.25, rtol=1e-14)
    assert torch.allclose(CAGrad(c=0.5, rescale=2).aggregate(jac), d / 1.5, rtol=1e-14)


def test_two_tasks_by_hand() -> None:
    """Orthogonal unit gradients, c = 0.5: by symmetry w = (½, ½), g_w = g₀ = (½, ½),
    d = g₀ + (c‖g₀‖/‖g₀‖) g₀ = 1.5 g₀."""
    jac = torch.eye(2, dtype=torch.float64)
    assert torch.allclose(
        CAGrad(c=0.5, rescale=0).aggregate(jac),
        torch.tensor([0.75, 0.75], dtype=torch.float64),
        rtol=1e-12,
    )


@pytest.mark.parametrize("k", K_VALUES)
def test_pareto_stationary_rows(k: int) -> None:
    """Rows whose mean is 0 (g₀ = 0): the ball is the point 0, the update is 0."""
    jac = random_jacobian(k, 6, seed=k)
    jac = jac - jac.mean(0)
    assert torch.allclose(CAGrad().aggregate(jac), torch.zeros(6, dtype=torch.float64), atol=1e-12)
