"""Readers: data files -> ``list[Example]``.

Every reader takes a path (``"$DATA/..."`` and ``"data://..."`` expand to
:func:`data_root`; ``.gz`` files and ``.zip`` archives holding one member are read
transparently) and returns :class:`~polytask.data.base.Example` objects with
``inputs={"tokens": [...]}`` (text) or ``inputs={"features": [...]}`` (tabular) and
``targets={task: raw label}``. A missing label is ``None``; it is data, not an error.

Bad input raises ``ValueError`` naming the file, the line and the fix. Configs name these
formats through :data:`polytask.data.formats.FORMATS` (a reader class per format).

=========  ===========================================================================
reader     format
=========  ===========================================================================
``jsonl``  one JSON object per line: ``{"tokens": [...], "tags": [...], "label": "pos"}``
``csv``    a header row (or ``header=False`` and integer columns), one example per row
``conll``  one token per line, columns separated by whitespace, blank line between
           sentences, ``-DOCSTART-`` lines skipped; IOB1 tags converted to IOB2
``text``   one input per line (for ``polytask predict``)
=========  ===========================================================================
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from polytask.data.base import Example
from polytask.tasks.schemes import iob1_to_iob2

__all__ = [
    "data_root",
    "iob1_to_iob2",
    "read_conll",
    "read_csv",
    "read_jsonl",
    "read_text",
    "resolve_data_path",
    "tokenize",
]

PathLike = str | os.PathLike[str]

_DATA_PREFIXES = ("$DATA/", "data://")


# --------------------------------------------------------------------------- paths


def data_root() -> Path:
    """Folder of the shared data sets.

    ``$POLYTASK_DATA`` when set, else ``<repo>/../shared/data`` where ``<repo>`` is the
    checkout that holds this package (``src/polytask/data/readers.py`` -> 3 levels up).
    """
    env = os.environ.get("POLYTASK_DATA")
    if env:
        return Path(env).expanduser()
    return (Path(__file__).resolve().parents[3] / ".." / "shared" / "data").resolve()


def resolve_data_path(path: PathLike) -> Path:
    """Expand a leading ``"$DATA/"`` or ``"data://"`` to :func:`data_root`; ``~`` too."""
    text = os.fspath(path)
    for prefix in _DATA_PREFIXES:
        if text.startswith(prefix):
            return data_root() / text[len(prefix) :]
    return Path(text).expanduser()


BOM = "\ufeff"


def _open_text(path: PathLike, encoding: str = "utf-8") -> tuple[Path, io.TextIOBase]:
    """Resolve ``path`` and open it as text (``.gz`` and single-member ``.zip`` too); a UTF-8
    byte-order mark at the start is dropped."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"
    p = resolve_data_path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file (from {os.fspath(path)!r})")
    if p.suffix == ".gz":
        return p, io.TextIOWrapper(gzip.open(p, "rb"), encoding=encoding, newline="")
    if p.suffix == ".zip":
        zf = zipfile.ZipFile(p)
        members = [m for m in zf.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise ValueError(
                f"{p}: a .zip must hold exactly one file to be read directly; it holds "
                f"{members}: extract the one you want"
            )
        return p, io.TextIOWrapper(zf.open(members[0]), encoding=encoding, newline="")
    return p, open(p, encoding=encoding, newline="")


# ---------------------------------------------------------------------- tokenising


def tokenize(text: str, char_level: bool = False) -> list[str]:
    """Whitespace tokens, or (``char_level``) every non-whitespace character; byte-order
    marks (U+FEFF, e.g. where files were concatenated) are dropped."""
    text = text.replace(BOM, "")
    if char_level:
        return [c for c in text if not c.isspace()]
    return text.split()


def _is_tag_list(value: Any) -> bool:
    """A list whose labelled entries are strings: a tag sequence (not multilabel 0/1)."""
    return (
        isinstance(value, list)
        and any(v is not None for v in value)
        and all(v is None or isinstance(v, str) for v in value)
    )


def _check_alignment(
    tokens: Sequence[str], task: str, raw: Any, where: str, token_level: bool | None
) -> None:
    aligned = _is_tag_list(raw) if token_level is None else token_level
    if aligned and raw is not None and len(raw) != len(tokens):
        raise ValueError(
            f"{where}: task {task!r} has {len(raw)} tags but the input has {len(tokens)} "
            "tokens; give exactly one tag per token"
        )


def _features(values: Iterable[Any], where: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        try:
            if v is None or (isinstance(v, str) and not v.strip()):
                raise ValueError
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: feature {i} is {v!r}, not a number; features must be numeric "
                "(encode categories and fill missing values before reading)"
            ) from None
    return out


# -------------------------------------------------------------------------- JSONL


def first_object(path: PathLike) -> dict[str, Any] | None:
    """The first JSON object of a JSONL file (``None`` when it has none)."""
    _, handle = _open_text(path)
    with handle:
        for line in handle:
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return obj if isinstance(obj, dict) else None
    return None


def record_example(
    obj: Mapping[str, Any],
    where: str,
    default_id: str,
    *,
    text_field: str = "tokens",
    targets: Mapping[str, str] | None = None,
    features_field: str = "features",
    id_field: str = "id",
    char_level: bool = False,
    token_level: set[str] | None = None,
) -> Example:
    """One record (a JSONL line's object, a row of a Hugging Face data set) as an example, as
    :func:`read_jsonl` reads it: the input is ``text_field`` (tokens or a string), else
    ``"text"``, else ``features_field``; ``targets`` maps task -> field (``None``: every
    other field); ``where`` names the record in errors."""
    level = token_level
    reserved = {text_field, "text", features_field, id_field}
    inputs: dict[str, Any]
    if text_field in obj or "text" in obj:
        text = obj[text_field] if text_field in obj else obj["text"]
        if isinstance(text, str):
            tokens = tokenize(text, char_level)
        elif isinstance(text, list) and all(isinstance(t, str) for t in text):
            tokens = [t.replace(BOM, "") for t in text]
        else:
            raise ValueError(f"{where}: {text_field!r} must be a list of strings or a string")
        inputs = {"tokens": tokens}
    elif features_field in obj:
        if not isinstance(obj[features_field], list):
            raise ValueError(f"{where}: {features_field!r} must be a list of numbers")
        inputs = {"features": _features(obj[features_field], where)}
    else:
        raise ValueError(
            f"{where}: no input: add a {text_field!r} (or 'text') field or a "
            f"{features_field!r} field, or pass text_field="
        )
    fields = targets if targets is not None else {k: k for k in obj if k not in reserved}
    raw_targets: dict[str, Any] = {}
    for task, fieldname in fields.items():
        raw = obj.get(fieldname)
        if "tokens" in inputs:
            tl = None if level is None else task in level
            _check_alignment(inputs["tokens"], task, raw, where, tl)
        raw_targets[task] = raw
    ex_id = obj.get(id_field)
    return Example(inputs, raw_targets, id=str(ex_id) if ex_id is not None else default_id)


def read_jsonl(
    path: PathLike,
    text_field: str = "tokens",
    targets: Mapping[str, str] | None = None,
    *,
    features_field: str = "features",
    id_field: str = "id",
    char_level: bool = False,
    token_level: Iterable[str] | None = None,
    encoding: str = "utf-8",
) -> list[Example]:
    """Read one JSON object per line.

    The input is ``text_field`` (a token list, or a string that is whitespace- or
    char-tokenised), else a ``"text"`` string, else ``features_field`` (numbers).
    ``targets`` maps task -> field; ``None`` takes every other field (task = field name).
    A missing field or ``null`` is a missing label. Tag lists must have one tag per
    token: the check applies to the tasks in ``token_level`` or, when that is ``None``,
    to every label that is a list of strings. Ids come from ``id_field`` or are
    ``"<file>:<line>"``. Blank lines are skipped.
    """
    p, handle = _open_text(path, encoding)
    level = None if token_level is None else set(token_level)
    out: list[Example] = []
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{p} line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{where}: invalid JSON ({e.msg}); write one object per line"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            out.append(
                record_example(
                    obj,
                    where,
                    f"{p.name}:{lineno}",
                    text_field=text_field,
                    targets=targets,
                    features_field=features_field,
                    id_field=id_field,
                    char_level=char_level,
                    token_level=level,
                )
            )
    return out


