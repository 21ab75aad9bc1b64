"""Where one training step's time goes on the GPU: polytask beside torchjd on the step-cost
model (benchmarks/balancing/step_cost.py; default 1024 -> 4 x 2048, batch 512), with
``torch.profiler``: the wall time per step and the operators that take the most CUDA and
CPU time (launch-bound steps show many small kernels; a host synchronisation shows as
``cudaStreamSynchronize`` / ``aten::item``).

    python3 benchmarks/gpu/profile_step.py [--K 2 40] [--methods upgrad uw] [--top 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "balancing"))

import step_cost as sc  # noqa: E402


def wall(step, n: int = 20) -> float:
    for _ in range(3):
        step()
    sc._sync()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        sc._sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--K", type=int, nargs="+", default=[2, 40])
    ap.add_argument("--methods", nargs="+", default=["upgrad", "uw"])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-torchjd", action="store_true")
    args = ap.parse_args()
    sc.DEVICE = torch.device(args.device)
    if sc.DEVICE.type == "cuda":
        sc.IN_DIM, sc.WIDTH, sc.DEPTH, sc.BATCH = 1024, 2048, 4, 512
    for k in args.K:
        base, batches = sc.build_model(k), sc.make_batches(k)
        runners = [sc.sum_runner(k, base, batches)]
        for m in args.methods:
            method = sc.make_method(m)
            levels = ["-"] if isinstance(method, sc.LossWeighting) else ["params", "features"]
            runners += [sc.polytask_runner(m, lv, k, base, batches) for lv in levels]
            if not args.no_torchjd and m in sc.peers.torchjd_methods(k):
                runners.append(sc.torchjd_runner(m, k, base, batches))
        for r in runners:
            ms = wall(r.step)
            activities = [ProfilerActivity.CPU]
            if sc.DEVICE.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            with profile(activities=activities) as prof:
                for _ in range(5):
                    r.step()
                sc._sync()
            key = "self_cuda_time_total" if sc.DEVICE.type == "cuda" else "self_cpu_time_total"
            print(f"\n=== K={k} {r.library} {r.method} {r.level}: {ms:.2f} ms per step")
            print(
                prof.key_averages().table(sort_by=key, row_limit=args.top, max_name_column_width=40)
            )
            print(
                prof.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=6, max_name_column_width=40
                )
            )


if __name__ == "__main__":
    main()
