"""Hierarchical sharing on CoNLL-2003 (Søgaard & Goldberg 2016): POS, chunk and NER from one
file, single-task models vs all heads on the top layer (hard) vs low-level tasks read from
low layers (hierarchical), and NER on 10 % of the sentences beside full POS and chunk.

    .venv/bin/python benchmarks/conll2003.py --seeds 3 --epochs 5      # hours on 2 cores
    .venv/bin/python benchmarks/conll2003.py --only hier --seeds 1 --epochs 1
    .venv/bin/python benchmarks/conll2003.py --table    # print what was measured

Each configuration of examples/conll2003/ runs `polytask compare` (the multi-task model and
one single-task model per task: same encoder, splits, stopping rule and per-task step budget)
on seeds ``0 .. seeds-1``, into benchmarks/results/conll2003/<config>/, with single-task
models kept in benchmarks/results/conll2003/baselines/ (keyed by what they depend on; a
finished seed is reused with ``--resume``, the default). The table gives the test metrics
(eng.testa; mean ± std over seeds): POS token accuracy, chunk and NER span F1 (seqeval
strict), Δm with its paired 95 % CI, and the paired 95 % CI of hierarchical − hard per task
(the question of Søgaard & Goldberg: does supervising low-level tasks at low layers help the
higher task more than putting every task on top?). Results: benchmarks/results/conll2003.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from polytask.config.load import read_config
from polytask.evaluation.stats import mean_std, paired_ci95
from polytask.runs import compare, versions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "conll2003"
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = {
    "hard": "hard sharing (every head on layer 3)",
    "hier": "hierarchical (POS layer 1, chunk 2, NER 3)",
    "hier_scarce": "hierarchical, NER on 10 % of the sentences",
}
#: (task, metric, column) in table order
COLUMNS = [
    ("pos", "token_accuracy", "POS acc"),
    ("chunk", "f1", "chunk F1"),
    ("ner", "f1", "NER F1"),
]


def measure(name: str, seeds: int, overrides: list[str], resume: bool) -> dict[str, Any]:
    """`polytask compare` of examples/conll2003/<name>.yaml; what the table needs."""
    path = EXAMPLES / f"{name}.yaml"
    cfg, raw = read_config(path, overrides)
    out = RESULTS / "conll2003" / name
    start = time.perf_counter()
    summary = compare(
        cfg,
        raw,
        path.parent,
        out,
        seeds=seeds,
        resume=resume,
        overwrite=not resume,
        baselines=RESULTS / "conll2003" / "baselines",
    )
    wall = sum(s["cost"].get("compare_seconds", 0.0) for s in summary["per_seed"]) or (
        time.perf_counter() - start
    )
    best = [
        json.loads((out / f"seed{s}" / "mtl" / "results.json").read_text("utf-8"))["best_epoch"] + 1
        for s in summary["seeds"]
    ]
    metrics = {
        f"{t}.{m}": {side: [s[side][t][m] for s in summary["per_seed"]] for side in ("stl", "mtl")}
        for t, m, _ in COLUMNS
    }
    return {
        "config": str(path.relative_to(ROOT)),
        "overrides": overrides,
        "seeds": summary["seeds"],
        "epochs": cfg.trainer.epochs,
        "best_epochs_mtl": best,
        "metrics": metrics,
        "delta_m": summary["delta_m"],
        "delta_m_per_seed": summary["delta_m_per_seed"],
        "delta_m_ci95": summary.get("ci95"),
        "wall_seconds": wall,
        "cost": summary["cost"],
        "versions": versions(),
        "machine": platform.platform(),
    }


def _pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f}" + (f" ± {std:.4f}" if len(values) > 1 else "")


def _ci(pair: tuple[float, float, float] | None) -> str:
    if pair is None:
        return ""
    d, lo, hi = pair
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def tables(results: dict[str, Any]) -> str:
    """Markdown: STL and MTL rows per configuration, then hierarchical − hard per task."""
    head = ["configuration", "model"] + [c for *_, c in COLUMNS] + ["Δm % [95% CI]", "seeds"]
    head += ["epochs (best)", "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label in CONFIGS.items():
        r = results.get(name)
        if r is None:
            continue
        for side in ("stl", "mtl"):
            cells = [label if side == "stl" else "", side.upper()]
            cells += [_pm(r["metrics"][f"{t}.{m}"][side]) for t, m, _ in COLUMNS]
            if side == "stl":
                cells += ["", "", "", ""]
            else:
                dm, ci = r["delta_m"], r["delta_m_ci95"]
                cells.append(f"{dm:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""))
                cells.append(", ".join(map(str, r["seeds"])))
                cells.append(f"{r['epochs']} ({', '.join(map(str, r['best_epochs_mtl']))})")
                cells.append(f"{r['wall_seconds'] / 60:.0f} min")
            lines.append("| " + " | ".join(cells) + " |")
    hier, hard = results.get("hier"), results.get("hard")
    if hier and hard and hier["seeds"] == hard["seeds"] and len(hier["seeds"]) > 1:
        lines += [
            "",
            "Hierarchical − hard (multi-task models, same seeds; paired 95 % CI):",
            "",
            "| task | hierarchical − hard |",
            "|---|---|",
        ]
        for t, m, c in COLUMNS:
            a, b = hier["metrics"][f"{t}.{m}"]["mtl"], hard["metrics"][f"{t}.{m}"]["mtl"]
            lines.append(f"| {c} | {_ci(paired_ci95(a, b))} |")
    scarce = results.get("hier_scarce")
    if scarce and len(scarce["seeds"]) > 1:
        ner = scarce["metrics"]["ner.f1"]
        lines += [
            "",
            "NER on 10 % of the sentences, beside POS and chunk on all of them − alone: "
            f"{_ci(paired_ci95(ner['mtl'], ner['stl']))} F1 (paired 95 % CI)",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS), help="configurations to run")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    ap.add_argument("--epochs", type=int, default=None, help="trainer.epochs (default: config)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override")
    ap.add_argument(
        "--fresh", action="store_true", help="train every seed again instead of reusing it"
    )
    ap.add_argument("--table", action="store_true", help="only print the stored table")
    args = ap.parse_args()
    path = RESULTS / "conll2003.json"
    results = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    if not args.table:
        overrides = ["trainer.progress=false", *args.overrides]
        if args.epochs is not None:
            overrides.append(f"trainer.epochs={args.epochs}")
        for name in args.only or list(CONFIGS):
            results[name] = measure(name, args.seeds, overrides, resume=not args.fresh)
            path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", "utf-8")
    print(tables(results), end="")


if __name__ == "__main__":
    main()
