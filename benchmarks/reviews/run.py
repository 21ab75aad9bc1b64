"""STL vs MTL for the product-review example (examples/reviews/), fixed seeds.

    .venv/bin/python benchmarks/reviews/run.py                      # everything (hours on 2 cores)
    .venv/bin/python benchmarks/reviews/run.py --only en_scratch_hier --seeds 3
    .venv/bin/python benchmarks/reviews/run.py --only en_minilm_hard --seeds 1 \
        --set trainer.epochs=2
    .venv/bin/python benchmarks/reviews/run.py --table  # print the tables of what was measured

Each configuration runs `polytask compare` (the multi-task model and one single-task model
per task, same encoder, splits, stopping rule and per-task step budget) on seeds
``seed, seed+1, ...`` and reports the test metrics (mean ± std over seeds): sentiment
accuracy and macro-F1, aspect / entity span F1 (seqeval strict: exact span and type),
ABSA-F1 for the unified scheme (the span F1 of the `absa` task), Δm with its paired 95%
CI, seeds, epochs (configured, and the best validation epoch of each MTL run) and the
wall time of the whole comparison. The data-scarce study (`scarce`:
en_scratch_hier_scarce.yaml, aspects on 10 % of the training sentences, alone vs beside
the full sentiment task) adds the paired 95% CI of the aspect F1 difference.

Results accumulate in benchmarks/results/reviews.json (one entry per configuration, so
configurations can be measured one at a time and re-measured); the run directories go to
benchmarks/results/reviews/<config>/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from polytask.config.errors import ConfigError
from polytask.config.load import read_config
from polytask.evaluation.stats import mean_std, paired_ci95
from polytask.runs import compare, versions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "reviews"
RESULTS = ROOT / "benchmarks" / "results"
#: config name (examples/reviews/<name>.yaml) -> its row label in the tables
CONFIGS = {
    "en_scratch_hier": "en / scratch / hierarchical (headline)",
    "en_scratch_hard": "en / scratch / hard",
    "en_scratch_hier_wd": (
        "en / scratch / hierarchical + word dropout 0.25 (chosen after measuring)"
    ),
    "en_minilm_hier": "en / MiniLM / hierarchical",
    "en_minilm_hard": "en / MiniLM / hard",
    "zh_scratch_hier": "zh / scratch / hierarchical",
    "zh_scratch_hard": "zh / scratch / hard",
    "en_scratch_absa": "en / scratch / hierarchical, unified ABSA tags",
    "en_scratch_hier_scarce": "en / scratch / hierarchical, aspects on 10 % of the data",
}
#: (task, metric, column) in table order; absent pairs are left out of a row
COLUMNS = [
    ("sentiment", "accuracy", "sent. acc"),
    ("sentiment", "macro_f1", "sent. macro-F1"),
    ("aspects", "f1", "aspect F1"),
    ("ner", "f1", "entity F1"),
    ("absa", "f1", "ABSA-F1"),
]


def _per_seed(summary: dict[str, Any], side: str, task: str, metric: str) -> list[float]:
    return [s[side][task][metric] for s in summary["per_seed"]]


def key_of(name: str, variant: str | None) -> str:
    """The results key (and run directory name) of a configuration and its variant."""
    return name if not variant else f"{name}@{variant}"


def measure(
    name: str,
    seeds: int,
    overrides: list[str],
    resume: bool = False,
    variant: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run `polytask compare` on one configuration and keep what the tables need.

    Single-task baselines are shared by all configurations and variants through
    benchmarks/results/reviews/baselines/ (keyed by what they depend on), so variants that
    differ only in the balancing method train them once."""
    path = EXAMPLES / f"{name}.yaml"
    cfg, raw = read_config(path, overrides)
    out = RESULTS / "reviews" / key_of(name, variant)
    start = time.perf_counter()
    try:
        compare(
            cfg,
            raw,
            path.parent,
            out,
            seeds=seeds,
            resume=resume,
            overwrite=overwrite,
            baselines=RESULTS / "reviews" / "baselines",
        )
    except ConfigError as err:  # Δm undefined: the per-task table was still written
        print(f"{name}: {err}")
    summary = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    # seeds read back by --resume: their own timing, not this invocation's
    wall = (
        sum(s["cost"].get("compare_seconds", 0.0) for s in summary["per_seed"])
        or time.perf_counter() - start
    )
    best_epochs = []
    for s in summary["seeds"]:
        results = json.loads(
            (out / f"seed{s}" / "mtl" / "results.json").read_text(encoding="utf-8")
        )
        best_epochs.append(results["best_epoch"] + 1)  # 1-based, as in "after epoch k"
    metrics: dict[str, Any] = {}
    for task, metric, _ in COLUMNS:
        if task in summary["stl"]:
            stl, mtl = (
                _per_seed(summary, "stl", task, metric),
                _per_seed(summary, "mtl", task, metric),
            )
            metrics[f"{task}.{metric}"] = {
                "stl": mean_std(stl),
                "mtl": mean_std(mtl),
                "stl_per_seed": stl,
                "mtl_per_seed": mtl,
                "paired_ci95": paired_ci95(mtl, stl),
            }
    return {
        "config": str(path.relative_to(ROOT)),
        "variant": variant,
        "overrides": overrides,
        "seeds": summary["seeds"],
        "epochs": cfg.trainer.epochs,
        "patience": cfg.trainer.patience,
        "best_epochs_mtl": best_epochs,
        "metrics": metrics,
        "delta_m": summary["delta_m"],
        "delta_m_per_seed": summary["delta_m_per_seed"],
        "delta_m_ci95": summary.get("ci95"),
        "wall_seconds": wall,
        "cost": summary["cost"],
        "versions": versions(),
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
    }


