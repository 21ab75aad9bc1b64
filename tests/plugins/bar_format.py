"""A data format: ``label | label | text`` lines, the label columns named by index."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polytask.data import Example
from polytask.data.formats import Reader
from polytask.errors import OptionError


class BarLines(Reader):
    """Lines of ``label | ... | text``: a task's labels are a column index, the text is last.

    A label ``-`` is missing. Option ``lowercase`` (default False) lowercases the text.
    """

    def check_field(self, task: str, field: Any) -> None:
        if isinstance(field, bool) or not isinstance(field, int) or field < 0:
            raise OptionError(
                f"tasks.{task}",
                f"a bar-lines source names columns by index, got {field!r}",
                f"give the label column's index, e.g. {{{task}: 0}}",
            )

    def check_options(self, options: Mapping[str, Any]) -> None:
        for key, value in options.items():
            if key != "lowercase" or not isinstance(value, bool):
                raise OptionError(
                    f"options.{key}",
                    f"{value!r} is not an option of BarLines",
                    "give lowercase: true or false, or nothing",
                )

    def read(self, path: Path) -> list[Example]:
        out = []
        for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            *labels, text = [cell.strip() for cell in line.split("|")]
            if len(labels) <= max(self.targets.values(), default=-1):
                raise ValueError(
                    f"{path} line {lineno}: {len(labels)} label column(s); write "
                    "'label | ... | text'"
                )
            if self.options.get("lowercase"):
                text = text.lower()
            targets = {t: None if labels[c] == "-" else labels[c] for t, c in self.targets.items()}
            out.append(Example({"tokens": text.split()}, targets, id=f"{Path(path).name}:{lineno}"))
        return out
