"""Tabular preprocessing (training statistics only, OOV index) and the UCI Adult loader."""

from __future__ import annotations

import math
import statistics

import pytest
from shared_data import require_data

from polytask.data.tabular import OOV_INDEX, TabularPreprocessor

ROWS = [
    {"age": 20, "gain": 0, "job": "a", "city": "x"},
    {"age": 30, "gain": 99, "job": "b", "city": "?"},
    {"age": 40, "gain": 0, "job": "a", "city": "y"},
    {"age": 50, "gain": 9, "job": "c", "city": "x"},
]


def test_standardises_with_training_statistics_and_indexes_categories() -> None:
    prep = TabularPreprocessor(["age", "gain"], ["job", "city"], log1p=["gain"]).fit(ROWS)
    assert prep.mean["age"] == 35.0 and prep.std["age"] == pytest.approx(math.sqrt(125.0))
    logs = [math.log1p(v) for v in (0, 99, 0, 9)]
    assert prep.mean["gain"] == pytest.approx(sum(logs) / 4)
    assert prep.categories == {
        "job": ["a", "b", "c"],
        "city": ["x", "y"],
    }  # '?' is missing, not a category
    assert prep.cardinalities == [3, 2]
    out = prep.transform({"age": 45, "gain": 99, "job": "c", "city": "y"})
    assert out["features"][0] == pytest.approx(10 / math.sqrt(125.0))
    assert out["features"][1] == pytest.approx(
        (math.log1p(99) - prep.mean["gain"]) / prep.std["gain"]
    )
    assert out["categorical"] == [3, 2]
    standardised = [prep.transform(r)["features"][0] for r in ROWS]
    assert statistics.fmean(standardised) == pytest.approx(0.0)
    assert statistics.pstdev(standardised) == pytest.approx(1.0)


def test_unknown_missing_and_rare_categories_map_to_oov() -> None:
    prep = TabularPreprocessor(["age"], ["job", "city"], min_count=2).fit(ROWS)
    assert prep.categories["job"] == ["a"] and prep.categories["city"] == ["x"]
    assert prep.transform({"age": 1, "job": "b", "city": "?"})["categorical"] == [
        OOV_INDEX,
        OOV_INDEX,
    ]
    assert prep.transform({"age": 1, "job": "never seen", "city": "x"})["categorical"] == [
        OOV_INDEX,
        1,
    ]
    assert prep.transform({"age": "?", "job": "a", "city": None}) == {
        "features": [0.0],
        "categorical": [1, 0],
    }


def test_constant_column_and_errors() -> None:
    prep = TabularPreprocessor(["k"], []).fit([{"k": 3}, {"k": 3}])
    assert prep.std["k"] == 1.0 and prep.transform({"k": 3})["features"] == [0.0]
    with pytest.raises(RuntimeError, match="fit"):
        TabularPreprocessor(["k"], []).transform({"k": 1})
    with pytest.raises(ValueError, match="both"):
        TabularPreprocessor(["k"], ["k"])
    with pytest.raises(ValueError, match="log1p"):
        TabularPreprocessor(["k"], [], log1p=["z"])
    with pytest.raises(ValueError, match="no column"):
        TabularPreprocessor(["k", "z"], []).fit([{"k": 1}])
    with pytest.raises(ValueError, match="numeric column 'k'"):
        TabularPreprocessor(["k"], []).fit([{"k": "abc"}])


def test_adult_loader_tasks_inputs_and_splits() -> None:
    require_data("uci-adult/adult.test")
    from polytask.data import load_adult
    from polytask.data.adult import ADULT_CATEGORICAL, ADULT_NUMERIC, adult_tasks

    data = load_adult(seed=3)
    assert (len(data.train), len(data.val), len(data.test)) == (29305, 3256, 16281)
    assert "marital-status" not in ADULT_CATEGORICAL and "relationship" not in ADULT_CATEGORICAL
    assert data.numeric == len(ADULT_NUMERIC) == 6 and len(data.cardinalities) == 6
    ex = data.test[0]  # "25, Private, ..., Never-married, ..., <=50K."
    assert ex.targets == {"income": 0, "never_married": 1}
    assert sum(e.targets["income"] for e in data.test) == 3846
    assert all(
        len(e.inputs["features"]) == 6 and len(e.inputs["categorical"]) == 6
        for e in data.train[:50]
    )
    age = [e.inputs["features"][0] for e in data.train]
    assert statistics.fmean(age) == pytest.approx(0.0, abs=1e-9)
    assert statistics.pstdev(age) == pytest.approx(1.0)
    # the split is by seed; the test file is fixed
    other = load_adult(seed=4)
    assert [e.id for e in other.val] != [e.id for e in data.val]
    assert set(adult_tasks()) == {"income", "never_married"}
    assert adult_tasks()["income"].primary_metric == "roc_auc"
