"""Reading the first examples of a data file: JSONL rows, a CSV/TSV table (with or
without a header row), CoNLL sentences, and which of these a path holds."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonl import json_objects

#: cells that mean "missing" (the tabular reader's default)
_MISSING = ("", "?")


def _read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for _, obj in json_objects(f, path, "one object per line"):
            rows.append(obj)
            if len(rows) >= limit:
                break
    return rows


@dataclass
class Table:
    """The first rows of a delimited file: column names (``column_1..N`` when the file has
    no header row) and ``{column: cell}`` rows, cells stripped."""

    names: list[str]
    rows: list[dict[str, str]]
    header: bool
    delimiter: str
    spaced: bool = False  # cells after a delimiter start with spaces (UCI's ", ")


def _read_table(path: Path, limit: int) -> Table:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    raw: list[tuple[int, list[str]]] = []
    spaced = False
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            spaced = spaced or any(c[:1] == " " for c in cells[1:])
            raw.append((reader.line_num, [c.strip() for c in cells]))
            if len(raw) > limit:
                break
    if not raw:
        raise ConfigError(str(path), "no rows", "give a file with a header row and data rows")
    header = _has_header([cells for _, cells in raw])
    width = len(raw[0][1])
    names = raw[0][1] if header else [f"column_{i + 1}" for i in range(width)]
    if header and len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConfigError(str(path), f"column {twice!r} twice in the header", "rename one")
    rows = []
    for line, cells in raw[1:] if header else raw:
        if len(cells) != width:
            raise ConfigError(
                f"{path}:{line}", f"{len(cells)} fields, expected {width}", "one field per column"
            )
        rows.append(dict(zip(names, cells)))
    return Table(names, rows, header, delimiter, spaced)


def _has_header(raw: list[list[str]]) -> bool:
    """Whether the first row names the columns: none of its cells is a number, and it sits
    over a column of numbers or none of its cells recurs in its column."""
    first, body = raw[0], raw[1:200]
    if not body:
        return True
    if any(_as_number(c) is not None for c in first if c):
        return False
    columns = [[r[j] for r in body if j < len(r)] for j in range(len(first))]
    if any(
        cells and all(_as_number(c) is not None for c in cells)
        for cells in ([c for c in col if c not in _MISSING] for col in columns)
    ):
        return True
    return not any(cell and cell in col for cell, col in zip(first, columns))


def _read_conll(path: Path, limit: int) -> list[list[list[str]]]:
    sentences: list[list[list[str]]] = []
    rows: list[list[str]] = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if rows:
                    sentences.append(rows)
                    rows = []
                    if len(sentences) >= limit:
                        break
                continue
            rows.append(cols)
    if rows:
        sentences.append(rows)
    return sentences


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in (".csv", ".tsv", ".data"):  # .data: UCI's comma-separated files
        return "csv"
    if suffix in (".conll", ".bio", ".iob", ".iob2", ".txt") or not suffix:
        return "conll"
    raise ConfigError(
        str(path),
        f"unknown file type {suffix!r}",
        "give .jsonl, .csv/.tsv/.data or a CoNLL file (.conll, .bio, .iob, .txt)",
    )


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None
