"""Examples per second of the review model: one process vs two gloo ranks (torchrun) on the
CPU, one GPU where there is one; and each gradient method's cost under data-parallel
training relative to the plain sum under the same setting.

The model is the headline review configuration (examples/reviews/en_scratch_hier.yaml:
word + character BiLSTM, 2 layers of 100, hierarchical sharing, CRF aspect tagger and
attention-pooled sentiment head, batch 32), dropout as configured, trained on synthetic
sentences shaped like SemEval-2014 laptops (lengths 5–40 tokens, a 3,000-word vocabulary):
throughput depends on shapes, not on content, and the GPU machine has no data sets.

Settings, each timed over ``--steps`` steps after ``--warmup`` steps, in interleaved rounds
(these machines are noisy; the median over rounds is reported):

* ``1 process``: one process with ``--threads`` threads (default 2: the machine's cores);
* ``1 thread``: one process with one thread (what each rank gets);
* ``2 ranks``: ``torchrun --nproc_per_node=2`` with 1 thread each (the same cores), global
  batch 32 (16 per rank);
* ``gpu`` (``--gpu``): one process on ``cuda``.

Per method: examples per second, and the ratio of its step time to the plain sum's in the
same setting (``fixed``, weights 1). ``--methods`` defaults to every gradient method.

    .venv/bin/python benchmarks/throughput.py [--rounds 3] [--steps 30] [--methods ...]
    python3 benchmarks/throughput.py --gpu --json OUT.json      # GPU only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def gradient_methods() -> list[str]:
    """``fixed`` (the plain sum, every ratio's reference) and every gradient method."""
    from polytask import balancing
    from polytask.balancing.base import LossWeighting

    grads = [n for n in balancing.available() if not isinstance(balancing.make(n), LossWeighting)]
    return ["fixed", *grads]


def write_data(folder: Path, n: int = 3000, seed: int = 0) -> Path:
    """Synthetic review sentences (tokens, BIO aspect tags, a sentiment label) and the
    headline model's config over them; returns the config path."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    lines = []
    for _ in range(n):
        length = rng.randint(5, 40)
        tokens = [rng.choice(words) for _ in range(length)]
        tags, inside = [], False
        for _ in tokens:
            r = rng.random()
            tag = "B-ASP" if r < 0.08 else ("I-ASP" if inside and r < 0.5 else "O")
            inside = tag != "O"
            tags.append(tag)
        label = rng.choice(["positive", "negative", "neutral", "mixed"])
        lines.append(json.dumps({"tokens": tokens, "tags": tags, "label": label}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    base = yaml.safe_load((ROOT / "examples/reviews/en_scratch_hier.yaml").read_text("utf-8"))
    base["data"] = {
        "sources": {
            "laptops": {
                "format": "jsonl",
                "train": "train.jsonl",
                "tasks": {"sentiment": "label", "aspects": "tags"},
            }
        },
        "val_fraction": 0.01,
        "vocab": base["data"]["vocab"],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False), "utf-8")
    return path


def measure(config: Path, method: str, steps: int, warmup: int, device: str, threads: int) -> float:
    """Seconds per step of ``method`` (this process's share of the work under torchrun)."""
    from polytask.config.build import Experiment
    from polytask.config.load import read_config
    from polytask.engine.distributed import init_world
    from polytask.engine.trainer import Trainer

    overrides = [
        f"balancing={{method: {method}}}",
        f"trainer.device={device}",
        f"trainer.threads={threads}",
        "trainer.progress=false",
    ]
    cfg, _ = read_config(config, overrides)
    exp = Experiment(cfg, config.parent)
    world = init_world(device)
    trainer = Trainer(
        exp.build_model(),
        exp.tasks,
        exp.build_method(),
        exp.trainer_config(max_steps=warmup + steps, epochs=1, log_every=10**9),
        sampler=exp.build_sampler(exp.train_sources()),
        world=world,
    )
    stamps: dict[int, float] = {}
    logged = trainer._log_step

    def stamp(fit: Any, losses: Any, lr: float) -> None:  # after every step's update
        logged(fit, losses, lr)
        if fit.state.step in (warmup, warmup + steps):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps[fit.state.step] = time.perf_counter()

    trainer._log_step = stamp  # type: ignore[method-assign]
    val = {s: v[:8] for s, v in exp.train_sources(split="val").items()}
    trainer.fit(exp.train_sources(), val, exp.collator())
    return (stamps[warmup + steps] - stamps[warmup]) / steps


def worker(args: argparse.Namespace) -> None:
    """One setting, every method: seconds per step as JSON on rank 0's stdout."""
    out = {
        m: measure(args.config, m, args.steps, args.warmup, args.device, args.threads)
        for m in args.methods
    }
    if os.environ.get("RANK", "0") == "0":
        print("RESULT " + json.dumps(out), flush=True)
    from polytask.engine.distributed import world_size_from_env

    if world_size_from_env() > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def run_setting(
    args: argparse.Namespace, config: Path, ranks: int, device: str, threads: int
) -> dict[str, float]:
    own = [
        "--worker",
        "--config",
        str(config),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--device",
        device,
        "--threads",
        str(threads),
        "--methods",
        *args.methods,
    ]
    script = str(Path(__file__).resolve())
    if ranks == 1:
        cmd = [sys.executable, script, *own]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            script,
            *own,
        ]
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=path)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{cmd}: exit {done.returncode}\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return {k: float(v) for k, v in json.loads(line.removeprefix("RESULT ")).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", help="default: fixed and every gradient method")
    ap.add_argument("--gpu", action="store_true", help="only one process on cuda")
    ap.add_argument(
        "--settings",
        nargs="+",
        default=["1 process", "1 thread", "2 ranks"],
        help="which CPU settings to time (names as in the table)",
    )
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/throughput.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.methods = args.methods or gradient_methods()
    if args.worker:
        worker(args)
        return
    settings = (
        {"gpu": (1, "cuda", 1)}
        if args.gpu
        else {
            "1 process": (1, "cpu", args.threads),
            "1 thread": (1, "cpu", 1),
            "2 ranks": (2, "cpu", 1),
        }
    )
    if not args.gpu:
        settings = {k: v for k, v in settings.items() if k in args.settings}
    batch = 32
    with tempfile.TemporaryDirectory() as tmp:
        config = write_data(Path(tmp))
        rounds: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
        for _ in range(args.rounds):
            for name, (ranks, device, threads) in settings.items():
                rounds[name].append(run_setting(args, config, ranks, device, threads))
    table: dict[str, dict[str, Any]] = {}
    for name, results in rounds.items():
        rows = {}
        for m in args.methods:
            step = statistics.median(r[m] for r in results)
            ratio = (
                statistics.median(r[m] / r["fixed"] for r in results)
                if "fixed" in results[0]
                else None
            )
            rows[m] = {
                "seconds_per_step": step,
                "examples_per_second": batch / step,
                "vs_sum": ratio,
            }
        table[name] = rows
    print(f"{'setting':<10} {'method':<9} {'ex/s':>8} {'vs sum':>7}")
    for name, rows in table.items():
        for m, r in rows.items():
            ratio = "" if r["vs_sum"] is None else f"{r['vs_sum']:.2f}x"
            print(f"{name:<10} {m:<9} {r['examples_per_second']:8.1f} {ratio:>7}")
    if "1 process" in table and "2 ranks" in table:
        for m in args.methods:
            speedup = (
                table["2 ranks"][m]["examples_per_second"]
                / table["1 process"][m]["examples_per_second"]
            )
            print(f"2 ranks / 1 process, {m}: {speedup:.2f}x examples per second")
    device_name = torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else "cpu"
    record = {
        "date": dt.date.today().isoformat(),
        "device": device_name,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "batch": batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "threads_one_process": args.threads,
        "settings": table,
        "raw": rounds,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2), "utf-8")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
