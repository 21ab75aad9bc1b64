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
(``data.tokenizer: chars``). Files named like ``*train*``, ``*dev*``/``*val*`` and
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

__all__ = ["Proposal", "propose", "propose_yaml"]

#: at most this many distinct values make a classification task
MAX_CLASSES = 50
_TAG = re.compile(r"^(O|[BIES]-.+)$")
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


@dataclass
class Proposal:
    """What :func:`propose` read off the files."""

    sources: list[Source]
    tasks: dict[str, Task]

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


def _read_table(path: Path, limit: int) -> tuple[list[str], list[dict[str, str]]]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        rows = [row for _, row in zip(range(limit), reader)]
        return list(reader.fieldnames or []), rows


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
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".conll", ".bio", ".iob", ".iob2", ".txt") or not suffix:
        return "conll"
    raise ConfigError(
        str(path),
        f"unknown file type {suffix!r}",
        "give .jsonl, .csv/.tsv or a CoNLL file (.conll, .bio, .iob, .txt)",
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
    name: str, files: dict[str, Path], rows: list[dict[str, Any]]
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
    for key in keys:
        if key in (text_key, "id"):
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
                src.notes.append(f"{key}: lists of another shape; no task kind reads them")
                continue
        else:
            task = _scalar_task(key, values)
            if task is None:
                src.notes.append(f"{key}: left out (an id, one value, or too many distinct values)")
                continue
            tasks.append(task)
        src.tasks[tasks[-1].name] = key
    return src, tasks


def _csv_source(
    name: str, files: dict[str, Path], header: list[str], rows: list[dict[str, str]]
) -> tuple[Source, list[Task]]:
    src = Source(name, "csv", files, {})
    if files["train"].suffix == ".tsv":
        src.options["delimiter"] = "\t"
    words = {
        c: sum(len((r.get(c) or "").split()) for r in rows) / max(len(rows), 1) for c in header
    }
    text = max(header, key=lambda c: words[c]) if header else None
    if (
        text is None
        or words[text] < 1.5
        and not _is_cjk("".join(r.get(text) or "" for r in rows[:50]))
    ):
        raise ConfigError(
            str(files["train"]),
            "no text column (none holds several words per row)",
            "polytask init proposes text tasks; for tabular data write data.sources with "
            "format: csv and feature_columns",
        )
    src.options["text_column"] = text
    src.chars = _is_cjk("".join(r.get(text) or "" for r in rows[:50]))
    tasks = []
    for column in header:
        if column == text or column.lower() == "id":
            continue
        task = _scalar_task(column, [r.get(column) for r in rows])
        if task is None:
            src.notes.append(f"{column}: left out (an id, one value, or too many distinct values)")
            continue
        tasks.append(task)
        src.tasks[column] = column
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


def propose(paths: Sequence[str | Path], limit: int = 5000) -> Proposal:
    """Read the first ``limit`` examples of each file and propose sources and tasks."""
    if not paths:
        raise ConfigError("DATA_FILE", "no file given", "give one or more data files")
    files = [Path(p) for p in paths]
    for p in files:
        if not p.is_file():
            raise ConfigError(str(p), "no such file", "check the path")
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
            src, found = _jsonl_source(name, group, _read_jsonl(train, limit))
        elif fmt == "csv":
            src, found = _csv_source(name, group, *_read_table(train, limit))
        else:
            src, found = _conll_source(name, group, _read_conll(train, limit))
        if not found:
            raise ConfigError(
                str(train), "no field or column that a task kind reads", "add labels to the file"
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
    return Proposal(sources, tasks)


# ----------------------------------------------------------------------------- writing
def _flow(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def propose_yaml(paths: Sequence[str | Path], out: str | Path, name: str | None = None) -> str:
    """The commented YAML config for ``paths``; relative paths are written relative to the
    folder of ``out`` (where the config will be read from)."""
    proposal = propose(paths)
    base = Path(out).resolve().parent
    chars = any(s.chars for s in proposal.sources)
    lines = [
        "# Proposed by `polytask init` from the data files: check the task kinds and label",
        "# sets, then `polytask validate` this file and `polytask train` it.",
        f"name: {name or (proposal.sources[0].name + '-mtl')}",
        "seed: 0",
        "tasks:",
    ]
    for task in proposal.tasks.values():
        lines.append(f"  {task.name}:  # {task.note}" if task.note else f"  {task.name}:")
        lines.append(f"    kind: {task.kind}")
        if task.labels is not None:
            lines.append(f"    labels: {_flow(task.labels)}")
        if task.kind == "tagging":
            lines.append("    crf: true  # a linear-chain CRF over the tags")
        for key, value in task.options.items():
            lines.append(f"    {key}: {_flow(value)}")
    lines += ["data:"]
    if chars:
        lines.append("  tokenizer: chars  # CJK text without spaces: one token per character")
    lines.append("  sources:")
    for src in proposal.sources:
        lines.append(f"    {src.name}:")
        lines.append(f"      format: {src.format}")
        for split, path in src.files.items():
            lines.append(f"      {split}: {_flow(_relative(path, base))}")
        mapping = {t: v for t, v in src.tasks.items()}
        lines.append(f"      tasks: {_flow(mapping)}")
        if src.options:
            lines.append(f"      options: {_flow(src.options)}")
        for note in src.notes:
            lines.append(f"      # {note}")
    splits = {s for src in proposal.sources for s in src.files}
    if "val" not in splits:
        lines.append(
            "  val_fraction: 0.1  # carved from train by seed where a source has no val file"
        )
    if "test" not in splits:
        lines.append("  test_fraction: 0.1")
    lines.append(
        "  vocab: {min_freq: 2" + (", chars: true}" if proposal.token_level and not chars else "}")
    )
    lines.append("model:")
    if proposal.token_level:
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
    lines += [
        "trainer:",
        "  epochs: 10",
        "  batch_size: 32",
        "  lr: 0.002",
        "  patience: 3  # stop after 3 epochs without a better validation score",
    ]
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(base))
    except ValueError:
        return str(resolved)
