"""``polytask sweep``: tuned fixed weights, the strongest simple baseline, beside adaptive methods.

Every point of the grid (the Cartesian product of ``--grid KEY=V1,V2,...`` overrides,
e.g. ``balancing.weights.ner=0.1,0.3,1``) trains the configured model; the point with
the best validation criterion (``trainer.criterion``) is the tuned fixed weighting.
Each method named in ``methods`` is trained once with its default options. Test data is
read only for the final table: test metrics of the selected fixed weighting and of each
method, never used for selection.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .config.errors import ConfigError
from .config.load import apply_override, validate
from .config.names import check_registry_names
from .config.yaml_text import load_yaml
from .engine.checkpoint import atomic_write_text
from .engine.logs import write_json
from .runs import TrainResult, train


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["a.b=1,2", "c=x"]`` -> ``{"a.b": [1, 2], "c": ["x"]}`` (values parsed as YAML)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(
                f"--grid {item}",
                "not of the form KEY=V1,V2,...",
                "write e.g. --grid balancing.weights.ner=0.1,0.3,1",
            )
        grid[key] = [load_yaml(v, f"--grid {key}") for v in values.split(",")]
    return grid


def _trial_config(
    raw: Mapping[str, Any], assignments: Mapping[str, Any]
) -> tuple[Any, dict[str, Any]]:
    trial = copy.deepcopy(dict(raw))
    for key, value in assignments.items():
        apply_override(trial, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    return validate(trial), trial


def sweep(
    raw: Mapping[str, Any],
    base_dir: Path,
    out: Path,
    grid: Mapping[str, Sequence[Any]],
    methods: Sequence[str] = (),
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every grid point and every method; write sweep.json and sweep.md under ``out``.

    Each trial is a run directory under ``out`` and follows :func:`polytask.runs.train`'s
    rules: one a previous sweep left is continued with ``resume`` (a finished one is read back
    without training) or replaced with ``overwrite``, and is an error otherwise."""
    if not grid and not methods:
        raise ConfigError(
            "--grid", "nothing to sweep", "give --grid KEY=V1,V2 and/or --methods NAME,..."
        )
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file, not a directory", "give a directory")
    keys = list(grid)
    points = (
        [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
        if keys
        else []
    )
    # every trial's config is validated before the first one trains; ``out`` is created by
    # the first trial's run directory, once its config, data and model are built
    planned = [(_trial_config(raw, point), out / f"fixed_{i}") for i, point in enumerate(points)]
    planned += [
        (_trial_config(raw, {"balancing": {"method": name}}), out / f"method_{name}")
        for name in methods
    ]
    for n, ((cfg, _), _) in enumerate(planned):
        try:
            check_registry_names(cfg)
        except ConfigError as err:
            if n >= len(points) and err.option == "balancing.method":  # a name of --methods
                raise ConfigError("--methods", err.problem, err.fix) from None
            raise
    results = [
        _trial(cfg, trial_raw, base_dir, run, resume, overwrite)
        for (cfg, trial_raw), run in planned
    ]
    trials: list[dict[str, Any]] = [
        {"settings": point, "val_score": r.score, "val": r.val, "test": r.test}
        for point, r in zip(points, results)
    ]
    runs: list[dict[str, Any]] = [
        {"method": name, "val_score": r.score, "val": r.val, "test": r.test}
        for name, r in zip(methods, results[len(points) :])
    ]
    best = max(range(len(trials)), key=lambda i: trials[i]["val_score"]) if trials else None
    summary = {
        "criterion": validate(dict(raw)).trainer.criterion,
        "grid": {k: list(v) for k, v in grid.items()},
        "trials": trials,
        "best": best,
        "methods": runs,
    }
    write_json(out / "sweep.json", summary)
    atomic_write_text(out / "sweep.md", sweep_markdown(summary))
    return summary


def _trial(
    cfg: Any, raw: Mapping[str, Any], base_dir: Path, run: Path, resume: bool, overwrite: bool
) -> TrainResult:
    """One trial: resumed where a previous sweep left its run directory, else started."""
    started = run.exists() and any(run.iterdir())
    return train(cfg, raw, base_dir, run, resume=resume and started, overwrite=overwrite)


def sweep_markdown(summary: Mapping[str, Any]) -> str:
    """Validation criterion of every trial; test metrics of the selected weighting and the
    methods."""
    lines = [
        f"# Fixed-weight sweep (selection by validation {summary['criterion']})",
        "",
        "| trial | settings | val criterion |",
        "|---|---|---|",
    ]
    for i, t in enumerate(summary["trials"]):
        mark = " **(selected)**" if i == summary["best"] else ""
        settings = ", ".join(f"{k}={v}" for k, v in t["settings"].items())
        lines.append(f"| {i}{mark} | {settings} | {t['val_score']:.4f} |")
    rows = []
    if summary["best"] is not None:
        rows.append(("tuned fixed", summary["trials"][summary["best"]]))
    rows += [(m["method"], m) for m in summary["methods"]]
    if rows:
        tasks = list(rows[0][1]["test"])
        metrics = [(t, m) for t in tasks for m in rows[0][1]["test"][t]]
        lines += [
            "",
            "Test metrics (read once, after selection):",
            "",
            "| weighting | val criterion | " + " | ".join(f"{t} {m}" for t, m in metrics) + " |",
            "|---|---|" + "---|" * len(metrics),
        ]
        for name, r in rows:
            vals = " | ".join(f"{r['test'][t][m]:.4f}" for t, m in metrics)
            lines.append(f"| {name} | {r['val_score']:.4f} | {vals} |")
    return "\n".join(lines) + "\n"
