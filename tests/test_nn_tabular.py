"""Tabular encoder: widths, the OOV index, hand values, gradients into the embeddings, the
MLP layer-by-layer protocol (cross-stitch), every architecture, and the collator's layout."""

from __future__ import annotations

import math

import pytest
import torch
from routing import set_linear as _set
from routing import stitched_layers

from polytask.data import Collator, Example
from polytask.errors import OptionError
from polytask.nn import ENCODERS, MLP, TabularEmbedding, TabularMLP, heads_for
from polytask.nn.tabular import embedding_dim
from polytask.sharing import ARCHITECTURES, MMoE
from polytask.tasks import Multilabel, Task

TASKS = {"a": Task("a", Multilabel(["a"])), "b": Task("b", Multilabel(["b"]))}


def _x(numeric: list[list[float]], codes: list[list[float]]) -> torch.Tensor:
    return torch.cat([torch.tensor(numeric), torch.tensor(codes, dtype=torch.float32)], dim=1)


def test_width_rule() -> None:
    assert [embedding_dim(k) for k in (0, 1, 2, 3, 8, 31, 32, 41, 1000)] == [
        1,
        1,
        1,
        2,
        4,
        16,
        16,
        16,
        16,
    ]
    assert embedding_dim(100, max_dim=4) == 4
    enc = TabularMLP(2, [2, 8, 41], [5, 3])
    assert enc.embedding_dims == [1, 4, 16]
    assert enc.input_dim == 5 and enc.layer_dims == [5, 3] and enc.input_kind == "tabular"
    assert [e.num_embeddings for e in enc.embedding.embeddings] == [3, 9, 42]  # + the OOV row
    assert isinstance(enc, MLP) and ENCODERS["tabular"] is TabularMLP
    out = enc({"x": _x([[0.5, -1.0]] * 4, [[1, 2, 3]] * 4)})
    assert [tuple(h.shape) for h in out.layers] == [(4, 5), (4, 3)] and out.mask is None


