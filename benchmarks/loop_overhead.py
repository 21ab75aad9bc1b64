"""Time per training epoch: polytask's Trainer vs a hand-written PyTorch loop.

Both run the same model (fresh copy, same initial weights), the same batches (the same
loader plan), AdamW, gradient clipping and one evaluation at the end of the epoch; the
Trainer adds its checks (finite losses), logging and the balancing seam. Runs are
interleaved A, B, A, B, ... and the median of the per-pair ratios is reported.

    .venv/bin/python benchmarks/loop_overhead.py [--repeats 5] [--limit 600]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from polytask.config.build import Experiment
from polytask.config.load import read_config
from polytask.engine.trainer import Trainer
from polytask.evaluation.evaluate import evaluate
from polytask.runs import versions

ROOT = Path(__file__).resolve().parents[1]


def plain_epoch(model, exp, loader, val, cfg) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for step in loader.iterate(0):
        for batch in step.values():
            present = batch.tasks
            out = model(batch.inputs, tasks=present)
            loss = sum(exp.tasks[t].kind.loss(out.outputs[t], *batch.targets[t]) for t in present)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    evaluate(model, exp.tasks, val, exp.collator())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = read_config(
        ROOT / "examples" / "zh_reviews" / "demo.yaml",
        [
            f"data.sources.reviews.limit={args.limit}",
            f"data.sources.news.limit={args.limit}",
            "trainer.epochs=1",
            f"trainer.threads={args.threads}",
            "model.encoder.dropout=0.0",
        ],
    )
    exp = Experiment(cfg, ROOT / "examples" / "zh_reviews")
    base = exp.build_model()
    train, val = exp.train_sources(), {s: v[:64] for s, v in exp.train_sources(split="val").items()}
    tcfg = exp.trainer_config(progress=False, log_every=10**9)
    ratios, a_times, b_times = [], [], []
    for _ in range(args.repeats):
        model = copy.deepcopy(base)
        trainer = Trainer(
            model, exp.tasks, exp.build_method(), tcfg, sampler=exp.build_sampler(train)
        )
        t0 = time.perf_counter()
        trainer.fit(train, val, exp.collator())
        a = time.perf_counter() - t0
        model = copy.deepcopy(base)
        loader = trainer.make_loader(train, exp.collator())
        t0 = time.perf_counter()
        plain_epoch(model, exp, loader, val, tcfg)
        b = time.perf_counter() - t0
        a_times.append(a)
        b_times.append(b)
        ratios.append(a / b)
    steps = trainer.make_loader(train, exp.collator()).steps_per_epoch
    result = {
        "steps_per_epoch": steps,
        "trainer_seconds": a_times,
        "plain_seconds": b_times,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "threads": args.threads,
        "limit": args.limit,
        "versions": versions(),
    }
    print(f"{'':24}{'median s':>10}")
    print(f"{'polytask Trainer':24}{statistics.median(a_times):>10.2f}")
    print(f"{'plain PyTorch loop':24}{statistics.median(b_times):>10.2f}")
    print(
        f"ratio Trainer/plain: median {result['ratio_median']:.3f} "
        f"(min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}) over {args.repeats} "
        f"pairs, {steps} steps"
    )
    path = ROOT / "benchmarks" / "results" / "loop_overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
