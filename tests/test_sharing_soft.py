"""Soft sharing: the tie penalty against hand values, gradient routing, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from routing import reached as _reached
from routing import set_linear as _set
from torch import nn

from polytask.errors import OptionError
from polytask.nn import CNN, MLP, ClassifierHead
from polytask.sharing.soft import SoftSharing


def _heads(dims):
    return {t: ClassifierHead(d, 2) for t, d in dims.items()}


def _hand_towers(k: int = 3, norm: str = "l2", weight: float = 0.5) -> SoftSharing:
    torch.manual_seed(0)
    model = SoftSharing.from_parts(
        encoder=lambda: MLP(2, [2]),
        heads=_heads,
        tasks=["a", "b", "c"][:k],
        weight=weight,
        norm=norm,
    )
    return model


def test_l2_penalty_equals_hand_value() -> None:
    """θ_a = (W 0, b 0), θ_b = (W I, b [1, 0]), θ_c = (W 2I, b 0):
    ‖a−b‖² = 2 + 1, ‖a−c‖² = 8, ‖b−c‖² = 2 + 1 → 14, times λ = 0.5 → 7.
    The heads differ wildly and must not count."""
    model = _hand_towers()
    _set(model.towers["a"].linears[0], [[0, 0], [0, 0]], [0, 0])
    _set(model.towers["b"].linears[0], [[1, 0], [0, 1]], [1, 0])
    _set(model.towers["c"].linears[0], [[2, 0], [0, 2]], [0, 0])
    with torch.no_grad():
        model.heads["a"].projection[1].weight.fill_(100.0)
    out = model({"x": torch.randn(3, 2)})
    torch.testing.assert_close(model.penalty(out), torch.tensor(7.0))


def test_trace_penalty_equals_hand_value() -> None:
    """Stacked weight rows [1,0,0,0] and [0,1,0,0] have singular values 1, 1 (trace norm 2);
    equal rows [1,0,0,0] twice have one singular value √2; zero biases add 0. λ = 0.5."""
    model = _hand_towers(k=2, norm="trace")
    _set(model.towers["a"].linears[0], [[1, 0], [0, 0]], [0, 0])
    _set(model.towers["b"].linears[0], [[0, 1], [0, 0]], [0, 0])
    torch.testing.assert_close(model.penalty(None), torch.tensor(0.5 * 2.0))
    _set(model.towers["b"].linears[0], [[1, 0], [0, 0]], [0, 0])
    torch.testing.assert_close(model.penalty(None), torch.tensor(0.5 * math.sqrt(2.0)))
    # rank-deficient stacks (tied towers) still give a finite (sub)gradient
    grads = torch.autograd.grad(model.penalty(None), list(model.towers.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    # biases are matched layers too: rows [3, 4] and [0, 0] -> trace norm 5
    _set(model.towers["a"].linears[0], [[0, 0], [0, 0]], [3, 4])
    _set(model.towers["b"].linears[0], [[0, 0], [0, 0]], [0, 0])
    torch.testing.assert_close(model.penalty(None), torch.tensor(0.5 * 5.0))


def test_penalty_is_none_without_weight_or_partner() -> None:
    assert _hand_towers(weight=0.0).penalty(None) is None
    assert _hand_towers(k=1).penalty(None) is None


def test_routing_each_loss_reaches_only_its_tower_and_head_the_penalty_all_towers() -> None:
    model = _hand_towers(k=3, weight=0.1)
    model.check_ownership()
    assert model.shared_parameters() == []
    x = torch.randn(6, 2)
    out = model({"x": x})
    assert out.shared_features is None
    for t in model.task_names:
        torch.testing.assert_close(
            out.task_features[t], model.towers[t]({"x": x}).last, rtol=0, atol=0
        )
    own = {
        t: {
            n
            for n, p in model.named_parameters()
            if id(p) in {id(q) for q in model.task_parameters(t)}
        }
        for t in model.task_names
    }
    assert own["a"] == {
        n for n, _ in model.named_parameters() if n.startswith(("towers.a.", "heads.a."))
    }
    for t in model.task_names:
        loss = nn.functional.cross_entropy(out.outputs[t], torch.arange(6) % 2)
        reached = {n for n, r in _reached(model, loss).items() if r}
        assert reached == own[t], t
    reached = {n for n, r in _reached(model, model.penalty(out)).items() if r}
    assert reached == {n for n, _ in model.named_parameters() if n.startswith("towers.")}


def test_sequence_towers_give_masked_sequence_features() -> None:
    torch.manual_seed(0)
    model = SoftSharing.from_parts(
        encoder=lambda: CNN(12, 4, [5, 3]),
        heads=lambda d: {t: ClassifierHead(w, 2, pooling="mean") for t, w in d.items()},
        tasks=["a", "b"],
    )
    tokens = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    out = model({"tokens": tokens}, tasks=["b"])
    assert set(out.outputs) == {"b"} and out.task_features["b"].shape == (2, 4, 3)
    assert torch.equal(out.mask, tokens != 0)
    assert out.task_features["b"][1, 2:].abs().sum() == 0


def test_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 6)
    y = {"a": (x[:, 0] > 0).long(), "b": (x[:, 1] * x[:, 2] > 0).long()}
    model = SoftSharing.from_parts(
        encoder=lambda: MLP(6, [32, 32]), heads=_heads, tasks=["a", "b"], weight=1e-4
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        out = model({"x": x})
        losses = [nn.functional.cross_entropy(out.outputs[t], y[t]) for t in y]
        total = sum(losses) + model.penalty(out)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert max(float(loss.detach()) for loss in losses) < 1e-2


@pytest.mark.parametrize(
    "options, field",
    [
        ({"norm": "l1"}, "norm"),
        ({"weight": -1.0}, "weight"),
        ({"weight": "big"}, "weight"),
        ({"weight": True}, "weight"),
        ({"lam": 1.0}, "lam"),
    ],
)
def test_bad_options_name_the_field(options, field) -> None:
    with pytest.raises(OptionError) as err:
        SoftSharing.from_parts(
            encoder=lambda: MLP(2, [2]), heads=_heads, tasks=["a", "b"], **options
        )
    assert err.value.option == field
