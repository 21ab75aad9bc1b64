"""Tox21: per-assay models vs multi-task architectures on ECFP fingerprints, random and
scaffold splits.

    nice .venv/bin/python benchmarks/architectures/tox21.py --split random --seeds 5
    nice .venv/bin/python benchmarks/architectures/tox21.py --split scaffold --seeds 5

12 binary assays (MoleculeNet's tox21.csv, 17% of labels missing: masked out of losses
and metrics), ECFP4 inputs (Morgan radius 2, 2048 bits, RDKit; the 8 SMILES RDKit cannot
parse are left out and counted). Random split: 80/10/10 drawn by the seed. Scaffold split:
deterministic (DeepChem's rule, largest scaffolds to train); the seed then only sets
initialisation and batch order. Each assay's single-task model has the same encoder as a
tower of the multi-task models. Metric: ROC-AUC per assay on the test split, mean over the
12 assays. Needs the chem extra (pip install 'polytask[chem]'). Prints the tables and writes
benchmarks/results/tox21_architectures_<split>.json.
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

from polytask.data.molecules import load_tox21, tox21_tasks  # noqa: E402
from polytask.engine.trainer import TrainerConfig  # noqa: E402
from polytask.nn import MLP, ClassifierHead  # noqa: E402
from polytask.sharing import CGC, MTAN, PLE, CrossStitch, HardSharing, MMoE, SoftSharing  # noqa: E402

ARCHS = ("hard", "mmoe", "cgc", "ple", "soft", "mtan", "cross_stitch")


def builders(n_bits: int, args: argparse.Namespace) -> tuple:
    def enc(hidden=None) -> MLP:
        return MLP(n_bits, hidden or args.hidden, dropout=args.dropout)

    def expert() -> MLP:
        return enc(args.expert_hidden or args.hidden)

    def heads(names, width):
        return {t: ClassifierHead(width, 1) for t in names}

    def from_parts(cls, make=enc, **options):
        return lambda names: cls.from_parts(
            encoder=make,
            tasks=list(names),
            heads=lambda w: heads(names, next(iter(w.values()))),
            **options,
        )

    width = args.hidden[-1]
    ewidth = (args.expert_hidden or args.hidden)[-1]
    stl = lambda names: HardSharing(enc(), heads(names, width))  # noqa: E731
    archs = {
        "hard": stl,
        "mmoe": lambda names: MMoE([expert() for _ in range(args.experts)], heads(names, ewidth)),
        "cgc": lambda names: CGC(
            [expert() for _ in range(args.shared_experts)],
            {t: [expert()] for t in names},
            heads(names, ewidth),
        ),
        "ple": lambda names: PLE(
            [expert() for _ in range(args.shared_experts)],
            {t: [expert()] for t in names},
            heads(names, ewidth),
            levels=2,
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
    ap.add_argument("--split", choices=("random", "scaffold"), default="random")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--archs", nargs="+", default=["hard", "mmoe", "ple", "soft", "mtan"], choices=ARCHS
    )
    ap.add_argument(
        "--no-stl", action="store_true", help="skip the single-task models (tuning only)"
    )
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    ap.add_argument(
        "--expert-hidden",
        type=int,
        nargs="+",
        default=[128, 64],
        help="widths of each expert of MMoE / CGC / PLE",
    )
    ap.add_argument("--dropout", type=float, default=0.4)
    ap.add_argument("--experts", type=int, default=4, help="MMoE experts")
    ap.add_argument("--shared-experts", type=int, default=1, help="CGC / PLE shared experts")
    ap.add_argument(
        "--soft-weight",
        type=float,
        default=1e-4,
        help="λ of soft sharing's L2 tie (66 tower pairs)",
    )
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument(
        "--counts", action="store_true", help="log(1 + count) of the folded count fingerprint"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--resume", action="store_true", help="keep the seeds an interrupted run finished"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tasks = tox21_tasks()
    config = TrainerConfig(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        eval_batch_size=1024,
        threads=args.threads,
    )
    name = args.out or f"tox21_architectures_{args.split}.json"
    results, started = (load_partial(name, vars(args)) if args.resume else []), time.perf_counter()
    resumed = [r.seed for r in results]
    data = None
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if seed in resumed:
            continue
        if data is None or args.split == "random":  # the scaffold split does not depend on the seed
            data = load_tox21(split_by=args.split, seed=seed, n_bits=args.bits, counts=args.counts)
            print(
                f"split {args.split} seed {seed}: train {len(data.train)}, val {len(data.val)}, "
                f"test {len(data.test)}; {len(data.invalid)} unparsable SMILES left out",
                flush=True,
            )
        stl, archs = builders(args.bits, args)
        split = Split(data.train, data.val, data.test)
        if args.no_stl:
            stl = None
        results.append(run_seed(seed, args.split, split, tasks, stl, archs, "features", config))
        if not args.no_stl:
            save_partial(name, vars(args), results)
    wall = time.perf_counter() - started
    names = list(tasks)
    if args.no_stl:
        return
    results.sort(key=lambda r: r.seed)
    summary = summarise(results, tasks)
    print(
        f"\nTox21 ({args.split} split), test ROC-AUC mean over 12 assays, {len(results)} seeds "
        f"({results[0].seed}..{results[-1].seed}), wall {wall / 60:.1f} min\n"
    )
    print(table(summary, names, "AUC", show_tasks=False))
    print("\nPer-assay AUC, mean ± std over seeds\n")
    print(per_assay_table(summary, names))
    print("\nPer-assay AUC difference to single-task, paired over seeds: mean [95% CI]\n")
    print(per_task_diff_table(summary, names))
    if data is None:  # every seed was resumed
        data = load_tox21(
            split_by=args.split, seed=args.first_seed, n_bits=args.bits, counts=args.counts
        )
    path = write_json(
        name,
        {
            "benchmark": "tox21",
            "split": args.split,
            "args": vars(args),
            "wall_seconds": wall,
            "resumed_seeds": resumed,
            "invalid_smiles": data.invalid,
            "sizes": [len(data.train), len(data.val), len(data.test)],
            "summary": summary,
            "per_seed": [r.__dict__ for r in results],
        },
    )
    print(f"\nwrote {path}")


def per_assay_table(summary: dict, names: list[str]) -> str:
    models = {"single-task": summary["stl"], **summary["architectures"]}
    rows = ["| assay | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for t in names:
        rows.append(
            f"| {t} | "
            + " | ".join(
                f"{m['per_task'][t]['mean']:.3f} ± {m['per_task'][t]['std']:.3f}"
                for m in models.values()
            )
            + " |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
