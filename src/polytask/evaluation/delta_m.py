"""Δm: the average relative gain of a multi-task model over single-task baselines.

Following Maninis, Radosavovic & Kokkinos (2019, "Attentive Single-Tasking of Multiple
Tasks") and Vandenhende et al. (2021, "Multi-Task Learning for Dense Prediction Tasks:
A Survey", eq. 17):

    Δm = (1/N) Σ_{i=1..N} (−1)^{l_i} (M_{mtl,i} − M_{stl,i}) / M_{stl,i} × 100,

with ``l_i = 1`` when lower is better for metric ``i`` and 0 otherwise. Δm > 0 means the
multi-task model is better on average. The single-task metric is a denominator, so it
must be positive: use Δm with metrics such as accuracy, F1, AUC, MAE or RMSE, not R² or
a loss that can be ≤ 0.
"""

from __future__ import annotations

import math
from typing import Mapping


def delta_m(
    mtl: Mapping[str, float], stl: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Δm in percent over the tasks (keys) of ``mtl`` and ``stl``, which must match."""
    if set(mtl) != set(stl):
        raise ValueError(
            f"delta_m: MTL and STL results must cover the same tasks; only in MTL: "
            f"{sorted(set(mtl) - set(stl))}, only in STL: {sorted(set(stl) - set(mtl))}"
        )
    if not mtl:
        raise ValueError("delta_m: no tasks given")
    missing = sorted(set(mtl) - set(higher_is_better))
    if missing:
        raise ValueError(f"delta_m: higher_is_better does not say the direction of tasks {missing}")
    total = 0.0
    for task in sorted(mtl):
        m, s = float(mtl[task]), float(stl[task])
        if not math.isfinite(s) or s <= 0:
            raise ValueError(
                f"delta_m: single-task metric of task {task!r} is {s}; Δm divides by it, so it "
                "must be a positive finite number (choose a positive metric for this task)"
            )
        if not math.isfinite(m):
            raise ValueError(
                f"delta_m: multi-task metric of task {task!r} is {m}, not a finite number"
            )
        sign = 1.0 if higher_is_better[task] else -1.0
        total += sign * (m - s) / s
    return 100.0 * total / len(mtl)
