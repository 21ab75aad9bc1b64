"""What training diagnostics cost: the review model trained with diagnostics at the default
``every`` and with them off, side by side in one process.

The Chinese review model of ``examples/zh_reviews/demo.yaml`` (character BiLSTM,
hierarchical sharing, joint sampler: sentiment and NER batches in every step), the same
initial weights and batches. Two methods bound the cost: the demo's ``nash_mtl`` (a Gramian
method at the shared parameters: a sample reuses its Gramian, no extra backward pass) and
``fixed`` weights (a loss weighting: a sample takes K retained backward passes of its own).

1. **Per step** (robust on a busy machine): on each of ``--pairs`` steps the same batches go
   through ``train_step`` without and with a probe (order alternating, gradients cleared
   between); the median extra time of a sample over the median time of a step's forward
   and backward pass gives the overhead at the default ``every`` (an upper bound: the
   optimiser's update is left out of the step time).
2. **End to end**: ``Trainer.fit`` with a run directory (diagnostics are written only with
   one), ``--steps`` steps, interleaved off, on, off, on, ...; median of the per-pair ratios.

The budget is ≤ 5 % of training time (ratio ≤ 1.05).

    .venv/bin/python benchmarks/diagnostics_cost.py [--repeats 3] [--pairs 30] [--steps 100]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from polytask.config.build import Experiment
from polytask.config.load import read_config
from polytask.engine.diagnostics import DEFAULT_EVERY, Probe
from polytask.engine.trainer import Trainer
from polytask.runs import versions

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1.05


def build(method: str, args: argparse.Namespace) -> Experiment:
    cfg, _ = read_config(
        ROOT / "examples" / "zh_reviews" / "demo.yaml",
        [
            f"data.sources.reviews.limit={args.limit}",
            f"data.sources.news.limit={args.limit}",
            "trainer.epochs=10",
            f"trainer.max_steps={args.steps}",
            f"trainer.threads={args.threads}",
            f"balancing.method={method}",
        ],
    )
    return Experiment(cfg, ROOT / "examples" / "zh_reviews")


def per_step(exp: Experiment, pairs: int) -> dict[str, float]:
    """Median time of a step's forward and backward pass, and of a sample's extra work."""
    train = exp.train_sources()
    model = exp.build_model()
    trainer = Trainer(
        model,
        exp.tasks,
        exp.build_method(),
        exp.trainer_config(progress=False),
        sampler=exp.build_sampler(train),
    )
    loader = trainer.make_loader(train, exp.collator())
    plain, probed = [], []
    for i, batches in enumerate(loader.iterate(0)):
        if i >= pairs:
            break
        times = {}
        for mode in ("plain", "probe") if i % 2 == 0 else ("probe", "plain"):
            model.zero_grad(set_to_none=True)
            probe = Probe() if mode == "probe" else None
            t0 = time.perf_counter()
            trainer.train_step(batches, probe=probe)
            if probe is not None:
                json.dumps(probe.entry)  # what the log line costs
            times[mode] = time.perf_counter() - t0
        plain.append(times["plain"])
        probed.append(times["probe"] - times["plain"])
    step, extra = statistics.median(plain), statistics.median(probed)
    return {
        "step_seconds": step,
        "sample_extra_seconds": extra,
        "overhead_at_default": max(extra, 0.0) / (DEFAULT_EVERY * step),
    }


def end_to_end(exp: Experiment, repeats: int) -> dict[str, Any]:
    base = exp.build_model()
    train = exp.train_sources()
    val = {s: v[:64] for s, v in exp.train_sources(split="val").items()}
    times: dict[str, list[float]] = {"off": [], "on": []}
    ratios, steps, samples = [], 0, 0
    for _ in range(repeats):
        for mode in ("off", "on"):
            tcfg = exp.trainer_config(
                progress=False, diagnostics_every=DEFAULT_EVERY if mode == "on" else 0
            )
            trainer = Trainer(
                copy.deepcopy(base),
                exp.tasks,
                exp.build_method(),
                tcfg,
                sampler=exp.build_sampler(train),
            )
            with tempfile.TemporaryDirectory() as run:
                t0 = time.perf_counter()
                steps = trainer.fit(train, val, exp.collator(), run_dir=run).steps
                times[mode].append(time.perf_counter() - t0)
                lines = Path(run, "diagnostics.jsonl")
                if mode == "on":
                    samples = len(lines.read_text().splitlines())
        ratios.append(times["on"][-1] / times["off"][-1])
    return {
        "steps": steps,
        "samples": samples,
        "seconds_off": times["off"],
        "seconds_on": times["on"],
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end pairs per method")
    ap.add_argument("--pairs", type=int, default=30, help="per-step pairs per method")
    ap.add_argument("--limit", type=int, default=1200)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="nash_mtl,fixed")
    ap.add_argument("--end-to-end", default="fixed", help="methods trained end to end")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        exp = build(method, args)
        row: dict[str, Any] = {"method": method, **per_step(exp, args.pairs)}
        if method in args.end_to_end.split(","):
            row["end_to_end"] = end_to_end(exp, args.repeats)
        rows.append(row)
    print(f"every {DEFAULT_EVERY} steps (the default), {args.threads} thread(s)")
    print(f"{'method':10}{'step s':>9}{'sample +s':>11}{'overhead':>10}   end to end on/off")
    for r in rows:
        e = r.get("end_to_end")
        tail = (
            f"median {e['ratio_median']:.3f} (min {e['ratio_min']:.3f}, max "
            f"{e['ratio_max']:.3f}; {e['samples']} samples in {e['steps']} steps)"
            if isinstance(e, dict)
            else "-"
        )
        print(
            f"{r['method']:10}{r['step_seconds']:>9.3f}{r['sample_extra_seconds']:>11.3f}"
            f"{r['overhead_at_default']:>9.1%}   {tail}"
        )
    worst = max(float(r["overhead_at_default"]) for r in rows)
    result = {
        "model": "examples/zh_reviews/demo.yaml",
        "every": DEFAULT_EVERY,
        "limit": args.limit,
        "threads": args.threads,
        "budget": BUDGET,
        "worst_overhead_at_default": worst,
        "within_budget": worst <= BUDGET - 1,
        "rows": rows,
        "versions": versions(),
    }
    path = ROOT / "benchmarks" / "results" / "diagnostics_cost.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
