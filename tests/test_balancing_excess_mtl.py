"""ExcessMTL: exponentiated-gradient weights driven by AdaGrad estimates of each task's excess
risk, relative to its value at the start."""

from __future__ import annotations

import json

import pytest
import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian

from polytask.balancing.excess_mtl import ExcessMTL
from polytask.errors import DataError, OptionError

CASES = [(k, s, d) for k in K_VALUES for s in SCALES for d in DTYPES]
CASE_IDS = [f"K{k}-s{s:g}-{str(d)[6:]}" for k, s, d in CASES]


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 0.0} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 0.0}


def _reference(jacs, eta: float) -> list[torch.Tensor]:
    """Eqs. 6, 7 and 9 of the paper in float64; the first estimate is the baseline."""
    s = None
    log_alpha = torch.zeros(jacs[0].shape[0], dtype=torch.float64)
    base = None
    out = []
    for jac in jacs:
        g = jac.double()
        s = g * g if s is None else s + g * g
        e = (g * g / torch.sqrt(s + 1e-7)).sum(1)
        base = e if base is None else base
        log_alpha = log_alpha + eta * e / base
        out.append(torch.softmax(log_alpha, 0))
    return out


@pytest.mark.parametrize("k, scale, dtype", CASES, ids=CASE_IDS)
def test_excess_mtl_matches_the_paper_and_starts_as_the_mean(k, scale, dtype) -> None:
    jacs = [random_jacobian(k, 15, seed=k + s, scale=scale, dtype=dtype) for s in range(4)]
    method = ExcessMTL(robust_step_size=0.7)
    expected = _reference(jacs, 0.7)
    for i, (jac, alpha) in enumerate(zip(jacs, expected)):
        d = method.aggregate(jac)
        assert d.dtype == dtype and d.shape == (15,)
        assert float(method.last_weights.sum()) == pytest.approx(1.0) and bool(
            (method.last_weights > 0).all()
        )
        torch.testing.assert_close(
            method.last_weights, alpha, **_tol(dtype)
        )  # S is kept in the input dtype
        torch.testing.assert_close(d.double(), alpha @ jac.double(), **_tol(dtype))
        if i == 0:  # the first estimate is its own baseline: uniform weights, the mean of the rows
            torch.testing.assert_close(d.double(), jac.double().mean(0), **_tol(dtype))


@pytest.mark.parametrize("k", K_VALUES)
def test_excess_mtl_favours_the_task_that_stays_far_from_its_optimum(k) -> None:
    """Task 0's gradients shrink step after step (it converges), the others' do not: task 0's
    relative excess risk falls and so does its weight, below every other task's."""
    g = torch.Generator().manual_seed(k)
    method = ExcessMTL()
    for step in range(8):
        jac = torch.randn(k, 30, generator=g, dtype=torch.float64)
        jac[0] *= 0.5**step
        method.aggregate(jac)
    w = method.last_weights
    assert float(w[0]) < float(w[1:].min())


@pytest.mark.parametrize("unit", [10.0, 1e3])
def test_excess_mtl_is_blind_to_a_tasks_units(unit) -> None:
    """The estimates are divided by their own starting value: scaling one task's gradients by a
    constant at every step leaves the weights unchanged (where S ≫ 1e-7)."""
    a, b = ExcessMTL(), ExcessMTL()
    for s in range(5):
        jac = random_jacobian(4, 20, seed=s)
        scaled = jac.clone()
        scaled[2] *= unit
        a.aggregate(jac)
        b.aggregate(scaled)
        torch.testing.assert_close(b.last_weights, a.last_weights, rtol=1e-5, atol=0)


def test_excess_mtl_warmup_keeps_uniform_weights_and_averages_the_baseline() -> None:
    jacs = [random_jacobian(3, 10, seed=s) for s in range(4)]
    method = ExcessMTL(warmup_steps=2)
    for jac in jacs[:2]:
        method.aggregate(jac)
        torch.testing.assert_close(
            method.last_weights, torch.full((3,), 1 / 3, dtype=torch.float64)
        )
    s = jacs[0] ** 2
    e0 = (jacs[0] ** 2 / torch.sqrt(s + 1e-7)).sum(1)
    s = s + jacs[1] ** 2
    e1 = (jacs[1] ** 2 / torch.sqrt(s + 1e-7)).sum(1)
    s = s + jacs[2] ** 2
    e2 = (jacs[2] ** 2 / torch.sqrt(s + 1e-7)).sum(1)
    method.aggregate(jacs[2])
    torch.testing.assert_close(
        method.last_weights, torch.softmax(e2 / ((e0 + e1) / 2), 0), rtol=1e-10, atol=0
    )


def test_excess_mtl_missing_tasks_state_round_trip_and_errors() -> None:
    method = ExcessMTL()
    jac = random_jacobian(3, 6, seed=0, dtype=torch.float32)
    names = {t: torch.tensor(1.0) for t in ("a", "b", "c")}
    method.aggregate(jac, names)
    method.aggregate(random_jacobian(3, 6, seed=1, dtype=torch.float32), names)
    kept = method.sq_sum["b"].clone()
    d = method.aggregate(jac[[0, 2]], {"a": names["a"], "c": names["c"]})
    assert torch.equal(method.sq_sum["b"], kept) and d.shape == (6,)
    assert float(method.last_weights.sum()) == pytest.approx(1.0)
    clone = ExcessMTL()
    clone.load_state_dict(json.loads(json.dumps(method.state_dict(), default=lambda o: o.tolist())))
    for s in range(2):
        j = random_jacobian(3, 6, seed=s + 7, dtype=torch.float32)
        assert torch.equal(clone.aggregate(j, names), method.aggregate(j, names))
    with pytest.raises(DataError, match="4 gradient entries but the task's statistics have 6"):
        method.aggregate(random_jacobian(3, 4), names)
    with pytest.raises(ValueError, match="unknown state keys"):
        method.load_state_dict({"weights": {}})
    assert ExcessMTL.levels == ("params",) and ExcessMTL.needs == "jacobian"
    single = ExcessMTL().aggregate(torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(single, torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize(
    "option, value",
    [
        ("robust_step_size", 0.0),
        ("robust_step_size", float("inf")),
        ("warmup_steps", -1),
        ("warmup_steps", 1.5),
    ],
)
def test_excess_mtl_bad_options(option, value) -> None:
    with pytest.raises(OptionError) as err:
        ExcessMTL(**{option: value})
    assert err.value.option.partition(".")[0] == option and err.value.fix  # min_losses.a