def test_embedded_row_equals_the_hand_concatenation() -> None:
    emb = TabularEmbedding(2, [2, 3], embedding_dims=[1, 2])
    with torch.no_grad():
        emb.embeddings[0].weight.copy_(torch.tensor([[0.0], [10.0], [20.0]]))
        emb.embeddings[1].weight.copy_(
            torch.tensor([[0.0, -1.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        )
    x = _x([[0.5, -2.0], [1.0, 3.0]], [[2, 3], [1, 0]])
    expected = torch.tensor([[0.5, -2.0, 20.0, 3.0, 3.0], [1.0, 3.0, 10.0, 0.0, -1.0]])
    torch.testing.assert_close(emb({"x": x}).last, expected)
    # TabularMLP layer 1 = act(W [x_num; E(c)] + b)
    enc = TabularMLP(2, [2, 3], [1], embedding_dims=[1, 2])
    enc.embedding.load_state_dict(emb.state_dict())
    _set(enc.linears[0].linear, [[1.0, 1.0, 0.1, 1.0, -1.0]], [0.5])
    torch.testing.assert_close(
        enc({"x": x}).last,
        torch.relu(expected @ torch.tensor([1.0, 1.0, 0.1, 1.0, -1.0])[:, None] + 0.5),
    )


def test_unknown_indices_use_the_oov_row() -> None:
    torch.manual_seed(0)
    enc = TabularMLP(1, [3, 2], [4]).eval()
    known_oov = enc({"x": _x([[0.2]], [[0, 0]])}).last
    for codes in ([4, 0], [-1, 0], [0, 3], [0, 17], [math.nan, 0], [math.inf, -math.inf]):
        torch.testing.assert_close(enc({"x": _x([[0.2]], [codes])}).last, known_oov)
    assert not torch.equal(enc({"x": _x([[0.2]], [[3, 2]])}).last, known_oov)
    assert enc.embedding.indices(_x([[0.0]], [[3, 2]])).tolist() == [[3, 2]]
    assert enc.embedding.indices(_x([[0.0]], [[2.9999999, 1]])).tolist() == [[3, 1]]


def test_gradient_reaches_the_embeddings_of_the_rows_used() -> None:
    torch.manual_seed(0)
    enc = TabularMLP(2, [3, 2], [6, 4], activation="tanh")
    x = _x([[0.1, 0.2], [0.3, -0.4]], [[1, 0], [3, 9]])  # 9 is unknown -> OOV
    enc({"x": x}).last.sum().backward()
    g0 = enc.embedding.embeddings[0].weight.grad
    g1 = enc.embedding.embeddings[1].weight.grad
    assert [bool(r.abs().sum() > 0) for r in g0] == [False, True, False, True]
    assert [bool(r.abs().sum() > 0) for r in g1] == [
        True,
        False,
        False,
    ]  # both rows read the OOV row
    assert all(p.grad is not None for p in enc.parameters())


def test_dropout_never_touches_the_indices_and_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    enc = TabularMLP(1, [5], [8], dropout=0.9)
    x = _x([[1.0]] * 64, [[i % 6] for i in range(64)])
    enc.train()
    outs = enc({"x": x})  # would fail or mis-index if dropout scaled the codes
    assert outs.last.shape == (64, 8)
    enc.eval()
    torch.testing.assert_close(enc({"x": x}).last, enc({"x": x}).last)
    assert isinstance(enc.dropout, torch.nn.Identity)


def test_runs_layer_by_layer_like_an_mlp() -> None:
    torch.manual_seed(0)
    enc = TabularMLP(3, [4, 2], [7, 5, 3], dropout=0.2).eval()
    x = _x(torch.randn(6, 3).tolist(), [[i % 5, i % 3] for i in range(6)])
    layers, mask = stitched_layers(enc, {"x": x})
    assert mask is None
    for a, b in zip(layers, enc({"x": x}).layers):
        assert torch.equal(a, b)


def test_errors() -> None:
    for build, option in [
        (lambda: TabularMLP(1, 3, [4]), "cardinalities"),  # type: ignore[arg-type]
        (lambda: TabularMLP(1, [-1], [4]), "cardinalities[0]"),
        (lambda: TabularMLP(0, [], [4]), "cardinalities"),  # no column at all
        (lambda: TabularMLP(1, [2, 3], [4], embedding_dims=[2]), "embedding_dims"),
        (lambda: TabularMLP(1, [2], [4], dropout=1.0), "dropout"),
    ]:
        with pytest.raises(OptionError) as err:
            build()
        assert err.value.option == option
    enc = TabularMLP(2, [3], [4])
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        enc({"x": torch.zeros(2, 4)})
    with pytest.raises(KeyError, match="x"):
        enc({"tokens": torch.zeros(2, 3)})


@pytest.mark.parametrize("name", ["hard", "soft", "cross_stitch", "mtan", "mmoe", "cgc", "ple"])
def test_every_architecture_trains_on_it(name: str) -> None:
    torch.manual_seed(0)

    def make() -> TabularMLP:
        return TabularMLP(2, [3, 4], [8, 6])

    def heads(widths):
        return {t: heads_for([TASKS[t]], dim=widths[t], sequence=False)[t] for t in TASKS}

    arch = ARCHITECTURES[name]
    if name == "hard":
        enc = make()
        model = arch(enc, heads({t: enc.output_dim for t in TASKS}))
    else:
        model = arch.from_parts(encoder=make, tasks=list(TASKS), heads=heads)
    x = _x(torch.randn(8, 2).tolist(), [[i % 4, (i * 3) % 5] for i in range(8)])
    out = model({"x": x})
    loss = sum(o.sum() for o in out.outputs.values())
    loss.backward()
    emb_grads = [p.grad for n, p in model.named_parameters() if "embeddings" in n]
    assert emb_grads and any(g is not None and bool(g.abs().sum() > 0) for g in emb_grads)


def test_gated_experts_gate_on_an_encoder_of_the_row_not_on_raw_indices() -> None:
    def make() -> TabularMLP:
        return TabularMLP(2, [3], [4])

    def heads(widths):
        return {t: heads_for([TASKS[t]], dim=widths[t], sequence=False)[t] for t in TASKS}

    model = MMoE.from_parts(encoder=make, tasks=list(TASKS), heads=heads, experts=2)
    assert model.gate_input.encoder is not None  # default for a non-"features" encoder
    with pytest.raises(OptionError) as err:
        MMoE.from_parts(encoder=make, tasks=list(TASKS), heads=heads, experts=2, gate_input="x")
    assert err.value.option == "gate_input"
    # the papers' gates read the (embedded) input
    gated = MMoE(
        [make(), make()], heads({t: 4 for t in TASKS}), gate_encoder=TabularEmbedding(2, [3])
    )
    assert gated.gate_input.dim == 2 + 2
    gated({"x": _x([[0.0, 1.0]], [[2]])})


def test_collator_packs_numbers_then_codes() -> None:
    collate = Collator(TASKS, input_kind="tabular")
    batch = collate(
        [
            Example({"features": [0.5, -1.0], "categorical": [2, 0]}, {"a": 1, "b": None}),
            Example({"features": [1.5, 2.0], "categorical": [1, 7]}, {"a": 0, "b": 1}),
        ]
    )
    torch.testing.assert_close(
        batch.inputs["x"], torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.5, 2.0, 1.0, 7.0]])
    )
    assert batch.targets["b"][1].tolist() == [[False], [True]]
    only_codes = collate([Example({"categorical": [3, 1]}, {"a": 1})])
    assert only_codes.inputs["x"].tolist() == [[3.0, 1.0]]
    with pytest.raises(ValueError, match="TabularPreprocessor"):
        collate([Example({"features": [0.5], "categorical": ["Private"]}, {"a": 1})])
    with pytest.raises(ValueError, match="neither"):
        collate([Example({}, {"a": 1})])
    with pytest.raises(ValueError, match="different lengths"):
        collate(
            [Example({"categorical": [1]}, {"a": 1}), Example({"categorical": [1, 2]}, {"a": 1})]
        )


def test_collator_stacks_feature_arrays() -> None:
    import numpy as np

    collate = Collator(TASKS, input_kind="features")
    rows = [np.array([0, 1, 1], dtype=np.uint8), np.array([1, 0, 0], dtype=np.uint8)]
    batch = collate([Example({"features": r}, {"a": 1}) for r in rows])
    assert batch.inputs["x"].dtype == torch.float32
    assert batch.inputs["x"].tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    as_lists = collate([Example({"features": r.tolist()}, {"a": 1}) for r in rows])
    assert torch.equal(as_lists.inputs["x"], batch.inputs["x"])
