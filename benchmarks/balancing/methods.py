"""Which polytask balancing methods exist, and how the benchmarks build them.

The benchmarks measure every registered method (``polytask.balancing.available()``) and,
unless told otherwise, also every :class:`~polytask.balancing.base.Balancer` class found in
``polytask/balancing/<module>.py`` that is not registered yet (built by import path, so
methods still being written are measured; the output marks them "unregistered").
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from polytask import balancing
from polytask.balancing.base import Balancer

#: modules of the package that hold no method
NOT_METHODS = {"base", "backward"}  # private modules (_gramian, _state, ...) are skipped too


def discover(include_unregistered: bool = True) -> dict[str, str]:
    """name -> spec for ``balancing.make``: the registry name, an import path
    ``polytask.balancing.<module>:<Class>`` for an unregistered class, or ``"!reason"`` for a
    module that does not import."""
    specs = {name: name for name in balancing.available()}
    if not include_unregistered:
        return specs
    folder = Path(balancing.__file__).parent
    for path in sorted(folder.glob("*.py")):
        mod = path.stem
        if mod.startswith("_") or mod in NOT_METHODS:
            continue
        try:
            module = importlib.import_module(f"polytask.balancing.{mod}")
        except Exception as err:  # noqa: BLE001 - a module being written may not import
            specs.setdefault(
                mod, f"!import of polytask.balancing.{mod} failed: {type(err).__name__}: {err}"
            )
            continue
        for cls_name, cls in vars(module).items():
            if (
                inspect.isclass(cls)
                and issubclass(cls, Balancer)
                and cls.__module__ == module.__name__
                and not inspect.isabstract(cls)
                and getattr(cls, "name", "")
            ):
                specs.setdefault(cls.name, f"polytask.balancing.{mod}:{cls_name}")
    return specs


def build(specs: dict[str, str], name: str, **options: Any) -> tuple[Balancer, str]:
    """The method ``name`` with ``options``; if the options are refused, with its defaults.
    Returns (method, note) — the note says what was used when it is not the plain default."""
    spec = specs.get(name, name)
    if spec.startswith("!"):
        raise RuntimeError(spec[1:])
    note = "" if spec == name else f"unregistered: {spec}"
    if options:
        try:
            method = balancing.make(spec, **options)
            opts = ", ".join(f"{k}={v}" for k, v in options.items())
            return method, "; ".join(x for x in (note, opts) if x)
        except ValueError as err:
            note = "; ".join(x for x in (note, f"options {options} refused ({err}): defaults") if x)
    return balancing.make(spec), note
