"""UPGrad and DualProj: projections onto the dual cone of the task gradients.

Both outputs conflict with no task (⟨g_k, d⟩ ≥ 0 for every row), both equal the mean when
no two rows conflict — and a zero vector, which trivially conflicts with nothing, fails
that test — and both are checked against a brute-force projection (enumeration of active
sets, in P-space, independent of the Gramian solver) on small Jacobians.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from jacobians import (
    DTYPES,
    K_VALUES,
    SCALES,
    conflicting_pair,
    jacobian_cases,
    non_conflicting_jacobian,
    random_jacobian,
    structured_jacobian,
)

from polytask import balancing
from polytask.balancing._qp import dual_cone_weights, prepare_gramian
from polytask.balancing.dualproj import DualProj
from polytask.balancing.upgrad import UPGrad
from polytask.errors import OptionError

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # an unconverged solve fails

METHODS = [UPGrad, DualProj]
CASES = list(jacobian_cases()) + [
    (f"structured-K{k}-noise{noise:g}", structured_jacobian(k, noise=noise, seed=k + 50))
    for k in K_VALUES
    for noise in (1e-3, 1e-6, 0.0)
]


def conflict(jacobian: torch.Tensor, d: torch.Tensor, weights: torch.Tensor) -> float:
    """max_k −⟨g_k, d⟩ / (|g_k| · Σ_i |w_i| |g_i|) in float64: ≤ tolerance means no conflict."""
    j = jacobian.double()
    norms = j.norm(dim=1)
    scale = norms * float(weights.double().abs() @ norms)
    inner = j @ d.double()
    return float((-inner / scale.clamp_min(torch.finfo(torch.float64).tiny)).max())


def stationarity_witness(method: UPGrad | DualProj, jacobian: torch.Tensor) -> float:
    """|Jᵀv| / Σ_k |v_k| |g_k| for the solver's raw weights v ≥ p > 0 (before the rule that
    turns an update the Gramian does not resolve into 0): ~0 certifies, on J, that a positive
    combination of the rows vanishes, i.e. that 0 is the exact update."""
    j = jacobian.double()
    g, _ = prepare_gramian(j @ j.T)
    p = torch.full((j.shape[0],), 1 / j.shape[0], dtype=torch.float64)
    v = dual_cone_weights(g, method.targets(p.numpy())).sum(0)
    assert bool((v > 0).all())
    return float((v @ j).norm() / (v.abs() @ j.norm(dim=1)))


def project_brute_force(jacobian: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Projection of x onto {y : J y ≥ 0} by enumerating active sets S: the candidate
    x − J_Sᵀ (J_S J_Sᵀ)⁺ J_S x closest to x among the feasible ones (the projection is the
    candidate for its own active set, and no feasible point is closer)."""
    k = jacobian.shape[0]
    scale = float(jacobian.norm(dim=1).max() * x.norm())
    best, best_dist = None, float("inf")
    for size in range(k + 1):
        for s in itertools.combinations(range(k), size):
            js = jacobian[list(s)]
            y = x - js.T @ (torch.linalg.pinv(js @ js.T) @ (js @ x)) if s else x.clone()
            if bool((jacobian @ y >= -1e-12 * scale).all()):
                dist = float((y - x).norm())
                if dist < best_dist:
                    best, best_dist = y, dist
    assert best is not None
    return best


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conflicts_with_no_task(cls, case) -> None:
    """⟨g_k, d⟩ ≥ 0 for every row, to rounding, at every K, scale and dtype."""
    _, jacobian = case
    method = cls()
    d = method.aggregate(jacobian)
    assert d.dtype == jacobian.dtype and d.shape == (jacobian.shape[1],)
    j64 = jacobian.double()
    w = method.weights(j64 @ j64.T)
    tol = 1e-10 if jacobian.dtype == torch.float64 else 1e-6
    assert conflict(jacobian, d, w) <= tol
    assert conflict(jacobian, w @ j64, w) <= 1e-10
    if float(d.double().norm()) == 0.0:
        # only at a strongly stationary J (to working precision): the projections' raw
        # weights v ≥ p > 0 combine the rows to ~0, checked on J itself
        assert stationarity_witness(method, jacobian) <= 1e-6


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_equals_the_mean_without_conflicts(cls, k: int, scale: float, dtype: torch.dtype) -> None:
    jacobian = (non_conflicting_jacobian(k, seed=k) * scale).to(dtype)
    d = cls().aggregate(jacobian)
    mean = jacobian.double().mean(dim=0)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(d.double(), mean, rtol=rtol, atol=rtol * float(mean.norm()))
    assert float(d.double().norm()) >= 0.5 * float(jacobian.double().norm(dim=1).min())  # not ~0


