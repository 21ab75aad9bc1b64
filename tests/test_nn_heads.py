"""Classifier and tagger heads, heads_for and the registries."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import polytask.nn as pnn
from polytask.errors import OptionError
from polytask.nn import ClassifierHead, TaggerHead, heads_for
from polytask.tasks.base import TagScores


@dataclass
class _Kind:
    """Stand-in for a TaskKind: only what heads_for reads."""

    output_size: int
    is_token_level: bool = False
    crf: bool = False
    tags: list[str] | None = None


@dataclass
class _Task:
    name: str
    kind: _Kind


def _tagging(labels: list[str], crf: bool) -> _Kind:
    return _Kind(len(labels), is_token_level=True, crf=crf, tags=labels)


def _set_linear(linear: torch.nn.Linear, weight: list, bias: list) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        linear.bias.copy_(torch.tensor(bias))


def test_classifier_on_vectors_is_affine() -> None:
    head = ClassifierHead(2, 3)
    _set_linear(head.projection[-1], [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], [0.0, 1.0, 2.0])
    logits = head(torch.tensor([[2.0, 5.0]]))
    torch.testing.assert_close(logits, torch.tensor([[2.0, 6.0, -1.0]]))


def test_classifier_mean_pools_real_tokens_only() -> None:
    head = ClassifierHead(2, 1, pooling="mean")
    _set_linear(head.projection[-1], [[1.0, 10.0]], [0.0])
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e6, 1e6]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(head(features, mask), torch.tensor([[2.0 + 30.0]]))


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_classifier_ignores_padding(pooling: str) -> None:
    torch.manual_seed(0)
    head = ClassifierHead(4, 3, pooling=pooling, hidden=5).eval()
    features = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    dirty = torch.where(mask.unsqueeze(-1), features, 1e9)
    out = head(features, mask)
    assert out.shape == (2, 3)
    torch.testing.assert_close(head(dirty, mask), out)
    torch.testing.assert_close(head(features[:1, :3]), out[:1])


def test_classifier_needs_pooling_for_sequences() -> None:
    with pytest.raises(ValueError, match="pooling"):
        ClassifierHead(4, 2)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        ClassifierHead(4, 2)(torch.randn(2, 5))


def test_hidden_layer_relu() -> None:
    head = ClassifierHead(1, 1, hidden=2)
    _set_linear(head.projection[1], [[1.0], [-1.0]], [0.0, 0.0])
    _set_linear(head.projection[4], [[1.0, 2.0]], [0.5])
    # x = 3: hidden relu([3, -3]) = [3, 0] -> 3 + 0.5
    torch.testing.assert_close(head(torch.tensor([[3.0]])), torch.tensor([[3.5]]))
    torch.testing.assert_close(head(torch.tensor([[-3.0]])), torch.tensor([[6.5]]))


def test_softmax_tagger_returns_per_token_logits() -> None:
    head = TaggerHead(2, 3)
    _set_linear(head.projection[-1], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, -1.0])
    features = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    out = head(features, torch.tensor([[True, True]]))
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch.tensor([[[1.0, 2.0, 2.0], [3.0, -1.0, 1.0]]]))
    with pytest.raises(ValueError, match="crf=True"):
        head.constrain_bio(["O", "B-X", "I-X"])


def test_crf_tagger_returns_tag_scores() -> None:
    head = TaggerHead(4, 3, crf=True)
    features = torch.randn(2, 5, 4)
    out = head(features)
    assert isinstance(out, TagScores)
    torch.testing.assert_close(out.emissions, head.projection(features))
    assert out.transitions.shape == (3, 3) and out.start.shape == (3,) and out.end.shape == (3,)
    head.constrain_bio(["O", "B-X", "I-X"])
    assert head(features).transitions[0, 2] < -1e3


def test_tagger_rejects_vectors() -> None:
    with pytest.raises(ValueError, match=r"\(B, T, 4\)"):
        TaggerHead(4, 3)(torch.randn(2, 4))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: ClassifierHead(0, 2), "in_dim"),
        (lambda: ClassifierHead(4, 0), "out_dim"),
        (lambda: ClassifierHead(4, 2, pooling="sum"), "pooling"),
        (lambda: ClassifierHead(4, 2, hidden=0), "hidden"),
        (lambda: ClassifierHead(4, 2, dropout=1.0), "dropout"),
        (lambda: TaggerHead(4, 0), "num_tags"),
        (lambda: TaggerHead(4, 2, dropout=-1), "dropout"),
    ],
)
def test_bad_arguments_name_the_argument(build, name: str) -> None:
    with pytest.raises(OptionError) as err:
        build()
    assert err.value.option == name


def test_heads_for_builds_the_right_head_per_kind() -> None:
    tasks = [
        _Task("sentiment", _Kind(3)),
        _Task("topics", _Kind(5)),
        _Task("ner", _tagging(["O", "B-PER", "I-PER"], crf=True)),
        _Task("pos", _tagging(["NN", "VB", "DT", "O"], crf=True)),
        _Task("chunk", _tagging(["O", "B-NP", "I-NP"], crf=False)),
    ]
    heads = heads_for(
        tasks, dim={"sentiment": 8, "topics": 8, "ner": 6, "pos": 6, "chunk": 6}, pooling="max"
    )
    assert list(heads) == ["sentiment", "topics", "ner", "pos", "chunk"]
    assert isinstance(heads["sentiment"], ClassifierHead) and heads["sentiment"].pooling == "max"
    assert heads["topics"](torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool)).shape == (2, 5)
    ner = heads["ner"](torch.randn(2, 4, 6))
    assert isinstance(ner, TagScores) and ner.emissions.shape == (2, 4, 3)
    assert ner.transitions[0, 2] < -1e3 and ner.start[2] < -1e3  # IOB2 constraints applied
    pos = heads["pos"](torch.randn(2, 4, 6))
    assert isinstance(pos, TagScores) and pos.transitions.abs().max() <= 0.1  # not IOB2
    chunk = heads["chunk"](torch.randn(2, 4, 6))
    assert isinstance(chunk, torch.Tensor) and chunk.shape == (2, 4, 3)


def test_heads_for_options() -> None:
    tasks = [_Task("a", _Kind(2)), _Task("b", _tagging(["O", "B-X", "I-X"], crf=True))]
    heads = heads_for(tasks, dim=4, bio_constraints=False, dropout=0.2)
    assert torch.all(heads["b"].crf.transition_constraints == 0)
    assert heads["a"].pooling == "attention"
    flat = heads_for([_Task("a", _Kind(2))], dim=4, sequence=False)
    assert flat["a"].pooling is None and flat["a"](torch.randn(3, 4)).shape == (3, 2)


def test_heads_for_errors() -> None:
    with pytest.raises(OptionError, match="'b' tags tokens") as err:
        heads_for([_Task("b", _tagging(["O"], crf=False))], dim=4, sequence=False)
    assert err.value.option == "sequence"
    with pytest.raises(OptionError, match=r"\['b'\]") as err:
        heads_for([_Task("a", _Kind(2)), _Task("b", _Kind(2))], dim={"a": 4})
    assert err.value.option == "dim"
    with pytest.raises(OptionError, match="duplicate") as err:
        heads_for([_Task("a", _Kind(2)), _Task("a", _Kind(3))], dim=4)
    assert err.value.option == "tasks"


def test_registries_and_exports() -> None:
    assert pnn.ENCODERS == {
        "mlp": pnn.MLP,
        "cnn": pnn.CNN,
        "bilstm": pnn.BiLSTM,
        "transformer": pnn.Transformer,
        "lenet": pnn.LeNet,
        "tabular": pnn.TabularMLP,
    }
    for name in pnn.__all__:
        assert hasattr(pnn, name), name
    for encoder in pnn.ENCODERS.values():
        assert issubclass(encoder, pnn.Encoder)
