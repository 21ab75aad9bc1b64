"""One self-contained HTML file: figures embedded as ``data:`` PNGs, the numbers as tables
(each cell carries the exact value in ``data-value`` and where it comes from in
``data-key``, e.g. ``compare.mtl.sentiment.accuracy``) and the source JSON in a
``<script type="application/json">`` block. No script runs, nothing is fetched: the file
opens from disk, offline.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from .. import __version__
from .collect import ReportData

__all__ = ["render"]

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1a202c; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #cbd5e0;
     padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.02rem; margin-bottom: .3rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { border: 1px solid #e2e8f0; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
thead th { background: #edf2f7; }
figure { display: inline-block; margin: .4rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 100%; }
figcaption { font-size: .8rem; color: #4a5568; }
.better { color: #276749; font-weight: 600; } .worse { color: #9b2c2c; }
.muted { color: #718096; font-size: .85rem; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: Any, key: str, digits: int = 4, css: str = "") -> str:
    """A number cell: shown rounded, the exact value in ``data-value``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f'<td class="text" data-key="{_e(key)}">{_e(value)}</td>'
    shown = f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"
    klass = f' class="{css}"' if css else ""
    return f'<td{klass} data-key="{_e(key)}" data-value="{value!r}">{shown}</td>'


def _figure(png: bytes | None, caption: str, name: str, images: dict[str, bytes]) -> str:
    if png is None:
        return ""
    images[name] = png
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}" '
        f'data-file="{_e(name)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _compare_tables(data: ReportData) -> str:
    s = data.summary
    primary, hib = s.get("primary") or {}, s.get("higher_is_better") or {}
    rows = []
    for task, metrics in (s.get("mtl") or {}).items():
        for metric, mtl in metrics.items():
            stl = (s.get("stl") or {}).get(task, {}).get(metric)
            mark = "*" if primary.get(task) == metric else ""
            css = ""
            if isinstance(stl, (int, float)) and metric == primary.get(task):
                up = hib.get(task, True)
                css = "better" if (mtl > stl) == up and mtl != stl else "worse"
            rows.append(
                f'<tr><td class="text">{_e(task)}</td><td class="text">{_e(metric)}{mark}</td>'
                + _cell(stl, f"compare.stl.{task}.{metric}")
                + _cell(mtl, f"compare.mtl.{task}.{metric}", css=css)
                + "</tr>"
            )
    dm, ci = s.get("delta_m"), s.get("ci95")
    head = (
        f"<p>Seeds {_e(s.get('seeds'))}. <b>Δm</b> = "
        f'<span data-key="compare.delta_m" data-value="{dm!r}">'
        f"{dm:+.2f} %</span> (positive: multi-task better)"
        if isinstance(dm, (int, float))
        else f"<p>Seeds {_e(s.get('seeds'))}. Δm: not defined"
    )
    if ci:
        head += (
            f'; paired 95 % CI over seeds <span data-key="compare.ci95" '
            f'data-value="{json.dumps(ci)}">[{ci[0]:+.2f}, {ci[1]:+.2f}]</span>'
        )
    head += ".</p>"
    table = (
        "<table><thead><tr><th>task</th><th>metric</th><th>STL</th><th>MTL</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="muted">* primary metric (used for Δm); means over seeds.</p>'
    )
    cost = s.get("cost") or {}
    cost_rows = [
        ("parameters", "mtl_parameters", "stl_parameters"),
        ("training time (s)", "mtl_train_seconds", "stl_train_seconds"),
        ("inference time (s, same inputs)", "mtl_infer_seconds", "stl_infer_seconds"),
    ]
    cost_html = "".join(
        f'<tr><td class="text">{_e(label)}</td>'
        + _cell(cost.get(m), f"compare.cost.{m}", 3)
        + _cell(cost.get(st), f"compare.cost.{st}", 3)
        + "</tr>"
        for label, m, st in cost_rows
        if m in cost
    )
    if cost_html:
        table += (
            "<h3>Cost</h3><table><thead><tr><th></th><th>MTL</th><th>STL (all tasks)</th>"
            f"</tr></thead><tbody>{cost_html}</tbody></table>"
        )
    return head + table


