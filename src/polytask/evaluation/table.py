"""Markdown tables of single-task vs multi-task results."""

from __future__ import annotations

from typing import Any, Mapping


def _fmt(value: Any, std: Any = None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")
    return str(value)


def comparison_markdown(summary: Mapping[str, Any]) -> str:
    """Render the ``summary`` written by ``polytask compare`` (see :mod:`polytask.runs`)."""
    lines = [
        f"# STL vs MTL: {summary.get('name', '')}",
        "",
        f"seeds: {summary['seeds']}",
        "",
        "| task | metric | STL | MTL | better |",
        "|---|---|---|---|---|",
    ]
    std = summary.get("std", {})
    for task, metrics in summary["stl"].items():
        for metric, stl in metrics.items():
            mtl = summary["mtl"][task].get(metric)
            s_std = std.get("stl", {}).get(task, {}).get(metric)
            m_std = std.get("mtl", {}).get(task, {}).get(metric)
            mark = "*" if metric == summary["primary"][task] else ""
            lines.append(
                f"| {task} | {metric}{mark} | {_fmt(stl, s_std)} | {_fmt(mtl, m_std)} | "
                f"{summary['higher_is_better'][task].get(metric, True) and 'higher' or 'lower'} |"
            )
    lines += ["", "`*` primary metric (used for Δm).", ""]
    dm = summary["delta_m"]
    if dm is None:
        line = f"**Δm undefined**: {summary.get('delta_m_error', '')}"
    else:
        line = f"**Δm = {dm:+.2f} %** (positive: multi-task better)"
    if "ci95" in summary:
        lo, hi = summary["ci95"]
        line += f"; paired 95% CI over seeds [{lo:+.2f}, {hi:+.2f}]"
    lines += [line, "", "| | MTL | STL (all tasks) |", "|---|---|---|"]
    cost = summary["cost"]
    lines.append(f"| parameters | {cost['mtl_parameters']:,.0f} | {cost['stl_parameters']:,.0f} |")
    lines.append(
        f"| training time (s) | {cost['mtl_train_seconds']:.1f} | {cost['stl_train_seconds']:.1f} |"
    )
    lines.append(
        f"| inference time (s, same inputs) | {cost['mtl_infer_seconds']:.3f} | "
        f"{cost['stl_infer_seconds']:.3f} |"
    )
    steps = {
        side: ", ".join(f"{t} {n:.0f}" for t, n in cost[f"{side}_task_steps"].items())
        for side in ("mtl", "stl")
    }
    lines.append(f"| optimisation steps with the task's loss | {steps['mtl']} | {steps['stl']} |")
    return "\n".join(lines) + "\n"
