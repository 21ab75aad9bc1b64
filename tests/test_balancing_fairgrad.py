"""FairGrad: the weights solve G w = w^(−1/α) for several α at every K; α = 1 is
Nash-MTL's equation; α = 0 is uniform; large α approaches max-min fairness."""

from __future__ import annotations

import pytest
import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian

from polytask.balancing.fairgrad import FairGrad
from polytask.balancing.nash_mtl import NashMTL


@pytest.mark.parametrize("alpha", [0.1, 0.3, 1.0, 2.0, 8.0, 20.0])
def test_weights_solve_the_alpha_fair_equation(alpha: float) -> None:
    for k in K_VALUES:
        for scale in SCALES:
            for dtype in DTYPES:
                jac = random_jacobian(k, 2 * k + 5, seed=k, scale=scale, dtype=dtype)
                g = jac @ jac.T
                w = FairGrad(alpha=alpha).weights(g)
                assert w.dtype == dtype and bool((w > 0).all())
                g64, w64 = g.double(), w.double()
                rhs = w64 ** (-1 / alpha)
                resid = float((g64 @ w64 - rhs).norm() / rhs.norm())
                assert resid <= (1e-6 if dtype == torch.float64 else 2e-3), (
                    alpha,
                    k,
                    scale,
                    dtype,
                    resid,
                )


def test_alpha_one_is_nash_mtl_without_clipping() -> None:
    for k in K_VALUES:
        jac = random_jacobian(k, 2 * k + 5, seed=k)
        g = jac @ jac.T
        assert torch.allclose(
            FairGrad(alpha=1.0).weights(g), NashMTL(max_norm=0.0).weights(g), rtol=1e-12
        )


def test_alpha_zero_is_uniform() -> None:
    jac = random_jacobian(5, 9, seed=1)
    assert torch.allclose(FairGrad(alpha=0.0).aggregate(jac), jac.mean(0), rtol=1e-14)


def test_orthogonal_tasks_by_hand() -> None:
    """G = diag(n_i²): w_i = n_i^(−2α/(1+α)) and task i improves at rate
    g_iᵀd = w_i^(−1/α) = n_i^(2/(1+α)): proportional to n_i² at α → 0, equal rates (max-min
    fairness) as α → ∞."""
    norms = torch.tensor([1.0, 3.0, 0.3, 10.0], dtype=torch.float64)
    jac = torch.diag(norms)
    for alpha in (0.5, 1.0, 2.0, 20.0):
        w = FairGrad(alpha=alpha).weights(jac @ jac.T)
        assert torch.allclose(w, norms ** (-2 * alpha / (1 + alpha)), rtol=1e-12), alpha
        rates = jac @ (w @ jac)
        assert torch.allclose(rates, norms ** (2 / (1 + alpha)), rtol=1e-12), alpha
