"""Shared runner of the architecture benchmarks: single-task models vs multi-task architectures.

Every model is trained by polytask's ``Trainer`` (validation after each epoch, best epoch's
weights kept, early stopping by patience) and scored by ``polytask.evaluation.evaluate`` on
the test split only at the end. Per seed ``s``, the single-task models and every
architecture get the same split, the same initialisation seed, the same optimiser,
batch size and epoch budget; summaries are mean ± std over seeds, Δm of the means, and
paired Student-t 95% intervals (``polytask.evaluation.stats``) of Δm and of each task's
metric difference against the single-task models of the same seed.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from polytask.data import Batch, Collator, Example
from polytask.engine.trainer import Trainer, TrainerConfig
from polytask.evaluation.delta_m import delta_m
from polytask.evaluation.evaluate import evaluate
from polytask.evaluation.stats import mean_std, paired_ci95, paired_delta_m_ci
from polytask.runs import versions
from polytask.sharing import MultiTaskModel
from polytask.tasks import Task

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

#: builds the model for these task names with the initialisation seed already set
Builder = Callable[[Sequence[str]], MultiTaskModel]


@dataclass
class Split:
    train: list[Example]
    val: list[Example]
    test: list[Example]


@dataclass
class RunResult:
    test: dict[str, dict[str, float]]
    val: dict[str, dict[str, float]]
    best_epoch: int
    epochs_run: int
    seconds: float
    parameters: int


@dataclass
class SeedResult:
    seed: int
    split: str
    stl: dict[str, dict[str, float]] = field(default_factory=dict)
    stl_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    mtl: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    mtl_runs: dict[str, dict[str, Any]] = field(default_factory=dict)


class CachedCollate:
    """The library's :class:`~polytask.data.Collator`, run once per example: later batches stack
    the cached rows. Gives the same tensors as the collator for inputs without padding
    (``features``, ``tabular``), without re-encoding every target at every step (on Tox21 that
    re-encoding is about half of the CPU time of a small model's step)."""

    def __init__(self, collator: Collator) -> None:
        self.collator = collator
        self.rows: dict[
            int, tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]
        ] = {}

    def __call__(self, examples: Sequence[Example], source: str = "") -> Batch:
        new = [ex for ex in examples if id(ex) not in self.rows]
        if new:
            b = self.collator(new, source)
            for i, ex in enumerate(new):
                self.rows[id(ex)] = (
                    {k: v[i] for k, v in b.inputs.items()},
                    {t: (y[i], m[i]) for t, (y, m) in b.targets.items()},
                )
        cached = [self.rows[id(ex)] for ex in examples]
        inputs = {k: torch.stack([c[0][k] for c in cached]) for k in cached[0][0]}
        targets = {
            t: (
                torch.stack([c[1][t][0] for c in cached]),
                torch.stack([c[1][t][1] for c in cached]),
            )
            for t in cached[0][1]
        }
        return Batch(
            inputs=inputs,
            targets=targets,
            source=source,
            size=len(examples),
            ids=[ex.id for ex in examples],
        )


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_and_test(
    build: Builder,
    names: Sequence[str],
    tasks: Mapping[str, Task],
    split: Split,
    input_kind: str,
    config: TrainerConfig,
    seed: int,
) -> RunResult:
    """Build (seeded), fit with validation early stopping, and score on the test split."""
    chosen = {t: tasks[t] for t in names}
    torch.manual_seed(seed)
    model = build(list(names))
    collate = CachedCollate(Collator(chosen, input_kind=input_kind))
    criterion = names[0] if len(names) == 1 else "mean"
    trainer = Trainer(model, chosen, config=replace(config, seed=seed, criterion=criterion))
    start = time.perf_counter()
    report = trainer.fit({"train": split.train}, {"val": split.val}, collate)
    test = evaluate(model, chosen, {"test": split.test}, collate, batch_size=config.eval_batch_size)
    return RunResult(
        test=test,
        val=report.best_metrics,
        best_epoch=report.best_epoch,
        epochs_run=len(report.history),
        seconds=time.perf_counter() - start,
        parameters=count(model),
    )


