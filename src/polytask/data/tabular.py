"""Tabular rows -> model inputs: standardised numeric columns and category indices.

:class:`TabularPreprocessor` is fitted on the training rows only (no statistic of the
validation or test rows leaks into the inputs) and turns each row (a mapping column ->
value) into ``{"features": [...], "categorical": [...]}``, the inputs the collator's
``"tabular"`` kind and :class:`polytask.nn.TabularMLP` read:

* numeric column ``i``: ``(transform_i(v) − μ_i) / σ_i`` with the training mean ``μ_i`` and
  standard deviation ``σ_i`` (ddof 0; ``σ_i = 1`` for a constant column) of the
  transformed values; ``transform_i`` is the identity or ``log1p`` (for heavy-tailed
  counts such as capital gains); a missing value becomes 0 (the training mean);
* categorical column ``j``: index ``1..K_j`` for the ``K_j`` categories seen at least
  ``min_count`` times in training (sorted by their string form, so the indices do not
  depend on row order), and ``0`` — the out-of-vocabulary (OOV) index — for everything
  else: categories unseen in training, rarer ones, and missing values.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from polytask.errors import DataError

__all__ = ["OOV_INDEX", "TabularPreprocessor"]

#: the category index of unknown, rare and missing values
OOV_INDEX = 0

_TRANSFORMS = ("identity", "log1p")


class TabularPreprocessor:
    """Standardise numeric columns and index categorical columns, fitted on training rows.

    Args:
        numeric: numeric column names, in input order.
        categorical: categorical column names, in input order.
        missing: values that mean "missing" (numeric -> the training mean, categorical -> OOV).
        log1p: numeric columns transformed by ``log(1 + v)`` before standardising (v ≥ 0).
        min_count: categories seen fewer times in training map to the OOV index (so the
            OOV embedding is trained when rare values exist).
    """

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str],
        *,
        missing: Iterable[Any] = ("?", "", None),
        log1p: Sequence[str] = (),
        min_count: int = 1,
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(
                f"TabularPreprocessor: columns {sorted(both)} are both numeric and categorical"
            )
        unknown = sorted(set(log1p) - set(self.numeric))
        if unknown:
            raise ValueError(
                f"TabularPreprocessor: log1p columns {unknown} are not numeric columns "
                f"{self.numeric}"
            )
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(
                f"TabularPreprocessor: min_count={min_count!r} must be an integer >= 1"
            )
        self.missing = set(missing)
        self.log1p = set(log1p)
        self.min_count = min_count
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        self.categories: dict[str, list[str]] = {}
        self._index: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ fit
    def _is_missing(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, float) and math.isnan(value):
            return True
        return value in self.missing

    def _number(self, column: str, value: Any) -> float | None:
        if self._is_missing(value):
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"numeric column {column!r}",
                f"has the value {value!r}",
                "give numbers, or list the missing-value marker in missing=",
            ) from None
        if column in self.log1p:
            if v < 0:
                raise ValueError(
                    f"TabularPreprocessor: log1p column {column!r} has the negative value {v}"
                )
            v = math.log1p(v)
        return v

    def fit(self, rows: Iterable[Mapping[str, Any]]) -> TabularPreprocessor:
        """Learn means, standard deviations and category lists from the training ``rows``."""
        rows = list(rows)
        if not rows:
            raise ValueError("TabularPreprocessor.fit: no training rows")
        self._check_columns(rows[0])
        for c in self.numeric:
            xs = [x for x in (self._number(c, r[c]) for r in rows) if x is not None]
            mean = sum(xs) / len(xs) if xs else 0.0
            var = sum((x - mean) ** 2 for x in xs) / len(xs) if xs else 0.0
            self.mean[c], self.std[c] = mean, (math.sqrt(var) if var > 0 else 1.0)
        for c in self.categorical:
            counts = Counter(str(r[c]) for r in rows if not self._is_missing(r[c]))
            kept = sorted(v for v, n in counts.items() if n >= self.min_count)
            self.categories[c] = kept
            self._index[c] = {v: i + 1 for i, v in enumerate(kept)}
        return self

    def _check_columns(self, row: Mapping[str, Any]) -> None:
        absent = [c for c in self.numeric + self.categorical if c not in row]
        if absent:
            raise ValueError(
                f"TabularPreprocessor: row has no column(s) {absent}; it has {sorted(row)}"
            )

    # ------------------------------------------------------------------ use
    @property
    def fitted(self) -> bool:
        return len(self._index) == len(self.categorical) and len(self.mean) == len(self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        """Known categories ``K_j`` per categorical column (the OOV index excluded)."""
        self._require_fit()
        return [len(self.categories[c]) for c in self.categorical]

    def _require_fit(self) -> None:
        if not self.fitted:
            raise RuntimeError("TabularPreprocessor: call fit(train_rows) first")

    def category_index(self, column: str, value: Any) -> int:
        """Index of ``value`` in ``column``: ``1..K`` when known, else :data:`OOV_INDEX`."""
        self._require_fit()
        if self._is_missing(value):
            return OOV_INDEX
        return self._index[column].get(str(value), OOV_INDEX)

    def transform(self, row: Mapping[str, Any]) -> dict[str, list[float] | list[int]]:
        """``{"features": [standardised numbers], "categorical": [indices]}`` for one row."""
        self._require_fit()
        self._check_columns(row)
        features = []
        for c in self.numeric:
            v = self._number(c, row[c])
            features.append(0.0 if v is None else (v - self.mean[c]) / self.std[c])
        return {
            "features": features,
            "categorical": [self.category_index(c, row[c]) for c in self.categorical],
        }

    def state(self) -> dict[str, Any]:
        """What was learnt, as plain data (for a run's record)."""
        self._require_fit()
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "mean": dict(self.mean),
            "std": dict(self.std),
            "categories": {c: list(v) for c, v in self.categories.items()},
            "log1p": sorted(self.log1p),
            "min_count": self.min_count,
            "missing": sorted(self.missing, key=lambda v: (v is not None, str(v))),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TabularPreprocessor:
        """The preprocessor :meth:`state` describes (a run's ``vocab.json["tabular"]``): it
        transforms rows exactly as the fitted one did."""
        prep = cls(
            state["numeric"],
            state["categorical"],
            missing=state.get("missing", ("?", "", None)),
            log1p=state.get("log1p", ()),
            min_count=int(state.get("min_count", 1)),
        )
        prep.mean = {c: float(v) for c, v in state["mean"].items()}
        prep.std = {c: float(v) for c, v in state["std"].items()}
        for c in prep.categorical:
            kept = [str(v) for v in state["categories"][c]]
            prep.categories[c] = kept
            prep._index[c] = {v: i + 1 for i, v in enumerate(kept)}
        return prep


def _missing_cell(value: Any, missing: set[Any]) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value in missing


def _target_value(spec: Any, row: Mapping[str, Any], missing: set[Any]) -> Any:
    """One task's raw label from a row: a column's cell (a string; ``None`` when missing),
    a list of columns (numbers, ``None`` when missing: multilabel / multi-output), or
    ``{column: C, positive: V or [V, ...]}`` (1 when the cell is one of them, else 0)."""
    if isinstance(spec, Mapping):
        cell = row[spec["column"]]
        if _missing_cell(cell, missing):
            return None
        positive = spec["positive"]
        values = positive if isinstance(positive, (list, tuple)) else [positive]
        return int(str(cell).strip() in {str(v) for v in values})
    if isinstance(spec, (list, tuple)):
        out: list[float | None] = []
        for c in spec:
            cell = row[c]
            out.append(None if _missing_cell(cell, missing) else float(cell))
        return out
    cell = row[spec]
    return None if _missing_cell(cell, missing) else cell


def _spec_columns(spec: Any) -> list[str]:
    if isinstance(spec, Mapping):
        return [str(spec.get("column"))]
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return [spec]


def read_table_rows(
    path: Any,
    *,
    columns: Sequence[str] | None = None,
    delimiter: str = ",",
    comment: str | None = None,
    encoding: str = "utf-8",
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The column names and ``(line, {column: cell})`` rows of a CSV file (cells stripped;
    ``columns`` names them when the file has no header row) or, with pyarrow installed, a
    Parquet file."""
    import csv
    from pathlib import Path

    p = Path(path)
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                str(p),
                "reading Parquet needs pyarrow",
                "pip install 'polytask[parquet]', or give a CSV",
            ) from None
        table = pq.read_table(p).to_pylist()
        header = list(columns) if columns else (list(table[0]) if table else [])
        return header, [(i + 1, dict(r)) for i, r in enumerate(table)]
    rows: list[tuple[int, dict[str, Any]]] = []
    names: list[str] | None = list(columns) if columns else None
    with open(p, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, skipinitialspace=True)
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            if comment is not None and cells[0].startswith(comment):
                continue
            cells = [c.strip() for c in cells]
            if names is None:
                names = cells
                continue
            if len(cells) != len(names):
                raise ValueError(
                    f"{p} line {reader.line_num}: {len(cells)} fields, expected {len(names)}"
                )
            rows.append((reader.line_num, dict(zip(names, cells))))
    return names or [], rows
