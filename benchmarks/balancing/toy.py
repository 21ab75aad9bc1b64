"""Quality of the balancing methods on two small problems, with plots.

1. The two-objective toy problem of CAGrad / Nash-MTL / FAMO (``benchmarks/toy_problems.py``:
   the official codes' definition, f2 with "+ tanh", L1 scaled by 0.1 as in the Nash-MTL
   and FAMO codes). Adam (lr 1e-3) from their five start points for ``--steps`` steps with
   every method; trajectories drawn in parameter space over the contour of L1 + L2 and in
   loss space, with the Pareto front, as ``benchmarks/results/toy_<method>.png`` and one
   overview ``toy_all.png``. Reported per start: the final θ, its distance to the Pareto
   set (computed here: the points x1 ∈ [−7, 7] where the two gradients are anti-parallel,
   x2 between −8.355 and −8.435; the papers draw the line x2 = −8.3552), its distance to
   that drawn line, and the Pareto-stationarity gap min_λ |λ ĝ1 + (1−λ) ĝ2| of the unit
   gradients (0 on the front). "Reached" = within ``--tol`` (0.05) of the Pareto set.
2. The GradNorm synthetic regression (Chen et al. 2018, §4; ``benchmarks/toy_problems.py``):
   T = 2 (σ = 1, 100) and T = 10 (σ spread 1…100), a 4 × 100 ReLU trunk, Adam; the metric
   is Σ_i L_i(t)/L_i(0) on the test set (lower is better), per method and seed, with
   gradient methods at the feature level (the trunk output) where they allow it.

    benchmarks/.venv-peers/bin/python benchmarks/balancing/toy.py [--steps 35000]
        [--methods sum mgda ...] [--problems pareto gradnorm] [--gn-steps 3000] [--seeds 3]

(The project venv works too: it needs only polytask and matplotlib.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # toy_problems

import methods  # noqa: E402
import toy_problems as toy  # noqa: E402

import polytask  # noqa: E402
from polytask import balancing  # noqa: E402
from polytask.balancing.base import GradientAggregator  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def toy_options(name: str, l1_scale: float) -> dict[str, Any]:
    """The settings of the official toy codes where they differ from polytask's defaults."""
    return {
        "cagrad": {"c": 0.5},
        # FAMO's toy: γ = 0 ("the objective is not changing") and the lower bounds of the losses
        "famo": {"weight_decay": 0.0, "min_losses": {"f1": -21.0 * l1_scale, "f2": -21.0}},
        "nash_mtl": {"update_every": 1},
    }.get(name, {})


# --------------------------------------------------------------------------- Pareto set
def pareto_set(l1_scale: float, n: int = 281) -> torch.Tensor:
    """Points (x1, x2) with x1 ∈ [−7, 7] where ∇L1 and ∇L2 are anti-parallel (the Pareto
    set of the toy in its conflict region), found on a fine x2 grid and refined by bisection."""
    x1 = torch.linspace(-7, 7, n, dtype=torch.float64)

    def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _, jac = toy.toy_losses_and_jacobian(torch.stack([a, b], dim=-1), l1_scale)
        return jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]

    grid = torch.linspace(-9.5, -7.5, 4001, dtype=torch.float64)
    c = cross(x1[:, None].expand(-1, grid.numel()), grid[None, :].expand(n, -1))
    change = torch.sign(c[:, :-1]) != torch.sign(c[:, 1:])
    idx = change.float().argmax(dim=1)
    lo, hi = grid[idx], grid[idx + 1]
    for _ in range(60):
        mid = (lo + hi) / 2
        same = torch.sign(cross(x1, mid)) == torch.sign(cross(x1, lo))
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return torch.stack([x1, (lo + hi) / 2], dim=-1)


def distance_to_polyline(p: torch.Tensor, line: torch.Tensor) -> float:
    a, b = line[:-1], line[1:]
    ab = b - a
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1)
    q = a + t.clamp(0, 1)[:, None] * ab
    return float((p - q).norm(dim=-1).min())


def stationarity_gap(theta: torch.Tensor, l1_scale: float) -> float:
    """min over λ ∈ [0, 1] of |λ u1 + (1 − λ) u2| with u_i the unit gradients (0:
    Pareto-stationary)."""
    _, jac = toy.toy_losses_and_jacobian(theta, l1_scale)
    n = jac.norm(dim=-1, keepdim=True)
    if bool((n == 0).any()):
        return 0.0
    u1, u2 = (jac / n)[0], (jac / n)[1]
    d = u1 - u2
    lam = 0.5 if float(d @ d) == 0 else float(((-(u2 @ d)) / (d @ d)).clamp(0, 1))
    return float((lam * u1 + (1 - lam) * u2).norm())


