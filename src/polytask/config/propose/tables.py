"""Sources of CSVs without text: a SMILES column makes a ``molecules`` source, anything
else a ``tabular`` one; and the checks of the columns named in ``--targets``."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .kinds import (
    _ID,
    _IDS,
    _NAME_LABELS,
    MAX_CLASSES,
    _binary_task,
    _column_task,
    _id_reason,
    _left_out,
    _numeric,
    _present,
)
from .model import Source, Task
from .read import _MISSING, Table, _as_number

_SMILES = re.compile(r"^[A-Za-z0-9@+\-\[\]()\\/=#$%.:*~]+$")


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
            _left_out(src, "column", column, why, targets)
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
