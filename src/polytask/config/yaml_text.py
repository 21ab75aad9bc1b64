"""YAML as configs need it: a key given twice is an error, not "the later one wins".

PyYAML's ``safe_load`` keeps the last of two equal keys without a word, so ``seed: 1`` and
``seed: 2`` in one file silently train with seed 2. :func:`load_yaml` refuses the document
instead, naming the key and both lines. A byte-order mark at the start is dropped.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["DuplicateKeyError", "load_yaml", "parse_yaml"]


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping that gives one key twice (``key`` and the two 1-based ``lines``)."""

    def __init__(self, key: Any, first: int, second: int, mark: Any) -> None:
        super().__init__(problem=f"key {key!r} given twice", problem_mark=mark)
        self.key, self.lines = key, (first, second)


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` whose mappings refuse a repeated key, and which reads ``2e-3`` as a
    number (YAML 1.2; PyYAML's YAML 1.1 wants ``2.0e-3`` and would give the text "2e-3")."""

    yaml_implicit_resolvers = {
        first: list(resolvers)
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None and key != "<<":
                raise DuplicateKeyError(key, first, line, key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """``text`` as YAML (safe tags only) with unique keys; raises ``yaml.YAMLError``
    (:class:`DuplicateKeyError` for a repeated key)."""
    return yaml.load(text.removeprefix("\ufeff"), Loader=_StrictLoader)


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text`` (from ``where``: a file or an option) as YAML with unique keys.

    Raises :class:`~polytask.config.errors.ConfigError` located at ``where:LINE`` for
    broken syntax or a repeated key.
    """
    try:
        return parse_yaml(text)
    except DuplicateKeyError as err:
        first, second = err.lines
        raise ConfigError(
            f"{where}:{second}",
            f"key {err.key!r} given twice (lines {first} and {second}); YAML keeps only the last",
            "keep one of them",
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        located = f"{where}:{mark.line + 1}" if mark is not None else where
        raise ConfigError(located, "not valid YAML", "fix the syntax at that line") from None