# --------------------------------------------------------------------------- toy runs
def run_pareto(names: list[str], specs: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    front = pareto_set(args.l1_scale)
    drawn = torch.tensor([[-7.0, toy.TOY_PARETO_X2], [7.0, toy.TOY_PARETO_X2]], dtype=torch.float64)
    starts = list(toy.TOY_START_POINTS) + (
        list(toy.CAGRAD_EXTRA_START_POINTS) if args.cagrad_starts else []
    )
    out: dict[str, Any] = {
        "steps": args.steps,
        "l1_scale": args.l1_scale,
        "tol": args.tol,
        "starts": starts,
        "pareto_x2_range": [float(front[:, 1].min()), float(front[:, 1].max())],
        "methods": {},
    }
    trajectories: dict[str, list[torch.Tensor]] = {}
    for name in names:
        rec: dict[str, Any] = {"runs": []}
        trajs = []
        t0 = time.perf_counter()
        for start in starts:
            try:
                method, note = methods.build(specs, name, **toy_options(name, args.l1_scale))
                rec["note"] = note
                traj = toy.toy_trajectory(
                    method, start, steps=args.steps, l1_scale=args.l1_scale, every=args.every
                )
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                rec["runs"].append(
                    {"start": list(start), "error": f"{type(err).__name__}: {err}"[:300]}
                )
                continue
            end = traj[-1]
            finite = bool(torch.isfinite(traj).all())
            run: dict[str, Any] = {
                "start": list(start),
                "end": [float(v) for v in end],
                "finite": finite,
            }
            # how far θ still moved over the last 10 % of the steps (stuck vs still travelling)
            run["moved_last_10pct"] = (
                float((traj[-1] - traj[int(0.9 * (len(traj) - 1))]).norm()) if finite else None
            )
            if finite:
                run["dist_pareto_set"] = distance_to_polyline(end, front)
                run["dist_drawn_front"] = distance_to_polyline(end, drawn)
                run["stationarity_gap"] = stationarity_gap(end, args.l1_scale)
                run["losses"] = [float(v) for v in toy.toy_losses(end, args.l1_scale)]
                run["reached"] = run["dist_pareto_set"] <= args.tol
            else:
                run["reached"] = False
            rec["runs"].append(run)
            trajs.append(traj)
        rec["seconds"] = time.perf_counter() - t0
        rec["reached"] = sum(bool(r.get("reached")) for r in rec["runs"])
        out["methods"][name] = rec
        trajectories[name] = trajs
        ends = ", ".join(
            (
                f"{r['dist_pareto_set']:.3f}"
                if "dist_pareto_set" in r
                else ("err" if "error" in r else "nan")
            )
            for r in rec["runs"]
        )
        print(
            f"{name:12} reached {rec['reached']}/{len(starts)}  distances to the Pareto set: "
            f"{ends}  "
            f"({rec['seconds']:.0f} s){'  ' + rec['note'] if rec.get('note') else ''}",
            flush=True,
        )
        for r in rec["runs"]:
            if "error" in r:
                print(f"{'':12} start {r['start']}: {r['error']}")
    if not args.no_plots:
        plot_pareto(trajectories, out, front, args)
    return out


def plot_pareto(
    trajectories: dict[str, list[torch.Tensor]],
    summary: dict[str, Any],
    front: torch.Tensor,
    args: argparse.Namespace,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = args.l1_scale
    xs = torch.linspace(-10, 10, 301, dtype=torch.float64)
    ys = torch.linspace(-10, 10, 301, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    grid_loss = toy.toy_losses(torch.stack([gx, gy], dim=-1), s).sum(-1)
    front_losses = toy.toy_losses(front, s)
    colors = plt.cm.tab10.colors

    def draw(ax_param: Any, ax_loss: Any, name: str) -> None:
        ax_param.contourf(
            gx.numpy(), gy.numpy(), grid_loss.numpy(), levels=40, cmap="Greys", alpha=0.6
        )
        ax_param.plot(front[:, 0], front[:, 1], color="black", lw=3, label="Pareto set")
        ax_loss.plot(
            front_losses[:, 0], front_losses[:, 1], color="#72727A", lw=5, label="Pareto front"
        )
        runs = summary["methods"][name]["runs"]
        ok_runs = [r for r in runs if "error" not in r]
        for i, (traj, _run) in enumerate(zip(trajectories[name], ok_runs)):
            c = colors[i % len(colors)]
            t = traj[torch.isfinite(traj).all(dim=1)]
            if len(t) == 0:
                continue
            ax_param.plot(t[:, 0], t[:, 1], color=c, lw=1.5)
            ax_param.scatter([t[0, 0]], [t[0, 1]], color=c, s=30, zorder=5)
            ax_param.scatter(
                [t[-1, 0]], [t[-1, 1]], color=c, marker="*", s=120, edgecolor="k", zorder=6
            )
            lt = toy.toy_losses(t, s)
            ax_loss.plot(lt[:, 0], lt[:, 1], color=c, lw=1.5)
            ax_loss.scatter([lt[0, 0]], [lt[0, 1]], color=c, s=30, zorder=5)
            ax_loss.scatter(
                [lt[-1, 0]], [lt[-1, 1]], color=c, marker="*", s=120, edgecolor="k", zorder=6
            )
        ax_param.set_xlim(-10, 10)
        ax_param.set_ylim(-10, 10)
        ax_param.set_xlabel("x1")
        ax_param.set_ylabel("x2")
        ax_loss.set_xlabel(f"L1 (×{s:g})" if s != 1 else "L1")
        ax_loss.set_ylabel("L2")
        n = len(summary["starts"])
        ax_param.set_title(f"{name}: {summary['methods'][name]['reached']}/{n} reach the front")

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in trajectories:
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.6))
        draw(a, b, name)
        fig.suptitle(
            f"two-objective toy, Adam lr 1e-3, {summary['steps']} steps (● start, ★ end)",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(RESULTS / f"toy_{name}.png", dpi=110)
        plt.close(fig)
    names = list(trajectories)
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        draw(ax, ax.inset_axes([0.6, 0.62, 0.38, 0.36]), name)
        ax.set_title(
            f"{name} ({summary['methods'][name]['reached']}/{len(summary['starts'])})", fontsize=10
        )
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.suptitle(
        f"two-objective toy (L1 scaled by {args.l1_scale:g}), Adam lr 1e-3, {summary['steps']} "
        "steps; "
        "inset: loss space",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(RESULTS / "toy_all.png", dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- GradNorm problem
def gradnorm_options(name: str) -> dict[str, Any]:
    return {"gradnorm": {"alpha": 0.12}, "cagrad": {"c": 0.5}}.get(name, {})


def run_gradnorm(
    names: list[str], specs: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "steps": args.gn_steps,
        "batch": args.gn_batch,
        "lr": args.gn_lr,
        "seeds": args.seeds,
        "eval_every": args.gn_eval,
        "problems": {},
    }
    for t in (2, 10):
        sigmas = (1.0, 100.0) if t == 2 else toy.spread_sigmas(t)
        prob_out: dict[str, Any] = {"sigmas": list(sigmas), "methods": {}}
        curves: dict[str, list[list[float]]] = {}
        for name in names:
            rec: dict[str, Any] = {"final": [], "errors": []}
            curves[name] = []
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                problem = toy.gradnorm_problem(sigmas, seed=seed)
                try:
                    curve, note = gradnorm_train(problem, name, specs, args, seed)
                    rec["note"] = note
                except Exception as err:  # noqa: BLE001
                    rec["errors"].append(f"seed {seed}: {type(err).__name__}: {err}"[:300])
                    continue
                curves[name].append(curve)
                rec["final"].append(curve[-1])
            rec["seconds"] = time.perf_counter() - t0
            if rec["final"]:
                finite = [v for v in rec["final"] if math.isfinite(v)]
                rec["mean"] = sum(finite) / len(finite) if finite else float("nan")
                rec["std"] = (
                    (sum((v - rec["mean"]) ** 2 for v in finite) / max(len(finite) - 1, 1)) ** 0.5
                    if finite
                    else float("nan")
                )
            prob_out["methods"][name] = rec
            print(
                f"GradNorm T={t:<2} {name:12} Σ L_i/L_i(0) on test after {args.gn_steps} steps: "
                + (
                    f"{rec['mean']:.4f} ± {rec['std']:.4f} over {len(rec['final'])} seeds"
                    if rec["final"]
                    else "—"
                )
                + (f"  errors: {rec['errors'][0]}" if rec["errors"] else "")
                + (f"  ({rec['note']})" if rec.get("note") else ""),
                flush=True,
            )
        prob_out["curves"] = curves
        out["problems"][f"T{t}"] = prob_out
        if not args.no_plots:
            plot_gradnorm(curves, t, args)
    return out


def gradnorm_train(
    problem: Any, name: str, specs: dict[str, str], args: argparse.Namespace, seed: int
) -> tuple[list[float], str]:
    method, note = methods.build(specs, name, **gradnorm_options(name))
    method.bind(problem.tasks)
    model = problem.model(seed)
    shared = list(model.trunk.parameters())
    opt = torch.optim.Adam(list(model.parameters()) + list(method.parameters()), lr=args.gn_lr)
    gen = torch.Generator().manual_seed(1000 + seed)
    level = None
    if isinstance(method, GradientAggregator):
        level = (
            "features"
            if "features" in tuple(getattr(method, "levels", ("features", "params")))
            else "params"
        )
        note = "; ".join(x for x in (note, f"level={level}") if x)

    def test_losses() -> list[float]:
        with torch.no_grad():
            return [
                float(v) for v in problem.losses(model, problem.x_test, problem.y_test).values()
            ]

    initial = test_losses()
    curve = [float(len(initial))]
    steps_per_epoch = max(1, problem.x_train.shape[0] // args.gn_batch)
    for step in range(1, args.gn_steps + 1):
        x, y = problem.batch(args.gn_batch, gen)

        @torch.no_grad()
        def batch_losses(x: torch.Tensor = x, y: torch.Tensor = y) -> dict[str, torch.Tensor]:
            _, out = model(x)
            return {task: (out[task] - y[i]).pow(2).mean() for i, task in enumerate(problem.tasks)}

        h, out = model(x)
        losses = {task: (out[task] - y[i]).pow(2).mean() for i, task in enumerate(problem.tasks)}
        opt.zero_grad(set_to_none=True)
        balancing.backward(losses, method=method, features=h, shared=shared, level=level)
        opt.step()
        method.after_step({k: v.detach() for k, v in losses.items()}, batch_losses)
        if step % steps_per_epoch == 0:
            method.on_epoch_end()
        if step % args.gn_eval == 0 or step == args.gn_steps:
            now = test_losses()
            curve.append(sum(a / b for a, b in zip(now, initial)))
    return curve, note


def plot_gradnorm(curves: dict[str, list[list[float]]], t: int, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, runs) in enumerate(curves.items()):
        if not runs:
            continue
        n = min(len(r) for r in runs)
        mean = [sum(r[j] for r in runs) / len(runs) for j in range(n)]
        steps = [0] + [min(args.gn_eval * j, args.gn_steps) for j in range(1, n)]
        ax.plot(steps, mean, label=name, color=plt.cm.tab20(i % 20), ls="-" if i < 10 else "--")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("Σ_i L_i(t) / L_i(0), test (mean over seeds)")
    ax.set_title(f"GradNorm synthetic regression, T = {t}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"toy_gradnorm_problem_T{t}.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--problems", nargs="+", default=["pareto", "gradnorm"], choices=["pareto", "gradnorm"]
    )
    ap.add_argument(
        "--methods", nargs="*", default=None, help="only these (default: every method found)"
    )
    ap.add_argument("--steps", type=int, default=35_000, help="Adam steps on the two-objective toy")
    ap.add_argument("--every", type=int, default=25, help="keep every n-th point of a trajectory")
    ap.add_argument(
        "--l1-scale", type=float, default=0.1, help="0.1: Nash-MTL/FAMO codes; 1: CAGrad's"
    )
    ap.add_argument(
        "--cagrad-starts", action="store_true", help="add CAGrad's two extra start points"
    )
    ap.add_argument(
        "--tol", type=float, default=0.05, help="distance to the Pareto set that counts as reached"
    )
    ap.add_argument("--gn-steps", type=int, default=3000)
    ap.add_argument("--gn-batch", type=int, default=100)
    ap.add_argument("--gn-lr", type=float, default=1e-3)
    ap.add_argument("--gn-eval", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-discover", action="store_true", help="only registered polytask methods")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "balancing_toy.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = methods.discover(not args.no_discover)
    names = sorted(n for n in specs if not args.methods or n in args.methods)
    if args.methods:
        missing = sorted(set(args.methods) - set(specs))
        if missing:
            print(f"not available in polytask: {missing}")
    info = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "polytask": polytask.__version__,
        "threads": args.threads,
        "load_before": os.getloadavg(),
        "registered": balancing.available(),
        "unregistered": {n: s for n, s in specs.items() if n != s},
    }
    print(json.dumps(info))
    result: dict[str, Any] = {"machine": info}
    if "pareto" in args.problems:
        result["pareto"] = run_pareto(names, specs, args)
    if "gradnorm" in args.problems:
        result["gradnorm"] = run_gradnorm(names, specs, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
