"""Nash-MTL: the weights solve (J Jᵀ) α = 1/α on full-row-rank Jacobians; singular
Gramians (solvable, and Pareto-stationary); zero rows; max_norm; update_every with its
cached state. (The solve's time is measured in benchmarks/balancing/step_cost.py.)"""

from __future__ import annotations

import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian, structured_jacobian

from polytask.balancing.nash_mtl import NashMTL


def _residual(g: torch.Tensor, alpha: torch.Tensor) -> float:
    g, alpha = g.double(), alpha.double()
    return float((g @ alpha - 1 / alpha).norm() / (1 / alpha).norm())


def test_weights_solve_the_bargaining_equation_on_full_row_rank_jacobians() -> None:
    """(G α)_i = 1/α_i, relative residual ≤ 1e-6 in float64 (1e-3 for float32 inputs, whose
    Gramian carries float32 rounding), every K, scales 1e-6 … 1e6; α > 0."""
    for k in K_VALUES:
        for scale in SCALES:
            for dtype in DTYPES:
                jac = random_jacobian(k, 2 * k + 5, seed=k, scale=scale, dtype=dtype)
                g = jac @ jac.T
                alpha = NashMTL(max_norm=0.0).weights(g)
                assert alpha.dtype == dtype and bool((alpha > 0).all())
                tol = 1e-6 if dtype == torch.float64 else 1e-3
                assert _residual(g, alpha) <= tol, (k, scale, dtype, _residual(g, alpha))
    for k in K_VALUES:  # ill-conditioned but full rank: rank 3 plus noise, P = 200
        g = (lambda j: j @ j.T)(structured_jacobian(k, seed=k))
        assert _residual(g, NashMTL(max_norm=0.0).weights(g)) <= 1e-4, k


def test_each_task_improves_at_rate_one_over_its_weight() -> None:
    """Theorem 5.1's reading: g_iᵀd = 1/α_i, and ‖d‖² = K."""
    jac = random_jacobian(5, 20, seed=2)
    alpha = NashMTL(max_norm=0.0).weights(jac @ jac.T)
    d = alpha @ jac
    assert torch.allclose(jac @ d, 1 / alpha, rtol=1e-10)
    assert abs(float(d @ d) - 5) < 1e-9


def test_singular_but_solvable() -> None:
    """K = 3 rows in R² inside an open half-plane: G is singular (rank 2) but a unique
    solution exists and is found."""
    jac = torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, 1.0]], dtype=torch.float64)
    g = jac @ jac.T
    assert torch.linalg.matrix_rank(g) == 2
    alpha = NashMTL(max_norm=0.0).weights(g)
    assert bool((alpha > 0).all()) and _residual(g, alpha) <= 1e-10
    for k in (10, 40):  # K > P rows, all with a positive first coordinate: a half-space
        wide = random_jacobian(k, 5, seed=k)
        wide[:, 0] = wide[:, 0].abs() + 0.5
        gw = wide @ wide.T
        assert _residual(gw, NashMTL(max_norm=0.0).weights(gw)) <= 1e-8, k


def test_pareto_stationary_rows_give_finite_weights_and_a_zero_update() -> None:
    """g₂ = −g₁ (0 in the conic hull): no solution exists; the weights stay finite and the
    update is exactly 0 (the part of Newton's direction that conflicts with no task: J is
    strongly stationary). Same for K = 10 rows summing to 0."""
    jac = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    alpha = NashMTL(max_norm=0.0).weights(jac @ jac.T)
    assert torch.isfinite(alpha).all() and bool((alpha >= 0).all())
    assert float((alpha @ jac).norm()) == 0.0
    rows = random_jacobian(10, 4, seed=1)
    rows = rows - rows.mean(0)
    d = NashMTL(max_norm=0.0).aggregate(rows)
    assert torch.isfinite(d).all() and float(d.norm()) == 0.0


def test_weakly_stationary_keeps_the_conflict_free_part() -> None:
    """g₂ = −2 g₁ and g₃ ⟂ both: no bargaining solution (0 is in the conic hull of g₁, g₂);
    the update is the part of Newton's direction that hurts no task, along g₃."""
    jac = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    d = NashMTL(max_norm=0.0).aggregate(jac)
    assert abs(float(d[0])) <= 1e-15 * float(d[1]) and float(d[1]) > 0.0


