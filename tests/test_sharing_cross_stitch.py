"""Cross-stitch: the two extremes (separate / fully shared), hand forward, routing, overfitting."""

from __future__ import annotations

import copy

import pytest
import torch
from routing import set_linear as _set
from routing import stitched_layers
from torch import nn

from polytask.errors import OptionError
from polytask.nn import CNN, MLP, BiLSTM, ClassifierHead
from polytask.nn.base import Encoder, EncoderOutput
from polytask.sharing.cross_stitch import CrossStitch


def _heads(dims):
    return {t: ClassifierHead(d, 2) for t, d in dims.items()}


def _seq_heads(dims):
    return {t: ClassifierHead(d, 2, pooling="mean") for t, d in dims.items()}


def _reached(model: nn.Module, loss: torch.Tensor) -> set[str]:
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return {n for n, g in zip(names, grads) if g is not None and bool(g.abs().sum() > 0)}


TOKENS = torch.tensor([[1, 2, 3, 4, 0], [5, 6, 0, 0, 0], [7, 8, 9, 0, 0]])


@pytest.mark.parametrize(
    "make, inputs",
    [
        (lambda: MLP(3, [4, 5, 2], activation="tanh"), {"x": torch.randn(4, 3)}),
        (lambda: CNN(12, 4, [5, 3]), {"tokens": TOKENS}),
        (lambda: BiLSTM(12, 4, 3, layers=2), {"tokens": TOKENS}),
        (
            lambda: BiLSTM(12, 4, 3, layers=2, char_vocab_size=6, char_dim=3, char_hidden=2),
            {"tokens": TOKENS, "chars": (TOKENS.unsqueeze(-1) % 5).expand(-1, -1, 2).contiguous()},
        ),
    ],
)
def test_layerwise_execution_reproduces_the_encoder_exactly(make, inputs) -> None:
    torch.manual_seed(0)
    encoder = make()
    layers, mask = stitched_layers(encoder, inputs)
    ref = encoder(inputs)
    assert len(layers) == len(ref.layers)
    for a, b in zip(layers, ref.layers):
        assert torch.equal(a, b)
    assert (mask is None and ref.mask is None) or torch.equal(mask, ref.mask)


