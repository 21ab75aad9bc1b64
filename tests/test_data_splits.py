"""split / subsample: sizes, disjointness, order, determinism by seed."""

from __future__ import annotations

import pytest

from polytask.data import split, subsample

ITEMS = list(range(100))


def test_split_sizes_partition_and_order():
    train, val, test = split(ITEMS, (0.8, 0.1, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert sorted(train + val + test) == ITEMS
    assert all(part == sorted(part) for part in (train, val, test))  # original order kept


def test_split_is_deterministic_by_seed():
    assert split(ITEMS, seed=3) == split(ITEMS, seed=3)
    assert split(ITEMS, seed=3) != split(ITEMS, seed=4)


def test_split_rounding_and_val_fraction():
    parts = split(list(range(7)), (0.5, 0.25, 0.25), seed=1)
    assert [len(p) for p in parts] == [4, 1, 2]  # boundaries floor(3.5+.5)=4, floor(5.25+.5)=5, 7
    train, val = split(ITEMS, val_fraction=0.25, seed=0)
    assert (len(train), len(val)) == (75, 25) and not set(train) & set(val)


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        split(ITEMS, (0.5, 0.2))
    with pytest.raises(ValueError, match="val_fraction"):
        split(ITEMS, val_fraction=1.5)


def test_subsample():
    a = subsample(ITEMS, 10, seed=0)
    assert len(a) == 10 and a == sorted(a) and set(a) <= set(ITEMS)
    assert a == subsample(ITEMS, 10, seed=0) != subsample(ITEMS, 10, seed=1)
    assert len(subsample(ITEMS, fraction=0.3, seed=0)) == 30
    assert subsample(ITEMS, 1000) == ITEMS
    with pytest.raises(ValueError, match="exactly one"):
        subsample(ITEMS)
