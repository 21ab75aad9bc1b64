"""Checks of a balancing method's options, each raising :class:`~polytask.errors.OptionError`
with the option's *own* name (``CAGrad(c=2)`` reports ``c``); the config layer adds the
path (``balancing.c``) when the option came from a config file."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from ..errors import OptionError

__all__ = ["OptionError", "is_real", "is_integer", "require", "number", "finite", "known_tasks"]


def is_real(value: Any) -> bool:
    """A finite int or float (``bool`` is not a number here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def require(ok: bool, option: str, problem: str, fix: str) -> None:
    """Raise ``OptionError(option, problem, fix)`` unless ``ok``."""
    if not ok:
        raise OptionError(option, problem, fix)


def number(option: str, value: Any, *, low: float, strict: bool, fix: str) -> float:
    """``value`` as a float, which must be finite and ``> low`` (``strict``) or ``≥ low``."""
    ok = is_real(value) and (value > low if strict else value >= low)
    require(ok, option, f"{value!r} must be a finite number {'>' if strict else '≥'} {low:g}", fix)
    return float(value)


def finite(option: str, value: Any, fix: str) -> float:
    """``value`` as a float, which must be a finite number."""
    require(is_real(value), option, f"{value!r} is not a finite number", fix)
    return float(value)


def known_tasks(option: str, named: Iterable[str], tasks: Sequence[str]) -> None:
    """At ``bind()``: every task an option names (a mapping's keys) must be one of ``tasks``."""
    unknown = sorted(set(named) - set(tasks))
    require(not unknown, option, f"unknown task(s) {unknown}", f"use task names from {list(tasks)}")
