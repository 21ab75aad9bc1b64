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

import difflib
import inspect
from typing import Any, Callable, Iterable, Mapping, TypeVar

__all__ = ["DataError", "OptionError", "PolytaskError", "check_options", "did_you_mean"]

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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'labels'? "`` for the known name nearest to ``name``, else ``""``."""
    by_lower = {str(k).lower(): str(k) for k in known}
    match = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean {by_lower[match[0]]!r}? " if match else ""


def check_options(
    target: Callable[..., Any],
    options: Mapping[str, Any],
    *,
    supplied: Iterable[str] = (),
    owner: str | None = None,
) -> None:
    """Check ``target(**supplied, **options)`` against ``target``'s signature before calling it.

    Raises :class:`OptionError` located at the first option ``target`` does not take (the
    nearest name it takes is suggested: ``lables`` -> ``labels``), or at the first required
    one that is missing. ``supplied`` are keywords the caller passes itself (not the user's
    to name); ``owner`` names ``target`` in the message. Nothing is checked where ``target``
    has no signature or takes ``**kwargs``.
    """
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return
    name = owner or getattr(target, "__name__", type(target).__name__)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    supplied = set(supplied)
    known = [n for n, p in params.items() if p.kind in keywords and n not in supplied]
    for key in options:
        if key not in known:
            takes = ", ".join(known) if known else "no options"
            raise OptionError(
                str(key),
                f"unknown option of {name}",
                f"{did_you_mean(key, known)}{name} takes: {takes}",
            )
    for n, p in params.items():
        if p.kind in keywords and p.default is inspect.Parameter.empty:
            if n not in options and n not in supplied:
                raise OptionError(n, f"required option of {name} is missing", "add it")
