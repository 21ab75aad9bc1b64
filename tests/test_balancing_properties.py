"""Property tests of the gradient aggregators, in the style of torchjd's
(``tests/unit/aggregation/_asserts.py``): each property that defines a method is checked
over families of Jacobians (tests/matrix_families.py: random, rank-deficient, strongly and
weakly stationary, non-stationary, near-degenerate), in float32 and float64, with fixed
seeds.

* **non-conflicting** (UPGrad, DualProj, MGDA, Nash-MTL): no row has
  ``⟨g_k, d⟩ < −100 eps ‖J‖ ‖d‖`` (eps of the Jacobian's dtype, ‖J‖ the spectral norm);
* **strongly stationary → 0** (the same four): where some v > 0 has vᵀJ = 0, no update
  helps a task without hurting another, and the update is exactly 0;
* **linear under scaling** (UPGrad, DualProj, ConFIG, PCGrad): ``A(sJ) = s A(J)``; and
  torchjd's stronger form, linear in per-row scales ``c ↦ A(diag(c) J)`` (UPGrad, ConFIG,
  PCGrad: DualProj projects a sum, which is not linear);
* **permutation-invariant** (every deterministic aggregator): permuting the rows, and the
  task names with them, leaves the update unchanged;
* every aggregator returns zeros for a (0, P) Jacobian (no task in the step).

Tolerances: a near-degenerate J amplifies rounding up to about ``√eps`` of its largest row
(the point below which the solvers call an update 0, ``balancing._qp.resolved``), so
equalities are checked to ``16 √eps · max_k ‖g_k‖`` — 2.4e-7 in float64, 5.5e-3 in float32;
the inequality above is the issue's, independent of the case.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from matrix_families import Case, all_cases, strongly_stationary_family

from polytask import balancing
from polytask.balancing import GradientAggregator

DTYPES = (torch.float32, torch.float64)
CASES: list[Case] = list(all_cases())
AGGREGATORS = sorted(
    n for n in balancing.available() if issubclass(balancing.METHODS.resolve(n), GradientAggregator)
)
#: the methods that promise never to conflict with a task, and 0 at a strongly stationary J
NON_CONFLICTING = ["dualproj", "mgda", "nash_mtl", "upgrad"]
#: A(sJ) = s·A(J) for s > 0
SCALE_LINEAR = ["con_fig", "dualproj", "pcgrad", "upgrad"]
#: PCGrad and GradVac draw a random order of the other tasks for each row position: they are
#: permutation-invariant in distribution only (exactly for K = 2,
#: tests/test_balancing_aggregators.py), not for one draw
RANDOM_ORDER = {"pcgrad", "gradvac"}
PERMUTATION_INVARIANT = [n for n in AGGREGATORS if n not in RANDOM_ORDER]


def make(name: str) -> GradientAggregator:
    """A fresh instance (no state from an earlier call); seeded where the method draws."""
    cls = balancing.METHODS.resolve(name)
    seeded = "seed" in inspect.signature(cls.__init__).parameters
    method = balancing.make(name, seed=0) if seeded else balancing.make(name)
    assert isinstance(method, GradientAggregator)
    return method


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _equality_tol(jacobian: torch.Tensor) -> float:
    rows = jacobian.double().norm(dim=1)
    return 16 * _eps(jacobian.dtype) ** 0.5 * float(rows.max()) if rows.numel() else 0.0


def conflict(jacobian: torch.Tensor, d: torch.Tensor) -> float:
    """max_k −⟨g_k, d⟩ / (eps ‖J‖ ‖d‖) in float64: ≤ 100 is non-conflicting (0 for d = 0)."""
    j, x = jacobian.double(), d.double()
    norm = float(x.norm())
    if norm == 0.0:
        return 0.0
    spectral = float(torch.linalg.matrix_norm(j, ord=2))
    return float((-(j @ x)).max()) / (_eps(jacobian.dtype) * spectral * norm)


def _cases(dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
    return [(case, j.to(dtype)) for case, j in CASES]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NON_CONFLICTING)
def test_non_conflicting(name: str, dtype: torch.dtype) -> None:
    """No row conflicts with the update beyond 100 eps ‖J‖ ‖d‖, on every family — and the
    check is not passed by returning 0 everywhere: non-stationary Jacobians get a non-zero
    update."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no solver may give up here
        for case, jacobian in _cases(dtype):
            d = make(name).aggregate(jacobian)
            assert d.shape == (jacobian.shape[1],) and d.dtype == dtype, case
            assert bool(torch.isfinite(d).all()), case
            assert conflict(jacobian, d) <= 100.0, (case, conflict(jacobian, d))
            if case.startswith(("random-2x", "random-3x", "random-4x", "nonstationary-")):
                assert float(d.double().norm()) > 0.0, case


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NON_CONFLICTING)
def test_strongly_stationary_gives_zero(name: str, dtype: torch.dtype) -> None:
    """vᵀJ = 0 for some v > 0: the update is exactly 0, not rounding noise (which has a
    direction, and conflicts with some task)."""
    for case, jacobian in strongly_stationary_family():
        j = jacobian.to(dtype)
        v = torch.rand(j.shape[0], generator=torch.Generator().manual_seed(0)) + 0.5
        d = make(name).aggregate(j)
        assert d.dtype == dtype and not bool(d.any()), (case, float(d.double().norm()))
        # rows scaled by a positive diagonal are strongly stationary too
        d = make(name).aggregate(v.to(dtype).unsqueeze(1) * j)
        assert not bool(d.any()), (case, "scaled rows", float(d.double().norm()))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SCALE_LINEAR)
