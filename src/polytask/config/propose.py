"""``polytask init``: a commented config proposed from the user's own data files.

Each file becomes a data source; its fields (JSONL), columns (CSV/TSV) or tag columns
(CoNLL) become tasks, their kind read off the values:

==========================  =====================================================
values of a field/column    proposed task
==========================  =====================================================
a list of tags, one per     ``tagging`` when every tag is ``O`` or ``B-/I-/E-/S-TYPE``
token                       (BIOES when ``E-``/``S-`` occur; a CoNLL column whose
                            ``I-`` tags open entities is read as IOB1), else
                            ``token_classification``
strings or integers, few    ``classification`` (the label set, most frequent first)
distinct values
numbers, many distinct      ``regression``
a list of 0/1 of one        ``multilabel`` (labels named ``FIELD_0``, ``FIELD_1``, ...)
length
==========================  =====================================================

The input is the ``tokens`` list, else the string field or column with the most words
(``text``); text without spaces in CJK script is read a character at a time
(``data.tokenizer: chars``). A CSV without text is read by its values instead:

* a column named like ``smiles`` or whose values are SMILES (checked with RDKit where it
  is importable) makes a ``format: molecules`` source (ECFP4, 2,048 bits, a random split)
  for an ``mlp`` encoder; each 0/1 column (empty: missing) becomes a one-label
  ``multilabel`` task as in examples/tox21.yaml, other columns classification or
  regression (the reader gives the cell; the task parses it);
* otherwise a ``format: tabular`` source for the ``tabular`` encoder: the tasks are the
  columns named by ``targets`` (``polytask init --targets``; default: the last column,
  said on stderr and in the file), two-valued ones binary (``{column, positive}``); the
  other columns are ``numeric`` or ``categorical`` features (long-tailed non-negative
  numbers also ``log1p``), ids and nearly-unique strings left out. A file whose first row
  holds a number (or repeats a value of its column) has no header row: its columns are
  named ``column_1..N`` in ``options.columns``. ``.data`` files (UCI) are read as CSV.

Files named like ``*train*``, ``*dev*``/``*val*`` and
``*test*`` with the same fields become one source with those splits. The encoder is a
word BiLSTM (with characters) when a task tags tokens, else a CNN; several sources train
with the joint sampler (a batch of each in every step). Fields that are ids, all distinct,
or of a shape no task kind reads are left out with a comment saying why.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError

__all__ = ["Proposal", "propose", "propose_yaml", "render"]

#: at most this many distinct values make a classification task
MAX_CLASSES = 50
#: a table column of numbers with more distinct values is a regression target
MAX_NUMBER_CLASSES = 10
_TAG = re.compile(r"^(O|[BIES]-.+)$")
#: cells that mean "missing" (the tabular reader's default)
_MISSING = ("", "?")
_SMILES = re.compile(r"^[A-Za-z0-9@+\-\[\]()\\/=#$%.:*~]+$")
_ID = re.compile(r"(^|[ _.-])(id|ids|uuid|key|index)$|^unnamed: ?0$", re.IGNORECASE)
_NOT_TEXT = ("tabular", "molecules")
_NAME_LABELS = "name only label columns in --targets"
_SPLITS = {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)}


@dataclass
class Task:
    name: str
    kind: str
    labels: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Source:
    name: str
    format: str
    files: dict[str, Path]
    tasks: dict[str, Any]  # task -> field / column
    options: dict[str, Any] = field(default_factory=dict)
    chars: bool = False
    notes: list[str] = field(default_factory=list)
    option_notes: dict[str, str] = field(default_factory=dict)  # option -> its comment
    messages: list[str] = field(default_factory=list)  # said on stderr by `polytask init`


@dataclass
class Proposal:
    """What :func:`propose` read off the files."""

    sources: list[Source]
    tasks: dict[str, Task]

    @property
    def messages(self) -> list[str]:
        return [m for s in self.sources for m in s.messages]

    @property
    def input_kind(self) -> str:
        """What the encoder reads: ``text``, ``tabular`` or ``molecules``."""
        return self.sources[0].format if self.sources[0].format in _NOT_TEXT else "text"

    @property
    def token_level(self) -> bool:
        return any(t.kind in ("tagging", "token_classification") for t in self.tasks.values())


# ----------------------------------------------------------------------------- reading
def _read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(
                    f"{path}:{i}", f"not JSON ({err.msg})", "one object per line"
                ) from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{i}", "not a JSON object", "one object per line")
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


# ---------------------------------------------------------------------------- inference
def _is_cjk(text: str) -> bool:
    letters = [c for c in text if not c.isspace()]
    cjk = sum(1 for c in letters if "CJK" in unicodedata.name(c, ""))
    return bool(letters) and cjk / len(letters) > 0.5


def _scalar_task(name: str, values: list[Any]) -> Task | None:
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return None
    if all(isinstance(v, bool) for v in present):
        present = [str(v).lower() for v in present]
    numbers = [_as_number(v) for v in present]
    counts = Counter(str(v) for v in present)
    if all(n is not None for n in numbers) and len(counts) > min(MAX_CLASSES, len(present) // 2):
        return Task(name, "regression", note=f"numbers, {len(counts)} distinct")
    if len(counts) == len(present) and len(present) > 10:
        return None  # an id: every value distinct
    if len(counts) > MAX_CLASSES or len(counts) < 2:
        return None
    labels = [label for label, _ in counts.most_common()]
    shown = ", ".join(f"{label} {n}" for label, n in counts.most_common(8))
    return Task(name, "classification", labels, note=f"counts: {shown}")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _token_task(name: str, sequences: Iterable[list[Any]]) -> Task | None:
    tags = Counter(str(t) for seq in sequences for t in seq if t is not None)
    if len(tags) < 2:
        return None  # one label throughout: nothing to learn
    if tags and all(_TAG.match(t) for t in tags):
        bioes = any(t[:2] in ("E-", "S-") for t in tags)
        types = {t[2:] for t in tags if t != "O"}
        prefixes = "BIES" if bioes else "BI"  # every prefix of each type seen, not only
        labels = ["O"] + [
            f"{p}-{x}" for x in sorted(types) for p in prefixes
        ]  # those in the sample
        task = Task(name, "tagging", labels, {"scheme": "BIOES"} if bioes else {})
        task.note = f"{sum(tags.values())} tags, {len(tags)} distinct"
        return task
    labels = [t for t, _ in tags.most_common()]
    return Task(name, "token_classification", labels, note=f"{len(labels)} labels per token")


def _iob1(sequences: Iterable[list[str]]) -> bool:
    """Whether an ``I-X`` opens an entity (IOB1), as CoNLL-2003's files do."""
    for seq in sequences:
        prev = "O"
        for tag in seq:
            if tag.startswith("I-") and prev[2:] != tag[2:]:
                return True
            prev = tag
    return False


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
                why = "an id, one value, or too many distinct values"
                if targets:
                    raise ConfigError(
                        "--targets", f"field {key!r} is no task ({why})", _NAME_LABELS
                    )
                src.notes.append(f"{key}: left out ({why})")
                continue
            tasks.append(task)
        src.tasks[tasks[-1].name] = key
    return src, tasks


