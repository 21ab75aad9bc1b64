"""UCI Adult (census income, Kohavi 1996) as a two-task tabular benchmark.

The MMoE paper (Ma et al. 2018, KDD) builds two tasks from the larger KDD census-income
data: income > 50K and marital status = never married. Adapted to Adult:

* ``income``: 1 when the income column is ``>50K`` (``>50K.`` in ``adult.test``);
* ``never_married``: 1 when ``marital-status`` is ``Never-married``.

**Inputs.** ``marital-status`` is removed from the inputs (it *is* the second label), and
so is ``relationship``: its values ``Husband`` / ``Wife`` imply a married person and
``Own-child`` / ``Unmarried`` / ``Not-in-family`` strongly suggest the opposite, so keeping it
would leak the second label almost entirely. The remaining 12 columns are the input:
6 numeric (age, fnlwgt, education-num, capital-gain, capital-loss, hours-per-week;
capital-gain and capital-loss through ``log1p``, as they are zero for ~90% of rows and
heavy-tailed), standardised with training statistics, and 6 categorical (workclass,
education, occupation, race, sex, native-country), indexed for embeddings with ``?``
(missing) and categories unseen in training at the OOV index 0
(:class:`~polytask.data.tabular.TabularPreprocessor`).

**Splits.** ``adult.data`` (32,561 rows) is train + validation: ``val_fraction`` of it is
carved off by ``seed`` (:func:`polytask.data.split`); ``adult.test`` (16,281 rows; its first
line is a comment and its labels end in ``.``) is the test set. Preprocessing statistics
come from the training part only.

Tasks are binary :class:`~polytask.tasks.Multilabel` kinds with one label each (metric
``roc_auc``, the primary metric; also average precision and accuracy).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polytask.data.base import Example
from polytask.data.readers import PathLike, data_root, resolve_data_path
from polytask.data.splits import split
from polytask.data.tabular import TabularPreprocessor
from polytask.errors import DataError

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_CATEGORICAL",
    "ADULT_NUMERIC",
    "ADULT_TASKS",
    "AdultData",
    "adult_tasks",
    "load_adult",
    "read_adult",
]

ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
ADULT_CATEGORICAL = ("workclass", "education", "occupation", "race", "sex", "native-country")
#: task name -> the label of its single binary output
ADULT_TASKS = {"income": ">50K", "never_married": "never-married"}
_LOG1P = ("capital-gain", "capital-loss")


def read_adult(path: PathLike) -> list[dict[str, Any]]:
    """Rows of ``adult.data`` / ``adult.test`` as ``{column: value}`` (numbers as int, ``?`` kept,
    the income label without its trailing ``.``) plus ``"id"`` = ``"<file>:<line>"``; comment lines
    (``|...``) and blank lines skipped."""
    p = resolve_data_path(path)
    rows = []
    with open(p, encoding="utf-8", newline="") as f:
        for lineno, cells in enumerate(csv.reader(f, skipinitialspace=True), start=1):
            if not cells or all(not c.strip() for c in cells) or cells[0].startswith("|"):
                continue
            if len(cells) != len(ADULT_COLUMNS):
                raise ValueError(
                    f"{p} line {lineno}: {len(cells)} fields, expected {len(ADULT_COLUMNS)} "
                    f"({', '.join(ADULT_COLUMNS)})"
                )
            row: dict[str, Any] = {}
            for name, cell in zip(ADULT_COLUMNS, cells):
                cell = cell.strip()
                row[name] = int(cell) if name in ADULT_NUMERIC else cell
            row["income"] = row["income"].rstrip(".")
            row["id"] = f"{p.name}:{lineno}"
            if row["income"] not in ("<=50K", ">50K"):
                raise ValueError(
                    f"{p} line {lineno}: income {row['income']!r} is not <=50K or >50K"
                )
            rows.append(row)
    return rows


def adult_targets(row: dict[str, Any]) -> dict[str, int]:
    """``{"income": 0/1, "never_married": 0/1}`` of one row."""
    return {
        "income": int(row["income"] == ">50K"),
        "never_married": int(row["marital-status"] == "Never-married"),
    }


def adult_tasks() -> dict[str, Any]:
    """The two tasks as binary multilabel kinds (primary metric ROC-AUC)."""
    from polytask.tasks import Multilabel, Task

    return {name: Task(name, Multilabel([label])) for name, label in ADULT_TASKS.items()}


@dataclass
class AdultData:
    """Train / validation / test examples (inputs ``features`` + ``categorical``, targets per
    task), and the preprocessor fitted on the training rows."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    preprocessor: TabularPreprocessor

    @property
    def numeric(self) -> int:
        return len(self.preprocessor.numeric)

    @property
    def cardinalities(self) -> list[int]:
        return self.preprocessor.cardinalities


def load_adult(
    root: PathLike | None = None, *, seed: int = 0, val_fraction: float = 0.1, min_count: int = 1
) -> AdultData:
    """Adult as two tasks (module docstring): ``root`` holds ``adult.data`` and ``adult.test``
    (default ``<data_root>/uci-adult``); validation is ``val_fraction`` of ``adult.data`` chosen by
    ``seed``; categories seen fewer than ``min_count`` times in training map to the OOV index."""
    folder = Path(resolve_data_path(root)) if root is not None else data_root() / "uci-adult"
    for name in ("adult.data", "adult.test"):
        if not (folder / name).is_file():
            raise DataError(
                str(folder / name),
                "not found",
                "give load_adult(root=) the folder "
                "with adult.data and adult.test (UCI Adult), or set POLYTASK_DATA",
            )
    train_rows, val_rows = split(
        read_adult(folder / "adult.data"), val_fraction=val_fraction, seed=seed
    )
    test_rows = read_adult(folder / "adult.test")
    prep = TabularPreprocessor(
        ADULT_NUMERIC, ADULT_CATEGORICAL, log1p=_LOG1P, min_count=min_count
    ).fit(train_rows)

    def examples(rows: list[dict[str, Any]]) -> list[Example]:
        return [Example(prep.transform(r), adult_targets(r), id=r["id"]) for r in rows]

    return AdultData(examples(train_rows), examples(val_rows), examples(test_rows), prep)