def test_identity_frozen_stitch_is_separate_networks_in_forward_and_training() -> None:
    """α = I frozen: each tower is its own MLP — same outputs, and SGD on the sum of the
    task losses moves each tower exactly as training the separate networks would."""
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=lambda: MLP(3, [8, 8, 8], activation="tanh"),
        heads=_heads,
        tasks=["a", "b", "c"],
        init="identity",
        freeze_stitch=True,
        tie_init=True,
    )
    assert model.shared_parameters() == [] and model.after == [1, 2]
    model.check_ownership()
    towers = {t: copy.deepcopy(model.towers[t]) for t in model.task_names}
    heads = {t: copy.deepcopy(model.heads[t]) for t in model.task_names}
    # tie_init: every tower starts from the first tower's weights
    for t in "bc":
        for p, q in zip(towers["a"].parameters(), towers[t].parameters()):
            assert torch.equal(p, q)
    # untie them by training, then check forward equality on distinct weights too
    x = torch.randn(8, 3)
    y = {"a": torch.arange(8) % 2, "b": (torch.arange(8) // 2) % 2, "c": (torch.arange(8) // 4) % 2}
    sep = nn.ModuleList([*towers.values(), *heads.values()])
    opt_m = torch.optim.SGD(model.parameters(), lr=0.5)
    opt_s = torch.optim.SGD(sep.parameters(), lr=0.5)
    for _ in range(5):
        out = model({"x": x})
        loss_m = sum(nn.functional.cross_entropy(out.outputs[t], y[t]) for t in y)
        loss_s = sum(
            nn.functional.cross_entropy(heads[t](towers[t]({"x": x}).last), y[t]) for t in y
        )
        for t in y:
            assert torch.equal(out.task_features[t], towers[t]({"x": x}).last)
        for opt, loss in ((opt_m, loss_m), (opt_s, loss_s)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    for t in y:
        for p, q in zip(model.towers[t].parameters(), towers[t].parameters()):
            assert torch.equal(p, q)
    # and they did move apart from each other
    assert not torch.equal(model.towers["a"].linears[0].weight, model.towers["b"].linears[0].weight)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_uniform_frozen_tied_stitch_is_one_shared_network(k) -> None:
    """α = 1/K frozen, towers tied: every tower gives, at every layer, the output of one MLP
    (bit-exact for K = 2, where ½x + ½x = x; to rounding for K = 3, 4)."""
    torch.manual_seed(1)
    tasks = ["a", "b", "c", "d"][:k]
    model = CrossStitch.from_parts(
        encoder=lambda: MLP(3, [6, 5, 4]),
        heads=_heads,
        tasks=tasks,
        init="uniform",
        freeze_stitch=True,
        tie_init=True,
    )
    x = torch.randn(7, 3)
    shared = copy.deepcopy(model.towers["a"])({"x": x}).layers
    layers, _ = model.tower_outputs({"x": x})
    exact = k == 2
    for per_task in layers:
        for got, want in zip(per_task, shared):
            if exact:
                assert torch.equal(got, want)
            else:
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # without tying, uniform mixing does NOT give one network's outputs (the test can fail)
    torch.manual_seed(1)
    untied = CrossStitch.from_parts(
        encoder=lambda: MLP(3, [6, 5, 4]),
        heads=_heads,
        tasks=tasks,
        init="uniform",
        freeze_stitch=True,
    )
    assert not torch.allclose(
        untied.tower_outputs({"x": x})[0][0][-1], untied.towers["a"]({"x": x}).last
    )


def test_forward_equals_hand_computation() -> None:
    """x = 2. Tower a: relu(1·x) = 2, tower b: relu(3x − 1) = 5. α¹ = [[.75, .25], [.5, .5]]
    gives 2.75 and 3.5. Layer 2: a: relu(2·2.75) = 5.5, b: relu(−3.5 + 4) = 0.5. Heads are
    identities. Stitching after layer 2 as well with α² = [[0, 1], [1, 0]] swaps them."""
    model = CrossStitch.from_parts(
        encoder=lambda: MLP(1, [1, 1]),
        tasks=["a", "b"],
        after=[1],
        heads=lambda d: {t: ClassifierHead(w, 1) for t, w in d.items()},
    )
    _set(model.towers["a"].linears[0], [[1.0]], [0.0])
    _set(model.towers["b"].linears[0], [[3.0]], [-1.0])
    _set(model.towers["a"].linears[1], [[2.0]], [0.0])
    _set(model.towers["b"].linears[1], [[-1.0]], [4.0])
    for t in "ab":
        _set(model.heads[t].projection[1], [[1.0]], [0.0])
    with torch.no_grad():
        model.alpha(1).copy_(torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    x = {"x": torch.tensor([[2.0]])}
    out = model(x)
    torch.testing.assert_close(out.outputs["a"], torch.tensor([[5.5]]))
    torch.testing.assert_close(out.outputs["b"], torch.tensor([[0.5]]))
    layers, _ = model.tower_outputs(x)
    torch.testing.assert_close(layers[0][0], torch.tensor([[2.75]]))
    torch.testing.assert_close(layers[1][0], torch.tensor([[3.5]]))

    swap = CrossStitch(dict(model.towers), dict(model.heads), after=[1, 2])
    with torch.no_grad():
        swap.alpha(1).copy_(torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
        swap.alpha(2).copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    out = swap(x)
    torch.testing.assert_close(out.outputs["a"], torch.tensor([[0.5]]))
    torch.testing.assert_close(out.outputs["b"], torch.tensor([[5.5]]))


def test_initialisations() -> None:
    torch.manual_seed(0)

    def make(init):
        return CrossStitch.from_parts(
            encoder=lambda: MLP(2, [3, 3]), heads=_heads, tasks=["a", "b", "c"], init=init
        )

    torch.testing.assert_close(make("identity").alpha(1), torch.eye(3))
    torch.testing.assert_close(make("uniform").alpha(1), torch.full((3, 3), 1 / 3))
    torch.testing.assert_close(
        make("balanced").alpha(1),
        torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]),
    )
    assert (
        CrossStitch.from_parts(encoder=lambda: MLP(2, [3, 3]), heads=_heads, tasks=["a", "b"]).init
        == "balanced"
    )


def test_routing_through_the_stitch_units() -> None:
    """Balanced init, 3 layers stitched after 1 and 2: task a's loss reaches its tower and head,
    the stitch units, and tower b's layers 1 and 2 (through α_ab) but not b's layer 3 or head."""
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=lambda: MLP(3, [4, 4, 4]), heads=_heads, tasks=["a", "b"]
    )
    model.check_ownership()
    shared = {
        n
        for n, p in model.named_parameters()
        if id(p) in {id(q) for q in model.shared_parameters()}
    }
    assert shared == {"stitch.1", "stitch.2"}
    own_a = {
        n
        for n, p in model.named_parameters()
        if id(p) in {id(q) for q in model.task_parameters("a")}
    }
    assert own_a == {
        n for n, _ in model.named_parameters() if n.startswith(("towers.a.", "heads.a."))
    }
    x = torch.randn(8, 3)
    out = model({"x": x})
    assert out.shared_features is None
    loss_a = nn.functional.cross_entropy(out.outputs["a"], torch.arange(8) % 2)
    reached = _reached(model, loss_a)
    assert own_a <= reached
    assert shared <= reached
    assert {n for n in reached if n.startswith("towers.b.")} == {
        "towers.b.linears.0.weight",
        "towers.b.linears.0.bias",
        "towers.b.linears.1.weight",
        "towers.b.linears.1.bias",
    }
    assert not {n for n in reached if n.startswith("heads.b.")}

    # stitched only after layer 1: b's second layer is out of a's reach
    torch.manual_seed(0)
    low = CrossStitch.from_parts(
        encoder=lambda: MLP(3, [4, 4, 4]), heads=_heads, tasks=["a", "b"], after=[1]
    )
    out = low({"x": x})
    reached = _reached(low, nn.functional.cross_entropy(out.outputs["a"], torch.arange(8) % 2))
    assert {n for n in reached if n.startswith("towers.b.")} == {
        "towers.b.linears.0.weight",
        "towers.b.linears.0.bias",
    }

    # identity init, learnable: the other tower gets zero gradient, yet the units learn
    ident = CrossStitch.from_parts(
        encoder=lambda: MLP(3, [4, 4, 4]), heads=_heads, tasks=["a", "b"], init="identity"
    )
    out = ident({"x": x})
    reached = _reached(ident, nn.functional.cross_entropy(out.outputs["a"], torch.arange(8) % 2))
    assert not {n for n in reached if n.startswith(("towers.b.", "heads.b."))}
    assert {"stitch.1", "stitch.2"} <= reached


def test_task_subset_runs_every_tower_but_only_asked_heads() -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(encoder=lambda: MLP(3, [4, 4]), heads=_heads, tasks=["a", "b"])
    x = {"x": torch.randn(5, 3)}
    full, part = model(x), model(x, tasks=["b"])
    assert set(part.outputs) == {"b"} and set(part.task_features) == {"b"}
    assert torch.equal(part.outputs["b"], full.outputs["b"])


@pytest.mark.parametrize("make", [lambda: CNN(12, 4, [5, 3]), lambda: BiLSTM(12, 4, 3, layers=2)])
def test_sequence_towers_identity_is_separate_and_padding_stays_zero(make) -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=make, heads=_seq_heads, tasks=["a", "b"], init="identity", freeze_stitch=True
    )
    out = model({"tokens": TOKENS})
    assert torch.equal(out.mask, TOKENS != 0)
    for t in "ab":
        assert torch.equal(out.task_features[t], model.towers[t]({"tokens": TOKENS}).last)
    balanced = CrossStitch.from_parts(encoder=make, heads=_seq_heads, tasks=["a", "b"])
    f = balanced({"tokens": TOKENS}).task_features["a"]
    assert f[1, 2:].abs().sum() == 0 and f[1, :2].abs().sum() > 0


def test_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 6)
    y = {"a": (x[:, 0] > 0).long(), "b": (x[:, 1] * x[:, 2] > 0).long()}
    model = CrossStitch.from_parts(encoder=lambda: MLP(6, [32, 32]), heads=_heads, tasks=["a", "b"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        out = model({"x": x})
        losses = [nn.functional.cross_entropy(out.outputs[t], y[t]) for t in y]
        opt.zero_grad()
        sum(losses).backward()
        opt.step()
    assert max(float(loss.detach()) for loss in losses) < 1e-2


class _Opaque(Encoder):
    input_kind = "features"
    is_sequence = False

    def __init__(self) -> None:
        super().__init__()
        self.layer_dims = [2]
        self.linear = nn.Linear(2, 2)

    def forward(self, inputs):  # pragma: no cover - never run
        return EncoderOutput([self.linear(inputs["x"])])


@pytest.mark.parametrize(
    "options, field",
    [
        ({"after": [0]}, "after"),
        ({"after": [3]}, "after"),
        ({"after": ["1"]}, "after"),
        ({"after": 1}, "after"),
        ({"init": "random"}, "init"),
        ({"freeze_stitch": "yes"}, "freeze_stitch"),
        ({"tie_init": 1}, "tie_init"),
        ({"alpha": 0.5}, "alpha"),
    ],
)
def test_bad_options_name_the_field(options, field) -> None:
    with pytest.raises(OptionError) as err:
        CrossStitch.from_parts(
            encoder=lambda: MLP(2, [3, 3]), heads=_heads, tasks=["a", "b"], **options
        )
    assert err.value.option == field


def test_unsupported_or_mismatched_towers_raise() -> None:
    with pytest.raises(OptionError, match="_Opaque") as err:
        CrossStitch.from_parts(encoder=_Opaque, heads=_heads, tasks=["a", "b"])
    assert err.value.option == "encoder"
    with pytest.raises(OptionError, match="tower 'b'"):
        CrossStitch({"a": MLP(2, [3]), "b": MLP(2, [4])}, _heads({"a": 3, "b": 4}))
