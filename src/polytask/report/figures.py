"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed).

Each function takes the numbers :mod:`.collect` read and returns ``None`` when there is
nothing to draw, so a report shows what a directory holds and nothing else.
"""

from __future__ import annotations

import io
import math
from typing import Any

from .collect import Curves

__all__ = [
    "affinity_map",
    "conflict_map",
    "conflict_over_training",
    "cosines_over_training",
    "gate_map",
    "grouping_bars",
    "loss_curves",
    "stl_vs_mtl",
    "val_curves",
    "weight_curves",
]

DPI = 110


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the plot extra is part of [all]
        from ..config.errors import ConfigError

        raise ConfigError("report", "needs matplotlib", "pip install 'polytask[plot]'") from None
    return plt


def _png(fig: Any) -> bytes:
    """The figure as a PNG, quantised to a 256-colour palette where Pillow is there (plots
    use few colours: a third of the bytes, the same picture to the eye)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    try:
        from PIL import Image
    except ImportError:
        return buf.getvalue()
    buf.seek(0)
    with Image.open(buf) as image:
        small = io.BytesIO()
        image.convert("RGB").quantize(colors=256).save(small, format="PNG", optimize=True)
    return small.getvalue() if small.tell() < len(buf.getvalue()) else buf.getvalue()


def loss_curves(curves: Curves) -> bytes | None:
    """Training loss per task over steps (log scale where every value is positive)."""
    if not curves.train_loss:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    positive = True
    for task, points in curves.train_loss.items():
        steps, values = zip(*points)
        positive &= all(v > 0 for v in values)
        ax.plot(steps, values, label=task, linewidth=1.2)
    if positive:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss", title="Training loss per task")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig)


def val_curves(curves: Curves) -> bytes | None:
    """Validation metrics per task over epochs, one panel per task."""
    if not curves.val_metrics:
        return None
    plt = _plt()
    tasks = list(curves.val_metrics)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for metric, points in curves.val_metrics[task].items():
            epochs, values = zip(*points)
            ax.plot(epochs, values, marker="o", markersize=2.5, linewidth=1.1, label=metric)
        shown = "selection criterion" if task == "*" else task
        ax.set(title=f"{shown} (validation)", xlabel="epoch")
        ax.legend(frameon=False, fontsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


def weight_curves(curves: Curves) -> bytes | None:
    """The weight the balancing method gave each task over steps."""
    if not curves.weights:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for task, points in curves.weights.items():
        steps, values = zip(*points)
        ax.plot(steps, values, label=task, linewidth=1.2)
    ax.set(xlabel="step", ylabel="weight", title="Loss weights over training")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig)


def mean_cosines(curves: Curves) -> tuple[list[str], list[list[float]]]:
    """The tasks and the (K × K) mean pairwise gradient cosine over the samples (1 on the
    diagonal)."""
    sums: dict[str, list[float]] = {}
    for _, pairs in curves.cosines:
        for key, value in pairs.items():
            sums.setdefault(key, []).append(value)
    tasks = sorted({t for key in sums for t in key.split("|")})
    index = {t: i for i, t in enumerate(tasks)}
    matrix = [[1.0 if i == j else math.nan for j in range(len(tasks))] for i in range(len(tasks))]
    for key, values in sums.items():
        a, b = key.split("|")
        mean = sum(values) / len(values)
        matrix[index[a]][index[b]] = matrix[index[b]][index[a]] = mean
    return tasks, matrix