def test_linear_under_scaling(name: str, dtype: torch.dtype) -> None:
    """J → sJ gives s·d, for scales that are exact in floating point (2⁻²⁰) and not."""
    for case, jacobian in _cases(dtype):
        d = make(name).aggregate(jacobian)
        for s in (2.0**-20, 0.37, 3e3):
            ds = make(name).aggregate(jacobian * s)
            gap = float((ds.double() - s * d.double()).norm())
            assert gap <= s * _equality_tol(jacobian), (case, s, gap)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariant(name: str, dtype: torch.dtype) -> None:
    """Permuting the rows, and the task names with them, does not change the update."""
    for case, jacobian in _cases(dtype):
        k = jacobian.shape[0]
        names = [f"t{i}" for i in range(k)]
        losses = {t: torch.tensor(1.0 + 0.5 * i) for i, t in enumerate(names)}
        d = make(name).aggregate(jacobian, losses)
        for seed in (0, 1):
            perm = torch.randperm(k, generator=torch.Generator().manual_seed(k + seed))
            permuted = {names[i]: losses[names[i]] for i in perm.tolist()}
            dp = make(name).aggregate(jacobian[perm], permuted)
            gap = float((dp.double() - d.double()).norm())
            assert gap <= _equality_tol(jacobian), (case, perm.tolist(), gap)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", AGGREGATORS)
def test_no_task_gives_a_zero_update(name: str, dtype: torch.dtype) -> None:
    """A (0, P) Jacobian — no task in this step — gives zeros of shape (P,), with or without
    an (empty) losses mapping; for a stateful method the step leaves its state alone."""
    for p in (5, 0):
        for losses in (None, {}):
            method = make(name)
            before = method.state_dict()
            d = method.aggregate(torch.zeros(0, p, dtype=dtype), losses)
            assert d.shape == (p,) and d.dtype == dtype and not bool(d.any()), (p, losses)
            assert str(method.state_dict()) == str(before)


