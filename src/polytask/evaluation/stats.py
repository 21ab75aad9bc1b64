"""Summary statistics over seeds: mean ± std and paired Student-t 95% intervals.

A paired comparison of runs ``a_i`` and ``b_i`` (same seed ``i``) uses the differences
``d_i = a_i − b_i``: with ``n`` seeds, mean ``d̄`` and sample standard deviation ``s``,

    95% CI = d̄ ± t_{0.975, n−1} · s / √n        (Student, 1908).

The quantile ``t_{0.975, df}`` comes from a table for ``df ≤ 30`` (exact to 6 decimals) and
from the Cornish–Fisher expansion about the normal quantile beyond (Abramowitz & Stegun
26.7.5; error < 1e-7 for ``df > 30``), so scipy is not needed.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from polytask.evaluation.delta_m import delta_m

#: t_{0.975, df} for df = 1..30
_T975 = (
    12.706205,
    4.302653,
    3.182446,
    2.776445,
    2.570582,
    2.446912,
    2.364624,
    2.306004,
    2.262157,
    2.228139,
    2.200985,
    2.178813,
    2.160369,
    2.144787,
    2.131450,
    2.119905,
    2.109816,
    2.100922,
    2.093024,
    2.085963,
    2.079614,
    2.073873,
    2.068658,
    2.063899,
    2.059539,
    2.055529,
    2.051831,
    2.048407,
    2.045230,
    2.042272,
)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """``t_{0.975, df}``, the two-sided 95% Student-t quantile with ``df ≥ 1`` degrees of
    freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _floats(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name}: no values given")
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample std)`` with ``ddof = 1``; the std of a single value is 0."""
    xs = _floats(values, "mean_std")
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t 95% interval of the mean; ``nan`` bounds when n = 1."""
    xs = _floats(values, "t_interval")
    mean, std = mean_std(xs)
    if len(xs) == 1:
        return mean, math.nan, math.nan
    half = t_quantile_975(len(xs) - 1) * std / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def paired_ci95(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """``(mean_diff, low, high)`` of ``a − b`` over paired runs (seed ``i`` with seed ``i``)."""
    if len(a) != len(b):
        raise ValueError(f"paired_ci95: {len(a)} values in a but {len(b)} in b; pair them by seed")
    return t_interval([x - y for x, y in zip(_floats(a, "paired_ci95"), _floats(b, "paired_ci95"))])


def paired_delta_m_ci(
    per_seed_mtl: Sequence[Mapping[str, float]],
    per_seed_stl: Sequence[Mapping[str, float]],
    higher_is_better: Mapping[str, bool],
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of Δm over seeds, Δm_i comparing MTL seed i with STL seed i."""
    if len(per_seed_mtl) != len(per_seed_stl):
        raise ValueError(
            f"paired_delta_m_ci: {len(per_seed_mtl)} MTL seeds but {len(per_seed_stl)} STL seeds; "
            "pair them by seed"
        )
    return t_interval([delta_m(m, s, higher_is_better) for m, s in zip(per_seed_mtl, per_seed_stl)])