# ---------------------------------------------------------------------------- CSV


def _column_index(spec: str | int, header: list[str] | None, p: Path) -> int:
    if isinstance(spec, int):
        return spec
    if header is None:
        raise ValueError(f"{p}: column {spec!r} given by name but header=False; use an index")
    if spec not in header:
        raise ValueError(f"{p}: no column {spec!r}; the header has {header}")
    return header.index(spec)


def _cell(row: list[str], idx: int, where: str, name: Any) -> str:
    try:
        return row[idx]
    except IndexError:
        raise ValueError(
            f"{where}: the row has {len(row)} cells, so column {name!r} is missing; "
            "check the delimiter and quoting"
        ) from None


def _number_or_str(cell: str) -> Any:
    try:
        f = float(cell)
    except ValueError:
        return cell
    return int(f) if f.is_integer() and "." not in cell and "e" not in cell.lower() else f


def read_csv(
    path: PathLike,
    text_column: str | int | None = None,
    feature_columns: Sequence[str | int] | None = None,
    targets: Mapping[str, str | int | Sequence[str | int]] | None = None,
    delimiter: str = ",",
    *,
    char_level: bool = False,
    id_column: str | int | None = None,
    header: bool = True,
    missing: Iterable[str] = ("",),
    comment: str | None = None,
    skipinitialspace: bool = False,
    encoding: str = "utf-8",
) -> list[Example]:
    """Read a delimited file, one example per row.

    Give either ``text_column`` (whitespace tokens, or characters with
    ``char_level=True`` for Chinese) or ``feature_columns`` (numbers). ``targets`` maps
    task -> column, or task -> list of columns (a multilabel / multi-output target: the
    raw label is the list of cells, numbers parsed). Scalar labels stay strings. A cell
    in ``missing`` (default: the empty cell) is a missing label. Columns are header names,
    or indices (negative allowed) when ``header=False``. Rows that are empty or start with
    ``comment`` are skipped. Ids: ``id_column`` or ``"<file>:<line>"``.
    """
    if (text_column is None) == (feature_columns is None):
        raise ValueError("read_csv: give exactly one of text_column= or feature_columns=")
    missing_set = set(missing)
    p, handle = _open_text(path, encoding)
    out: list[Example] = []
    with handle:
        reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=skipinitialspace)
        names: list[str] | None = None
        resolved: dict[str, int | list[int]] | None = None
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if comment is not None and row[0].startswith(comment):
                continue
            if header and names is None:
                names = [c.strip() for c in row]
                continue
            if resolved is None:
                resolved = {}
                for task, spec in (targets or {}).items():
                    if isinstance(spec, (list, tuple)):
                        resolved[task] = [_column_index(s, names, p) for s in spec]
                    else:
                        resolved[task] = _column_index(spec, names, p)  # type: ignore[arg-type]
                text_idx = None if text_column is None else _column_index(text_column, names, p)
                feat_idx = [_column_index(c, names, p) for c in feature_columns or []]
                id_idx = None if id_column is None else _column_index(id_column, names, p)
            where = f"{p} line {lineno}"
            if text_idx is not None:
                inputs: dict[str, Any] = {
                    "tokens": tokenize(_cell(row, text_idx, where, text_column), char_level)
                }
            else:
                inputs = {
                    "features": _features(
                        [_cell(row, i, where, c) for i, c in zip(feat_idx, feature_columns or [])],
                        where,
                    )
                }
            raw_targets: dict[str, Any] = {}
            for task, idx in resolved.items():
                if isinstance(idx, list):
                    cells = [_cell(row, i, where, i) for i in idx]
                    raw_targets[task] = [
                        None if c.strip() in missing_set else _number_or_str(c.strip())
                        for c in cells
                    ]
                else:
                    c = _cell(row, idx, where, (targets or {})[task]).strip()
                    raw_targets[task] = None if c in missing_set else c
            ex_id = (
                _cell(row, id_idx, where, id_column).strip()
                if id_idx is not None
                else f"{p.name}:{lineno}"
            )
            out.append(Example(inputs, raw_targets, id=ex_id))
    return out


