"""STL vs MTL on the Chinese review/NER pair (the `make demo` config), several seeds.

    .venv/bin/python benchmarks/zh_reviews_compare.py --seeds 3 [--set trainer.epochs=5 ...]

Prints the comparison table and writes benchmarks/results/zh_reviews_compare.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from polytask.config.load import read_config
from polytask.runs import compare, versions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--config", default=str(ROOT / "examples" / "zh_reviews" / "demo.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zh_reviews_compare"))
    args = ap.parse_args()
    cfg, raw = read_config(args.config, args.overrides)
    out = Path(args.out)
    summary = compare(
        cfg, raw, Path(args.config).resolve().parent, out, seeds=args.seeds, overwrite=True
    )
    print((out / "compare.md").read_text(encoding="utf-8"))
    record = {
        "config": args.config,
        "overrides": args.overrides,
        "seeds": summary["seeds"],
        "stl": summary["stl"],
        "mtl": summary["mtl"],
        "delta_m": summary["delta_m"],
        "delta_m_per_seed": summary["delta_m_per_seed"],
        "ci95": summary.get("ci95"),
        "cost": summary["cost"],
        "versions": versions(),
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
    }
    path = ROOT / "benchmarks" / "results" / "zh_reviews_compare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