def _csv_source(
    name: str, files: dict[str, Path], table: Table, targets: list[str] | None
) -> tuple[Source, list[Task]]:
    """A text CSV, else a SMILES CSV (``molecules``), else a tabular one (``tabular``)."""
    text = _text_column(table)
    if text is not None:
        return _text_csv_source(name, files, table, text, targets)
    smiles = _smiles_column(table)
    if smiles is not None:
        return _molecules_source(name, files, table, smiles, targets)
    return _tabular_source(name, files, table, targets)


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
            if targets:
                raise ConfigError(
                    "--targets", f"column {column!r} is no task ({why})", _NAME_LABELS
                )
            src.notes.append(f"{column}: left out ({why})")
            continue
        tasks.append(task)
        src.tasks[column] = column if table.header else table.names.index(column)
    return src, tasks


def _present(values: Iterable[str | None], missing: Sequence[str] = _MISSING) -> list[str]:
    return [v for v in values if v is not None and v not in missing]


def _numeric(values: list[str]) -> bool:
    return bool(values) and all(_as_number(v) is not None for v in values)


def _smiles_column(table: Table) -> str | None:
    """A column named like ``smiles``, else one whose values look like SMILES: no spaces,
    the SMILES alphabet, mostly distinct, most with rings or branches, and (when RDKit is
    importable) parsed by RDKit for 80 % of a sample."""
    named = [c for c in table.names if "smiles" in c.lower()]
    if named:
        return named[0]
    for column in table.names:
        values = _present(r[column] for r in table.rows)
        if len(values) < 5 or _numeric(values) or _ID.search(column):
            continue
        shaped = [v for v in values if _SMILES.match(v)]
        structure = [v for v in shaped if any(ch in v for ch in "()=#[]") or re.search(r"\d", v)]
        if (
            len(shaped) < 0.9 * len(values)
            or len(structure) < 0.5 * len(values)
            or len(set(values)) < 0.5 * len(values)
            or sum(map(len, values)) / len(values) < 4
        ):
            continue
        parsed = _rdkit_share(values[:100])
        if parsed is None:  # no RDKit here: shape only (training needs the chem extra)
            if len([v for v in shaped if any(ch in v for ch in "()=#[]")]) >= 0.5 * len(values):
                return column
        elif parsed >= 0.8:
            return column
    return None


