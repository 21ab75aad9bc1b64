"""Loss and gradient balancing: N task signals -> one update. Depends on torch only.

``make(name, **options)`` builds a method, ``available()`` lists the names, and
``backward(losses, method=..., features=..., shared=...)`` replaces ``loss.backward()``
in any training loop (the Trainer calls the same function).
"""

from __future__ import annotations

from typing import Any

from .aligned_mtl import AlignedMTL
from .backward import backward, resolve_level
from .base import Balancer, GradientAggregator, GramianWeighting, LossWeighting
from .cagrad import CAGrad
from .con_fig import ConFIG
from .db_mtl import DBMTL
from .dualproj import DualProj
from .dwa import DynamicWeightAverage
from .excess_mtl import ExcessMTL
from .fairgrad import FairGrad
from .famo import FAMO
from .fixed import FixedWeights, Mean, Sum
from .gls import GeometricLossStrategy
from .graddrop import GradDrop
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl import IMTL
from .imtl_g import IMTLG
from .imtl_l import IMTLL
from .mgda import MGDA
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RandomLossWeighting
from .upgrad import UPGrad
from .uw import UncertaintyWeighting

_METHODS: dict[str, type[Balancer]] = {
    # loss weighting
    "fixed": FixedWeights, "sum": Sum, "mean": Mean, "uw": UncertaintyWeighting, "gradnorm": GradNorm,
    "dwa": DynamicWeightAverage, "rlw": RandomLossWeighting, "gls": GeometricLossStrategy, "imtl_l": IMTLL,
    "imtl": IMTL, "db_mtl": DBMTL, "famo": FAMO, "excess_mtl": ExcessMTL,
    # gradient aggregation
    "mgda": MGDA, "pcgrad": PCGrad, "graddrop": GradDrop, "gradvac": GradVac, "cagrad": CAGrad, "imtl_g": IMTLG,
    "nash_mtl": NashMTL, "aligned_mtl": AlignedMTL, "upgrad": UPGrad, "dualproj": DualProj, "fairgrad": FairGrad,
    "con_fig": ConFIG,
}


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


__all__ = ["Balancer", "LossWeighting", "GradientAggregator", "GramianWeighting", "backward", "make", "available",
           "register", "resolve_level", "AlignedMTL", "CAGrad", "ConFIG", "DBMTL", "DualProj", "DynamicWeightAverage", "ExcessMTL",
           "FAMO", "FairGrad", "FixedWeights", "GeometricLossStrategy", "GradDrop", "GradNorm", "GradVac", "IMTL",
           "IMTLG", "IMTLL", "MGDA", "Mean", "NashMTL", "PCGrad", "RandomLossWeighting", "Sum", "UPGrad",
           "UncertaintyWeighting"]
