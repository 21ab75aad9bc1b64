"""Examples per second: joint steps (every source in every step) vs one-source steps.

The `make demo` model (character BiLSTM, hierarchical sharing, sentiment + NER over two
data sets) trained for a fixed number of steps with the same total batch size: under the
demo's temperature sampler each step is one batch of 32 from one source; under
``sampler: {type: joint}`` each step is 16 + 16 examples from both sources, one forward
pass per source. Same fixed weights, same optimiser; interleaved A, B, A, B, ...; the
median of the per-pair ratios of examples per second is reported (these machines are
noisy).

    .venv/bin/python benchmarks/joint_speed.py [--repeats 5] [--steps 40] [--limit 1000]
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
from polytask.data.samplers import JointSampler
from polytask.engine.trainer import Trainer
from polytask.runs import versions

ROOT = Path(__file__).resolve().parents[1]


def examples_per_second(exp: Experiment, base: torch.nn.Module, sampler, steps: int) -> float:
    """Train a fresh copy of ``base`` for ``steps`` steps; examples seen per second."""
    model = copy.deepcopy(base)
    train = exp.train_sources()
    val = {s: v[:32] for s, v in exp.train_sources(split="val").items()}
    cfg = exp.trainer_config(max_steps=steps, epochs=1, progress=False, log_every=10**9)
    trainer = Trainer(model, exp.tasks, exp.build_method(), cfg, sampler=sampler)
    loader = trainer.make_loader(train, exp.collator())
    seen = sum(len(idx) for step in loader.plan(0)[:steps] for idx in step.values())
    start = time.perf_counter()
    trainer.fit(train, val, exp.collator())
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = read_config(
        ROOT / "examples" / "zh_reviews" / "demo.yaml",
        [
            f"data.sources.reviews.limit={args.limit}",
            f"data.sources.news.limit={args.limit}",
            f"trainer.threads={args.threads}",
        ],
    )
    exp = Experiment(cfg, ROOT / "examples" / "zh_reviews")
    base = exp.build_model()
    one_source, joint, ratios = [], [], []
    for _ in range(args.repeats):
        a = examples_per_second(exp, base, exp.build_sampler(exp.train_sources()), args.steps)
        b = examples_per_second(exp, base, JointSampler(), args.steps)
        one_source.append(a)
        joint.append(b)
        ratios.append(b / a)
    result = {
        "one_source_examples_per_second": one_source,
        "joint_examples_per_second": joint,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "steps": args.steps,
        "limit": args.limit,
        "threads": args.threads,
        "versions": versions(),
    }
    print(f"{'':28}{'median ex/s':>12}")
    print(f"{'one source per step (T=2)':28}{statistics.median(one_source):>12.1f}")
    print(f"{'joint (16 + 16 per step)':28}{statistics.median(joint):>12.1f}")
    print(
        f"ratio joint/one-source: median {result['ratio_median']:.3f} "
        f"(min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}) over {args.repeats} pairs"
    )
    path = ROOT / "benchmarks" / "results" / "joint_speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