def _rdkit_share(values: list[str]) -> float | None:
    """The share of ``values`` RDKit parses as SMILES; ``None`` without RDKit."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        return None
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    try:
        return sum(Chem.MolFromSmiles(v) is not None for v in values) / max(len(values), 1)
    finally:
        RDLogger.EnableLog("rdApp.*")  # type: ignore[attr-defined]


#: why a column is an id (then the reader's ``id_column``)
_IDS = ("an id column", "every value distinct (an id or free text)")


def _id_reason(column: str, values: list[str]) -> str | None:
    """Why ``column`` looks like an id (its name, every value distinct, a row number)."""
    if _ID.search(column):
        return _IDS[0]
    if len(values) > 10 and len(set(values)) == len(values):
        if not _numeric(values):
            return _IDS[1]
        numbers = [float(v) for v in values]
        if all(n.is_integer() for n in numbers) and numbers == sorted(numbers):
            return "a row number"
    return None


def _binary_task(column: str, values: list[str]) -> tuple[Task, Any] | None:
    """A two-valued column as a binary (``multilabel``, one label) task and its field:
    ``{column, positive}`` with 1 / yes / true or else the rarer value as positive."""
    counts = Counter(values)
    if len(counts) != 2:
        return None
    ones = [v for v in counts if _as_number(v) == 1.0]
    zeros = [v for v in counts if _as_number(v) == 0.0]
    shown = ", ".join(f"{v} {n}" for v, n in counts.most_common())
    if ones and zeros:
        return Task(column, "multilabel", [column], note=f"0/1: {shown}"), {
            "column": column,
            "positive": ones[0],
        }
    yes = [v for v in counts if v.lower() in ("yes", "y", "true", "t", "positive", "pos")]
    positive = yes[0] if yes else min(counts, key=lambda v: (counts[v], v))
    task = Task(column, "multilabel", [positive], note=f"binary: {shown}; 1 = {positive}")
    return task, {"column": column, "positive": positive}


def _column_task(column: str, present: list[str]) -> Task | None:
    """A table column's task: numbers with more than :data:`MAX_NUMBER_CLASSES` distinct
    values are a regression target (ages, counts), else as :func:`_scalar_task`."""
    distinct = len(set(present))
    if _numeric(present) and distinct > MAX_NUMBER_CLASSES:
        return Task(column, "regression", note=f"numbers, {distinct} distinct")
    return _scalar_task(column, present)


def _target(column: str, values: list[str], missing: Sequence[str]) -> tuple[Task, Any] | str:
    """The task a target column makes and its field, or why it makes none."""
    present = _present(values, missing)
    if not present:
        return "every cell missing"
    binary = _binary_task(column, present)
    if binary is not None:
        return binary
    task = _column_task(column, present)
    if task is None:
        return "one value, every value distinct, or too many classes"
    return task, column


def _check_targets(targets: list[str], table: Table, path: Path) -> None:
    for target in targets:
        if target not in table.names:
            shown = ", ".join(table.names[:20])
            raise ConfigError(
                "--targets", f"{target!r} is not a column of {path}", f"use one of {shown}"
            )


def _molecules_source(
    name: str, files: dict[str, Path], table: Table, smiles: str, targets: list[str] | None
) -> tuple[Source, list[Task]]:
    train = files["train"]
    if not table.header:
        raise ConfigError(str(train), "a SMILES file without a header row", "add a header row")
    if table.delimiter != ",":
        raise ConfigError(
            str(train),
            "format molecules reads comma-separated files",
            "save it with commas as .csv",
        )
    src = Source(name, "molecules", files, {}, {"smiles": smiles})
    src.option_notes["smiles"] = "ECFP (Morgan) fingerprints of this column (the chem extra)"
    if targets:
        _check_targets(targets, table, train)
    tasks = []
    for column in table.names:
        if column == smiles:
            continue
        values = [r[column] for r in table.rows]
        present = _present(values, ("",))
        why = _id_reason(column, present) if not targets or column not in targets else None
        if why is not None:
            if why in _IDS and "id_column" not in src.options:
                src.options["id_column"] = column
            src.notes.append(f"{column}: left out ({why})")
            continue
        if targets and column not in targets:
            continue
        counts = Counter(present)
        if counts and all(_as_number(v) in (0.0, 1.0) for v in counts) and len(counts) <= 2:
            # the reader reads 0 / 1 cells as numbers, an empty cell as a missing label
            n = len(values) - len(present)
            shown = ", ".join(f"{v} {k}" for v, k in counts.most_common())
            note = f"0/1: {shown}" + (f", {n} missing" if n else "")
            tasks.append(Task(column, "multilabel", [column], note=note))
            src.tasks[column] = column
            continue
        task = _column_task(column, present)  # the reader gives the cell: a class or a number
        if task is None:
            why = "one value, every value distinct, or too many classes"
            if targets:
                raise ConfigError(
                    "--targets", f"column {column!r} is no task ({why})", _NAME_LABELS
                )
            src.notes.append(f"{column}: left out ({why})")
            continue
        tasks.append(task)
        src.tasks[column] = column
    src.options.update({"radius": 2, "n_bits": 2048, "split": "random"})
    src.option_notes["split"] = "or scaffold: MoleculeNet's Bemis-Murcko scaffold split"
    return src, tasks


def _tabular_source(
    name: str, files: dict[str, Path], table: Table, targets: list[str] | None
) -> tuple[Source, list[Task]]:
    train = files["train"]
    src = Source(name, "tabular", files, {})
    if targets:
        _check_targets(targets, table, train)
    else:
        targets = [table.names[-1]]
        src.messages.append(
            f"{train}: took column {targets[0]} as the task; name others with --targets"
        )
        src.notes.append(
            f"the task is the last column, {targets[0]}: name others with polytask init "
            "--targets COL[,COL...]"
        )
    tasks = []
    for column in targets:
        found = _target(column, [r[column] for r in table.rows], _MISSING)
        if isinstance(found, str):
            raise ConfigError(
                "--targets", f"column {column!r} of {train} is no task ({found})", _NAME_LABELS
            )
        task, spec = found
        tasks.append(task)
        src.tasks[column] = spec
    numeric: list[str] = []
    categorical: list[str] = []
    log1p: list[str] = []
    for column in table.names:
        if column in targets:
            continue
        values = _present(r[column] for r in table.rows)
        why = _id_reason(column, values)
        if why is None and len(set(values)) < 2:
            why = "one value"
        if (
            why is None
            and not _numeric(values)
            and len(set(values)) > max(MAX_CLASSES, len(values) // 2)
        ):
            why = f"{len(set(values))} distinct strings: nearly one per row"
        if why is not None:
            if why in _IDS and "id_column" not in src.options:
                src.options["id_column"] = column
            src.notes.append(f"{column}: left out ({why})")
            continue
        if _numeric(values):
            numeric.append(column)
            numbers = sorted(float(v) for v in values)  # all numbers: _numeric
            p90 = numbers[int(0.9 * (len(numbers) - 1))]
            if numbers[0] >= 0 and numbers[-1] > 10 * (p90 + 1):
                log1p.append(column)  # long-tailed counts and amounts
        else:
            categorical.append(column)
    if not numeric and not categorical:
        raise ConfigError(
            str(train), "no feature column besides the task(s)", "give a file with input columns"
        )
    if not table.header:
        src.options["columns"] = table.names
        src.option_notes["columns"] = (
            "the file has no header row: rename these here, in tasks and below"
        )
    if table.delimiter != ",":
        src.options["delimiter"] = table.delimiter
    if numeric:
        src.options["numeric"] = numeric
        src.option_notes["numeric"] = "standardised by the training rows' mean and deviation"
    if categorical:
        src.options["categorical"] = categorical
        src.option_notes["categorical"] = "embedded; categories from the training rows"
    if log1p:
        src.options["log1p"] = log1p
        src.option_notes["log1p"] = "long-tailed: read through log(1 + v)"
    src.notes.append('cells "?" and "" are missing (the reader\'s default: options.missing)')
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


def _group_splits(paths: Sequence[Path]) -> list[dict[str, Path]]:
    """Files that differ only by a split word (train/dev/test) become one source."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    alone: list[dict[str, Path]] = []
    for p in paths:
        stem = p.stem.lower()
        for split, words in _SPLITS.items():
            word = next((w for w in words if re.search(rf"(^|[._-]){w}($|[._-])", stem)), None)
            if word:
                key = (
                    str(p.parent),
                    re.sub(rf"(^|[._-]){word}($|[._-])", r"\1*\2", stem) + p.suffix,
                )
                group = groups.setdefault(key, {})
                if split not in group:
                    group[split] = p
                    break
        else:
            alone.append({"train": p})
    for group in groups.values():
        if "train" in group:
            alone.append(group)
        else:
            alone.extend({"train": p} for p in group.values())
    order = {p: i for i, p in enumerate(paths)}  # sources in the order the files were given
    return sorted(alone, key=lambda g: min(order[p] for p in g.values()))


