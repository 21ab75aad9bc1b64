"""The contract shared by the gradient aggregators PCGrad, GradVac, CAGrad, IMTL-G, Nash-MTL,
Aligned-MTL, FairGrad, ConFIG and GradDrop: shapes and dtypes at every K, scale and
dtype; weights() agrees with aggregate(); K = 1; zero gradients; the permutation and
scaling claims each docstring makes; option validation; state round trips.

Each method's defining properties are tested in tests/test_balancing_<name>.py.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import pytest
import torch
from jacobians import DTYPES, K_VALUES, SCALES, jacobian_cases, random_jacobian

from polytask.balancing.aligned_mtl import AlignedMTL
from polytask.balancing.base import GramianWeighting
from polytask.balancing.cagrad import CAGrad
from polytask.balancing.con_fig import ConFIG
from polytask.balancing.fairgrad import FairGrad
from polytask.balancing.graddrop import GradDrop
from polytask.balancing.gradvac import GradVac
from polytask.balancing.imtl_g import IMTLG
from polytask.balancing.nash_mtl import NashMTL
from polytask.balancing.pcgrad import PCGrad
from polytask.errors import OptionError

FACTORIES: dict[str, Callable[[], object]] = {
    "pcgrad": lambda: PCGrad(seed=0),
    "gradvac": lambda: GradVac(seed=0),
    "cagrad": lambda: CAGrad(),
    "imtl_g": lambda: IMTLG(),
    "nash_mtl": lambda: NashMTL(),
    "aligned_mtl": lambda: AlignedMTL(),
    "fairgrad": lambda: FairGrad(),
    "con_fig": lambda: ConFIG(),
    "graddrop": lambda: GradDrop(seed=0),
}
GRAMIAN_BASED = [n for n in FACTORIES if n != "graddrop"]
#: exactly permutation-invariant at every K (PCGrad and GradVac only for K = 2)
PERMUTATION_INVARIANT = [
    "cagrad",
    "imtl_g",
    "nash_mtl",
    "aligned_mtl",
    "fairgrad",
    "con_fig",
    "graddrop",
]
#: J -> sJ gives s^degree · d
DEGREE = {
    "pcgrad": 1.0,
    "gradvac": 1.0,
    "cagrad": 1.0,
    "imtl_g": 1.0,
    "aligned_mtl": 1.0,
    "con_fig": 1.0,
    "graddrop": 1.0,
    "nash_mtl": 0.0,
    "fairgrad": 0.0,
}
CASES = list(jacobian_cases())


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    a, b = a.double(), b.double()
    return bool((a - b).norm() <= rtol * max(float(b.norm()), float(a.norm()), 1e-300))


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 2e-3


@pytest.mark.parametrize("name", list(FACTORIES))
def test_names_and_needs(name: str) -> None:
    method = FACTORIES[name]()
    assert method.name == name
    if name == "graddrop":
        assert method.needs == "jacobian" and method.levels == ("features",)
    else:
        assert isinstance(method, GramianWeighting) and method.needs == "gramian"
        assert set(method.levels) == {"features", "params"}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_shapes_dtypes_and_finite_on_every_case(name: str) -> None:
    """Every K in (2, 3, 10, 40), scales 1e-6 … 1e6, float32/64, structured and K > P."""
    method = FACTORIES[name]()
    for case, jac in CASES:
        d = method.aggregate(jac)
        assert d.shape == (jac.shape[1],) and d.dtype == jac.dtype, case
        assert torch.isfinite(d).all(), case
        if name in GRAMIAN_BASED:
            w = method.weights(jac @ jac.T)
            assert (
                w.shape == (jac.shape[0],) and w.dtype == jac.dtype and torch.isfinite(w).all()
            ), case


@pytest.mark.parametrize("name", GRAMIAN_BASED)
def test_aggregate_is_weights_times_jacobian(name: str) -> None:
    for k in K_VALUES:
        jac = random_jacobian(k, 2 * k + 5, seed=10 + k)
        w = FACTORIES[name]().weights(jac @ jac.T)
        d = FACTORIES[name]().aggregate(jac)
        assert _close(d, w @ jac, 1e-12), k


@pytest.mark.parametrize("name", list(FACTORIES))
def test_one_task(name: str) -> None:
    """K = 1: every method returns a positive multiple of the task's gradient, the multiple
    its rule gives."""
    g = torch.tensor([[3.0, -4.0, 0.0]], dtype=torch.float64)  # ‖g‖ = 5
    d = FACTORIES[name]().aggregate(g)
    factor = {
        "cagrad": 1.4 / 1.16,  # (1 + c) / (1 + c²), c = 0.4
        "nash_mtl": 1 / 5,  # α = 1/‖g‖: ‖d‖ = 1 = max_norm
        "fairgrad": 5.0**-1.0,
    }.get(name, 1.0)  # w = ‖g‖^(−2α/(1+α)), α = 1
    assert torch.allclose(d, factor * g[0], rtol=1e-12, atol=1e-15), (name, d)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_gradients_give_a_zero_update(name: str, dtype: torch.dtype) -> None:
    for k in K_VALUES:
        d = FACTORIES[name]().aggregate(torch.zeros(k, 7, dtype=dtype))
        assert torch.equal(d, torch.zeros(7, dtype=dtype)), k
    # one zero row among others: still finite
    jac = random_jacobian(4, 9, seed=3, dtype=dtype)
    jac[2] = 0
    assert torch.isfinite(FACTORIES[name]().aggregate(jac)).all()


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT + ["pcgrad", "gradvac"])
def test_permutation_invariance_where_claimed(name: str) -> None:
    """Permuting the rows (and the task names with them) does not change the update —
    exactly for the deterministic methods and GradDrop (same draws), for PCGrad and
    GradVac at K = 2 (their only randomness is the order of the other tasks)."""
    ks = (2,) if name in ("pcgrad", "gradvac") else K_VALUES
    for k in ks:
        for case, jac in [
            ("random", random_jacobian(k, 2 * k + 3, seed=k)),
            ("wide", random_jacobian(k, max(2, k // 2), seed=k + 1)),
        ]:
            perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
            names = [f"t{i}" for i in range(k)]
            losses = {t: torch.tensor(1.0) for t in names}
            losses_p = {names[i]: torch.tensor(1.0) for i in perm.tolist()}
            d = FACTORIES[name]().aggregate(jac, losses)
            dp = FACTORIES[name]().aggregate(jac[perm], losses_p)
            # at a Pareto-stationary point (wide K = 40) Nash-MTL's update is rounding noise
            atol = 1e-6 * float(jac.norm(dim=1).max())
            assert _close(dp, d, 1e-9) or (dp - d).norm() <= atol, (name, k, case)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("factor", [1e-5, 0.37, 1e4])
def test_scaling_claims(name: str, factor: float) -> None:
    """J → sJ (s > 0) gives s^degree · d, degree as each docstring states: 1 for the
    scale-linear methods, 0 for Nash-MTL and FairGrad with α = 1 (scale-invariant)."""
    for k in K_VALUES:
        jac = random_jacobian(k, 2 * k + 3, seed=100 + k)
        d = FACTORIES[name]().aggregate(jac)
        ds = FACTORIES[name]().aggregate(factor * jac)
        assert _close(ds, factor ** DEGREE[name] * d, 1e-8), (name, k)


def test_fairgrad_homogeneity_degree() -> None:
    """FairGrad: degree (1 − α)/(1 + α), checked at three α."""
    for alpha in (0.5, 2.0, 5.0):
        for k in (2, 10):
            jac = random_jacobian(k, 2 * k + 3, seed=k)
            d = FairGrad(alpha=alpha).aggregate(jac)
            ds = FairGrad(alpha=alpha).aggregate(7.0 * jac)
            assert _close(ds, 7.0 ** ((1 - alpha) / (1 + alpha)) * d, 1e-8), (alpha, k)


@pytest.mark.parametrize(
    "name", [n for n in FACTORIES if n not in ("pcgrad", "gradvac", "graddrop")]
)
def test_float32_agrees_with_float64(name: str) -> None:
    """A float32 Jacobian gives (up to float32 rounding) the update of its float64 copy."""
    for k in K_VALUES:
        jac = random_jacobian(k, 2 * k + 5, seed=k)
        d64 = FACTORIES[name]().aggregate(jac)
        d32 = FACTORIES[name]().aggregate(jac.float())
        assert d32.dtype == torch.float32 and _close(d32, d64, 1e-3), (name, k)


def test_row_names_must_match_the_rows() -> None:
    jac = random_jacobian(3, 5)
    for name in FACTORIES:
        with pytest.raises(ValueError, match="3 gradient rows but 2 losses"):
            FACTORIES[name]().aggregate(jac, {"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="must be"):
        CAGrad().aggregate(torch.zeros(3))
    with pytest.raises(ValueError, match="must be"):
        GradDrop().aggregate(torch.zeros(3))


@pytest.mark.parametrize(
    "cls, options, where",
    [
        (PCGrad, {"seed": 1.5}, "seed"),
        (PCGrad, {"seed": 1, "generator": torch.Generator()}, "seed"),
        (PCGrad, {"generator": 3}, "generator"),
        (GradVac, {"beta": 1.5}, "beta"),
        (GradVac, {"beta": -0.1}, "beta"),
        (CAGrad, {"c": -0.1}, "c"),
        (CAGrad, {"c": 1.0}, "c"),
        (CAGrad, {"c": math.nan}, "c"),
        (CAGrad, {"rescale": 3}, "rescale"),
        (NashMTL, {"update_every": 0}, "update_every"),
        (NashMTL, {"update_every": 2.5}, "update_every"),
        (NashMTL, {"max_norm": -1.0}, "max_norm"),
        (AlignedMTL, {"scale_mode": "max"}, "scale_mode"),
        (FairGrad, {"alpha": -1.0}, "alpha"),
        (FairGrad, {"alpha": math.inf}, "alpha"),
        (FairGrad, {"alpha": 0.01}, "alpha"),
        (FairGrad, {"alpha": 100.0}, "alpha"),
        (GradDrop, {"leak": 1.5}, "leak"),
        (GradDrop, {"leak": {"a": -0.5}}, "leak.a"),
        (GradDrop, {"seed": "x"}, "seed"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(cls, options, where) -> None:
    """An OptionError with the option's own name (``c``, not ``balancing.c``: the config
    layer adds the path), the problem and a fix."""
    with pytest.raises(OptionError) as err:
        cls(**options)
    assert err.value.option == where
    assert err.value.problem and err.value.fix
    assert "balancing." not in str(err.value)


def test_graddrop_leak_names_are_checked_at_bind() -> None:
    method = GradDrop(leak={"b": 0.5})
    with pytest.raises(OptionError, match="unknown task") as err:
        method.bind(["a", "c"])
    assert err.value.option == "leak" and err.value.fix == "use task names from ['a', 'c']"
    GradDrop(leak={"a": 0.5}).bind(["a", "c"])


@pytest.mark.parametrize("name", ["pcgrad", "gradvac", "nash_mtl", "graddrop"])
def test_state_round_trip_continues_identically(name: str) -> None:
    """state_dict() after some steps, JSON-able apart from tensors, loaded into a fresh
    instance: the next updates are identical (generator state, GradVac's targets,
    Nash-MTL's cache and counter)."""
    factory = {
        "pcgrad": lambda: PCGrad(seed=5),
        "gradvac": lambda: GradVac(beta=0.3, seed=5),
        "nash_mtl": lambda: NashMTL(update_every=3),
        "graddrop": lambda: GradDrop(seed=5),
    }[name]
    names = ["a", "b", "c", "d"]
    losses = {t: torch.tensor(1.0) for t in names}
    jacs = [random_jacobian(4, 6, seed=s) for s in range(6)]
    first = factory()
    for jac in jacs[:2]:
        first.aggregate(jac, losses)
    state = first.state_dict()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, torch.Tensor)})
    second = factory()
    second.aggregate(jacs[5], losses)  # disturb its state, then overwrite it
    second.load_state_dict(state)
    for jac in jacs[2:]:
        assert torch.equal(first.aggregate(jac, losses), second.aggregate(jac, losses)), name
    with pytest.raises(ValueError, match="unknown state keys"):
        factory().load_state_dict({"bogus": 1})