def test_zero_rows_get_zero_weight() -> None:
    jac = random_jacobian(4, 9, seed=0)
    jac[1] = 0
    alpha = NashMTL(max_norm=0.0).weights(jac @ jac.T)
    assert alpha[1] == 0
    keep = [0, 2, 3]
    sub = jac[keep]
    assert torch.allclose(alpha[keep], NashMTL(max_norm=0.0).weights(sub @ sub.T), rtol=1e-12)


def test_max_norm_clips_the_update_norm() -> None:
    """‖d‖ = √(αᵀGα) = √K at the solution; max_norm rescales α so that ‖d‖ ≤ max_norm."""
    jac = random_jacobian(4, 9, seed=0, scale=30.0)
    d_free = NashMTL(max_norm=0.0).aggregate(jac)
    assert abs(float(d_free.norm()) - 2.0) < 1e-9
    d = NashMTL(max_norm=1.0).aggregate(jac)
    assert abs(float(d.norm()) - 1.0) < 1e-9 and torch.allclose(d, d_free / 2, rtol=1e-12)
    assert torch.allclose(NashMTL(max_norm=5.0).aggregate(jac), d_free, rtol=1e-14)


def test_update_every_reuses_the_cached_weights() -> None:
    """update_every = 3: solves at calls 0, 3, 6, …; in between the cached α (by task name)
    is reused; a task without a cached α forces a solve; the cache is the state."""
    names = {t: torch.tensor(1.0) for t in "abc"}
    jacs = [random_jacobian(3, 8, seed=s) for s in range(7)]
    method = NashMTL(update_every=3, max_norm=0.0)
    outs = [method.weights(j @ j.T, names) for j in jacs]
    fresh = [NashMTL(max_norm=0.0).weights(j @ j.T) for j in jacs]
    for i in range(7):
        expected = fresh[3 * (i // 3)]
        assert torch.allclose(outs[i], expected, rtol=1e-14), i
    state = method.state_dict()
    assert state["step"] == 7 and set(state["alpha"]) == set("abc")
    # a new task forces a solve even between scheduled solves
    method = NashMTL(update_every=100, max_norm=0.0)
    method.weights(jacs[0] @ jacs[0].T, names)
    j4 = random_jacobian(4, 8, seed=9)
    four = {t: torch.tensor(1.0) for t in "abcd"}
    assert torch.allclose(
        method.weights(j4 @ j4.T, four), NashMTL(max_norm=0.0).weights(j4 @ j4.T), rtol=1e-14
    )


def test_two_orthogonal_tasks_by_hand() -> None:
    """G = diag(a², b²): α_i = 1/‖g_i‖, d = Σ g_i/‖g_i‖."""
    jac = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    assert torch.allclose(
        NashMTL(max_norm=0.0).weights(jac @ jac.T), torch.tensor([0.5, 2.0], dtype=torch.float64)
    )


def _pareto_stationary_rows() -> torch.Tensor:
    """Three random rows, a near-copy of the first and a near-opposite of the second: 0 is
    in the conic hull to rounding, so the power equation has no solution."""
    base = torch.randn(3, 6, generator=torch.Generator().manual_seed(600), dtype=torch.float64)
    return torch.cat([base, base[:1] * (1 + 1e-9), -base[1:2] + 1e-9 * base[2:3]])


def test_the_fallback_without_a_solution_is_stable_under_rounding_of_the_gramian() -> None:
    """Nash-MTL and FairGrad fall back on the ridge-regularised equation's weights: the
    update moves by about √eps (not 1e-4, as Newton's stopped iterate did) when each entry
    of G moves by one unit in the last place, which is what a BLAS may do to the Gramian
    of the same rows given in another order."""
    from polytask.balancing import make

    j = _pareto_stationary_rows()
    g = j @ j.T
    tol = 16 * torch.finfo(torch.float64).eps ** 0.5 * float(j.norm(dim=1).max())
    gen = torch.Generator().manual_seed(1)
    for name in ("nash_mtl", "fairgrad"):
        d = make(name).weights(g) @ j
        assert d.norm() > 0.1  # a real update, not 0
        for _ in range(20):
            ulps = torch.randint(-1, 2, g.shape, generator=gen).double()
            noisy = g + torch.triu(ulps * g.abs() * torch.finfo(torch.float64).eps)
            noisy = torch.triu(noisy) + torch.triu(noisy, 1).T  # symmetric, as a BLAS gives
            gap = float((make(name).weights(noisy) @ j - d).norm())
            assert gap <= tol, (name, gap, tol)
