"""The objects of a JSON Lines text, with an error naming the file and line of the first
line that is not one (``polytask init`` reading samples, ``polytask predict`` reading
inputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ConfigError


def json_objects(
    lines: Iterable[str], path: Path | str, fix: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``lines`` (numbered from 1).

    Raises :class:`ConfigError` at ``path:line`` for a line that is not JSON, or JSON but not
    an object (``fix``: what to write on a line instead).
    """
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path}:{i}", f"not JSON ({err.msg})", "one JSON object per line"
            ) from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{i}", f"a JSON {type(obj).__name__}, not an object", fix)
        yield i, obj
