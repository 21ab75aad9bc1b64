"""Markdown tables from the JSON written by step_cost.py and toy.py (for RESULTS.md).

python benchmarks/balancing/report.py [--step-cost PATH] [--toy PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _cell(r: dict[str, Any] | None, mem: bool = False) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        reason = r["error"].split(":")[0] if r["error"] else r["status"]
        return f"{r['status']} ({reason})"
    text = f"{r['ms']:.1f} ({r['ratio']:.2f}×, {r['ratio_q25']:.2f}–{r['ratio_q75']:.2f})"
    if not r.get("updates_trunk", True):
        text += " †"
    if mem and r.get("peak_mib") is not None:
        text += f" · {r['peak_mib']:.0f} MiB"
    return text


def step_cost_tables(path: Path) -> str:
    data = json.loads(path.read_text())
    results = data["results"]
    m = data["machine"]
    by = {(r["library"], r["method"], r["level"], r["k"]): r for r in results}
    ks = sorted({r["k"] for r in results})
    poly_levels: dict[str, set[str]] = {}
    for r in results:
        if r["library"] == "polytask":
            poly_levels.setdefault(r["method"], set()).add(r["level"])
    loss_methods = sorted(n for n, lv in poly_levels.items() if lv == {"-"})
    grad_methods = sorted(n for n, lv in poly_levels.items() if lv != {"-"})
    peers_only = sorted(
        {r["method"] for r in results if r["library"] in ("torchjd", "LibMTL")} - set(poly_levels)
    )
    out = [
        f"Machine: {m.get('cpu')} ({m.get('cores')} cores), {m.get('threads')} threads, torch "
        f"{m.get('torch')}, "
        f"torchjd {m.get('torchjd')}, LibMTL {m.get('LibMTL')}; {m.get('rounds')} rounds × "
        f"{m.get('steps_per_block')} steps per block; {m.get('date')}; load average before "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_before', []))}, after "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_after', []))}.",
        "",
    ]
    out.append(
        "Cells: median step time in ms (median of the paired per-round ratios to the plain sum, "
        "its interquartile range) · extra peak memory of a step. † the step leaves the shared "
        "trunk "
        "unchanged (LibMTL's loss weightings in representation mode)."
    )
    for k in ks:
        sums = [r["sum_ms"] for r in results if r["k"] == k and r.get("sum_ms")]
        plain_mem = next(
            (r.get("sum_peak_mib") for r in results if r["k"] == k and r.get("sum_peak_mib")), None
        )
        out += [
            "",
            f"### K = {k} — gradient methods (plain sum: median "
            f"{sorted(sums)[len(sums) // 2]:.1f} ms"
            + (f", {plain_mem:.0f} MiB" if plain_mem else "")
            + ")"
            if sums
            else f"### K = {k}",
            "",
        ]
        out.append(
            "| method | polytask features | polytask params | params ÷ torchjd | torchjd (params) "
            "| LibMTL params | LibMTL rep_grad |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for name in grad_methods + peers_only:
            pf = by.get(("polytask", name, "features", k))
            pp = by.get(("polytask", name, "params", k))
            tj = by.get(("torchjd", name, "params", k))
            rel = ""
            if pp and tj and pp["status"] == "ok" and tj["status"] == "ok":
                rel = f"{pp['ratio'] / tj['ratio']:.2f}"
            out.append(
                f"| {name} | {_cell(pf, True)} | {_cell(pp, True)} | {rel} | {_cell(tj, True)} | "
                f"{_cell(by.get(('LibMTL', name, 'params', k)), True)} | "
                f"{_cell(by.get(('LibMTL', name, 'features', k)), True)} |"
            )
    if loss_methods:
        out += ["", "### Loss weightings (one backward pass; no level)", ""]
        out.append(
            "| method | "
            + " | ".join(f"K = {k} polytask | K = {k} LibMTL params" for k in ks)
            + " |"
        )
        out.append("|---|" + "---|---|" * len(ks))
        for name in loss_methods:
            cells = []
            for k in ks:
                cells += [
                    _cell(by.get(("polytask", name, "-", k))),
                    _cell(by.get(("LibMTL", name, "params", k))),
                ]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    nash = data.get("nash_solve")
    if nash:
        out += [
            "",
            "### Nash-MTL weight solve alone (K = 10)",
            "",
            f"{nash.get('gramians')} Gramians ({nash.get('source')}), float32; median per solve: "
            f"polytask {nash.get('polytask_ms', float('nan')):.3f} ms "
            f"({nash.get('polytask_options', '')}), "
            f"torchjd {nash.get('torchjd_ms', float('nan')):.2f} ms → speed-up "
            f"{nash.get('speedup', float('nan')):.0f}×. Max relative difference of the weights: "
            f"polytask vs torchjd {nash.get('max_rel_diff_to_torchjd', float('nan')):.1e}; vs a "
            "float64 Newton "
            "reference (G α = 1/α to 1e-12): polytask "
            f"{nash.get('polytask_max_rel_diff_to_reference', float('nan')):.1e}, "
            f"torchjd {nash.get('torchjd_max_rel_diff_to_reference', float('nan')):.1e}."
            + (f" polytask error: {nash['polytask_error']}" if "polytask_error" in nash else ""),
        ]
    return "\n".join(out)


def toy_tables(path: Path) -> str:
    data = json.loads(path.read_text())
    out = []
    if "pareto" in data:
        p = data["pareto"]
        starts = [tuple(s) for s in p["starts"]]
        out += [
            f"### Two-objective toy ({p['steps']} Adam steps, lr 1e-3, L1 × {p['l1_scale']:g})",
            "",
            "Distance of the final θ to the Pareto set (x1 ∈ [−7, 7], x2 from "
            f"{p['pareto_x2_range'][1]:.4f} "
            f"to {p['pareto_x2_range'][0]:.4f}); ✓ within {p['tol']}.",
            "",
            "| method | reached | " + " | ".join(f"start {s}" for s in starts) + " |",
            "|---|---|" + "---|" * len(starts),
        ]
        for name, rec in p["methods"].items():
            cells = []
            for run in rec["runs"]:
                if "error" in run:
                    cells.append("error")
                elif "dist_pareto_set" not in run:
                    cells.append("diverged")
                else:
                    cells.append(f"{run['dist_pareto_set']:.3f}{' ✓' if run['reached'] else ''}")
            out.append(f"| {name} | {rec['reached']}/{len(starts)} | " + " | ".join(cells) + " |")
    if "gradnorm" in data:
        g = data["gradnorm"]
        out += [
            "",
            f"### GradNorm synthetic regression ({g['steps']} Adam steps, lr {g['lr']:g}, batch "
            f"{g['batch']}, "
            f"{g['seeds']} seeds)",
            "",
            "Σ_i L_i(t)/L_i(0) on the test set at the end (lower is better; the start is T).",
            "",
            "| method | " + " | ".join(f"T = {k[1:]}" for k in g["problems"]) + " |",
            "|---|" + "---|" * len(g["problems"]),
        ]
        names = sorted({n for prob in g["problems"].values() for n in prob["methods"]})
        for name in names:
            cells = []
            for prob in g["problems"].values():
                rec = prob["methods"].get(name)
                if rec is None or not rec.get("final"):
                    cells.append("error" if rec and rec.get("errors") else "")
                else:
                    cells.append(f"{rec['mean']:.3f} ± {rec['std']:.3f}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--step-cost", type=Path, default=RESULTS / "balancing_step_cost.json")
    ap.add_argument("--toy", type=Path, default=RESULTS / "balancing_toy.json")
    args = ap.parse_args()
    if args.step_cost.exists():
        print(step_cost_tables(args.step_cost))
    if args.toy.exists():
        print()
        print(toy_tables(args.toy))


if __name__ == "__main__":
    main()
