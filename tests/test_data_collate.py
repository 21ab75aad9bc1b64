"""Collator: padding, masks, missing labels, truncation, inputs of every kind."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from polytask.data import Collator, Example, Vocab


class Cls:
    """Stand-in classification kind."""

    is_token_level = False

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def encode_target(self, raw: Any) -> tuple[Any, Any]:
        if raw is None:
            return 0, False
        if raw not in self.labels:
            raise ValueError(f"unknown label {raw!r}; known: {self.labels}")
        return self.labels.index(raw), True


class Tag(Cls):
    """Stand-in tagging kind (None entries are unlabelled tokens)."""

    is_token_level = True

    def encode_target(self, raw: Any) -> tuple[Any, Any]:
        return [0 if t is None else self.labels.index(t) for t in raw], [t is not None for t in raw]


class Multi:
    """Stand-in multilabel kind that returns a scalar mask when the label is missing."""

    is_token_level = False

    def encode_target(self, raw: Any) -> tuple[Any, Any]:
        if raw is None:
            return [0.0, 0.0, 0.0], False
        return [float(v or 0) for v in raw], [v is not None for v in raw]


class Reg:
    is_token_level = False

    def encode_target(self, raw: Any) -> tuple[Any, Any]:
        return (0.0, False) if raw is None else (float(raw), True)


def _examples() -> list[Example]:
    return [
        Example({"tokens": ["a", "b", "c"]}, {"tags": ["O", "B", "I"], "sent": "pos"}, id="e1"),
        Example({"tokens": ["b"]}, {"sent": "neg", "ml": [1, None, 0]}, id="e2"),
        Example({"tokens": ["c", "zz"]}, {"tags": ["O", None]}, id="e3"),
    ]


def _collator(**kw: Any) -> Collator:
    vocab = Vocab(["a", "b", "c"])  # a=2, b=3, c=4
    tasks = {
        "tags": Tag(["O", "B", "I"]),
        "sent": Cls(["neg", "pos"]),
        "ml": Multi(),
        "other": Cls(["x"]),
    }
    return Collator(tasks, vocab=vocab, **kw)


def test_tokens_padding_and_targets():
    b = _collator()(_examples(), source="src")
    assert b.source == "src" and b.size == 3 and b.ids == ["e1", "e2", "e3"]
    assert b.inputs["tokens"].tolist() == [[2, 3, 4], [3, 0, 0], [4, 1, 0]]
    y, m = b.targets["tags"]
    assert y.tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]
    assert m.tolist() == [[True, True, True], [False, False, False], [True, False, False]]
    y, m = b.targets["sent"]
    assert y.dtype == torch.long and y.tolist() == [1, 0, 0] and m.tolist() == [True, True, False]
    y, m = b.targets["ml"]
    assert y.shape == (3, 3) and y.dtype == torch.float32
    assert y[1].tolist() == [1.0, 0.0, 0.0]
    assert m.tolist() == [[False] * 3, [True, False, True], [False] * 3]


def test_task_absent_everywhere_has_all_false_mask():
    b = _collator()(_examples())
    y, m = b.targets["other"]
    assert y.shape == (3,) and not m.any()
    assert sorted(b.tasks) == ["ml", "sent", "tags"]


def test_truncation_is_counted_and_cuts_tags():
    c = _collator(max_length=2)
    b = c(_examples())
    assert b.inputs["tokens"].tolist() == [[2, 3], [3, 0], [4, 1]]
    assert b.targets["tags"][1].tolist() == [[True, True], [False, False], [True, False]]
    assert c.n_truncated == 1
    c(_examples())
    assert c.n_truncated == 2


def test_char_inputs():
    chars = Vocab.build_chars([["ab", "c"]])  # a, b, c in that order (ties by char)
    c = Collator({"s": Cls(["x"])}, vocab=Vocab(["ab", "c"]), char_vocab=chars, max_chars=1)
    b = c([Example({"tokens": ["ab", "c"]}), Example({"tokens": ["q"]})])
    assert b.inputs["chars"].shape == (2, 2, 1)
    assert b.inputs["chars"].tolist() == [[[2], [4]], [[1], [0]]]


def test_empty_input_gives_one_padding_position():
    b = _collator()([Example({"tokens": []}, {"tags": []})])
    assert b.inputs["tokens"].tolist() == [[0]]
    assert b.targets["tags"][1].tolist() == [[False]]


def test_features_and_regression():
    c = Collator({"y": Reg()}, input_kind="features")
    b = c([Example({"features": [1, 2]}, {"y": 0.5}), Example({"features": [3, 4]})])
    assert b.inputs["x"].dtype == torch.float32 and b.inputs["x"].tolist() == [[1, 2], [3, 4]]
    assert b.targets["y"][0].tolist() == [0.5, 0.0] and b.targets["y"][1].tolist() == [True, False]
    with pytest.raises(ValueError, match="different lengths"):
        c([Example({"features": [1]}), Example({"features": [1, 2]})])


def test_subwords_uses_tokenizer_and_word_mask_width():
    class Tok:
        def encode(self, words: list[list[str]]) -> dict[str, torch.Tensor]:
            self.seen = words
            W = max(len(w) for w in words)
            return {
                "input_ids": torch.ones(len(words), 7, dtype=torch.long),
                "word_mask": torch.tensor([[i < len(w) for i in range(W)] for w in words]),
            }

    tok = Tok()
    c = Collator({"tags": Tag(["O", "B"])}, input_kind="subwords", tokenizer=tok)
    b = c([Example({"tokens": ["x", "y"]}, {"tags": ["B", "O"]}), Example({"tokens": ["z"]})])
    assert tok.seen == [["x", "y"], ["z"]]
    assert set(b.inputs) == {"input_ids", "word_mask"}
    assert b.targets["tags"][0].tolist() == [[1, 0], [0, 0]]
    assert b.targets["tags"][1].tolist() == [[True, True], [False, False]]


def test_errors():
    c = _collator()
    with pytest.raises(ValueError, match=r"example 'bad': task 'tags' has 1 tags for 2 tokens"):
        c([Example({"tokens": ["a", "b"]}, {"tags": ["O"]}, id="bad")])
    with pytest.raises(ValueError, match="unknown label"):
        c([Example({"tokens": ["a"]}, {"sent": "meh"})])
    with pytest.raises(ValueError, match="needs vocab"):
        Collator({}, input_kind="tokens")
    with pytest.raises(ValueError, match="input_kind"):
        Collator({}, input_kind="pixels")
    with pytest.raises(ValueError, match="empty list"):
        c([])


def test_accepts_task_objects():
    class T:
        name = "sent"
        kind = Cls(["neg", "pos"])

    c = Collator([T()], vocab=Vocab(["a"]))
    assert c([Example({"tokens": ["a"]}, {"sent": "pos"})]).targets["sent"][0].tolist() == [1]


def test_with_the_real_task_kinds():
    from polytask.tasks import Classification, Multilabel, Regression, Tagging

    tasks = {
        "ner": Tagging(["O", "B-PER", "I-PER"]),
        "sent": Classification(["neg", "pos"]),
        "tox": Multilabel(["a", "b"]),
        "y": Regression(),
    }
    c = Collator(tasks, vocab=Vocab(["Ann", "Lee"]))
    b = c(
        [
            Example(
                {"tokens": ["Ann", "Lee", "x"]}, {"ner": ["B-PER", "I-PER", "O"], "tox": [1, None]}
            ),
            Example({"tokens": ["x"]}, {"sent": "pos", "y": "2.5"}),
        ]
    )
    assert b.targets["ner"][0].tolist() == [[1, 2, 0], [0, 0, 0]]
    assert b.targets["ner"][1].tolist() == [[True] * 3, [False] * 3]
    assert b.targets["sent"][0].tolist() == [0, 1] and b.targets["sent"][1].tolist() == [
        False,
        True,
    ]
    assert b.targets["tox"][0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert b.targets["tox"][1].tolist() == [[True, False], [False, False]]
    assert b.targets["y"][0].tolist() == [[0.0], [2.5]] and b.targets["y"][1].tolist() == [
        [False],
        [True],
    ]