def run_seed(
    seed: int,
    split_name: str,
    split: Split,
    tasks: Mapping[str, Task],
    stl: Builder | None,
    architectures: Mapping[str, Builder],
    input_kind: str,
    config: TrainerConfig,
    log: Callable[[str], None] = print,
) -> SeedResult:
    """One seed: a single-task model per task (unless ``stl`` is None), then each architecture."""
    out = SeedResult(seed=seed, split=split_name)
    names = list(tasks)
    for t in names if stl is not None else []:
        r = train_and_test(stl, [t], tasks, split, input_kind, config, seed)
        out.stl[t] = r.test[t]
        out.stl_runs[t] = {k: v for k, v in asdict(r).items() if k not in ("test",)}
        log(
            f"  seed {seed} [{split_name}] STL {t:<14} val {r.val[t][tasks[t].primary_metric]:.4f} "
            f"test {fmt_metrics(r.test[t])} "
            f"(best epoch {r.best_epoch}/{r.epochs_run}, {r.seconds:.0f}s)"
        )
    for arch, build in architectures.items():
        r = train_and_test(build, names, tasks, split, input_kind, config, seed)
        out.mtl[arch] = r.test
        out.mtl_runs[arch] = {k: v for k, v in asdict(r).items() if k not in ("test",)}
        primary = {t: r.test[t][tasks[t].primary_metric] for t in names}
        val = {t: r.val[t][tasks[t].primary_metric] for t in names}
        log(
            f"  seed {seed} [{split_name}] {arch:<12} val mean {sum(val.values()) / len(val):.4f} "
            f"test mean {sum(primary.values()) / len(primary):.4f} "
            f"(best epoch {r.best_epoch}/{r.epochs_run}, {r.seconds:.0f}s, {r.parameters} params)"
        )
    return out


def fmt_metrics(m: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items())


def _pm(values: Sequence[float], digits: int = 4) -> dict[str, float]:
    mu, sd = mean_std(values)
    return {"mean": mu, "std": sd}


def summarise(results: Sequence[SeedResult], tasks: Mapping[str, Task]) -> dict[str, Any]:
    """Per architecture: per-task primary metric mean ± std, mean over tasks, Δm (of the means
    and per seed), paired 95% CI of Δm and of each task's difference to STL, and cost."""
    names = list(tasks)
    prim = {t: str(tasks[t].primary_metric) for t in names}
    hib = {t: bool(tasks[t].higher_is_better) for t in names}
    stl_vals = {t: [r.stl[t][prim[t]] for r in results] for t in names}
    stl_mean_over_tasks = [sum(r.stl[t][prim[t]] for t in names) / len(names) for r in results]
    summary: dict[str, Any] = {
        "seeds": [r.seed for r in results],
        "stl": {
            "per_task": {t: _pm(stl_vals[t]) for t in names},
            "mean_over_tasks": _pm(stl_mean_over_tasks),
            "seconds": _pm([sum(r.stl_runs[t]["seconds"] for t in names) for r in results]),
            "parameters": sum(results[0].stl_runs[t]["parameters"] for t in names),
            "best_epoch": {t: [r.stl_runs[t]["best_epoch"] for r in results] for t in names},
        },
        "architectures": {},
    }
    for arch in results[0].mtl:
        vals = {t: [r.mtl[arch][t][prim[t]] for r in results] for t in names}
        over = [sum(r.mtl[arch][t][prim[t]] for t in names) / len(names) for r in results]
        per_seed_mtl = [{t: r.mtl[arch][t][prim[t]] for t in names} for r in results]
        per_seed_stl = [{t: r.stl[t][prim[t]] for t in names} for r in results]
        dm_means = delta_m(
            {t: mean_std(vals[t])[0] for t in names},
            {t: mean_std(stl_vals[t])[0] for t in names},
            hib,
        )
        entry: dict[str, Any] = {
            "per_task": {t: _pm(vals[t]) for t in names},
            "mean_over_tasks": _pm(over),
            "delta_m": dm_means,
            "delta_m_per_seed": [delta_m(m, s, hib) for m, s in zip(per_seed_mtl, per_seed_stl)],
            "seconds": _pm([r.mtl_runs[arch]["seconds"] for r in results]),
            "parameters": results[0].mtl_runs[arch]["parameters"],
            "best_epoch": [r.mtl_runs[arch]["best_epoch"] for r in results],
        }
        if len(results) > 1:
            entry["delta_m_ci95"] = list(paired_delta_m_ci(per_seed_mtl, per_seed_stl, hib))
            entry["per_task_diff_ci95"] = {
                t: list(paired_ci95(vals[t], stl_vals[t])) for t in names
            }
            entry["mean_over_tasks_diff_ci95"] = list(paired_ci95(over, stl_mean_over_tasks))
        summary["architectures"][arch] = entry
    return summary


