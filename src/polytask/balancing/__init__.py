"""Loss and gradient balancing: N task signals -> one update. Depends on torch only.

``make(name, **options)`` builds a method, ``available()`` lists the names of the
:data:`METHODS` registry (which also takes ``package.module:Class`` import paths), and
``backward(losses, method=..., features=..., shared=...)`` replaces ``loss.backward()``
in any training loop (the Trainer calls the same function).
"""

from __future__ import annotations

from typing import Any

from ..errors import OptionError
from ..options import check_options
from ..registry import Registry
from .aligned_mtl import AlignedMTL
from .backward import Trace, backward, resolve_level
from .base import Balancer, GradientAggregator, GramianWeighting, LossWeighting
from .cagrad import CAGrad
from .con_fig import ConFIG
from .db_mtl import DBMTL
from .distributed import Collective, ProcessGroup
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

#: the balancing methods: a name or ``package.module:Class`` -> a :class:`Balancer` subclass
METHODS: Registry[type[Balancer]] = Registry(
    "method",
    base=Balancer,
    option="method",
    expects="a subclass of polytask.balancing.Balancer",
    builtins={
        # loss weighting
        "fixed": FixedWeights,
        "sum": Sum,
        "mean": Mean,
        "uw": UncertaintyWeighting,
        "gradnorm": GradNorm,
        "dwa": DynamicWeightAverage,
        "rlw": RandomLossWeighting,
        "gls": GeometricLossStrategy,
        "imtl_l": IMTLL,
        "imtl": IMTL,
        "db_mtl": DBMTL,
        "famo": FAMO,
        "excess_mtl": ExcessMTL,
        # gradient aggregation
        "mgda": MGDA,
        "pcgrad": PCGrad,
        "graddrop": GradDrop,
        "gradvac": GradVac,
        "cagrad": CAGrad,
        "imtl_g": IMTLG,
        "nash_mtl": NashMTL,
        "aligned_mtl": AlignedMTL,
        "upgrad": UPGrad,
        "dualproj": DualProj,
        "fairgrad": FairGrad,
        "con_fig": ConFIG,
    },
)


def available() -> list[str]:
    """Names accepted by :func:`make` (``METHODS.register(name, cls)`` adds one)."""
    return METHODS.names()


def make(name: str, **options: Any) -> Balancer:
    """Build a method by registry name or import path (``package.module:Class``).

    The class is checked to be a :class:`Balancer` before it is called; an unknown name,
    a path to something else or a bad option raises :class:`~polytask.errors.OptionError`.
    """
    cls = METHODS.resolve(name)
    check_options(cls, options, owner=f"method {name!r}")
    try:
        return cls(**options)
    except TypeError as err:
        raise OptionError(
            "", f"bad option for method {name!r}: {err}", f"see the options of {cls.__name__}"
        ) from None


__all__ = [
    "Balancer",
    "LossWeighting",
    "GradientAggregator",
    "GramianWeighting",
    "backward",
    "Trace",
    "make",
    "available",
    "METHODS",
    "resolve_level",
    "Collective",
    "ProcessGroup",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DBMTL",
    "DualProj",
    "DynamicWeightAverage",
    "ExcessMTL",
    "FAMO",
    "FairGrad",
    "FixedWeights",
    "GeometricLossStrategy",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "IMTL",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "Mean",
    "NashMTL",
    "PCGrad",
    "RandomLossWeighting",
    "Sum",
    "UPGrad",
    "UncertaintyWeighting",
]