@pytest.mark.parametrize("name", ["cagrad", "imtl_g", "aligned_mtl", "fairgrad", "con_fig"])
def test_stateless_methods_refuse_state(name: str) -> None:
    method = FACTORIES[name]()
    assert method.state_dict() == {}
    with pytest.raises(ValueError, match="has no state"):
        method.load_state_dict({"x": 1})


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tasks_may_change_between_calls(name: str) -> None:
    """Heterogeneous batches: K and the task subset change from call to call."""
    method = FACTORIES[name]()
    for subset in (["a", "b", "c"], ["b"], ["c", "a"], ["a", "b", "c", "d"]):
        jac = random_jacobian(len(subset), 8, seed=len(subset))
        d = method.aggregate(jac, {t: torch.tensor(0.5) for t in subset})
        assert d.shape == (8,) and torch.isfinite(d).all(), (name, subset)


def test_every_scale_keeps_the_direction() -> None:
    """Extreme scales (1e-6, 1e6) in both dtypes give the direction of the unit-scale
    update (a rounding or underflow problem would show up here)."""
    for name in GRAMIAN_BASED:
        for k in K_VALUES:
            base = FACTORIES[name]().aggregate(random_jacobian(k, 30, seed=k))
            for scale in SCALES:
                for dtype in DTYPES:
                    d = FACTORIES[name]().aggregate(
                        random_jacobian(k, 30, seed=k, scale=scale, dtype=dtype)
                    )
                    cos = float(d.double() @ base) / max(
                        float(d.double().norm() * base.norm()), 1e-300
                    )
                    assert cos > 1 - _tol(dtype) or float(base.norm()) == 0.0, (
                        name,
                        k,
                        scale,
                        dtype,
                        cos,
                    )
