"""Per-seed comparison results -> means, Δm and a paired confidence interval."""

from __future__ import annotations

from typing import Any, Mapping

from ..config.build import Experiment
from ..evaluation.delta_m import delta_m
from ..evaluation.stats import mean_std, paired_delta_m_ci

__all__ = ["delta_m_or_error", "primary_metrics", "summarise"]


def primary_metrics(exp: Experiment) -> tuple[dict[str, str], dict[str, bool]]:
    """Each task's primary metric (the one Δm uses) and whether higher is better."""
    return (
        {t: str(task.primary_metric) for t, task in exp.tasks.items()},
        {t: bool(task.higher_is_better) for t, task in exp.tasks.items()},
    )


def delta_m_or_error(
    mtl: Mapping[str, float], stl: Mapping[str, float], hib: Mapping[str, bool]
) -> tuple[float | None, str | None]:
    """Δm, or ``None`` and the reason when it is undefined (a single-task metric ≤ 0)."""
    try:
        return delta_m(mtl, stl, hib), None
    except ValueError as err:
        message = str(err)
        return None, message[len("delta_m: ") :] if message.startswith("delta_m: ") else message


def summarise(
    name: str,
    per_seed: list[dict[str, Any]],
    prim: Mapping[str, str],
    hib: Mapping[str, bool],
    exp: Experiment,
) -> dict[str, Any]:
    """Mean (± std) over seeds, Δm of the means, and a paired 95% CI of Δm with ≥ 2 seeds."""

    def agg(side: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        mean: dict[str, dict[str, float]] = {}
        std: dict[str, dict[str, float]] = {}
        for t in per_seed[0][side]:
            mean[t], std[t] = {}, {}
            for m in per_seed[0][side][t]:
                mu, sd = mean_std([s[side][t][m] for s in per_seed])
                mean[t][m], std[t][m] = mu, sd
        return mean, std

    stl, stl_std = agg("stl")
    mtl, mtl_std = agg("mtl")

    def mean_of(values: list[Any]) -> Any:  # equal values (a parameter count) keep their type
        if all(v == values[0] for v in values):
            return values[0]
        if isinstance(values[0], dict):
            return {t: mean_of([v[t] for v in values]) for t in values[0]}
        return sum(values) / len(values)

    cost = {k: mean_of([s["cost"][k] for s in per_seed]) for k in per_seed[0]["cost"]}
    dm, error = delta_m_or_error(
        {t: mtl[t][prim[t]] for t in prim}, {t: stl[t][prim[t]] for t in prim}, hib
    )
    summary: dict[str, Any] = {
        "name": name,
        "seeds": [s["seed"] for s in per_seed],
        "stl": stl,
        "mtl": mtl,
        "delta_m": dm,
        "delta_m_per_seed": [s["delta_m"] for s in per_seed],
        "primary": dict(prim),
        "higher_is_better": {
            t: {m: exp.tasks[t].kind.higher_is_better(m) for m in stl[t]} for t in stl
        },
        "cost": cost,
        "per_seed": per_seed,
    }
    if error is not None or any(s["delta_m"] is None for s in per_seed):
        summary["delta_m"] = None
        summary["delta_m_error"] = (
            error or "Δm is undefined for at least one seed (a single-task metric ≤ 0)"
        )
    elif len(per_seed) > 1:
        summary["std"] = {"stl": stl_std, "mtl": mtl_std}
        mean, lo, hi = paired_delta_m_ci(
            [{t: s["mtl"][t][prim[t]] for t in prim} for s in per_seed],
            [{t: s["stl"][t][prim[t]] for t in prim} for s in per_seed],
            hib,
        )
        summary["ci95"] = [lo, hi]
        summary["delta_m_paired_mean"] = mean
    return summary
