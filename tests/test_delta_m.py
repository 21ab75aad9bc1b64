import math

import pytest

from polytask.evaluation import (
    delta_m,
    mean_std,
    paired_ci95,
    paired_delta_m_ci,
    t_interval,
    t_quantile_975,
)


def test_delta_m_hand_computed():
    mtl = {"sentiment": 0.80, "pos": 0.50}
    stl = {"sentiment": 0.75, "pos": 0.40}
    hib = {"sentiment": True, "pos": False}  # pos metric is an error (lower is better)
    # (+(0.80 − 0.75)/0.75 − (0.50 − 0.40)/0.40) / 2 × 100 = (1/15 − 1/4) / 2 × 100
    assert delta_m(mtl, stl, hib) == pytest.approx((1 / 15 - 1 / 4) / 2 * 100)
    assert delta_m(stl, stl, hib) == 0.0
    # a lower error is an improvement
    assert delta_m({"pos": 0.3}, {"pos": 0.4}, {"pos": False}) == pytest.approx(25.0)


def test_delta_m_errors():
    hib = {"a": True, "b": True}
    with pytest.raises(ValueError, match="only in MTL: \\['b'\\]"):
        delta_m({"a": 1.0, "b": 1.0}, {"a": 1.0}, hib)
    for bad in (0.0, -0.2, float("nan")):
        with pytest.raises(ValueError, match="task 'a'"):
            delta_m({"a": 1.0}, {"a": bad}, hib)
    with pytest.raises(ValueError, match="direction of tasks \\['c'\\]"):
        delta_m({"c": 1.0}, {"c": 1.0}, hib)
    with pytest.raises(ValueError, match="multi-task metric of task 'a'"):
        delta_m({"a": float("nan")}, {"a": 1.0}, hib)


def test_mean_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5) and std == pytest.approx(math.sqrt(5 / 3))  # ddof = 1
    assert mean_std([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_paired_ci95_hand_computed():
    # differences 2, 3, 2: mean 7/3, s = sqrt(1/3), half-width t_{.975,2} · s/√3 = 4.302653 / 3
    mean, low, high = paired_ci95([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - 4.302653 / 3, 7 / 3 + 4.302653 / 3))
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_ci95([1.0, 2.0], [1.0])
    m, lo, hi = paired_ci95([2.0], [1.0])
    assert m == 1.0 and math.isnan(lo) and math.isnan(hi)


def test_paired_delta_m_ci_hand_computed():
    hib = {"a": True}
    stl = [{"a": 1.0}, {"a": 2.0}]
    mtl = [{"a": 1.1}, {"a": 2.4}]  # Δm per seed: 10 and 20
    mean, low, high = paired_delta_m_ci(mtl, stl, hib)
    # s = sqrt(50), half-width = 12.706205 · sqrt(50)/sqrt(2) = 12.706205 · 5
    assert mean == pytest.approx(15.0)
    assert (low, high) == pytest.approx((15.0 - 63.531025, 15.0 + 63.531025))
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_delta_m_ci(mtl, stl[:1], hib)


def test_t_quantile_textbook_values_and_limit():
    for df, value in [
        (1, 12.706),
        (2, 4.303),
        (5, 2.571),
        (10, 2.228),
        (30, 2.042),
        (40, 2.021),
        (60, 2.000),
        (120, 1.980),
    ]:
        assert t_quantile_975(df) == pytest.approx(value, abs=1e-3)
    values = [t_quantile_975(df) for df in range(1, 500)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert t_quantile_975(10**6) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 61)) + [75, 100, 250, 1000]:
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-6)


def test_t_interval_contains_mean_symmetrically():
    mean, low, high = t_interval([1.0, 4.0, 2.0, 8.0])
    assert low < mean < high and mean - low == pytest.approx(high - mean)