def propose(
    paths: Sequence[str | Path], limit: int = 5000, targets: Sequence[str] | None = None
) -> Proposal:
    """Read the first ``limit`` examples of each file and propose sources and tasks.

    ``targets`` names the task columns / fields: a tabular CSV's tasks (default: its last
    column); in a text CSV/JSONL or SMILES CSV only those become tasks; CoNLL files (tag
    columns without names) refuse it, and so does a name in no file."""
    if not paths:
        raise ConfigError("DATA_FILE", "no file given", "give one or more data files")
    files = [Path(p) for p in paths]
    for p in files:
        if not p.is_file():
            raise ConfigError(str(p), "no such file", "check the path")
    wanted = list(dict.fromkeys(targets)) if targets else None
    sources: list[Source] = []
    tasks: dict[str, Task] = {}
    for group in _group_splits(files):
        train = group["train"]
        fmt = _format_of(train)
        name = (
            re.sub(
                r"[^0-9a-zA-Z_]+", "_", re.sub(r"(^|[._-])(train)($|[._-])", "", train.stem)
            ).strip("_")
            or "data"
        )
        while any(s.name == name for s in sources):
            name += "_2"
        if fmt == "jsonl":
            src, found = _jsonl_source(name, group, _read_jsonl(train, limit), wanted)
        elif fmt == "csv":
            table = _read_table(train, limit)
            mine = [t for t in wanted if t in table.names] if wanted else None
            if wanted and not mine:
                raise ConfigError(
                    "--targets",
                    f"none of {', '.join(wanted)} is a column of {train}",
                    f"use its columns: {', '.join(table.names[:20])}",
                )
            src, found = _csv_source(name, group, table, mine)
        else:
            if wanted:
                raise ConfigError(
                    "--targets",
                    f"{train} is a CoNLL file: its tag columns have no names",
                    "leave --targets out for CoNLL files (each tag column becomes a task)",
                )
            src, found = _conll_source(name, group, _read_conll(train, limit))
        if not found:
            raise ConfigError(
                str(train),
                "no field or column that a task kind reads"
                + (f" among --targets {', '.join(wanted)}" if wanted else ""),
                "add labels to the file" if not wanted else "name its label columns in --targets",
            )
        renamed = {}
        for task in found:
            original = task.name
            if task.name in tasks:  # the same field name in two files: two tasks
                task.name = f"{src.name}_{task.name}"
            tasks[task.name] = task
            renamed[task.name] = src.tasks.pop(original)
        src.tasks = renamed
        sources.append(src)
    unused = [t for t in wanted or [] if not any(_names_task(s, t) for s in sources)]
    if unused:
        raise ConfigError(
            "--targets", f"{unused[0]!r} is no column or field of the files", "check the spelling"
        )
    kinds = {s.format if s.format in _NOT_TEXT else "text" for s in sources}
    if len(kinds) > 1:
        raise ConfigError(
            "DATA_FILE",
            f"files of {' and '.join(sorted(kinds))} inputs: a config has one encoder",
            "run polytask init on each kind of file separately",
        )
    tabular = [s for s in sources if s.format == "tabular"]
    features = {(str(s.options.get("numeric")), str(s.options.get("categorical"))) for s in tabular}
    if len(features) > 1:
        raise ConfigError(
            "DATA_FILE",
            "tabular files with different feature columns: the tabular encoder reads one set",
            "give files with the same columns, or init them separately",
        )
    return Proposal(sources, tasks)


