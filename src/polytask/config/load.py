"""Read a YAML config, apply ``--set`` overrides, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from .errors import ConfigError, from_validation_error
from .schema import Config


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """``"trainer.epochs=3"`` -> ``raw["trainer"]["epochs"] = 3`` (value parsed as YAML)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {assignment}", "not of the form KEY=VALUE", "write e.g. --set trainer.epochs=3"
        )
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                f"--set {key}", f"{where} is not a section", "set a key inside a section"
            )
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        node[parts[-1]] = value


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Config, dict[str, Any]]:
    """Parse and validate; returns the validated config and the raw (overridden) mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found", "check the path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise ConfigError(where, "not valid YAML", "fix the syntax at that line") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            str(path),
            "the top level must be a mapping",
            "start with keys such as tasks:, data:, model:",
        )
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw), raw


def validate(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, Config) from None
