"""Options checked against the signature of what they configure, before it is called.

A config hands its options to a class (a task kind, a balancing method, a sampler, an
encoder, a head, an architecture). Rather than let the call fail with ``__init__() got an
unexpected keyword argument`` — or, worse, let ``dropout: fast`` reach ``float()`` deep
inside — :func:`check_options` reads the target's signature and type hints and raises an
:class:`~polytask.errors.OptionError` at the option itself: an unknown name (with the nearest
known one), a missing required one, or a value whose type the hint rules out (``int`` never
takes ``True``; ``Sequence[str]`` never takes a string). Hints it cannot read, and types it
does not know (a ``torch.Generator``, a callable), are left to the target.

This module imports nothing from polytask but :mod:`polytask.errors`, so every layer may use it.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from .errors import OptionError

__all__ = ["check_options", "did_you_mean"]

_UNKNOWN = object()  # an annotation this module does not check


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'labels'? "`` for the known name nearest to ``name`` (case aside),
    else ``""``."""
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
    """Check ``target(**supplied, **options)`` against ``target``'s signature and hints.

    Raises :class:`OptionError` located at the first option ``target`` does not take (the
    nearest name it takes is suggested: ``lables`` -> ``labels``), at the first required one
    that is missing, or at the first whose value the type hint rules out. ``supplied`` are
    keywords the caller passes itself (not the user's to name); ``owner`` names ``target`` in
    the message. Names are not checked where ``target`` takes ``**kwargs``.
    """
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return
    name = owner or getattr(target, "__name__", type(target).__name__)
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    given = set(supplied)
    known = [n for n, p in params.items() if p.kind in keywords and n not in given]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
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
                if n not in options and n not in given:
                    raise OptionError(n, f"required option of {name} is missing", "add it")
    hints = _hints(target)
    for key, value in options.items():
        hint = hints.get(str(key), _UNKNOWN)
        if hint is not _UNKNOWN and not _matches(value, hint):
            raise OptionError(
                str(key),
                f"{value!r} is not {_describe(hint)}",
                f"give {_describe(hint)} (see {name})",
            )


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    function = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - a hint naming what is not importable here: no check
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` may be ``hint``; ``True`` where the hint is not one this knows."""
    if hint is Any or hint is _UNKNOWN:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    sequences = (list, tuple, collections.abc.Sequence)
    if hint in sequences or origin in sequences:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(_matches(v, item) for v in value)
    mappings = (dict, collections.abc.Mapping)
    if hint in mappings or origin in mappings:
        if not isinstance(value, Mapping):
            return False
        key, item = args if len(args) == 2 else (Any, Any)
        return all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    return True  # a class, a callable, a type variable: the target checks it


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        item = args[0] if args and args[0] is not Ellipsis else None
        return f"a list of {_plural(_describe(item))}" if item is not None else "a list"
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _plural(text: str) -> str:
    return {
        "an integer": "integers",
        "a number": "numbers",
        "a string": "strings",
        "true or false": "true/false values",
    }.get(text, text)