def _names_task(src: Source, target: str) -> bool:
    """Whether a task of ``src`` reads the column / field ``target``."""
    return target in src.tasks or any(
        f == target or isinstance(f, dict) and f.get("column") == target for f in src.tasks.values()
    )


# ----------------------------------------------------------------------------- writing
def _flow(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    """``name`` as a YAML mapping key: plain when safe, else quoted."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name) else _flow(name)


def propose_yaml(
    paths: Sequence[str | Path],
    out: str | Path,
    name: str | None = None,
    targets: Sequence[str] | None = None,
) -> str:
    """The commented YAML config for ``paths``; relative paths are written relative to the
    folder of ``out`` (where the config will be read from)."""
    return render(propose(paths, targets=targets), out, name)


def render(proposal: Proposal, out: str | Path, name: str | None = None) -> str:
    """The commented YAML config of ``proposal``, its paths relative to ``out``'s folder."""
    base = Path(out).resolve().parent
    chars = any(s.chars for s in proposal.sources)
    kind = proposal.input_kind
    lines = [
        "# Proposed by `polytask init` from the data files: check the task kinds and label",
        "# sets, then `polytask validate` this file and `polytask train` it.",
        f"name: {name or (proposal.sources[0].name + '-mtl')}",
        "seed: 0",
        "tasks:",
    ]
    for task in proposal.tasks.values():
        key = _key(task.name)
        lines.append(f"  {key}:  # {task.note}" if task.note else f"  {key}:")
        lines.append(f"    kind: {task.kind}")
        if task.labels is not None:
            lines.append(f"    labels: {_flow(task.labels)}")
        if task.kind == "tagging":
            lines.append("    crf: true  # a linear-chain CRF over the tags")
        for option, value in task.options.items():
            lines.append(f"    {option}: {_flow(value)}")
    lines += ["data:"]
    if chars:
        lines.append("  tokenizer: chars  # CJK text without spaces: one token per character")
    lines.append("  sources:")
    for src in proposal.sources:
        lines.append(f"    {_key(src.name)}:")
        lines.append(f"      format: {src.format}")
        for split, path in src.files.items():
            lines.append(f"      {split}: {_flow(_relative(path, base))}")
        lines.append("      tasks:")
        for task_name, column in src.tasks.items():
            lines.append(f"        {_key(task_name)}: {_flow(column)}")
        if src.options:
            lines.append("      options:")
            for option, value in src.options.items():
                if option in src.option_notes:
                    lines.append(f"        # {src.option_notes[option]}")
                lines.append(f"        {option}: {_flow(value)}")
        for note in src.notes:
            lines.append(f"      # {note}")
    splits = {s for src in proposal.sources for s in src.files}
    if "val" not in splits:
        lines.append(
            "  val_fraction: 0.1  # carved from train by seed where a source has no val file"
        )
    if "test" not in splits:
        lines.append("  test_fraction: 0.1")
    if kind == "text":
        lines.append(
            "  vocab: {min_freq: 2"
            + (", chars: true}" if proposal.token_level and not chars else "}")
        )
    lines.append("model:")
    if kind == "tabular":
        lines.append("  # an MLP over the standardised numbers and embedded categories")
        lines.append("  encoder: {type: tabular, hidden: [64, 32], dropout: 0.1}")
    elif kind == "molecules":
        lines.append("  # an MLP over the fingerprints (as examples/tox21.yaml)")
        lines.append("  encoder: {type: mlp, hidden: [256, 128], dropout: 0.3}")
    elif proposal.token_level:
        extra = ", char_dim: 30, char_hidden: 25" if not chars else ""
        lines.append(
            "  # a word BiLSTM" + (" with characters" if extra else "") + ": tasks tag tokens"
        )
        lines.append(
            "  encoder: {type: bilstm, embed_dim: 100, hidden: 100, layers: 2, "
            f"dropout: 0.3{extra}}}"
        )
    else:
        lines.append("  encoder: {type: cnn, embed_dim: 100, channels: [128, 128], dropout: 0.3}")
    if len(proposal.sources) > 1:
        lines += [
            "sampler:",
            "  # several data sets: every step holds a batch of each, so the balancing method",
            "  # sees every task's loss in every step",
            "  type: joint",
        ]
    if len(proposal.tasks) > 1:
        lines += [
            "balancing:",
            "  # compare methods on validation data with `polytask sweep --methods ...`",
            "  method: nash_mtl" if len(proposal.sources) > 1 else "  method: cagrad",
        ]
    if kind == "text":
        lines += ["trainer:", "  epochs: 10", "  batch_size: 32", "  lr: 0.002"]
        lines.append("  patience: 3  # stop after 3 epochs without a better validation score")
    else:
        lines += ["trainer:", "  epochs: 20", "  batch_size: 128", "  lr: 0.001"]
        lines.append("  patience: 5  # stop after 5 epochs without a better validation score")
        lines.append("  eval_batch_size: 1024")
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(base))
    except ValueError:
        return str(resolved)
