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

import re
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from .model import _NOT_TEXT, Proposal, Source, Task
from .read import Table, _format_of, _read_conll, _read_jsonl, _read_table
from .tables import _molecules_source, _smiles_column, _tabular_source
from .text import _conll_source, _jsonl_source, _text_column, _text_csv_source
from .write import render

__all__ = ["Proposal", "propose", "propose_yaml", "render"]

_SPLITS = {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)}


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


def propose_yaml(
    paths: Sequence[str | Path],
    out: str | Path,
    name: str | None = None,
    targets: Sequence[str] | None = None,
) -> str:
    """The commented YAML config for ``paths``; relative paths are written relative to the
    folder of ``out`` (where the config will be read from)."""
    return render(propose(paths, targets=targets), out, name)


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


def _names_task(src: Source, target: str) -> bool:
    """Whether a task of ``src`` reads the column / field ``target``."""
    return target in src.tasks or any(
        f == target or isinstance(f, dict) and f.get("column") == target for f in src.tasks.values()
    )
