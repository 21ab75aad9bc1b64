"""Task kinds read off values: a field or column's scalar task (classification,
regression, binary), a token task (tagging, token_classification), IOB1 tags, CJK
text and id columns."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any, Iterable, Sequence

from ..errors import ConfigError
from .model import Source, Task
from .read import _MISSING, _as_number

#: at most this many distinct values make a classification task
MAX_CLASSES = 50
#: a table column of numbers with more distinct values is a regression target
MAX_NUMBER_CLASSES = 10
#: an ``O`` or ``B-/I-/E-/S-TYPE`` tag
_TAG = re.compile(r"^(O|[BIES]-.+)$")
#: a column name that says it holds ids
_ID = re.compile(r"(^|[ _.-])(id|ids|uuid|key|index)$|^unnamed: ?0$", re.IGNORECASE)
#: the hint when a column or field named in ``--targets`` makes no task
_NAME_LABELS = "name only label columns in --targets"


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


def _present(values: Iterable[str | None], missing: Sequence[str] = _MISSING) -> list[str]:
    return [v for v in values if v is not None and v not in missing]


def _numeric(values: list[str]) -> bool:
    return bool(values) and all(_as_number(v) is not None for v in values)


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


def _left_out(src: Source, what: str, name: str, why: str, targets: Sequence[str] | None) -> None:
    """A field or column that no task kind reads: refused when the user named it in
    ``--targets``, else left out of the proposal with a note saying why."""
    if targets:
        raise ConfigError("--targets", f"{what} {name!r} is no task ({why})", _NAME_LABELS)
    src.notes.append(f"{name}: left out ({why})")
