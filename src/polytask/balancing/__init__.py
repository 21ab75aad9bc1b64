"""Loss and gradient balancing: N task signals -> one update. Depends on torch only."""

from __future__ import annotations

from typing import Any

from .backward import backward
from .base import Balancer, GradientAggregator, GramianWeighting, LossWeighting
from .fixed import FixedWeights, Mean, Sum

_METHODS: dict[str, type[Balancer]] = {"fixed": FixedWeights, "sum": Sum, "mean": Mean}


def available() -> list[str]:
    """Names accepted by :func:`make`."""
    return sorted(_METHODS)


def register(name: str, cls: type[Balancer]) -> None:
    """Add a method under ``name`` (third-party methods)."""
    _METHODS[name] = cls


def make(name: str, **options: Any) -> Balancer:
    """Build a method by registry name or import path (``package.module:Class``)."""
    if ":" in name:
        from .._imports import import_object

        cls = import_object(name)
    elif name in _METHODS:
        cls = _METHODS[name]
    else:
        raise ValueError(f"balancing.method: unknown method {name!r}; fix: use one of {available()} "
                         "or an import path 'package.module:Class'")
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"balancing: bad option for method {name!r}: {err}") from None


__all__ = ["Balancer", "LossWeighting", "GradientAggregator", "GramianWeighting", "FixedWeights", "Sum", "Mean",
           "backward", "make", "available", "register"]