def test_the_checks_can_fail() -> None:
    """The conflict check rejects the plain mean of conflicting rows, and the equals-the-mean
    check rejects the zero vector (which conflicts with nothing)."""
    j = torch.tensor([[1.0, 0.0], [-2.0, 0.1]], dtype=torch.float64)
    w = torch.full((2,), 0.5, dtype=torch.float64)
    assert conflict(j, w @ j, w) > 1e-3
    jacobian = non_conflicting_jacobian(10)
    w = torch.full((10,), 0.1, dtype=torch.float64)
    assert conflict(jacobian, torch.zeros(50, dtype=torch.float64), w) <= 0.0
    with pytest.raises(AssertionError):
        torch.testing.assert_close(torch.zeros(50, dtype=torch.float64), jacobian.mean(dim=0))


def test_known_answers() -> None:
    j = conflicting_pair()  # g1 = (1, 0), g2 = (−0.5, 1)
    # π(g1) = g1 − ⟨g1,g2⟩/|g2|² g2 = (0.8, 0.4); π(g2) = g2 − ⟨g1,g2⟩ g1 = (0, 1); mean (0.4, 0.7)
    torch.testing.assert_close(UPGrad().aggregate(j), torch.tensor([0.4, 0.7], dtype=torch.float64))
    torch.testing.assert_close(
        UPGrad(pref_vector=[1.0, 0.0]).aggregate(j), torch.tensor([0.8, 0.4], dtype=torch.float64)
    )
    # the mean (0.25, 0.5) conflicts with neither row: DualProj keeps it
    torch.testing.assert_close(
        DualProj().aggregate(j), torch.tensor([0.25, 0.5], dtype=torch.float64)
    )
    # mean (−0.5, 0.05) conflicts with g1 = (1, 0): projected onto g1's hyperplane → (0, 0.05)
    j = torch.tensor([[1.0, 0.0], [-2.0, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(
        DualProj().aggregate(j), torch.tensor([0.0, 0.05], dtype=torch.float64), rtol=0, atol=1e-15
    )
    # opposite rows: the dual cone is their orthogonal complement
    j = torch.tensor([[1.0, 2.0, 0.0], [-2.0, -4.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    for cls in METHODS:
        torch.testing.assert_close(
            cls().aggregate(j), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        )


@pytest.mark.parametrize(
    "k, p, seed", [(2, 2, 0), (3, 2, 1), (3, 3, 2), (5, 3, 3), (6, 4, 4), (6, 8, 5)]
)
def test_matches_brute_force_projection(k: int, p: int, seed: int) -> None:
    """Each projected row (UPGrad with a one-hot preference) and the projected mean (DualProj)
    equal the enumerated projection."""
    jacobian = random_jacobian(k, p, seed=seed)
    top = float(jacobian.norm(dim=1).max())
    for i in range(k):
        one_hot = [1.0 if r == i else 0.0 for r in range(k)]
        torch.testing.assert_close(
            UPGrad(pref_vector=one_hot).aggregate(jacobian),
            project_brute_force(jacobian, jacobian[i]),
            rtol=1e-9,
            atol=1e-9 * top,
        )
    torch.testing.assert_close(
        UPGrad().aggregate(jacobian),
        torch.stack([project_brute_force(jacobian, g) for g in jacobian]).mean(dim=0),
        rtol=1e-9,
        atol=1e-9 * top,
    )
    pref = torch.rand(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(
        DualProj(pref_vector=pref.tolist()).aggregate(jacobian),
        project_brute_force(jacobian, pref @ jacobian),
        rtol=1e-9,
        atol=1e-9 * top,
    )


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("k", K_VALUES)
def test_invariant_to_row_order(cls, k: int) -> None:
    pref = torch.rand(k, generator=torch.Generator().manual_seed(k), dtype=torch.float64) + 0.1
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(k + 1))
    for j in (random_jacobian(k, 30, seed=k), structured_jacobian(k, seed=k + 7)):
        atol = 1e-9 * float(j.norm(dim=1).max())
        torch.testing.assert_close(
            cls().aggregate(j[perm]), cls().aggregate(j), rtol=1e-9, atol=atol
        )
        torch.testing.assert_close(
            cls(pref_vector=pref[perm].tolist()).aggregate(j[perm]),
            cls(pref_vector=pref.tolist()).aggregate(j),
            rtol=1e-9,
            atol=atol,
        )


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("k", K_VALUES)
def test_linear_under_positive_scaling(cls, k: int) -> None:
    for j in (random_jacobian(k, 30, seed=k + 3), structured_jacobian(k, seed=k + 9)):
        d = cls().aggregate(j)
        for c in SCALES + (2.5e-3, 7e3):
            torch.testing.assert_close(
                cls().aggregate(c * j), c * d, rtol=1e-9, atol=1e-9 * c * float(j.norm(dim=1).max())
            )


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("k", K_VALUES)
def test_float32_input(cls, k: int) -> None:
    """float32 in, float32 out; the Gramian accumulated in float32 (the precision policy of
    ``balancing._gramian``), so the update conflicts with no task to float32's rounding."""
    j32 = structured_jacobian(k, seed=k + 11, dtype=torch.float32)
    d32 = cls().aggregate(j32)
    assert d32.dtype == torch.float32
    w32 = cls().weights(j32 @ j32.T)
    assert w32.dtype == torch.float32
    torch.testing.assert_close(d32, w32 @ j32)  # aggregate() is weights() applied in J's dtype
    assert conflict(j32, d32, w32) <= 8 * k * torch.finfo(torch.float32).eps
    if k <= 3:  # well determined by a float32 Gramian: the float32-rounded exact answer
        d64 = cls().aggregate(j32.double())
        torch.testing.assert_close(d32, d64.float(), rtol=1e-6, atol=1e-6 * float(d64.norm()))


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_preferences(cls) -> None:
    j = random_jacobian(3, 4, seed=8)
    losses = {t: torch.tensor(1.0) for t in ("a", "b", "c")}
    by_name = cls(pref_vector={"c": 0.5, "a": 0.2, "b": 0.3})
    by_name.bind(["a", "b", "c"])
    listed = cls(pref_vector=[0.2, 0.3, 0.5])
    torch.testing.assert_close(by_name.aggregate(j, losses), listed.aggregate(j))
    # a batch holding only some of the tasks uses their weights
    sub = {"a": losses["a"], "c": losses["c"]}
    torch.testing.assert_close(
        by_name.aggregate(j[[0, 2]], sub), cls(pref_vector=[0.2, 0.5]).aggregate(j[[0, 2]])
    )
    # the default is the mean (1/K), and weights are used as given
    torch.testing.assert_close(
        cls(pref_vector=[1.0, 1.0, 1.0]).aggregate(j), 3 * cls().aggregate(j)
    )
    with pytest.raises(OptionError, match="3 weights for 2 gradient rows") as err:
        listed.aggregate(j[:2])
    assert err.value.option == "pref_vector"
    with pytest.raises(ValueError, match="no weight for task"):
        cls(pref_vector={"a": 1.0}).aggregate(j[:2], {"a": losses["a"], "b": losses["b"]})
    with pytest.raises(ValueError, match="unknown task"):
        cls(pref_vector={"z": 1.0}).bind(["a", "b"])
    for bad in ([1.0, -1.0], [float("nan")], [0.0, 0.0], [], [True, 1.0]):
        with pytest.raises(OptionError) as err:
            cls(pref_vector=bad)
        assert err.value.option.startswith("pref_vector")  # pref_vector[1] for one weight


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_edge_cases(cls) -> None:
    g = torch.tensor([[3.0, -1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(cls().aggregate(g), g[0])  # K = 1: nothing to conflict with
    assert torch.equal(cls().aggregate(torch.zeros(4, 6)), torch.zeros(6))
    j = random_jacobian(4, 6, seed=2)
    j[1] = 0.0  # a zero row conflicts with nothing
    d = cls().aggregate(j)
    w = cls().weights(j @ j.T)
    assert conflict(j, d, w) <= 1e-10 and float(d.norm()) > 0
    bad = random_jacobian(3, 5)
    bad[1, 2] = float("inf")
    assert not bool(torch.isfinite(cls().aggregate(bad)).any())
    with pytest.raises(ValueError, match="3 gradient rows but 2 losses"):
        cls().weights(torch.eye(3), {"a": torch.tensor(1.0), "b": torch.tensor(2.0)})


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_interface(cls) -> None:
    method = balancing.make(cls.name)
    assert type(method) is cls and method.needs == "gramian" and method.state_dict() == {}
    assert set(method.levels) == {"features", "params"}
    method = balancing.make(cls.name, pref_vector=[0.5, 0.5])
    assert method.pref_vector == [0.5, 0.5]
    with pytest.raises(ValueError, match=cls.name):
        balancing.make(cls.name, reg_eps=1e-4)
    j = random_jacobian(3, 7, seed=4)
    torch.testing.assert_close(method.__class__().aggregate(j), cls().weights(j @ j.T) @ j)