def _heatmap(
    matrix: list[list[float]],
    rows: list[str],
    cols: list[str],
    title: str,
    *,
    signed: bool,
    cell: tuple[float, float] = (0.7, 0.6),
    off_diagonal: bool = False,
) -> bytes:
    """``off_diagonal``: the colour scale spans the off-diagonal entries (the diagonal,
    when larger, saturates), so that the structure between rows shows."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 + cell[0] * len(cols), 1.0 + cell[1] * len(rows)))
    finite = [
        abs(v)
        for i, row in enumerate(matrix)
        for j, v in enumerate(row)
        if not math.isnan(v) and not (off_diagonal and i == j)
    ] or [1.0]
    bound = max(finite) or 1.0
    # small values are written in units of a power of ten (named in the title)
    power = math.floor(math.log10(bound)) if bound < 0.05 else 0
    unit = 10.0**power
    if power:
        title = f"{title} (× 1e{power})"
    image = ax.imshow(
        [[v / unit for v in row] for row in matrix],
        cmap="RdBu" if signed else "viridis",
        vmin=-bound / unit if signed else None,
        vmax=bound / unit if signed else None,
    )
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    annotate = len(rows) * len(cols) <= 200  # numbers in the cells while they stay legible
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if annotate and not math.isnan(v):
                dark = signed and abs(v) > 0.6 * bound  # white on the darkest cells
                ax.text(
                    j,
                    i,
                    f"{v / unit:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def conflict_map(curves: Curves) -> bytes | None:
    """Mean pairwise cosine of the task gradients at the shared parameters (negative:
    conflict)."""
    if not curves.cosines:
        return None
    tasks, matrix = mean_cosines(curves)
    return _heatmap(matrix, tasks, tasks, "Mean gradient cosine (< 0: conflict)", signed=True)


#: the most columns (spans of training steps) of :func:`conflict_over_training`
TIME_BINS = 20


def cosines_over_training(
    curves: Curves, bins: int = TIME_BINS
) -> tuple[list[str], list[str], list[list[float]]]:
    """The task pairs, the spans of steps, and per pair and span the mean gradient cosine of
    the samples in it (NaN where a pair has none): the samples cut into at most ``bins``
    consecutive groups of (nearly) equal size."""
    samples = curves.cosines
    pairs = sorted({key for _, values in samples for key in values})
    n = len(samples)
    cut = min(bins, n)
    groups = [samples[n * b // cut : n * (b + 1) // cut] for b in range(cut)]
    spans = [f"{g[0][0]}–{g[-1][0]}" if len(g) > 1 else str(g[0][0]) for g in groups]
    matrix = []
    for pair in pairs:
        row = []
        for g in groups:
            values = [v[pair] for _, v in g if pair in v]
            row.append(sum(values) / len(values) if values else math.nan)
        matrix.append(row)
    return [p.replace("|", " / ") for p in pairs], spans, matrix


def conflict_over_training(curves: Curves) -> bytes | None:
    """Gradient cosine of every task pair over training (rows: pairs; columns: spans of
    steps; blue below 0: the pair conflicts there)."""
    if not curves.cosines:
        return None
    pairs, spans, matrix = cosines_over_training(curves)
    return _heatmap(
        matrix,
        pairs,
        spans,
        "Gradient cosine over training (< 0: conflict)",
        signed=True,
        cell=(0.45, 0.3),
    )


def gate_map(curves: Curves) -> bytes | None:
    """Mean gate weight per task and expert (gated architectures)."""
    if not curves.gates:
        return None
    tasks = list(curves.gates)
    experts = [f"expert {e}" for e in range(max(len(v) for v in curves.gates.values()))]
    matrix = [row + [math.nan] * (len(experts) - len(row)) for row in curves.gates.values()]
    return _heatmap(matrix, tasks, experts, "Mean gate weight", signed=False)


def affinity_map(affinity: dict[str, Any]) -> bytes | None:
    """The task-affinity matrix Z (row i: the effect of task i's step on task j's loss)."""
    tasks, matrix = affinity.get("tasks"), affinity.get("matrix")
    if not tasks or not matrix:
        return None
    return _heatmap(matrix, tasks, tasks, "Task affinity Z_ij", signed=True, off_diagonal=True)


def stl_vs_mtl(summary: dict[str, Any]) -> bytes | None:
    """Each task's primary test metric, single-task vs multi-task (mean ± std over seeds)."""
    primary = summary.get("primary") or {}
    if not primary:
        return None
    plt = _plt()
    tasks = list(primary)
    std = summary.get("std") or {}
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(tasks), 3.2))
    width = 0.38
    for offset, side, color in ((-width / 2, "stl", "#9aa5b1"), (width / 2, "mtl", "#2b6cb0")):
        values = [summary[side][t][primary[t]] for t in tasks]
        errors = [(std.get(side) or {}).get(t, {}).get(primary[t], 0.0) for t in tasks]
        ax.bar(
            [i + offset for i in range(len(tasks))],
            values,
            width,
            yerr=errors,
            capsize=3,
            color=color,
            label=side.upper(),
        )
    ax.set_xticks(range(len(tasks)), [f"{t}\n{primary[t]}" for t in tasks], fontsize=8)
    dm = summary.get("delta_m")
    ci = summary.get("ci95")
    title = f"Δm = {dm:+.2f} %" if isinstance(dm, (int, float)) else "STL vs MTL"
    if ci:
        title += f"  (paired 95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}])"
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def grouping_bars(summary: dict[str, Any]) -> bytes | None:
    """Each task's primary test metric (mean over seeds) single-task, in the all-in-one
    network and in the network of the proposed grouping that serves it."""
    per_task = summary.get("per_task") or {}
    if not per_task:
        return None
    plt = _plt()
    tasks = list(per_task)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(tasks), 3.4))
    width = 0.27
    sides = (("stl", "single-task", "#9aa5b1"), ("all", "all-in-one", "#2b6cb0"))
    for k, (side, label, color) in enumerate((*sides, ("grouped", "grouped", "#dd6b20"))):
        ax.bar(
            [i + (k - 1) * width for i in range(len(tasks))],
            [per_task[t][side] for t in tasks],
            width,
            color=color,
            label=label,
        )
    primary = summary.get("primary") or {}
    ax.set_xticks(
        range(len(tasks)), [f"{t}\n{primary.get(t, '')}" for t in tasks], fontsize=7, rotation=30
    )
    values = [per_task[t][side] for t in tasks for side in ("stl", "all", "grouped")]
    low, high = min(values), max(values)
    ax.set_ylim(max(0.0, low - 0.1 * (high - low + 1e-9)), high + 0.05 * (high - low + 1e-9))
    dm = summary.get("delta_m") or {}
    ci = summary.get("grouped_minus_all_ci95")
    title = (
        f"Δm grouped {dm.get('grouped', float('nan')):+.2f} %, "
        f"all-in-one {dm.get('all_in_one', float('nan')):+.2f} %"
    )
    if ci:
        title += f"  (grouped − all-in-one, paired 95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}])"
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
