"""Errors that carry fields, not strings.

Library code (a balancing method, an encoder, an architecture, a reader) raises
:class:`OptionError` with the option's *own* name — ``CAGrad(c=2)`` reports ``c``, not
``balancing.c`` — the problem and the fix. The config layer, which knows where the
option sits in a config file, re-raises it with the path in front
(:meth:`OptionError.at`); the command line prints ``error: <where>: <problem>; fix: <fix>``.
Nothing parses error text.

This module imports nothing from polytask, so every layer may raise these errors.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["DataError", "OptionError", "PolytaskError"]

E = TypeVar("E", bound="PolytaskError")


class PolytaskError(Exception):
    """An error that says where, what and how to fix it, shown as one line:
    ``<where>: <problem>; fix: <fix>``. The command line prints these as they are."""

    def __init__(self, option: str, problem: str, fix: str) -> None:
        self.option, self.problem, self.fix = str(option), str(problem), str(fix)
        super().__init__(self._line())

    def _line(self) -> str:
        head = f"{self.option}: " if self.option else ""
        return f"{head}{self.problem}; fix: {self.fix}"

    @property
    def where(self) -> str:
        """The location (alias of :attr:`option`)."""
        return self.option

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (pytest-xdist)
        return (_rebuild, (type(self), self.option, self.problem, self.fix))


class OptionError(PolytaskError, ValueError):
    """A bad option value or a bad combination of options.

    Attributes:
        option: where the problem is: an option's name (``"c"``), a dotted path
            (``"weights.sentiment"``, or in a config ``"balancing.weights.sentiment"``), or a
            file; empty when the problem has no single place.
        problem: what is wrong, without the location.
        fix: what to do about it.
    """

    def at(self, prefix: str) -> OptionError:
        """The same error located under ``prefix`` (``"balancing"`` + ``"c"`` ->
        ``"balancing.c"``); its class is kept."""
        option = f"{prefix}.{self.option}" if prefix and self.option else (prefix or self.option)
        return _rebuild(type(self), option, self.problem, self.fix)


class DataError(PolytaskError, ValueError):
    """Data that cannot be used as it is — a corrupt or missing file, a value a column cannot
    hold, a loss out of a method's domain: ``option`` names the file, column or task."""


def _rebuild(cls: type[E], option: str, problem: str, fix: str) -> E:
    """An instance of ``cls`` with these fields, whatever its own ``__init__`` takes."""
    err = cls.__new__(cls)
    PolytaskError.__init__(err, option, problem, fix)
    return err
