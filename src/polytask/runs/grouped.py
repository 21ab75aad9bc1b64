"""``polytask group --train``: train a proposed task grouping and compare it, on test data,
with the all-in-one model and the single-task models.

Each group of two tasks or more is one multi-task network: its config is the run's config
restricted to the group's tasks (:func:`restrict_config`), trained and compared by
:func:`polytask.runs.compare` like any config; a group of one task is its single-task
model. Every task is served by the group its proposal names (TAG: the group where its
affinity is highest). For each seed, Δm of the grouping and of the all-in-one model are
taken against the same single-task models (the all-in-one comparison's), and their paired
difference gets a 95 % interval over seeds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..analysis.grouping import Grouping
from ..config.load import validate
from ..engine.logs import write_json
from ..evaluation.delta_m import delta_m
from ..evaluation.stats import mean_std, paired_ci95
from .comparison import compare

__all__ = ["restrict_config", "train_grouping"]


def restrict_config(raw: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, Any]:
    """``raw`` with only ``tasks``: their definitions, their fields in each source (a source
    left with none is dropped), their taps, task layers, heads, weights and criterion."""
    keep = set(tasks)
    out = copy.deepcopy(dict(raw))
    out["name"] = f"{raw.get('name', 'experiment')}-{'+'.join(tasks)}"
    out["tasks"] = {t: v for t, v in raw["tasks"].items() if t in keep}
    sources = {}
    for name, source in out["data"]["sources"].items():
        mapping = {t: f for t, f in (source.get("tasks") or {}).items() if t in keep}
        if mapping:
            sources[name] = {**source, "tasks": mapping}
    out["data"]["sources"] = sources
    model = out.get("model", {})
    for key in ("taps", "task_layers", "heads"):
        if isinstance(model.get(key), dict):
            model[key] = {t: v for t, v in model[key].items() if t in keep}
    balancing = out.get("balancing")
    if isinstance(balancing, dict) and isinstance(balancing.get("weights"), dict):
        balancing["weights"] = {t: w for t, w in balancing["weights"].items() if t in keep}
    trainer = out.get("trainer", {})
    criterion = trainer.get("criterion")
    if isinstance(criterion, str) and criterion.partition(".")[0] not in keep | {"mean", "*"}:
        trainer.pop("criterion")
    if isinstance(trainer.get("baselines"), dict):
        trainer["baselines"] = {t: v for t, v in trainer["baselines"].items() if t in keep}
    return out


def train_grouping(
    raw: Mapping[str, Any],
    base_dir: Path,
    out: Path,
    proposal: Grouping,
    seeds: int = 3,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Compare ``proposal`` with the all-in-one and single-task models over ``seeds``;
    writes ``out/grouping.json`` and returns it."""
    store = out / "baselines"
    everything = compare(
        validate(dict(raw)), raw, base_dir, out / "all", seeds, resume=resume, baselines=store
    )
    primary = everything["primary"]
    tasks = list(primary)
    higher = {t: bool(everything["higher_is_better"][t][primary[t]]) for t in tasks}
    per_group: dict[int, dict[str, Any]] = {}
    for g, members in enumerate(proposal.groups):
        if len(members) > 1 and any(proposal.serves[t] == g for t in members):
            sub = restrict_config(raw, members)
            per_group[g] = compare(
                validate(sub),
                sub,
                base_dir,
                out / f"group{g}",
                seeds,
                resume=resume,
                baselines=store,
            )
    seeds_run = [s["seed"] for s in everything["per_seed"]]
    grouped_dm, all_dm = [], []
    per_task: dict[str, dict[str, list[float]]] = {
        t: {"stl": [], "all": [], "grouped": []} for t in tasks
    }
    for i in range(len(seeds_run)):
        stl = {t: everything["per_seed"][i]["stl"][t][primary[t]] for t in tasks}
        together = {t: everything["per_seed"][i]["mtl"][t][primary[t]] for t in tasks}
        grouped = {}
        for t in tasks:
            g = proposal.serves[t]
            grouped[t] = (
                per_group[g]["per_seed"][i]["mtl"][t][primary[t]] if g in per_group else stl[t]
            )
            per_task[t]["stl"].append(stl[t])
            per_task[t]["all"].append(together[t])
            per_task[t]["grouped"].append(grouped[t])
        grouped_dm.append(delta_m(grouped, stl, higher))
        all_dm.append(delta_m(together, stl, higher))
    diff = paired_ci95(grouped_dm, all_dm) if len(seeds_run) > 1 else None
    result = {
        "groups": [list(g) for g in proposal.groups],
        "serves": dict(proposal.serves),
        "affinity_score": proposal.score,
        "seeds": seeds_run,
        "primary": primary,
        "per_task": {
            t: {k: mean_std(v)[0] for k, v in values.items()} for t, values in per_task.items()
        },
        "delta_m": {"grouped": mean_std(grouped_dm)[0], "all_in_one": mean_std(all_dm)[0]},
        "delta_m_per_seed": {"grouped": grouped_dm, "all_in_one": all_dm},
        "grouped_minus_all_ci95": None if diff is None else [diff[1], diff[2]],
    }
    write_json(out / "grouping.json", result)
    return result
