"""MGDA: the exact min-norm point of the rows' convex hull, certified on every Jacobian case.

The certificate (float64): d = wᵀJ with w ≥ 0, Σw = 1, and for every row k

    ⟨g_k, d⟩ ≥ |d|² − 1e-3 · max(|d|², 1e-9 · max_k |g_k|²),

which holds exactly for the min-norm point and only near it (KKT conditions of
min_{w ∈ simplex} |wᵀJ|²). General-purpose QP solvers are not accurate enough to serve as a
reference; the certificate needs none.
"""

from __future__ import annotations

import pytest
import torch
from jacobians import K_VALUES, SCALES, jacobian_cases, random_jacobian, structured_jacobian

from polytask import balancing
from polytask.balancing._qp import nonneg_qp, prepare_gramian
from polytask.balancing.mgda import MGDA

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # an unconverged solve fails

CASES = list(jacobian_cases()) + [
    (f"structured-K{k}-noise{noise:g}-seed{seed}", structured_jacobian(k, noise=noise, seed=seed))
    for k in K_VALUES
    for noise in (1e-3, 1e-6)
    for seed in (11, 12)
]


def certificate_violation(jacobian: torch.Tensor, weights: torch.Tensor) -> float:
    """max_k of (|d|² − 1e-3·max(|d|², 1e-9·max|g|²)) − ⟨g_k, d⟩, relative to max|g|²; ≤ 0
    passes."""
    j = jacobian.double()
    d = weights.double() @ j
    dd = d @ d
    top = (j * j).sum(dim=1).max()
    slack = j @ d - dd + 1e-3 * torch.maximum(dd, 1e-9 * top)
    return float(-slack.min() / top)


def hull_witness(jacobian: torch.Tensor) -> float:
    """|d|² / max|g|² for the active-set programme's raw min-norm point d (before MGDA's rule
    that turns a d it cannot tell from 0 into 0), checked on J: ~0 certifies that 0 is in
    the hull to working precision."""
    j = jacobian.double()
    g, _ = prepare_gramian(j @ j.T)
    x, _ = nonneg_qp(g + 1.0, -torch.ones(1, j.shape[0], dtype=torch.float64))
    u = torch.from_numpy(x)
    d = (u[0] / u[0].sum()) @ j
    return float(d @ d / (j * j).sum(dim=1).max())


def in_simplex(weights: torch.Tensor) -> bool:
    return bool((weights >= 0).all()) and abs(float(weights.double().sum()) - 1.0) <= 1e-12


def frank_wolfe(gramian: torch.Tensor, epsilon: float = 1e-3, max_iters: int = 100) -> torch.Tensor:
    """Sener & Koltun's Algorithm 2 (the loose solver some libraries use): for the power test."""
    k = gramian.shape[0]
    w = torch.full((k,), 1.0 / k, dtype=gramian.dtype)
    for _ in range(max_iters):
        t = int(torch.argmin(gramian @ w))
        a, b, c = float(w @ gramian[:, t]), float(w @ gramian @ w), float(gramian[t, t])
        gamma = 1.0 if c <= a else 0.0 if b <= a else (b - a) / (b + c - 2 * a)
        w = (1 - gamma) * w
        w[t] += gamma
        if gamma < epsilon:
            break
    return w


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_min_norm_certificate(case) -> None:
    """d is in the hull and satisfies the optimality certificate, on every shape and scale."""
    _, jacobian = case
    j = jacobian.double()
    method = MGDA()
    w = method.weights(j @ j.T)
    assert w.dtype == torch.float64 and w.shape == (j.shape[0],)
    if not bool(w.any()):  # 0 is in the hull to working precision: d = 0 exactly
        assert hull_witness(j) <= 1e-12
        return
    assert in_simplex(w)
    assert certificate_violation(j, w) <= 0.0
    torch.testing.assert_close(
        method.aggregate(j), w @ j, rtol=1e-12, atol=1e-12 * float(j.abs().max())
    )


def test_certificate_rejects_a_loose_solver() -> None:
    """The certificate can fail: Frank–Wolfe with ε = 1e-3 and 100 steps does not pass it on the
    structured K = 40 Jacobian (nor on K = 10), while the exact solver does."""
    for k in (10, 40):
        j = structured_jacobian(k, seed=k)
        g = j @ j.T
        assert certificate_violation(j, frank_wolfe(g)) > 0.0
        assert certificate_violation(j, MGDA().weights(g)) <= 0.0
    # and breaking the exact answer slightly breaks the certificate
    j = random_jacobian(10, 30, seed=3)
    w = MGDA().weights(j @ j.T)
    nudged = 0.99 * w + 0.01 * torch.nn.functional.one_hot(torch.argmin(w), 10).double()
    assert certificate_violation(j, nudged) > 0.0


