"""Fixed linear scalarisation (fixed / sum / mean): values, gradients, validation, registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polytask import balancing
from polytask.balancing import FixedWeights, Mean, Sum
from polytask.errors import OptionError


def _losses(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t: torch.rand((), generator=g) * 3 for t in ("a", "b", "c")}


def test_combine_is_the_weighted_sum() -> None:
    losses = _losses()
    a, b, c = (float(losses[t]) for t in "abc")
    fixed = FixedWeights({"a": 0.5, "c": 2.0}, default=0.25)
    fixed.bind(["a", "b", "c"])
    assert float(fixed.combine(losses)) == pytest.approx(0.5 * a + 0.25 * b + 2.0 * c, rel=1e-6)
    assert float(Sum().combine(losses)) == pytest.approx(a + b + c, rel=1e-6)
    assert float(Mean().combine(losses)) == pytest.approx((a + b + c) / 3, rel=1e-6)
    # tasks absent from a batch contribute nothing and the others are not renormalised
    present = {"a": losses["a"], "c": losses["c"]}
    assert float(fixed.combine(present)) == pytest.approx(0.5 * a + 2.0 * c, rel=1e-6)
    assert float(Mean().combine(present)) == pytest.approx((a + c) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="no task losses"):
        fixed.combine({})


class _Toy(nn.Module):
    """shared trunk, one head per task; three regression-like losses."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(4, 5)
        self.heads = nn.ModuleDict({t: nn.Linear(5, 1) for t in "abc"})

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.trunk(x))
        return {
            t: (self.heads[t](h).squeeze(-1) - y * (i + 1)).pow(2).mean()
            for i, t in enumerate("abc")
        }


@pytest.mark.parametrize(
    "method, lam",
    [
        (FixedWeights({"a": 0.5, "b": 0.0, "c": 3.0}), {"a": 0.5, "b": 0.0, "c": 3.0}),
        (Sum(), {"a": 1.0, "b": 1.0, "c": 1.0}),
        (Mean(), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
    ],
)
def test_backward_gives_lambda_times_each_task_gradient(method, lam) -> None:
    """Task-specific parameters get λ_i ∇L_i, shared ones Σ_i λ_i ∇L_i (autograd reference)."""
    model = _Toy()
    x, y = torch.randn(9, 4), torch.randn(9)
    method.bind(list("abc"))
    shared = list(model.trunk.parameters())
    reference: dict[str, list[torch.Tensor]] = {}
    for t in "abc":
        loss = model.losses(x, y)[t]
        reference[t] = list(torch.autograd.grad(loss, shared + list(model.heads[t].parameters())))
    model.zero_grad()
    total = balancing.backward(model.losses(x, y), method=method, scale=0.5)
    assert not total.requires_grad
    for t in "abc":
        for p, g in zip(model.heads[t].parameters(), reference[t][len(shared) :]):
            torch.testing.assert_close(p.grad, 0.5 * lam[t] * g, rtol=1e-5, atol=1e-7)
    for k, p in enumerate(shared):
        expected = sum(0.5 * lam[t] * reference[t][k] for t in "abc")
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7)
    # gradients accumulate like loss.backward()
    before = [p.grad.clone() for p in shared]
    balancing.backward(model.losses(x, y), method=method, scale=0.5)
    for p, b in zip(shared, before):
        torch.testing.assert_close(p.grad, 2 * b, rtol=1e-5, atol=1e-7)


def test_backward_accepts_a_list_of_losses() -> None:
    model = _Toy()
    x, y = torch.randn(6, 4), torch.randn(6)
    losses = model.losses(x, y)
    total = balancing.backward([losses["a"], losses["b"]], method=balancing.make("sum"))
    assert float(total) == pytest.approx(float((losses["a"] + losses["b"]).detach()), rel=1e-6)
    assert model.heads["c"].weight.grad is None


def test_bind_rejects_weights_of_unknown_tasks() -> None:
    method = FixedWeights({"a": 1.0, "pos": 2.0})
    with pytest.raises(OptionError, match=r"unknown task\(s\) \['pos'\]") as err:
        method.bind(["a", "b"])
    assert err.value.option == "weights"


@pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf"), "1", None, True])
def test_bad_weights_are_rejected_naming_the_task(weight) -> None:
    with pytest.raises(OptionError) as err:
        FixedWeights({"a": 1.0, "b": weight})
    assert err.value.option == "weights.b"


@pytest.mark.parametrize("default", [-1.0, float("nan"), float("inf")])
def test_bad_default_weight_is_rejected(default) -> None:
    with pytest.raises(ValueError, match="default"):
        FixedWeights({}, default=default)


def test_registry() -> None:
    issue_names = (
        "fixed, uw, gradnorm, dwa, rlw, gls, imtl_l, imtl, db_mtl, famo, mgda, pcgrad, graddrop, "
        "gradvac, "
        "cagrad, imtl_g, nash_mtl, aligned_mtl, upgrad, dualproj, fairgrad, con_fig, excess_mtl, "
        "mean, sum"
    )
    assert balancing.available() == sorted(issue_names.split(", "))
    assert isinstance(balancing.make("mean"), Mean)
    made = balancing.make("fixed", weights={"a": 2.0})
    assert isinstance(made, FixedWeights) and made.weight("a") == 2.0 and made.weight("b") == 1.0
    with pytest.raises(
        ValueError, match=r"unknown method 'nope'.*\['aligned_mtl', 'cagrad'"
    ) as info:
        balancing.make("nope")
    assert all(name in str(info.value) for name in balancing.available())
    with pytest.raises(OptionError, match="unknown option of method 'sum'") as err:
        balancing.make("sum", weights={"a": 1.0})
    assert err.value.option == "weights"
    made = balancing.make("polytask.balancing.fixed:Mean")
    assert isinstance(made, Mean)


def test_fixed_weights_have_no_state() -> None:
    method = FixedWeights({"a": 2.0})
    assert method.state_dict() == {} and method.parameters() == [] and method.needs == "losses"
    method.load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        method.load_state_dict({"weights": [1.0]})
    assert not math.isnan(method.weight("a"))
