"""Sharing architectures: gradient routing, parameter ownership and construction errors.

Routing is checked with autograd on real batches (reviews for sentiment, People's Daily
for NER): task i's loss must reach exactly the parameters task i passes through.
"""

from __future__ import annotations

import pytest
import torch
from routing import param_names as _names
from routing import reached as _reached
from torch import nn

from polytask.errors import OptionError
from polytask.sharing import Custom, HardSharing, Hierarchical, MultiTaskOutput
from polytask.sharing.task_layers import DenseLayer, SequenceLayer


def _batch(zh, source: str, n: int = 8):
    return zh.collate(zh.train[source][:n], source)


def _task_loss(model, zh, task: str) -> torch.Tensor:
    """Task's loss on a batch of its own source, the forward pass computing every task."""
    source = "reviews" if task == "sentiment" else "news"
    batch = _batch(zh, source)
    out = model(batch.inputs)  # all tasks, as the trainer does for a mixed batch
    assert set(out.outputs) == set(model.task_names)
    return zh.tasks[task].kind.loss(out.outputs[task], *batch.targets[task])


def _assert_partition(model) -> None:
    model.check_ownership()
    groups = model.parameter_groups()
    assert set(groups) == {"shared"} | {f"task:{t}" for t in model.task_names}
    flat = [id(p) for ps in groups.values() for p in ps]
    assert len(flat) == len(set(flat)), "a parameter is in two groups"
    assert set(flat) == {id(p) for p in model.parameters()}, "a parameter is in no group"


# ------------------------------------------------------------------ hard sharing
def test_hard_sharing_routes_each_loss_to_the_encoder_and_its_own_head(zh, make_model) -> None:
    model = make_model(hard=True)
    assert isinstance(model, HardSharing) and model.taps == {"sentiment": 2, "ner": 2}
    _assert_partition(model)
    shared = _names(model, model.shared_parameters())
    for task in ("sentiment", "ner"):
        other = "ner" if task == "sentiment" else "sentiment"
        own = _names(model, model.task_parameters(task))
        foreign = _names(model, model.task_parameters(other))
        reached = _reached(model, _task_loss(model, zh, task))
        assert {n for n in shared if reached[n]} == shared, task
        assert {n for n in own if reached[n]} == own, task
        assert not {n for n in foreign if reached[n]}, f"{task} leaks into {other}'s head"


# ------------------------------------------------------------------ hierarchical
def test_hierarchical_low_tap_never_reaches_the_upper_layer(zh, make_model) -> None:
    """taps {ner: 1, sentiment: 2} on a 2-layer encoder: NER's loss leaves layer 2 alone."""
    model = make_model(taps={"ner": 1, "sentiment": 2})
    _assert_partition(model)
    layer2 = {n for n, _ in model.named_parameters() if n.startswith("encoder.lstms.1.")}
    layer1 = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("encoder.lstms.0.", "encoder.embedding."))
    }
    assert layer1 and layer2

    ner = _reached(model, _task_loss(model, zh, "ner"))
    assert not {n for n in layer2 if ner[n]}, "ner (tap 1) sent gradient to encoder layer 2"
    assert all(ner[n] for n in layer1)
    assert all(ner[n] for n in _names(model, model.task_parameters("ner")))
    assert not any(ner[n] for n in _names(model, model.task_parameters("sentiment")))

    sent = _reached(model, _task_loss(model, zh, "sentiment"))
    assert all(sent[n] for n in layer1 | layer2)
    assert all(sent[n] for n in _names(model, model.task_parameters("sentiment")))
    assert not any(sent[n] for n in _names(model, model.task_parameters("ner")))


def test_hierarchical_features_are_the_tapped_layers(zh, make_model) -> None:
    model = make_model(taps={"ner": 1, "sentiment": 2}).eval()
    batch = _batch(zh, "news")
    out = model(batch.inputs)
    enc = model.encoder(batch.inputs)
    torch.testing.assert_close(out.features["ner"], enc.layers[0], rtol=0, atol=0)
    torch.testing.assert_close(out.features["sentiment"], enc.layers[1], rtol=0, atol=0)
    assert torch.equal(out.mask, enc.mask)
    only = model(batch.inputs, tasks=["ner"])
    assert set(only.outputs) == {"ner"} and set(only.features) == {"ner"}


def test_task_layers_are_owned_by_their_task_and_routed(zh, make_model) -> None:
    from polytask.nn import BiLSTM, heads_for

    torch.manual_seed(0)
    encoder = BiLSTM(vocab_size=len(zh.vocab), embed_dim=8, hidden=4, layers=2)
    heads = heads_for(list(zh.tasks.values()), dim={"ner": 6, "sentiment": 5})
    model = Hierarchical(
        encoder,
        heads,
        taps={"ner": 1},
        task_layers={"ner": SequenceLayer(8, 3), "sentiment": DenseLayer(8, 5)},
    )
    _assert_partition(model)
    assert _names(model, model.task_parameters("ner")) >= {
        n for n, _ in model.named_parameters() if n.startswith("task_layers.ner.")
    }
    ner = _reached(model, _task_loss(model, zh, "ner"))
    assert all(ner[n] for n in ner if n.startswith("task_layers.ner."))
    assert not any(
        ner[n]
        for n in ner
        if n.startswith(("task_layers.sentiment.", "heads.sentiment.", "encoder.lstms.1."))
    )
    sent = _reached(model, _task_loss(model, zh, "sentiment"))
    assert all(sent[n] for n in sent if n.startswith("task_layers.sentiment."))
    assert not any(sent[n] for n in sent if n.startswith(("task_layers.ner.", "heads.ner.")))


