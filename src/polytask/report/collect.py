"""What a report shows, read from run and comparison directories — the numbers only.

A *run* directory (``polytask train``) gives the training losses per task over steps
(``train_log.csv``), the validation metrics per epoch (``metrics.csv``) and its results
(``results.json``). A *comparison* directory (``polytask compare``) gives the single- and
multi-task test metrics over seeds, Δm with its paired 95 % CI and the cost columns
(``compare.json``), and the learning curves of each seed's multi-task run. A *grouping*
directory (``polytask group --train``) gives each task's primary test metric single-task,
in the all-in-one network and in the network that serves it, with both Δm and the paired CI
of their difference (``grouping.json``). Files that
later versions add (``diagnostics.jsonl``: loss weights, gradient conflict, gate usage;
``affinity.json``) are read when present. Nothing here draws: :mod:`.figures` does.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.errors import ConfigError

__all__ = ["Curves", "ReportData", "collect"]


@dataclass
class Curves:
    """Learning curves of one training run."""

    #: task -> [(step, training loss)]
    train_loss: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    #: task -> metric -> [(epoch, validation value)]
    val_metrics: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    #: task -> [(step, weight the balancing method gave it)] (diagnostics, when logged)
    weights: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    #: [(step, {"a|b": cosine})] pairwise gradient cosines (diagnostics, when logged)
    cosines: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: task -> expert -> mean gate weight (diagnostics of gated architectures, when logged)
    gates: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ReportData:
    """One directory's numbers: a run or a comparison."""

    name: str
    kind: str  # "run" | "compare" | "grouping"
    directory: Path
    curves: Curves
    #: run: its results.json; compare: its compare.json; grouping: its grouping.json
    summary: dict[str, Any]
    #: task -> (K × K) affinity matrix with its task order, when affinity.json is present
    affinity: dict[str, Any] | None = None


def collect(directory: str | Path) -> ReportData:
    """The numbers of a run or comparison directory (a one-line error for anything else)."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(str(d), "not a directory", "give a run or comparison directory")
    if (d / "grouping.json").is_file():
        return ReportData(d.name, "grouping", d, Curves(), _json(d / "grouping.json"))
    if (d / "compare.json").is_file():
        summary = _json(d / "compare.json")
        first = _first_mtl_run(d)
        curves = _curves(first) if first is not None else Curves()
        return ReportData(
            str(summary.get("name") or d.name), "compare", d, curves, summary, _affinity(d)
        )
    if (d / "results.json").is_file():
        return ReportData(d.name, "run", d, _curves(d), _json(d / "results.json"), _affinity(d))
    raise ConfigError(
        str(d),
        "holds no results.json, compare.json or grouping.json",
        "give a finished run (polytask train), comparison (polytask compare) or grouping "
        "(polytask group --train)",
    )


def _first_mtl_run(d: Path) -> Path | None:
    runs = sorted(
        (p for p in d.glob("seed*/mtl") if (p / "train_log.csv").is_file()),
        key=lambda p: _seed_number(p.parent.name),
    )
    return runs[0] if runs else None


def _seed_number(name: str) -> int:
    digits = name.removeprefix("seed")
    return int(digits) if digits.isdigit() else 0


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(str(path), f"cannot be read ({err})", "restore it or run again") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "not a JSON object", "restore it or run again")
    return data


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _curves(run: Path) -> Curves:
    curves = Curves()
    for row in _rows(run / "train_log.csv"):
        step = int(float(row.get("step") or 0))
        for key, value in row.items():
            number = _number(value)
            if number is None:
                continue
            if key.startswith("loss_"):
                curves.train_loss.setdefault(key.removeprefix("loss_"), []).append((step, number))
            elif key.startswith("weight_"):
                curves.weights.setdefault(key.removeprefix("weight_"), []).append((step, number))
    for row in _rows(run / "metrics.csv"):
        metric_value, task = _number(row.get("value")), row.get("task") or ""
        if metric_value is None or not task:
            continue
        per_metric = curves.val_metrics.setdefault(task, {})
        point = (int(row["epoch"]), metric_value)
        per_metric.setdefault(row.get("metric") or "?", []).append(point)
    _diagnostics(run / "diagnostics.jsonl", curves)
    return curves


def _diagnostics(path: Path, curves: Curves) -> None:
    """Loss weights, pairwise gradient cosines and gate usage, where the run logged them."""
    if not path.is_file():
        return
    gates: dict[str, list[list[float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: the others still count
        step = int(entry.get("step", 0))
        for task, w in (entry.get("weights") or {}).items():
            curves.weights.setdefault(task, []).append((step, float(w)))
        if entry.get("cosines"):
            curves.cosines.append((step, {k: float(v) for k, v in entry["cosines"].items()}))
        # the top level's gates by task, then PLE's lower levels ("level d: task")
        for task, row in [
            *(entry.get("gates") or {}).items(),
            *(entry.get("lower_gates") or {}).items(),
        ]:
            gates.setdefault(task, []).append([float(v) for v in row])
    for task, rows in gates.items():  # the mean over the samples
        curves.gates[task] = [sum(col) / len(col) for col in zip(*rows)]


def _affinity(d: Path) -> dict[str, Any] | None:
    path = d / "affinity.json"
    return _json(path) if path.is_file() else None
