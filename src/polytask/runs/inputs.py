"""``predict``'s input file: every input checked before the model sees it.

Formats, by suffix (a ``.gz`` suffix after it is read transparently):

- ``.jsonl``: one JSON object per line with ``tokens`` (a list of strings) or the text field
  (a string, ``--text-field``, default ``text``);
- ``.csv`` / ``.tsv``: a header row with the text column;
- anything else: one input per non-blank line.

A run trained on ``format: molecules`` reads SMILES the same way: one a line, or the run's
SMILES column (``.csv`` / ``.tsv``) or field (``.jsonl``) as the text field.

A run trained on ``format: tabular`` reads rows instead (:func:`read_rows`): one JSON object
of column -> value per line (``.jsonl``), or a ``.csv`` / ``.tsv`` file with a header row.

A byte-order mark is dropped. A line that is not an object, a field of the wrong type
(``{"tokens": "a string"}`` would be split into characters; ``{"text": null}`` would be
predicted as the text ``"None"``), an empty input, a file with no inputs, bytes that are
not UTF-8 and a truncated ``.gz`` are each an error naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any, Iterator

from ..config.errors import ConfigError
from ..config.jsonl import json_objects

__all__ = ["read_inputs", "read_rows"]

Input = str | list[str]


def read_inputs(path: Path, text_field: str = "text") -> list[Input]:
    """The inputs of ``path``: a string (to be tokenised) or a token list each, in order."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(str(path), "a directory, not an input file", "name a file")
    if not path.is_file():
        raise ConfigError(str(path), "input file not found", "check the path")
    kind = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    try:
        text = _read_text(path)
    except UnicodeDecodeError as err:
        raise ConfigError(
            str(path), f"not UTF-8 text ({err.reason} at byte {err.start})", "save it as UTF-8"
        ) from None
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        raise ConfigError(
            str(path), f"cannot read it ({err})", "check the file is complete and readable"
        ) from None
    if kind == ".jsonl":
        items = list(_jsonl(path, text, text_field))
    elif kind in (".csv", ".tsv"):
        items = list(_table(path, text, text_field, "\t" if kind == ".tsv" else ","))
    else:
        items = [line for line in text.splitlines() if line.strip()]
    if not items:
        raise ConfigError(str(path), "holds no inputs", "give at least one input")
    return items


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows (column -> value) of a ``.jsonl`` or ``.csv`` / ``.tsv`` file, for a run
    trained on ``format: tabular``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "input file not found", "check the path")
    kind = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    try:
        text = _read_text(path)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as err:
        raise ConfigError(str(path), f"cannot read it ({err})", "give UTF-8 text") from None
    rows: list[dict[str, Any]] = []
    if kind == ".jsonl":
        fix = 'write {"column": value, ...} per line'
        rows = [obj for _, obj in json_objects(text.splitlines(), path, fix)]
    elif kind in (".csv", ".tsv"):
        delimiter = "\t" if kind == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = [
            {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k}
            for r in reader
        ]
    else:
        raise ConfigError(
            str(path),
            "a tabular run predicts rows",
            "give a .jsonl file (an object column -> value a line) or a .csv with a header",
        )
    if not rows:
        raise ConfigError(str(path), "holds no rows", "give at least one row")
    return rows


def _read_text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8").removeprefix("\ufeff")


def _jsonl(path: Path, text: str, text_field: str) -> Iterator[Input]:
    fix = f'write {{"tokens": [...]}} or {{"{text_field}": "..."}} per line'
    for i, obj in json_objects(text.splitlines(), path, fix):
        where = f"{path}:{i}"
        if "tokens" in obj:
            tokens = obj["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ConfigError(
                    where,
                    f"'tokens' is a {type(tokens).__name__}, not a list of strings",
                    f'give a list such as ["good", "battery"], or the text as "{text_field}"',
                )
            if not tokens:
                raise ConfigError(where, "'tokens' is empty", "give at least one token")
            yield [t.replace("\ufeff", "") for t in tokens]
        elif text_field in obj:
            value = obj[text_field]
            if not isinstance(value, str):
                raise ConfigError(
                    where,
                    f"{text_field!r} is {json.dumps(value)}, not a string",
                    "give the text as a JSON string",
                )
            if not value.strip():
                raise ConfigError(where, f"{text_field!r} is empty", "give some text")
            yield value
        else:
            raise ConfigError(
                where, f"no 'tokens' or {text_field!r} field", "add one or use --text-field"
            )


def _table(path: Path, text: str, text_field: str, delimiter: str) -> Iterator[Input]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if text_field not in (reader.fieldnames or []):
        raise ConfigError(
            str(path), f"no column {text_field!r}", "use --text-field to name the text column"
        )
    for row in reader:
        value = row[text_field]
        if value is None or not value.strip():
            raise ConfigError(
                f"{path}:{reader.line_num}", f"column {text_field!r} is empty", "give some text"
            )
        yield value