def _pm(pair: tuple[float, float] | list[float], n: int) -> str:
    mean, std = pair
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "")


def _rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(results key, row label) in CONFIGS order, each configuration's variants after it."""
    rows = []
    for name, label in CONFIGS.items():
        if name == "en_scratch_hier_scarce":
            continue
        keys = sorted(k for k in results if k == name or k.startswith(f"{name}@"))
        rows += [(k, label + (f" — {k.partition('@')[2]}" if "@" in k else "")) for k in keys]
    return rows


def tables(results: dict[str, Any]) -> str:
    """Markdown: one row per configuration and side (STL, MTL), then the scarce study."""
    head = (
        ["configuration", "model"]
        + [c for _, _, c in COLUMNS]
        + ["Δm % [95% CI]", "seeds", "epochs (best)", "wall"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in _rows(results):
        r = results[key]
        n = len(r["seeds"])
        for side in ("stl", "mtl"):
            cells = [label if side == "stl" else "", side.upper()]
            for task, metric, _ in COLUMNS:
                m = r["metrics"].get(f"{task}.{metric}")
                cells.append(_pm(m[side], n) if m else "")
            if side == "stl":
                cells += ["", "", "", ""]
            else:
                dm = r["delta_m"]
                ci = r["delta_m_ci95"]
                cells.append(
                    "undefined"
                    if dm is None
                    else f"{dm:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
                )
                cells.append(", ".join(str(s) for s in r["seeds"]))
                cells.append(f"{r['epochs']} ({', '.join(str(e) for e in r['best_epochs_mtl'])})")
                cells.append(f"{r['wall_seconds'] / 60:.0f} min")
            lines.append("| " + " | ".join(cells) + " |")
    scarce = results.get("en_scratch_hier_scarce")
    if scarce is not None:
        m = scarce["metrics"]["aspects.f1"]
        n = len(scarce["seeds"])
        d, lo, hi = m["paired_ci95"]
        lines += [
            "",
            "Data-scarce: aspects trained on 10 % of the training sentences (en / scratch / "
            "hierarchical)",
            "",
            "| aspect F1 | alone (STL) | beside full sentiment (MTL) | MTL − STL [paired 95% CI] "
            "| seeds | wall |",
            "|---|---|---|---|---|---|",
            (
                f"| laptop test | {_pm(m['stl'], n)} | {_pm(m['mtl'], n)} | {d:+.3f} [{lo:+.3f}, "
                f"{hi:+.3f}] | "
                f"{', '.join(str(s) for s in scarce['seeds'])} | "
                f"{scarce['wall_seconds'] / 60:.0f} min |"
            ),
            "",
            "per seed (STL → MTL): "
            + ", ".join(f"{a:.3f} → {b:.3f}" for a, b in zip(m["stl_per_seed"], m["mtl_per_seed"])),
        ]
    return "\n".join(lines) + "\n"


def goals(results: dict[str, Any]) -> str:
    """The issue's goals, on the test set: aspect F1 of the STL and the MTL model of each
    configuration (mean over seeds), and Δm of the headline configuration."""
    out = []
    for label, names, goal in (
        ("MiniLM", ("en_minilm_hier", "en_minilm_hard"), 0.78),
        ("scratch", ("en_scratch_hier", "en_scratch_hard", "en_scratch_hier_wd"), 0.70),
    ):
        for n in names:
            r = results.get(n)
            if r is None:
                continue
            f1 = r["metrics"]["aspects.f1"]
            cells = ", ".join(
                f"{side.upper()} {f1[side][0]:.3f} "
                f"({'reached' if f1[side][0] >= goal else 'not reached'})"
                for side in ("stl", "mtl")
            )
            out.append(f"- laptop aspect F1 ≥ {goal} ({label}, {n}): {cells}")
    head = results.get("en_scratch_hier")
    if head is not None and head["delta_m"] is not None:
        out.append(
            f"- Δm ≥ 0 for the headline (en_scratch_hier): {head['delta_m']:+.2f} % -> "
            f"{'reached' if head['delta_m'] >= 0 else 'NOT reached'}"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--only", nargs="*", choices=list(CONFIGS), help="configurations to measure (default: all)"
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per configuration (default: 3 scratch, 1 MiniLM, 1 unified ABSA, 5 scarce)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. trainer.epochs=2",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the seeds an interrupted run finished "
        "(benchmarks/results/reviews/<config>/seed<s>/)",
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="measure again from scratch, replacing the seeds a former run left",
    )
    ap.add_argument(
        "--variant",
        default=None,
        help="a label for these overrides (e.g. joint-nash_mtl): results go to "
        "<config>@<variant>, beside the configuration's own entry",
    )
    ap.add_argument(
        "--table",
        action="store_true",
        help="only print the tables of benchmarks/results/reviews.json",
    )
    args = ap.parse_args()
    path = RESULTS / "reviews.json"
    if not args.table:
        for name in args.only or list(CONFIGS):
            seeds = args.seeds or (
                5 if name.endswith("scarce") else 1 if "minilm" in name or "absa" in name else 3
            )
            print(f"== {name}: {seeds} seed(s) {args.overrides}", flush=True)
            entry = measure(name, seeds, args.overrides, args.resume, args.variant, args.overwrite)
            # re-read: another invocation may have written other configurations meanwhile
            results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            results[key_of(name, args.variant)] = entry
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
            print(f"wrote {path}", flush=True)
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    print(tables(results))
    print(goals(results))


if __name__ == "__main__":
    main()
