"""``polytask report``: one self-contained HTML file for run, comparison and grouping
directories.

``write_report([run_compare_or_grouping_dir, ...], "report.html")`` writes the page (figures
embedded, numbers as tables, the source JSON inside; it opens from disk with no network)
and the same figures as PNG files in ``report_files/`` beside it, for papers. The
numbers are those of each directory's JSON (:mod:`.collect`); see :mod:`.figures` for
what is drawn and :mod:`.html` for the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..config.errors import ConfigError
from ..engine.checkpoint import atomic_write_text
from . import figures
from .collect import ReportData, collect
from .html import render

__all__ = ["ReportData", "collect", "write_report"]


def _figures(data: ReportData) -> list[tuple[str, bytes | None, str]]:
    c = data.curves
    if data.kind == "grouping":
        caption = "Primary test metric per task: single-task, all-in-one, grouped (mean over seeds)"
        return [("grouping", figures.grouping_bars(data.summary), caption)]
    listed: list[tuple[str, bytes | None, str]] = []
    if data.kind == "compare":
        listed.append(
            ("stl_vs_mtl", figures.stl_vs_mtl(data.summary), "STL vs MTL, test (mean ± std)")
        )
    first = " (first seed's multi-task run)" if data.kind == "compare" else ""
    listed += [
        ("loss", figures.loss_curves(c), f"Training loss per task{first}"),
        ("validation", figures.val_curves(c), f"Validation metrics per epoch{first}"),
        ("weights", figures.weight_curves(c), f"Loss weights over training{first}"),
        ("conflict", figures.conflict_map(c), f"Mean gradient cosine{first}"),
        (
            "conflict_over_training",
            figures.conflict_over_training(c),
            f"Gradient cosine per task pair over training{first}",
        ),
        ("gates", figures.gate_map(c), f"Mean gate weight per task and expert{first}"),
    ]
    if data.affinity:
        listed.append(("affinity", figures.affinity_map(data.affinity), "Task affinity"))
    return listed


def write_report(directories: Sequence[str | Path], out: str | Path) -> Path:
    """Write the report of ``directories`` to ``out`` (HTML) and its PNGs to
    ``<out stem>_files/``; returns ``out``."""
    if not directories:
        raise ConfigError("RUN_DIR", "no directory given", "give run or comparison directories")
    out = Path(out)
    if out.is_dir():
        raise ConfigError("--out", f"{out} is a directory", "give an .html file path")
    if not out.parent.is_dir():
        raise ConfigError(
            "--out", f"directory {out.parent} does not exist", "create it, or give another path"
        )
    sections = [(data, _figures(data)) for data in map(collect, directories)]
    page, images = render(sections)
    folder = out.with_name(f"{out.stem}_files")
    folder.mkdir(exist_ok=True)
    for name, png in images.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(png)
        tmp.replace(folder / name)
    atomic_write_text(out, page)
    return out
