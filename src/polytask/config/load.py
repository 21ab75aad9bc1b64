"""Read a YAML config, apply ``--set`` overrides, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from .errors import ConfigError, from_validation_error
from .schema import Config
from .yaml_text import DuplicateKeyError, load_yaml, parse_yaml


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
        node[parts[-1]] = parse_yaml(value) if value != "" else ""
    except DuplicateKeyError as err:
        raise ConfigError(
            f"--set {key}", f"key {err.key!r} given twice in {value!r}", "keep one of them"
        ) from None
    except yaml.YAMLError:  # not YAML: the value is the text itself
        node[parts[-1]] = value


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Config, dict[str, Any]]:
    """Parse and validate; returns the validated config and the raw (overridden) mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found", "check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            str(path), f"not UTF-8 text ({err.reason} at byte {err.start})", "save it as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(
            str(path), f"cannot read it ({err.strerror or err})", "check the path"
        ) from None
    raw = load_yaml(text, str(path)) or {}
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