# -------------------------------------------------------------------------- CoNLL

_BIO_TAG = re.compile(r"^(O|[BI]-.+)$")


def _conll_sentences(
    handle: Iterable[str], p: Path, delimiter: str | None, docstart: str
) -> Iterator[tuple[int, list[tuple[int, list[str]]]]]:
    """Yield ``(first_line, [(line, columns), ...])`` per sentence."""
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(handle, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if rows:
                yield rows[0][0], rows
                rows = []
            continue
        cols = line.split(delimiter) if delimiter is not None else line.split()
        if cols[0].replace(BOM, "") == docstart:
            if rows:
                yield rows[0][0], rows
                rows = []
            continue
        rows.append((lineno, cols))
    if rows:
        yield rows[0][0], rows


def read_conll(
    path: PathLike,
    token_col: int = 0,
    targets: Mapping[str, int] | None = None,
    scheme_in: str | Mapping[str, str] = "IOB2",
    *,
    delimiter: str | None = None,
    docstart: str = "-DOCSTART-",
    token_transform: Callable[[str], str] | None = None,
    missing: Iterable[str] = (),
    encoding: str = "utf-8",
) -> list[Example]:
    """Read a CoNLL file: one token per line, blank lines between sentences.

    ``targets`` maps task -> column index (negative allowed), default ``{"ner": -1}``.
    Columns are split on whitespace, or on ``delimiter``. Lines whose token is
    ``docstart`` are skipped. ``token_transform`` rewrites each token (e.g. Weibo NER's
    ``"科0"`` -> ``"科"`` with ``lambda s: s[:-1]``). A tag in ``missing`` becomes ``None``
    (an unlabelled token).

    ``scheme_in="IOB1"`` converts IOB1 tags to IOB2 on read (:func:`iob1_to_iob2`) in every
    target column whose tags all look like ``O``/``B-X``/``I-X`` over the whole file (so a
    POS column is left alone); a mapping task -> scheme chooses per task. Ids are
    ``"<file>:<first line of the sentence>"``.
    """
    targets = dict(targets) if targets is not None else {"ner": -1}
    missing_set = set(missing)
    if isinstance(scheme_in, str):
        schemes = {task: scheme_in for task in targets}
        auto = True
    else:
        schemes = {task: scheme_in.get(task, "IOB2") for task in targets}
        auto = False
    for task, s in schemes.items():
        if s.upper() not in {"IOB1", "IOB2", "BIO", "NONE"}:
            raise ValueError(f"read_conll: scheme_in {s!r} for task {task!r}: use 'IOB1' or 'IOB2'")
    p, handle = _open_text(path, encoding)
    cols_used = [token_col, *targets.values()]
    needed = max(c + 1 if c >= 0 else -c for c in cols_used)
    sentences: list[tuple[int, list[str], dict[str, list[Any]]]] = []
    with handle:
        for first, rows in _conll_sentences(handle, p, delimiter, docstart):
            tokens: list[str] = []
            tags: dict[str, list[Any]] = {t: [] for t in targets}
            for lineno, cols in rows:
                if len(cols) < needed:
                    raise ValueError(
                        f"{p} line {lineno}: {len(cols)} column(s) but {needed} are needed "
                        f"(token column {token_col}, tag columns {dict(targets)}): a token "
                        "without its tag(s); give every token line all columns"
                    )
                tok = cols[token_col].replace(BOM, "")
                tokens.append(token_transform(tok) if token_transform else tok)
                for task, col in targets.items():
                    tag = cols[col]
                    tags[task].append(None if tag in missing_set else tag)
            sentences.append((first, tokens, tags))
    convert = {t for t, s in schemes.items() if s.upper() == "IOB1"}
    if auto and convert:
        convert = {
            t
            for t in convert
            if all(tag is None or _BIO_TAG.match(tag) for _, _, tg in sentences for tag in tg[t])
        }
    out: list[Example] = []
    for first, tokens, tags in sentences:
        raw = {}
        for task, seq in tags.items():
            if task in convert:
                present = [t if t is not None else "O" for t in seq]
                conv = iob1_to_iob2(present)
                seq = [None if s is None else c for s, c in zip(seq, conv)]
            raw[task] = seq
        out.append(Example({"tokens": tokens}, raw, id=f"{p.name}:{first}"))
    return out


# --------------------------------------------------------------------------- text


def read_text(
    path: PathLike, char_level: bool = False, *, encoding: str = "utf-8"
) -> list[Example]:
    """One input per line (for ``polytask predict``): whitespace tokens or characters.

    Blank lines are skipped; each example's id is its 1-based line number, so outputs can
    be matched back to the file.
    """
    p, handle = _open_text(path, encoding)
    out = []
    with handle:
        for lineno, line in enumerate(handle, start=1):
            tokens = tokenize(line, char_level)
            if tokens:
                out.append(Example({"tokens": tokens}, {}, id=str(lineno)))
    return out
