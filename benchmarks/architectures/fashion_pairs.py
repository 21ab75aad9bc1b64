"""Fashion-MNIST pairs (MultiMNIST-style): single-task LeNets vs hard sharing, MTAN and
cross-stitch, N seeds.

    nice .venv/bin/python benchmarks/architectures/fashion_pairs.py --seeds 5

Data (``polytask.data.images.fashion_pairs``): each 36 × 36 input overlays two Fashion-MNIST
items, one near the top-left and one near the bottom-right corner, each shifted up to 4 px
towards the centre (pixel-wise max); task ``left`` / ``right`` = the 10-way class of each
item. Seed ``s`` draws the ``--train`` + ``--val`` images (a subsample of the 60 000 training
images, disjoint) and the partners and shifts of every pair, the test pairs (one per t10k
image, all 10 000 by default), initialises every model and orders the batches.

Models: the MultiMNIST LeNet of Sener & Koltun (2018) — conv(1→10, 5) + pool + ReLU,
conv(10→20, 5) + pool + ReLU, fc(720→50) + ReLU (``polytask.nn.LeNet``) — with a
Linear(50→50)-ReLU-Linear(50→10) head per task. Single-task: one LeNet + head per task.
hard: one shared LeNet, two heads. MTAN: shared LeNet + per-task attention at all three
depths (per channel and position on the two conv maps). cross-stitch: one LeNet per task,
stitched after both conv blocks (α initialised 0.9 / 0.1). Every model: the same
optimiser, batch size and epoch budget, validation after each epoch, best epoch kept
(``polytask.engine.Trainer``), test accuracy read once at the end. Prints the tables and
writes benchmarks/results/fashion_pairs_architectures.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stl_vs_mtl import Split, per_task_diff_table, run_seed, summarise, table, write_json  # noqa: E402

from polytask.data.images import FASHION_CLASSES, fashion_pairs  # noqa: E402
from polytask.engine.trainer import TrainerConfig  # noqa: E402
from polytask.nn import ClassifierHead, LeNet  # noqa: E402
from polytask.sharing import MTAN, CrossStitch, HardSharing  # noqa: E402
from polytask.tasks import Classification, Task  # noqa: E402

ARCHS = ("hard", "mtan", "cross_stitch")


def pair_tasks() -> dict[str, Task]:
    return {t: Task(t, Classification(list(FASHION_CLASSES))) for t in ("left", "right")}


def builders(args: argparse.Namespace) -> tuple:
    def enc() -> LeNet:
        return LeNet(dropout=args.dropout)

    def heads(widths):
        return {
            t: ClassifierHead(w, len(FASHION_CLASSES), hidden=args.head_hidden)
            for t, w in widths.items()
        }

    def shared(names):
        encoder = enc()
        return HardSharing(encoder, heads({t: encoder.output_dim for t in names}))

    archs = {
        "hard": shared,
        "mtan": lambda names: MTAN.from_parts(encoder=enc, heads=heads, tasks=list(names)),
        "cross_stitch": lambda names: CrossStitch.from_parts(
            encoder=enc, heads=heads, tasks=list(names)
        ),
    }
    return shared, {a: archs[a] for a in args.archs}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument(
        "--train", type=int, default=10000, help="training pairs (of the 60 000 training images)"
    )
    ap.add_argument(
        "--val", type=int, default=2000, help="validation pairs (disjoint training images)"
    )
    ap.add_argument("--test", type=int, default=10000, help="test pairs (t10k images)")
    ap.add_argument("--head-hidden", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="fashion_pairs_architectures.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tasks = pair_tasks()
    config = TrainerConfig(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_batch_size=1000,
        threads=args.threads,
    )
    stl, archs = builders(args)
    results, started = [], time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        data = fashion_pairs(seed=seed, n_train=args.train, n_val=args.val, n_test=args.test)
        split = Split(data["train"], data["val"], data["test"])
        results.append(run_seed(seed, "fashion-pairs", split, tasks, stl, archs, "image", config))
    wall = time.perf_counter() - started
    summary = summarise(results, tasks)
    names = list(tasks)
    print(
        f"\nFashion-MNIST pairs, test accuracy, {len(results)} seeds "
        f"({results[0].seed}..{results[-1].seed}), "
        f"{args.train} train / {args.val} val / {args.test} test pairs, {args.epochs} epochs, "
        f"wall {wall / 60:.1f} min\n"
    )
    print(table(summary, names, "accuracy"))
    print("\nPer-task accuracy difference to single-task, paired over seeds: mean [95% CI]\n")
    print(per_task_diff_table(summary, names))
    path = write_json(
        args.out,
        {
            "benchmark": "fashion-mnist-pairs",
            "args": vars(args),
            "wall_seconds": wall,
            "summary": summary,
            "per_seed": [r.__dict__ for r in results],
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
