"""Census income (UCI Adult): single-task models vs six sharing architectures, N seeds.

    nice .venv/bin/python benchmarks/architectures/adult.py --seeds 10

Tasks (the MMoE paper's census setting adapted to Adult, see ``polytask.data.adult``):
income > 50K and marital status = never married, with marital-status and relationship
removed from the inputs. Inputs: 6 standardised numeric columns + 6 embedded categorical
columns (``polytask.nn.TabularMLP``; categories unseen in training -> OOV). Seed ``s``
carves the validation part of adult.data, initialises every model and orders the
batches; adult.test is the test set, read once per model after training. Metric:
ROC-AUC per task. Prints the tables and writes benchmarks/results/adult_architectures.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stl_vs_mtl import (
    Split,
    load_partial,
    per_task_diff_table,
    run_seed,
    save_partial,
    summarise,  # noqa: E402
    table,
    write_json,
)

from polytask.data.adult import adult_tasks, load_adult  # noqa: E402
from polytask.engine.trainer import TrainerConfig  # noqa: E402
from polytask.nn import ClassifierHead, TabularEmbedding, TabularMLP  # noqa: E402
from polytask.sharing import CGC, MTAN, PLE, CrossStitch, HardSharing, MMoE, SoftSharing  # noqa: E402

ARCHS = ("hard", "mmoe", "cgc", "ple", "soft", "mtan", "cross_stitch")


def builders(numeric: int, cards: list[int], args: argparse.Namespace) -> tuple:
    tasks = adult_tasks()

    def enc() -> TabularMLP:
        return TabularMLP(numeric, cards, args.hidden, dropout=args.dropout)

    def heads(names, width):
        return {t: ClassifierHead(width, tasks[t].kind.output_size) for t in names}

    def gate() -> TabularEmbedding:  # gates read the embedded row, as in the MMoE / PLE papers
        return TabularEmbedding(numeric, cards)

    def from_parts(cls, **options):
        return lambda names: cls.from_parts(
            encoder=enc,
            tasks=list(names),
            heads=lambda w: {t: ClassifierHead(w[t], 1) for t in names},
            **options,
        )

    width = args.hidden[-1]
    stl = lambda names: HardSharing(enc(), heads(names, width))  # noqa: E731
    archs = {
        "hard": stl,
        "mmoe": lambda names: MMoE(
            [enc() for _ in range(args.experts)], heads(names, width), gate_encoder=gate()
        ),
        "cgc": lambda names: CGC(
            [enc()], {t: [enc()] for t in names}, heads(names, width), gate_encoder=gate()
        ),
        "ple": lambda names: PLE(
            [enc()], {t: [enc()] for t in names}, heads(names, width), levels=2, gate_encoder=gate()
        ),
        "soft": from_parts(SoftSharing, weight=args.soft_weight),
        "mtan": from_parts(MTAN),
        "cross_stitch": from_parts(CrossStitch),
    }
    return stl, {a: archs[a] for a in args.archs}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 32])
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--experts", type=int, default=4, help="MMoE experts")
    ap.add_argument("--soft-weight", type=float, default=1e-3, help="λ of soft sharing's L2 tie")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--resume", action="store_true", help="keep the seeds an interrupted run finished"
    )
    ap.add_argument("--out", default="adult_architectures.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tasks = adult_tasks()
    config = TrainerConfig(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_batch_size=2048,
        threads=args.threads,
    )
    results, started = (
        (load_partial(args.out, vars(args)) if args.resume else []),
        time.perf_counter(),
    )
    resumed = [r.seed for r in results]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if seed in resumed:
            continue
        data = load_adult(seed=seed)
        stl, archs = builders(data.numeric, data.cardinalities, args)
        split = Split(data.train, data.val, data.test)
        results.append(run_seed(seed, "adult", split, tasks, stl, archs, "tabular", config))
        save_partial(args.out, vars(args), results)
    wall = time.perf_counter() - started
    results.sort(key=lambda r: r.seed)
    summary = summarise(results, tasks)
    names = list(tasks)
    print(
        f"\nUCI Adult, test ROC-AUC, {len(results)} seeds ({results[0].seed}..{results[-1].seed}), "
        f"wall {wall / 60:.1f} min\n"
    )
    print(table(summary, names, "AUC"))
    print("\nPer-task AUC difference to single-task, paired over seeds: mean [95% CI]\n")
    print(per_task_diff_table(summary, names))
    path = write_json(
        args.out,
        {
            "benchmark": "uci-adult",
            "args": vars(args),
            "wall_seconds": wall,
            "resumed_seeds": resumed,
            "summary": summary,
            "per_seed": [r.__dict__ for r in results],
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
