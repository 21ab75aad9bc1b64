"""One registry idiom for every pluggable kind: names and ``package.module:Name`` paths.

A :class:`Registry` holds the built-in names of one kind (balancing methods, task kinds,
encoders, architectures, task layers, samplers, data formats) and resolves what a config
names: a registered name, or an import path ``package.module:Name`` to the user's own
code. Whatever it returns has been checked against the kind's base class (or predicate)
*before* anything is called, so ``balancing: {method: "os:system"}`` is refused, not run.
A config that names code by import path is code: treat it like code. Importing a module
runs its top-level code before any check can look at what it defines, so :func:`no_imports`
(the command line's ``--no-imports``) refuses every import path before importing anything:
only registered names resolve inside it.

Each layer defines its own registry (``polytask.balancing.METHODS``,
``polytask.data.formats.FORMATS`` ...); this module imports nothing else from polytask
but the errors and the import helper, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar, cast

from polytask._imports import import_object
from polytask.errors import OptionError
from polytask.options import did_you_mean

__all__ = ["Registry", "describe", "imports_allowed", "no_imports"]

T = TypeVar("T")

PATH_HINT = "an import path 'package.module:Class'"

#: whether :meth:`Registry.resolve` may import the module an import path names
_IMPORTS: ContextVar[bool] = ContextVar("polytask_imports", default=True)


@contextmanager
def no_imports(refuse: bool = True) -> Iterator[None]:
    """Inside this context every registry refuses import paths before importing anything
    (``refuse=False``: a no-op, so a caller can pass its flag through). Registered names
    still resolve."""
    token = _IMPORTS.set(False) if refuse else None
    try:
        yield
    finally:
        if token is not None:
            _IMPORTS.reset(token)


def imports_allowed() -> bool:
    """False inside :func:`no_imports`: import paths are refused there."""
    return _IMPORTS.get()


def describe(obj: Any, width: int = 80) -> str:
    """The first paragraph of ``obj``'s docstring on one line, cut to ``width`` characters
    ("" when it has none)."""
    paragraph = (getattr(obj, "__doc__", None) or "").strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


class Registry(MutableMapping[str, T], Generic[T]):
    """Names of one pluggable kind, and import paths checked against the kind's base class.

    Args:
        kind: what one entry is, in words (``"method"``, ``"task kind"``), used in errors.
        base: the class every entry must subclass.
        check: instead of ``base``, a predicate an entry must satisfy (for kinds that a
            base class does not describe); ``expects`` then says what it accepts.
        builtins: the built-in names.
        option: the option that names an entry (``"method"``, ``"type"``): the
            :attr:`~polytask.errors.OptionError.option` of resolution errors.
        expects: what an entry is, in words (default: ``"a subclass of <base>"``).

    It is a mapping (``REGISTRY[name]``, ``name in REGISTRY``, iteration in insertion
    order); setting an item registers it, with the same check.
    """

    def __init__(
        self,
        kind: str,
        *,
        base: type | None = None,
        check: Callable[[Any], bool] | None = None,
        builtins: Mapping[str, T] | None = None,
        option: str = "type",
        expects: str | None = None,
    ) -> None:
        if (base is None) == (check is None):
            raise TypeError("Registry: give exactly one of base= or check=")
        if check is not None and expects is None:
            raise TypeError("Registry: a check= predicate needs expects= to describe it")
        self.kind, self.base, self.option = kind, base, option
        self._check = check
        default = f"a subclass of {base.__module__}.{base.__qualname__}" if base else ""
        self.expects = expects or default
        self._entries: dict[str, T] = {}
        for name, obj in (builtins or {}).items():
            self.register(name, obj)

    # ------------------------------------------------------------------ checks
    def accepts(self, obj: Any) -> bool:
        """Whether ``obj`` is of this kind (the check every entry and import path passes)."""
        if self._check is not None:
            return bool(self._check(obj))
        return isinstance(obj, type) and issubclass(obj, self.base)  # type: ignore[arg-type]

    def _fix(self) -> str:
        return f"use one of {self.names()} or {PATH_HINT}"

    # ------------------------------------------------------------------ the idiom
    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name`` (replacing an entry of that name); returns ``obj``.

        Raises :class:`~polytask.errors.OptionError` when ``obj`` is not of this kind or
        ``name`` is not a plain name.
        """
        if not isinstance(name, str) or not name or ":" in name:
            raise OptionError(
                self.option,
                f"cannot register under {name!r}",
                "register under a plain name without ':'",
            )
        if not self.accepts(obj):
            raise OptionError(
                self.option, f"{obj!r} is not {self.expects}", f"register {self.expects}"
            )
        self._entries[name] = obj
        return obj

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def resolve(self, name: str) -> T:
        """The entry registered as ``name``, or the object at import path ``name``.

        Nothing is called: an imported object is checked against the kind first.
        Raises :class:`~polytask.errors.OptionError` (option :attr:`option`) for an unknown
        name, a path that does not import, an object that is not of this kind, or any
        import path inside :func:`no_imports` (refused before anything is imported); the
        fix lists the registered names.
        """
        text = str(name)
        if text in self._entries:
            return self._entries[text]
        if ":" not in text:
            raise OptionError(
                self.option,
                f"unknown {self.kind} {text!r}",
                did_you_mean(text, self._entries) + self._fix(),
            )
        if not imports_allowed():
            raise OptionError(
                self.option,
                f"import path {text!r} refused by --no-imports",
                f"use one of {self.names()}, or drop --no-imports if you trust this config "
                "(importing a module runs its code)",
            )
        try:
            obj = import_object(text)
        except ValueError as err:
            raise OptionError(self.option, f"cannot import {text!r} ({err})", self._fix()) from None
        if not self.accepts(obj):
            raise OptionError(
                self.option,
                f"{text!r} is not {self.expects}",
                f"name {self.expects} by its import path, or use one of {self.names()}",
            )
        return cast(T, obj)

    def describe(self, name: str) -> str:
        """One line from the docstring of what ``name`` resolves to (:func:`describe`)."""
        return describe(self.resolve(name))

    # ------------------------------------------------------------------ mapping
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, obj: T) -> None:
        self.register(name, obj)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
