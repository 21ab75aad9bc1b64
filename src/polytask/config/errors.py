"""One-line configuration errors: ``error: <field or file>: <problem>; fix: <hint>``."""

from __future__ import annotations

import typing
from typing import Any, Mapping

from pydantic import ValidationError

from ..errors import OptionError
from ..options import did_you_mean


class ConfigError(OptionError):
    """A problem in the configuration or its files, reported as one line (exit code 2).

    ``where`` is the config path (``balancing.c``) or the file; library code raises
    :class:`~polytask.errors.OptionError` with the option's own name and the config layer
    re-raises it located (:meth:`from_option`).
    """

    def __init__(self, where: str, problem: str, fix: str) -> None:
        super().__init__(where, problem, fix)

    @classmethod
    def from_option(cls, err: OptionError, prefix: str) -> ConfigError:
        """``err`` (raised by library code with the option's own name) at config path ``prefix``."""
        located = err.at(prefix) if not isinstance(err, ConfigError) else err
        return cls(located.option, located.problem, located.fix)

    @classmethod
    def from_message(cls, message: str, where: str, fix: str) -> ConfigError:
        """Reuse a ``"<where>: <problem>; fix: <hint>"`` message from a lower layer.

        The message's own location (when it starts with ``where``) and hint win over the
        defaults, so the line never repeats the location or carries two hints.
        """
        text = " ".join(message.split())
        text, sep, hint = text.partition("; fix: ")
        head, colon, rest = text.partition(": ")
        if colon and head.startswith(where) and " " not in head:
            where, text = head, rest
        return cls(where, text, hint if sep else fix)


def from_validation_error(err: ValidationError, schema: type) -> ConfigError:
    """The first pydantic error (an unknown key first) as a :class:`ConfigError` with a fix hint."""
    errors = err.errors()
    # a misspelt key shows up as "unknown key" and as "required key is missing": name the typo
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "config"
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_fields_of(schema, loc)
        hint = (
            did_you_mean(str(loc[-1]), known)
            + "remove it or correct its spelling"
            + (f" (known keys here: {', '.join(known)})" if known else "")
        )
        return ConfigError(where, "unknown key", hint)
    if kind == "missing":
        return ConfigError(where, "required key is missing", "add it")
    value = first.get("input")
    msg = str(first["msg"]).removeprefix("Value error, ")
    msg, sep, fix = msg.partition("; fix: ")  # a validator may give its own fix
    return ConfigError(
        where,
        f"{msg} (got {value!r})",
        fix if sep else "give a value of the expected type and range",
    )


def _known_fields_of(schema: type, loc: tuple[int | str, ...]) -> list[str]:
    cls: Any = schema
    key_next = False
    for part in loc[:-1]:
        if key_next or isinstance(part, int):
            key_next = (
                False  # a dict key (a task or source name) or a list index: stay on the value type
            )
            continue
        fields = getattr(cls, "model_fields", None)
        field = fields.get(str(part)) if fields else None
        if field is None:
            return []
        cls = _model_in(field.annotation)
        key_next = typing.get_origin(field.annotation) in (dict, Mapping)
    return sorted(getattr(cls, "model_fields", {}) or {})


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and hasattr(ann, "model_fields"):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