@pytest.mark.parametrize(
    "taps, field",
    [
        ({"ner": 0}, "taps.ner"),
        ({"ner": 3}, "taps.ner"),
        ({"ner": "1"}, "taps.ner"),
        ({"ner": 1.0}, "taps.ner"),
        ({"ner": True}, "taps.ner"),
        ({"pos": 1}, "taps"),
    ],
)
def test_bad_taps_raise_naming_the_field(zh, make_model, taps, field) -> None:
    with pytest.raises(OptionError) as err:
        make_model(taps=taps)
    assert err.value.option == field


def test_unknown_task_names_raise(zh, make_model) -> None:
    model = make_model()
    batch = _batch(zh, "reviews")
    with pytest.raises(ValueError, match="unknown task.*'pos'"):
        model(batch.inputs, tasks=["sentiment", "pos"])
    with pytest.raises(ValueError, match="unknown task.*'pos'"):
        model.task_parameters("pos")
    with pytest.raises(OptionError, match="unknown task 'pos'") as err:
        Hierarchical(model.encoder, dict(model.heads), task_layers={"pos": DenseLayer(16, 4)})
    assert err.value.option == "task_layers"


def test_a_head_reused_by_two_tasks_is_a_declaration_error(zh) -> None:
    """Ownership must be declared, never inferred: one module as two tasks' head is caught."""
    from polytask.nn import BiLSTM, ClassifierHead

    encoder = BiLSTM(vocab_size=len(zh.vocab), embed_dim=4, hidden=3, layers=1)
    head = ClassifierHead(6, 2, pooling="mean")
    with pytest.raises(ValueError, match="owned by both"):
        Hierarchical(encoder, {"a": head, "b": head})


# ------------------------------------------------------------------ custom
class _TwoTower(nn.Module):
    """trunk (shared) -> a: head_a; b: private_b -> head_b. Tabular inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.head_a = nn.Linear(6, 2)
        self.private_b = nn.Linear(6, 6)
        self.head_b = nn.Linear(6, 1)

    def forward(self, inputs, tasks):
        h = self.trunk(inputs["x"])
        outputs = {}
        if "a" in tasks:
            outputs["a"] = self.head_a(h)
        if "b" in tasks:
            outputs["b"] = self.head_b(torch.tanh(self.private_b(h)))
        return outputs, {t: h for t in tasks}


def _custom() -> Custom:
    torch.manual_seed(0)
    return Custom(
        _TwoTower(),
        ["a", "b"],
        shared=["trunk"],
        task_params={"a": ["head_a"], "b": ["private_b.", "head_b"]},
    )


def test_custom_routes_and_partitions() -> None:
    model = _custom()
    _assert_partition(model)
    assert _names(model, model.task_parameters("b")) == {
        "module.private_b.weight",
        "module.private_b.bias",
        "module.head_b.weight",
        "module.head_b.bias",
    }
    x = torch.randn(7, 5)
    out = model({"x": x})
    assert isinstance(out, MultiTaskOutput) and set(out.features) == {"a", "b"}
    loss_a = torch.nn.functional.cross_entropy(out.outputs["a"], torch.arange(7) % 2)
    loss_b = out.outputs["b"].pow(2).mean()
    for loss, own, other in ((loss_a, "a", "b"), (loss_b, "b", "a")):
        reached = _reached(model, loss)
        assert all(reached[n] for n in _names(model, model.shared_parameters()))
        assert all(reached[n] for n in _names(model, model.task_parameters(own)))
        assert not any(reached[n] for n in _names(model, model.task_parameters(other)))


def test_custom_declaration_errors() -> None:
    with pytest.raises(ValueError, match="not declared.*private_b"):
        Custom(
            _TwoTower(),
            ["a", "b"],
            shared=["trunk"],
            task_params={"a": ["head_a"], "b": ["head_b"]},
        )
    with pytest.raises(ValueError, match="owned by both"):
        Custom(
            _TwoTower(),
            ["a", "b"],
            shared=["trunk", "head_a"],
            task_params={"a": ["head_a"], "b": ["private_b", "head_b"]},
        )
    with pytest.raises(OptionError, match=r"unknown task\(s\) \['c'\]") as err:
        Custom(
            _TwoTower(),
            ["a", "b"],
            shared=["trunk"],
            task_params={"a": ["head_a"], "b": ["private_b", "head_b"], "c": []},
        )
    assert err.value.option == "task_params"
    with pytest.raises(OptionError, match="not built from an encoder and heads"):
        Custom.from_parts(encoder=lambda: None, heads=lambda widths: {}, tasks=["a"])
    # a prefix matches whole name components only: "head" is not "head_a"
    with pytest.raises(ValueError, match="not declared"):
        Custom(
            _TwoTower(),
            ["a", "b"],
            shared=["trunk"],
            task_params={"a": ["head"], "b": ["private_b", "head_b"]},
        )
