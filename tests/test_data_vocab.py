"""Vocab: special ids, deterministic ordering, limits, JSON round trip, char vocab."""

from __future__ import annotations

import json

import pytest

from polytask.data import PAD_ID, UNK_ID, Vocab


def test_build_orders_by_frequency_then_token():
    v = Vocab.build([["b", "a", "c"], ["a", "c", "d"], ["a"]])
    assert v.itos == ["<pad>", "<unk>", "a", "c", "b", "d"]
    assert (PAD_ID, UNK_ID) == (0, 1) and len(v) == 6
    assert v.encode(["c", "zzz", "a"]) == [3, 1, 2]
    assert v.decode([2, 3]) == ["a", "c"]


def test_build_is_independent_of_input_order():
    data = [["x", "y", "y"], ["z", "x"], ["w"]]
    assert Vocab.build(data).itos == Vocab.build(list(reversed(data))).itos


def test_min_freq_max_size_lowercase():
    data = [["The", "the", "cat"], ["THE", "dog", "cat"]]
    assert Vocab.build(data, min_freq=2).itos[2:] == ["cat"]
    v = Vocab.build(data, lowercase=True, max_size=3)
    assert v.itos == ["<pad>", "<unk>", "the"]
    assert v.encode(["THE", "cat"]) == [2, 1]
    assert "tHe" in v and "cat" not in v


def test_json_round_trip():
    v = Vocab.build([["a", "B"]], lowercase=True)
    w = Vocab.from_json(json.loads(json.dumps(v.to_json())))
    assert w == v and w.lowercase and w.encode(["b"]) == v.encode(["b"])
    with pytest.raises(ValueError, match="to_json"):
        Vocab.from_json({"itos": ["a"]})


def test_char_vocab():
    v = Vocab.build_chars([["ab", "b"], ["cb"]])
    assert v.itos == ["<pad>", "<unk>", "b", "a", "c"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="list of tokens"):
        Vocab.build(["not", "lists"])
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build([["a"]], min_freq=0)