def test_known_answers() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    # orthogonal unit vectors: the centroid
    torch.testing.assert_close(
        MGDA().aggregate(eye[:2]), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(MGDA().aggregate(eye), torch.full((3,), 1 / 3, dtype=torch.float64))
    # a row whose every inner product with the others is ≥ its squared norm is the answer
    j = torch.tensor([[1.0, 0.0], [2.0, 5.0], [3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(
        MGDA().weights(j @ j.T), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(MGDA().aggregate(j), j[0])
    # two rows: the closed form γ = ⟨g₂, g₂ − g₁⟩ / |g₁ − g₂|² clipped to [0, 1]
    j = torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=torch.float64)
    gamma = float(j[1] @ (j[1] - j[0]) / (j[0] - j[1]).pow(2).sum())
    torch.testing.assert_close(
        MGDA().weights(j @ j.T), torch.tensor([gamma, 1 - gamma], dtype=torch.float64)
    )
    # a zero row puts 0 in the hull: d = 0
    j = random_jacobian(10, 30, seed=5)
    j[7] = 0.0
    d = MGDA().aggregate(j)
    assert float(d.norm()) <= 1e-12 * float(j.norm())
    # opposite rows: 0 is in the hull
    j = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    assert float(MGDA().aggregate(j).norm()) <= 1e-14


@pytest.mark.parametrize("k", K_VALUES)
def test_invariant_to_row_order(k: int) -> None:
    for j in (random_jacobian(k, 30, seed=k), structured_jacobian(k, seed=k + 100)):
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
        d, d_perm = MGDA().aggregate(j), MGDA().aggregate(j[perm])
        torch.testing.assert_close(d_perm, d, rtol=1e-9, atol=1e-9 * float(j.norm(dim=1).max()))


@pytest.mark.parametrize("k", K_VALUES)
def test_scaling_rows_scales_d(k: int) -> None:
    j = structured_jacobian(k, seed=k + 200)
    d = MGDA().aggregate(j)
    for c in SCALES + (3.7e-3,):
        atol = 1e-9 * c * float(j.norm(dim=1).max())
        torch.testing.assert_close(MGDA().aggregate(c * j), c * d, rtol=1e-9, atol=atol)


@pytest.mark.parametrize("k", K_VALUES)
def test_float32_input(k: int) -> None:
    """float32 in, float32 out. The precision policy (``balancing._gramian``) accumulates a
    float32 Jacobian's Gramian in float32 and solves in float64 with float32's tolerance, so
    the min-norm certificate holds to float32's rounding of the Gramian (an ill-conditioned
    J's float32 Gramian does not pin d down further: see test_balancing_gramian.py)."""
    j32 = structured_jacobian(k, seed=k + 300, dtype=torch.float32)
    j64 = j32.double()
    d32 = MGDA().aggregate(j32)
    assert d32.dtype == torch.float32
    d, d64 = d32.double(), MGDA().aggregate(j64)
    top = float((j64 * j64).sum(dim=1).max())
    if not bool(d32.any()):
        # below what a float32 Gramian resolves (|d|² ≲ 128 √K eps₃₂ (Σ w|g|)²): d = 0 exactly
        assert float(d64 @ d64) <= 128 * k**0.5 * torch.finfo(torch.float32).eps * top
        return
    tol = 8 * k * torch.finfo(torch.float32).eps * top
    assert float((j64 @ d).min() - d @ d) >= -tol  # ⟨g_k, d⟩ ≥ |d|² to float32's rounding
    assert float(d @ d) <= float(d64 @ d64) + tol  # as short as the exact min-norm point
    w32 = MGDA().weights(j32 @ j32.T)
    assert w32.dtype == torch.float32 and bool((w32 >= 0).all())
    assert abs(float(w32.sum()) - 1.0) <= 1e-6
    torch.testing.assert_close(d32, w32 @ j32)  # aggregate() is weights() applied in J's dtype


def test_edge_cases() -> None:
    g = torch.tensor([[3.0, -1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(MGDA().aggregate(g), g[0])  # K = 1
    assert torch.equal(MGDA().aggregate(torch.zeros(4, 6)), torch.zeros(6))
    assert MGDA().weights(torch.zeros(0, 0)).shape == (0,)
    bad = random_jacobian(3, 5)
    bad[1, 2] = float("nan")
    assert bool(torch.isnan(MGDA().aggregate(bad)).all())
    with pytest.raises(ValueError, match="3 gradient rows but 2 losses"):
        MGDA().weights(torch.eye(3), {"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    with pytest.raises(ValueError, match=r"\(K, P\)"):
        MGDA().aggregate(torch.zeros(3))


def test_interface() -> None:
    method = balancing.make("mgda")
    assert isinstance(method, MGDA) and method.name == "mgda" and method.needs == "gramian"
    assert set(method.levels) == {"features", "params"}
    assert method.state_dict() == {}
    with pytest.raises(ValueError, match="mgda"):
        balancing.make("mgda", epsilon=1e-3)
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
    j = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(method.weights(j @ j.T, losses), torch.tensor([0.5, 0.5]))