# --- the cases of issue 13, by hand -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_a_cone_that_is_only_zero(name: str, dtype: torch.dtype) -> None:
    """J = [[1, 1e-8], [−1, 1e-8], [0, −1]]: x₂ ≥ |x₁|/1e-8 and x₂ ≤ 0 leave only x = 0, so
    the exact update is 0; the Gramian rounds its 1e-16 entries away, and a solver on it
    used to return (0, 0.27), at cosine −1 with the third task. In any row order and scale.
    (In float32, 1e-8 is below the rows' rounding: they are (±1, 0) to working precision,
    whose cone {x₁ = 0, x₂ ≤ 0} holds non-zero updates; those must not conflict.)"""
    j = torch.tensor([[1.0, 1e-8], [-1.0, 1e-8], [0.0, -1.0]], dtype=torch.float64)
    for perm in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        for s in (1.0, 0.37, 3e3):
            rows = (s * j[perm]).to(dtype)
            d = balancing.make(name).aggregate(rows)
            if dtype == torch.float64:
                assert not bool(d.any()), (perm, s, d)
            else:
                assert conflict(rows, d) <= 100.0, (perm, s, d)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_con_fig_anti_parallel_rows_have_no_direction(dtype: torch.dtype) -> None:
    """ConFIG on g₂ = −0.3 g₁: U⁺1 = 0 exactly (1 is orthogonal to the unit rows' range), so
    the update is 0 — whatever the row order and scale (it used to be 0 or g₁ + g₂)."""
    j = torch.tensor([[0.1, 0.2, 0.3], [-0.03, -0.06, -0.09]], dtype=torch.float64)
    for rows in (j, j.flip(0)):
        for s in (1e-3, 1.0, 0.37, 1e3):
            d = balancing.make("con_fig").aggregate((s * rows).to(dtype))
            assert not bool(d.any()), (s, d)
    # a third, independent task still gets its direction
    j3 = torch.cat([j, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    d = balancing.make("con_fig").aggregate(j3.to(dtype))
    assert float(d.double().norm()) > 0.0 and conflict(j3.to(dtype), d) <= 100.0


# --- the certificate and the fallbacks of the dual-cone solver ------------------------------


def _projection_problem(jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from polytask.balancing._qp import prepare_gramian

    g, _ = prepare_gramian(jacobian @ jacobian.T)
    n = g.diagonal().sqrt()
    h = g / (n.unsqueeze(1) * n.unsqueeze(0))
    a = torch.eye(g.shape[0], dtype=torch.float64) * n / g.shape[0]  # UPGrad's targets
    return h, a


def test_fallback_solvers_are_certified(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the active-set method broken (it returns 0, which is not optimal), the
    coordinate-descent fallback finds the projection to the certificate's tolerance, and
    the update equals the one of the working solver."""
    from polytask.balancing import _qp

    jacobian = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h, a = _projection_problem(jacobian)
    y, ok = _qp._certified_projection(h, a, _qp._EPS)
    assert bool(ok.all()) and bool(_qp.projection_kkt(h, a, y).all())
    assert not bool(_qp.projection_kkt(h, a, torch.zeros_like(a)).all())  # the check can fail
    expected = balancing.make("upgrad").aggregate(jacobian)

    def broken(hh: np.ndarray, c: np.ndarray, **_: object) -> tuple[np.ndarray, bool]:
        return np.zeros_like(c), False

    monkeypatch.setattr(_qp, "nonneg_qp", broken)
    y_cd, ok_cd = _qp._certified_projection(h, a, _qp._EPS)
    assert bool(ok_cd.all())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        d = balancing.make("upgrad").aggregate(jacobian)
    assert float((d - expected).norm()) <= 1e-6 * float(expected.norm())


def test_uncertified_projections_are_replaced_by_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no solver certifies a projection, it is replaced by 0 (a point of the cone) with
    a warning: the update still conflicts with no task."""
    from polytask.balancing import _qp

    def broken(hh: np.ndarray, c: np.ndarray, **_: object) -> tuple[np.ndarray, bool]:
        return np.zeros_like(c), False

    def stuck(p: object, x0: np.ndarray, max_sweeps: int) -> tuple[np.ndarray, np.ndarray]:
        return x0, np.zeros(x0.shape[0], dtype=bool)

    monkeypatch.setattr(_qp, "nonneg_qp", broken)
    monkeypatch.setattr(_qp, "_coordinate_descent", stuck)
    jacobian = torch.tensor([[1.0, 0.0], [-0.5, 1.0], [0.2, -1.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="replaced by 0"):
        d = balancing.make("upgrad").aggregate(jacobian)
    assert conflict(jacobian, d) <= 0.0


#: torchjd's stronger "linear under scaling": A(diag(c) J) is linear in c > 0. UPGrad
#: (projections of c_i g_i onto a cone that row scaling leaves alone: c_i π(g_i)), ConFIG
#: (a direction of unit rows, a length linear in c) and PCGrad (each row projected off
#: others by scale-free rules) satisfy it; DualProj does not (it projects Σ c_i g_i, and a
#: projection is not linear), nor do the other methods.
ROW_LINEAR = ["con_fig", "pcgrad", "upgrad"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ROW_LINEAR)
def test_linear_in_row_scales(name: str, dtype: torch.dtype) -> None:
    """A(diag(a c₁ + b c₂) J) = a A(diag(c₁) J) + b A(diag(c₂) J) for c₁, c₂ > 0, a, b > 0."""
    g = torch.Generator().manual_seed(5)
    for case, jacobian in _cases(dtype):
        k = jacobian.shape[0]
        c1, c2 = (torch.rand(k, generator=g, dtype=torch.float64) + 0.2 for _ in range(2))
        a, b = 0.7, 1.9

        d1, d2, d12 = (
            make(name).aggregate(c.to(dtype).unsqueeze(1) * jacobian).double()
            for c in (c1, c2, a * c1 + b * c2)
        )
        gap = float((d12 - a * d1 - b * d2).norm())
        assert gap <= 4 * _equality_tol(jacobian), (case, gap)
