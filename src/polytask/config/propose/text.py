"""Text sources: JSONL files (a ``tokens`` list or a text field), CSVs with a text
column, and CoNLL files (a token and its tag columns per line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .kinds import (
    _NAME_LABELS,
    MAX_CLASSES,
    _iob1,
    _is_cjk,
    _left_out,
    _scalar_task,
    _token_task,
)
from .model import Source, Task
from .read import Table


def _jsonl_source(
    name: str, files: dict[str, Path], rows: list[dict[str, Any]], targets: list[str] | None
) -> tuple[Source, list[Task]]:
    src = Source(name, "jsonl", files, {})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    token_lists = [r.get("tokens") for r in rows]
    if all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in token_lists):
        text_key = "tokens"
        lengths = [len(t) for t in token_lists]  # type: ignore[arg-type]
    else:
        strings = {
            k: [r.get(k) for r in rows]
            for k in keys
            if all(isinstance(r.get(k), str) for r in rows)
        }
        if not strings:
            raise ConfigError(
                str(files["train"]),
                "no input field: no 'tokens' list and no text field in every line",
                "give each line a 'tokens' list or a 'text' string",
            )
        text_key = max(strings, key=lambda k: sum(len(str(v).split()) for v in strings[k]))
        texts = [str(v) for v in strings[text_key]]
        src.chars = _is_cjk("".join(texts[:50]))
        lengths = [len(t) if src.chars else len(t.split()) for t in texts]
        if text_key != "text":
            src.options["text_field"] = text_key
    tasks = []
    if targets and text_key in targets:
        raise ConfigError(
            "--targets", f"{text_key!r} is the input of {files['train']}", _NAME_LABELS
        )
    for key in keys:
        if key in (text_key, "id") or (targets and key not in targets):
            continue
        values = [r.get(key) for r in rows]
        lists = [v for v in values if isinstance(v, list)]
        if lists and len(lists) == sum(v is not None for v in values):
            aligned = all(len(v) == n for v, n in zip(values, lengths) if isinstance(v, list))
            token_task = _token_task(key, lists) if aligned else None
            if token_task is not None and all(
                x is None or isinstance(x, str) for v in lists for x in v
            ):
                tasks.append(token_task)
            elif len({len(v) for v in lists}) == 1 and all(
                x in (0, 1, None) for v in lists for x in v
            ):
                width = len(lists[0])
                tasks.append(
                    Task(
                        key,
                        "multilabel",
                        [f"{key}_{i}" for i in range(width)],
                        note=f"{width} 0/1 labels",
                    )
                )
            else:
                if targets:
                    raise ConfigError(
                        "--targets", f"field {key!r}: no task kind reads it", _NAME_LABELS
                    )
                src.notes.append(f"{key}: lists of another shape; no task kind reads them")
                continue
        else:
            task = _scalar_task(key, values)
            if task is None:
                _left_out(
                    src, "field", key, "an id, one value, or too many distinct values", targets
                )
                continue
            tasks.append(task)
        src.tasks[tasks[-1].name] = key
    return src, tasks


def _text_column(table: Table) -> str | None:
    """The column with the most words per row, when it holds several and is not a handful of
    repeated values (a categorical column with spaces), or CJK text."""
    rows = table.rows
    words = {
        c: sum(len((r.get(c) or "").split()) for r in rows) / max(len(rows), 1) for c in table.names
    }
    if not table.names:
        return None
    text = max(table.names, key=lambda c: words[c])
    values = [r.get(text) or "" for r in rows]
    if _is_cjk("".join(values[:50])):
        return text
    distinct = len(set(values))
    if words[text] < 1.5 or distinct <= min(MAX_CLASSES, len(values) // 2):
        return None
    return text


def _text_csv_source(
    name: str, files: dict[str, Path], table: Table, text: str, targets: list[str] | None
) -> tuple[Source, list[Task]]:
    src = Source(name, "csv", files, {})
    if table.delimiter != ",":
        src.options["delimiter"] = table.delimiter
    if table.spaced:
        src.options["skipinitialspace"] = True
    if not table.header:
        src.options["header"] = False
        src.option_notes["header"] = "no header row: columns by index (0 = the first)"
    src.options["text_column"] = text if table.header else table.names.index(text)
    src.chars = _is_cjk("".join(r.get(text) or "" for r in table.rows[:50]))
    if targets and text in targets:
        raise ConfigError(
            "--targets", f"{text!r} is the text input of {files['train']}", _NAME_LABELS
        )
    tasks = []
    for column in table.names:
        if column == text or column.lower() == "id" or (targets and column not in targets):
            continue
        task = _scalar_task(column, [r.get(column) for r in table.rows])
        if task is None:
            why = "an id, one value, or too many distinct values"
            _left_out(src, "column", column, why, targets)
            continue
        tasks.append(task)
        src.tasks[column] = column if table.header else table.names.index(column)
    return src, tasks


def _conll_source(
    name: str, files: dict[str, Path], sentences: list[list[list[str]]]
) -> tuple[Source, list[Task]]:
    src = Source(name, "conll", files, {})
    width = min((len(row) for s in sentences for row in s), default=0)
    if width < 2:
        raise ConfigError(
            str(files["train"]),
            "not a CoNLL file: lines need a token and at least one tag column",
            "one token per line with its tags, a blank line between sentences",
        )
    tasks = []
    for col in range(1, width):
        seqs = [[row[col] for row in s] for s in sentences]
        found = _token_task(f"tags{col}" if col < width - 1 else "tags", seqs)
        if found is None:
            src.notes.append(f"column {col}: one label throughout; left out")
            continue
        task = found
        if task.kind == "tagging" and _iob1(seqs):
            src.options["scheme_in"] = "IOB1"
            task.note += "; IOB1 (I- opens entities), converted to IOB2 on read"
        if task.kind == "tagging" and {t[2:] for t in task.labels or [] if t != "O"} & {
            "PER",
            "LOC",
            "ORG",
        }:
            task.name = "ner"
        tasks.append(task)
        src.tasks[task.name] = col
    src.chars = _is_cjk("".join(row[0] for s in sentences[:50] for row in s))
    return src, tasks
