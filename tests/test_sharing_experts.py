"""Gated experts (MMoE, CGC, PLE): hand-computed forwards, gates, gradient routing, overfit."""

from __future__ import annotations

import math

import pytest
import torch
from routing import (
    IdentityHead as _Identity,
)
from routing import (
    param_names as _names,
)
from routing import (
    reached as _reached,
)
from routing import (
    set_linear as _set,
)
from torch import nn

from polytask.errors import OptionError
from polytask.nn import CNN, MLP, ClassifierHead, TaggerHead
from polytask.sharing.experts import CGC, PLE, Gate, MMoE

BIG = 40.0  # softmax of logits ±BIG apart: the other weight is < 1e-34
LN3 = math.log(3)


def _expert(weight) -> MLP:
    e = MLP(2, [2], activation="relu")
    _set(e.linears[0], weight, [0, 0])
    return e


I2, SWAP, ZERO = [[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, 0], [0, 0]]


# ------------------------------------------------------------------ MMoE
def test_mmoe_forward_equals_hand_computation() -> None:
    """f0(x) = relu(x), f1(x) = relu(swap x).
    gate a: logits [BIG, -BIG] -> selects f0; gate b: logits = [x0 - 1, ln 3]:
    x = [1, 2]: g = [1/4, 3/4], y = [1/4 + 3/2, 1/2 + 3/4] = [1.75, 1.25];
    x = [2, 0]: g = [e, 3] / (e + 3), y = [2e, 6] / (e + 3)."""
    model = MMoE([_expert(I2), _expert(SWAP)], {"a": _Identity(), "b": _Identity()})
    _set(model.gates["a"].net[0], ZERO, [BIG, -BIG])
    _set(model.gates["b"].net[0], [[1, 0], [0, 0]], [-1, LN3])
    x = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
    out = model({"x": x})
    e = math.e
    torch.testing.assert_close(
        out.task_features["a"], torch.tensor([[1.0, 2.0], [2.0, 0.0]]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        out.task_features["b"],
        torch.tensor([[1.75, 1.25], [2 * e / (e + 3), 6 / (e + 3)]]),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(out.outputs["b"], out.task_features["b"])
    assert out.shared_features is None
    torch.testing.assert_close(
        model.gates["b"](x), torch.tensor([[0.25, 0.75], [e / (e + 3), 3 / (e + 3)]])
    )


@pytest.mark.parametrize("hidden", [None, 3])
def test_gates_are_distributions(hidden) -> None:
    torch.manual_seed(0)
    gate = Gate(5, 4, hidden)
    for z in (torch.randn(7, 5) * 10, torch.randn(2, 6, 5)):
        g = gate(z)
        assert g.shape == (*z.shape[:-1], 4) and (g >= 0).all()
        torch.testing.assert_close(g.sum(-1), torch.ones(z.shape[:-1]))


def _mmoe(seed: int = 0, **opts) -> MMoE:
    torch.manual_seed(seed)
    return MMoE.from_parts(
        encoder=lambda: MLP(5, [8, 6], activation="tanh"),
        heads=lambda d: {"a": ClassifierHead(d["a"], 3), "b": ClassifierHead(d["b"], 2)},
        tasks=["a", "b"],
        **opts,
    )


def _losses(model, x):
    out = model({"x": x})
    n = x.shape[0]
    return {
        "a": nn.functional.cross_entropy(out.outputs["a"], torch.arange(n) % 3),
        "b": nn.functional.cross_entropy(out.outputs["b"], torch.arange(n) % 2),
    }


@pytest.mark.parametrize("opts", [{"experts": 3}, {"experts": 2, "gate_hidden": 4}])
def test_mmoe_routing_all_experts_and_only_own_gate_and_head(opts) -> None:
    model = _mmoe(**opts)
    model.check_ownership()
    assert len(model.experts) == opts["experts"]
    shared = _names(model, model.shared_parameters())
    assert shared == {n for n, _ in model.named_parameters() if n.startswith("experts.")}
    losses = _losses(model, torch.randn(16, 5))
    for t, other in (("a", "b"), ("b", "a")):
        own = _names(model, model.task_parameters(t))
        assert own == {
            n for n, _ in model.named_parameters() if n.startswith((f"gates.{t}.", f"heads.{t}."))
        }
        reached = _reached(model, losses[t])
        assert all(reached[n] for n in shared | own), t
        assert not any(reached[n] for n in _names(model, model.task_parameters(other))), t


# ------------------------------------------------------------------ CGC
def _cgc_hand() -> CGC:
    """task experts E_a = relu(x), E_b = relu(swap x); shared E_s = relu(2x)."""
    model = CGC(
        [_expert([[2, 0], [0, 2]])],
        {"a": [_expert(I2)], "b": [_expert(SWAP)]},
        {"a": _Identity(), "b": _Identity()},
    )
    return model


def test_cgc_forward_equals_hand_computation() -> None:
    """x = [1, 2]: E_a = [1, 2], E_b = [2, 1], E_s = [2, 4].
    gate a over [E_a; E_s] = [1/4, 3/4] -> [1.75, 3.5]; gate b with logits [-BIG, BIG] -> E_s."""
    model = _cgc_hand()
    level = model.extraction[0]
    _set(level.task_gates["a"].net[0], ZERO, [0, LN3])
    _set(level.task_gates["b"].net[0], ZERO, [-BIG, BIG])
    assert level.shared_gate is None  # one level: nothing reads a shared gate
    out = model({"x": torch.tensor([[1.0, 2.0]])})
    torch.testing.assert_close(
        out.task_features["a"], torch.tensor([[1.75, 3.5]]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        out.task_features["b"], torch.tensor([[2.0, 4.0]]), atol=1e-6, rtol=0
    )
    # gate b selecting its own expert instead: b's output is E_b exactly
    _set(level.task_gates["b"].net[0], ZERO, [BIG, -BIG])
    torch.testing.assert_close(
        model({"x": torch.tensor([[1.0, 2.0]])}).task_features["b"],
        torch.tensor([[2.0, 1.0]]),
        atol=1e-6,
        rtol=0,
    )


def test_ple_two_levels_forward_equals_hand_computation() -> None:
    """Level 1 as in the CGC case with gate a = [1/4, 3/4] (y_a = [1.75, 3.5]), gate b over
    [E_b; E_s] = [3/4, 1/4] (y_b = [2, 1.75]), shared gate [1/4, 1/4, 1/2] over [E_a; E_b; E_s]
    (s = [3/4 + 1, 3/4 + 2] = [1.75, 2.75]).
    Level 2: a's expert relu(y_a) = [1.75, 3.5], b's expert relu(-y_b) = [0, 0],
    shared expert relu(s - 1) = [0.75, 1.75];
    gate a2 = [3/4, 1/4] -> 3/4 [1.75, 3.5] + 1/4 [0.75, 1.75];
    gate b2 = [1/4, 3/4] -> 3/4 [0.75, 1.75]."""
    model = PLE(
        [_expert([[2, 0], [0, 2]])],
        {"a": [_expert(I2)], "b": [_expert(SWAP)]},
        {"a": _Identity(), "b": _Identity()},
        levels=2,
        expert_hidden=2,
    )
    l1, l2 = model.extraction
    _set(l1.task_gates["a"].net[0], ZERO, [0, LN3])
    _set(l1.task_gates["b"].net[0], ZERO, [LN3, 0])
    _set(l1.shared_gate.net[0], [[0, 0]] * 3, [0, 0, math.log(2)])
    assert l2.shared_gate is None
    _set(l2.task["a"][0].linear, I2, [0, 0])
    _set(l2.task["b"][0].linear, [[-1, 0], [0, -1]], [0, 0])
    _set(l2.shared[0].linear, I2, [-1, -1])
    # level-2 gates read the task's level-1 output; weights 0 so only the bias sets them
    _set(l2.task_gates["a"].net[0], ZERO, [LN3, 0])
    _set(l2.task_gates["b"].net[0], ZERO, [0, LN3])
    out = model({"x": torch.tensor([[1.0, 2.0]])})
    ya = [0.75 * 1.75 + 0.25 * 0.75, 0.75 * 3.5 + 0.25 * 1.75]
    torch.testing.assert_close(out.task_features["a"], torch.tensor([ya]), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        out.task_features["b"], torch.tensor([[0.75 * 0.75, 0.75 * 1.75]]), atol=1e-6, rtol=0
    )
    # the level-2 task gate reads y_a^(1): a weight on it changes the mixture by hand, too:
    # logits = [ln 3, 3.5 * (-ln 3 / 3.5)] = [ln 3, -ln 3] -> [9/10, 1/10]
    _set(l2.task_gates["a"].net[0], [[0, 0], [0, -LN3 / 3.5]], [LN3, 0])
    ya = [0.9 * 1.75 + 0.1 * 0.75, 0.9 * 3.5 + 0.1 * 1.75]
    torch.testing.assert_close(
        model({"x": torch.tensor([[1.0, 2.0]])}).task_features["a"],
        torch.tensor([ya]),
        atol=1e-6,
        rtol=0,
    )


def _ple(levels: int, seed: int = 0, **opts) -> PLE:
    torch.manual_seed(seed)
    cls = CGC if levels == 1 else PLE
    extra = {} if levels == 1 else {"levels": levels, "expert_hidden": 7}
    return cls.from_parts(
        encoder=lambda: MLP(5, [8, 6], activation="tanh"),
        heads=lambda d: {"a": ClassifierHead(d["a"], 3), "b": ClassifierHead(d["b"], 2)},
        tasks=["a", "b"],
        **extra,
        **opts,
    )


def test_cgc_routing_own_and_shared_experts_never_the_other_tasks() -> None:
    model = _ple(1, shared_experts=2, task_experts=2)
    assert isinstance(model, CGC)
    model.check_ownership()
    shared = _names(model, model.shared_parameters())
    assert shared == {
        n for n, _ in model.named_parameters() if n.startswith("extraction.0.shared.")
    }
    losses = _losses(model, torch.randn(16, 5))
    for t, other in (("a", "b"), ("b", "a")):
        own = _names(model, model.task_parameters(t))
        assert own == {
            n
            for n, _ in model.named_parameters()
            if n.startswith(
                (f"extraction.0.task.{t}.", f"extraction.0.task_gates.{t}.", f"heads.{t}.")
            )
        }
        reached = _reached(model, losses[t])
        assert all(reached[n] for n in shared | own), t
        assert not any(reached[n] for n in _names(model, model.task_parameters(other))), t
        assert not any(
            reached[n] for n in reached if n.startswith(f"extraction.0.task.{other}.")
        ), t


@pytest.mark.parametrize("levels", [2, 3])
def test_ple_ownership_follows_routing_exactly(levels) -> None:
    """Below the top level a task's experts feed the shared gate, so they reach every task and
    are declared shared; each task's loss reaches every shared parameter, all of its own, and
    none of the other task's."""
    model = _ple(levels, shared_experts=1, task_experts=2)
    model.check_ownership()
    top = levels - 1
    shared = _names(model, model.shared_parameters())
    assert {
        n for n in shared if n.startswith("extraction.0.task.a.")
    }  # lower task experts are shared
    losses = _losses(model, torch.randn(16, 5))
    for t, other in (("a", "b"), ("b", "a")):
        own = _names(model, model.task_parameters(t))
        assert {
            n for n, _ in model.named_parameters() if n.startswith(f"extraction.{top}.task.{t}.")
        } <= own
        reached = _reached(model, losses[t])
        assert all(reached[n] for n in shared), (t, sorted(n for n in shared if not reached[n]))
        assert all(reached[n] for n in own), t
        assert not any(reached[n] for n in _names(model, model.task_parameters(other))), t


@pytest.mark.parametrize(
    "build",
    [
        lambda: _mmoe(seed=1, experts=3),
        lambda: _ple(1, seed=1, shared_experts=1, task_experts=1),
        lambda: _ple(2, seed=1, shared_experts=1, task_experts=1),
    ],
)
def test_overfits_a_small_batch(build) -> None:
    model = build()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g)
    ya, yb = torch.randint(0, 3, (16,), generator=g), torch.randint(0, 2, (16,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)

    def loss_fn():
        out = model({"x": x})
        return nn.functional.cross_entropy(out.outputs["a"], ya) + nn.functional.cross_entropy(
            out.outputs["b"], yb
        )

    first = loss_fn().item()
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 1e-2 < first


@pytest.mark.parametrize(
    "arch, opts", [(MMoE, {"experts": 2}), (CGC, {}), (PLE, {"levels": 2, "expert_hidden": 5})]
)
def test_token_encoders_gate_per_token_through_a_shared_gate_encoder(arch, opts) -> None:
    torch.manual_seed(0)
    model = arch.from_parts(
        encoder=lambda: CNN(vocab_size=20, embed_dim=4, channels=[6]),
        heads=lambda d: {
            "tag": TaggerHead(d["tag"], 3),
            "cls": ClassifierHead(d["cls"], 2, pooling="mean"),
        },
        tasks=["tag", "cls"],
        **opts,
    ).eval()
    model.check_ownership()
    assert model.gate_input.encoder is not None
    gate_params = _names(model, model.gate_input.parameters())
    assert gate_params and gate_params <= _names(model, model.shared_parameters())
    tokens = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    padded = torch.cat([tokens, torch.zeros(2, 2, dtype=torch.long)], dim=1)
    out, out_p = model({"tokens": tokens}), model({"tokens": padded})
    for t in ("tag", "cls"):
        h = out.task_features[t]
        assert h.dim() == 3 and torch.all(h[~out.mask] == 0)
        torch.testing.assert_close(out_p.task_features[t][:, :4], h)
    torch.testing.assert_close(out_p.outputs["cls"], out.outputs["cls"])
    only = model({"tokens": tokens}, tasks=["cls"])
    assert set(only.outputs) == {"cls"}
    torch.testing.assert_close(only.outputs["cls"], out.outputs["cls"])


@pytest.mark.parametrize(
    "arch, opts, field",
    [
        (MMoE, {"experts": 0}, "experts"),
        (MMoE, {"gate_hidden": 0}, "gate_hidden"),
        (MMoE, {"gate_input": "tokens"}, "gate_input"),
        (CGC, {"shared_experts": -1}, "shared_experts"),
        (CGC, {"shared_experts": 0, "task_experts": 0}, "shared_experts"),
        (PLE, {"levels": 0}, "levels"),
        (PLE, {"expert_hidden": 1.5}, "expert_hidden"),
    ],
)
def test_bad_options_raise_naming_the_field(arch, opts, field) -> None:
    with pytest.raises(OptionError) as err:
        arch.from_parts(
            encoder=lambda: MLP(5, [6]),
            heads=lambda d: {"a": ClassifierHead(d["a"], 2)},
            tasks=["a"],
            **opts,
        )
    assert err.value.option == field


def test_raw_x_gates_need_a_feature_encoder() -> None:
    with pytest.raises(OptionError) as err:
        MMoE.from_parts(
            encoder=lambda: CNN(vocab_size=9, embed_dim=3, channels=[4]),
            heads=lambda d: {"a": ClassifierHead(d["a"], 2, pooling="mean")},
            tasks=["a"],
            experts=2,
            gate_input="x",
        )
    assert err.value.option == "gate_input"