def _grouping_tables(data: ReportData) -> str:
    """The proposal, each task's primary test metric three ways, and both Δm."""
    s = data.summary
    serves, primary = s.get("serves") or {}, s.get("primary") or {}
    groups = "".join(
        f'<tr><td class="text">{g}</td><td class="text">{_e(", ".join(members))}</td>'
        f'<td class="text">{_e(", ".join(t for t in members if serves.get(t) == g) or "—")}'
        "</td></tr>"
        for g, members in enumerate(s.get("groups") or [])
    )
    rows = "".join(
        f'<tr><td class="text">{_e(task)}</td><td class="text">{_e(primary.get(task, ""))}</td>'
        + "".join(
            _cell(values.get(side), f"grouping.per_task.{task}.{side}")
            for side in ("stl", "all", "grouped")
        )
        + f'<td class="text">{serves.get(task, "")}</td></tr>'
        for task, values in (s.get("per_task") or {}).items()
    )
    dm, ci = s.get("delta_m") or {}, s.get("grouped_minus_all_ci95")
    head = f"<p>Seeds {_e(s.get('seeds'))}. <b>Δm</b> against the single-task models: grouped "
    for side, text in (("grouped", ""), ("all_in_one", ", all-in-one ")):
        value = dm.get(side)
        head += text + (
            f'<span data-key="grouping.delta_m.{side}" data-value="{value!r}">{value:+.2f} %</span>'
            if isinstance(value, (int, float))
            else "not defined"
        )
    if ci:
        head += (
            "; grouped − all-in-one, paired 95 % CI over seeds <span data-key="
            f'"grouping.grouped_minus_all_ci95" data-value="{json.dumps(ci)}">'
            f"[{ci[0]:+.2f}, {ci[1]:+.2f}]</span>"
        )
    return (
        head + ".</p><table><thead><tr><th>network</th><th>tasks</th><th>serves</th></tr></thead>"
        f"<tbody>{groups}</tbody></table>"
        "<table><thead><tr><th>task</th><th>metric</th><th>single-task</th><th>all-in-one</th>"
        f"<th>grouped</th><th>served by</th></tr></thead><tbody>{rows}</tbody></table>"
        '<p class="muted">Test values, means over seeds.</p>'
    )


def _run_tables(data: ReportData) -> str:
    s = data.summary
    rows = []
    for split in ("val", "test"):
        for task, metrics in (s.get(split) or {}).items():
            for metric, value in metrics.items():
                rows.append(
                    f'<tr><td class="text">{split}</td><td class="text">{_e(task)}</td>'
                    f'<td class="text">{_e(metric)}</td>'
                    + _cell(value, f"run.{split}.{task}.{metric}")
                    + "</tr>"
                )
    facts = [
        ("best epoch", "best_epoch"),
        ("steps", "steps"),
        ("share of steps with ≥ 2 tasks", "multi_task_share"),
        ("training time (s)", "seconds"),
        ("parameters", "parameters"),
    ]
    fact_rows = "".join(
        f'<tr><td class="text">{_e(label)}</td>' + _cell(s[key], f"run.{key}", 3) + "</tr>"
        for label, key in facts
        if key in s
    )
    return (
        "<table><thead><tr><th>split</th><th>task</th><th>metric</th><th>value</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
        f"<table><tbody>{fact_rows}</tbody></table>"
    )


def render(
    sections: list[tuple[ReportData, list[tuple[str, bytes | None, str]]]],
) -> tuple[str, dict[str, bytes]]:
    """The HTML text and the PNGs it embeds (name -> bytes), for ``sections``: each
    directory's numbers with its figures ``(name, png, caption)``."""
    images: dict[str, bytes] = {}
    overview = []
    body = []
    for i, (data, figures) in enumerate(sections):
        s = data.summary
        if data.kind == "compare":
            headline, label, tables = s.get("delta_m"), "Δm (%)", _compare_tables(data)
        elif data.kind == "grouping":
            dm = (s.get("delta_m") or {}).get("grouped")
            headline, label, tables = dm, "Δm grouped (%)", _grouping_tables(data)
        else:
            headline, label, tables = s.get("score"), "validation score", _run_tables(data)
        overview.append(
            f'<tr><td class="text"><a href="#d{i}">{_e(data.name)}</a></td>'
            f'<td class="text">{_e(data.kind)}</td><td class="text">{label}</td>'
            + _cell(headline, f"{data.kind}.headline.{i}", 3)
            + "</tr>"
        )
        figs = "".join(
            _figure(png, caption, f"d{i}_{name}.png", images) for name, png, caption in figures
        )
        body.append(
            f'<section id="d{i}"><h2>{_e(data.name)}</h2>'
            f'<p class="muted">{_e(data.kind)} · {_e(data.directory)}</p>{tables}{figs}</section>'
        )
    payload = json.dumps(
        [{"name": d.name, "kind": d.kind, "summary": d.summary} for d, _ in sections],
        sort_keys=True,
    ).replace("</", "<\\/")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>polytask report</title><style>{STYLE}</style></head><body>"
        f'<h1>polytask report</h1><p class="muted">polytask {_e(__version__)} · '
        f"{len(sections)} director{'y' if len(sections) == 1 else 'ies'}</p>"
        "<table><thead><tr><th>directory</th><th>kind</th><th>headline</th><th>value</th>"
        f"</tr></thead><tbody>{''.join(overview)}</tbody></table>"
        + "".join(body)
        + f'<script type="application/json" id="polytask-data">{payload}</script>'
        + "</body></html>"
    )
    return page, images