def _ci(ci: Sequence[float] | None, scale: float = 1.0, digits: int = 4) -> str:
    if not ci or any(math.isnan(c) for c in ci):
        return "—"
    return f"{ci[0] * scale:+.{digits}f} [{ci[1] * scale:+.{digits}f}, {ci[2] * scale:+.{digits}f}]"


def table(
    summary: Mapping[str, Any], tasks: Sequence[str], metric: str, show_tasks: bool = True
) -> str:
    """Markdown: one row per model; per-task metric mean ± std (optional), mean over tasks,
    Δm [paired 95% CI], training seconds per seed, parameters."""
    head = (
        ["model"]
        + (list(tasks) if show_tasks else [])
        + [
            f"mean {metric}",
            "Δm % (paired 95% CI)",
            "Δ mean (paired 95% CI)",
            "train s/seed",
            "params",
        ]
    )
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stl = summary["stl"]
    cells = ["single-task"] + (
        [f"{stl['per_task'][t]['mean']:.4f} ± {stl['per_task'][t]['std']:.4f}" for t in tasks]
        if show_tasks
        else []
    )
    cells += [
        f"{stl['mean_over_tasks']['mean']:.4f} ± {stl['mean_over_tasks']['std']:.4f}",
        "—",
        "—",
        f"{stl['seconds']['mean']:.0f}",
        str(stl["parameters"]),
    ]
    rows.append("| " + " | ".join(cells) + " |")
    for arch, e in summary["architectures"].items():
        cells = [arch] + (
            [f"{e['per_task'][t]['mean']:.4f} ± {e['per_task'][t]['std']:.4f}" for t in tasks]
            if show_tasks
            else []
        )
        ci = e.get("delta_m_ci95")
        dm = f"{e['delta_m']:+.2f}" + (f" [{ci[1]:+.2f}, {ci[2]:+.2f}]" if ci else "")
        cells += [
            f"{e['mean_over_tasks']['mean']:.4f} ± {e['mean_over_tasks']['std']:.4f}",
            dm,
            _ci(e.get("mean_over_tasks_diff_ci95")),
            f"{e['seconds']['mean']:.0f}",
            str(e["parameters"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def per_task_diff_table(summary: Mapping[str, Any], tasks: Sequence[str]) -> str:
    """Markdown: per architecture and task, the paired difference to single-task [95% CI]."""
    head = ["model"] + list(tasks)
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch, e in summary["architectures"].items():
        cis = e.get("per_task_diff_ci95", {})
        rows.append("| " + " | ".join([arch] + [_ci(cis.get(t)) for t in tasks]) + " |")
    return "\n".join(rows)


def load_partial(name: str, args: Mapping[str, Any]) -> list[SeedResult]:
    """Seeds already finished by an interrupted run with the same arguments (``<name>.partial``)."""
    path = RESULTS / f"{name}.partial"
    if not path.exists():
        return []
    saved = json.loads(path.read_text(encoding="utf-8"))
    same = {k: v for k, v in saved["args"].items() if k not in ("resume", "seeds")}
    if same != {
        k: v for k, v in json.loads(json.dumps(dict(args))).items() if k not in ("resume", "seeds")
    }:
        raise SystemExit(
            f"{path} was written with other arguments {saved['args']}; remove it or rerun with "
            "those"
        )
    return [SeedResult(**r) for r in saved["per_seed"]]


def save_partial(name: str, args: Mapping[str, Any], results: Sequence[SeedResult]) -> None:
    """Finished seeds so far, so that ``--resume`` can continue an interrupted run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.partial"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"args": dict(args), "per_seed": [asdict(r) for r in results]}, default=_jsonable
        ),
        encoding="utf-8",
    )
    tmp.replace(path)


def write_json(name: str, record: dict[str, Any]) -> Path:
    record = dict(
        record, versions=versions(), machine=platform.platform(), threads=torch.get_num_threads()
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(record, indent=2, default=_jsonable), encoding="utf-8")
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
