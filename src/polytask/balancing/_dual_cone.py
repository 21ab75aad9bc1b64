"""The dual-cone projections shared by UPGrad and DualProj: the preference vector option and
the Gramian method that projects row combinations onto the dual cone of the rows."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ._options import is_real, known_tasks, require
from ._qp import dual_cone_weights, prepare_gramian, resolved
from .base import GramianWeighting, task_names

__all__ = [
    "Preference",
    "check_preference",
    "check_preference_tasks",
    "preference_weights",
    "DualConeWeighting",
]

Preference = Sequence[float] | Mapping[str, float] | None


def check_preference(pref_vector: Preference) -> Preference:
    """Validate a ``pref_vector`` option: None, a list of K weights or task name -> weight."""
    if pref_vector is None:
        return None
    items = (
        list(pref_vector.items())
        if isinstance(pref_vector, Mapping)
        else list(enumerate(pref_vector))
    )
    require(
        bool(items), "pref_vector", "empty", "omit it (uniform 1/K) or give one weight per task"
    )
    for key, p in items:
        require(
            is_real(p) and p >= 0,
            f"pref_vector[{key!r}]",
            f"{p!r} is not a finite number ≥ 0",
            "give every task a weight ≥ 0",
        )
    require(
        any(p > 0 for _, p in items),
        "pref_vector",
        "all weights are 0, so the update would be 0",
        "give at least one task a positive weight",
    )
    return (
        dict(pref_vector) if isinstance(pref_vector, Mapping) else [float(p) for p in pref_vector]
    )


def check_preference_tasks(pref_vector: Preference, tasks: Sequence[str]) -> None:
    """At bind(): a mapping must name known tasks."""
    if isinstance(pref_vector, Mapping):
        known_tasks("pref_vector", pref_vector, tasks)


def preference_weights(
    pref_vector: Preference, k: int, losses: Mapping[str, Tensor] | None
) -> Tensor:
    """(K,) float64 preference weights for the rows present in this call (default 1/K)."""
    names = task_names(k, losses)
    if pref_vector is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    if isinstance(pref_vector, Mapping):
        require(
            losses is not None,
            "pref_vector",
            "keyed by task name but no losses were given to name the rows",
            "pass the losses mapping, or give pref_vector as a list",
        )
        missing = [t for t in names if t not in pref_vector]
        require(
            not missing,
            "pref_vector",
            f"no weight for task(s) {missing}",
            "give every task a weight",
        )
        return torch.tensor([float(pref_vector[t]) for t in names], dtype=torch.float64)
    require(
        len(pref_vector) == k,
        "pref_vector",
        f"{len(pref_vector)} weights for {k} gradient rows",
        "give one weight per row, or a mapping task name -> weight when batches hold varying tasks",
    )
    return torch.tensor(pref_vector, dtype=torch.float64)


class DualConeWeighting(GramianWeighting):
    """Shared machinery of UPGrad and DualProj: a preference vector ``p`` and projections
    onto the dual cone of the rows, solved exactly on the Gramian. Subclasses say which
    combinations of rows are projected (:meth:`targets`) and how the projections combine.

    Every projection is certified (:func:`._qp.dual_cone_weights`: the KKT conditions to
    rounding, after fallback solvers where the first one stops short), so the update never
    conflicts with a task beyond rounding. Where the Gramian does not tell the update apart
    from 0 (:func:`._qp.resolved`: ``|d|²`` below the rounding error of ``wᵀGw``, as at a
    strongly stationary J, where the dual cone holds no direction that helps any task), the
    weights are 0: an exact zero update instead of rounding noise pointing anywhere.
    """

    def __init__(self, pref_vector: Preference = None) -> None:
        self.pref_vector = check_preference(pref_vector)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)
        check_preference_tasks(self.pref_vector, tasks)

    def targets(self, p: np.ndarray) -> np.ndarray:
        """(R, K) float64 weights of the R row combinations to project (numpy: the solve
        runs on the host, where a numpy call costs a fraction of a torch call)."""
        raise NotImplementedError

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        p = preference_weights(self.pref_vector, len(names), losses)
        g, scale = prepare_gramian(gramian)
        if scale == 0.0:
            return p
        if math.isnan(scale):  # non-finite Gramian: no meaningful update
            return torch.full((len(names),), float("nan"), dtype=torch.float64)
        w = dual_cone_weights(g, self.targets(p.numpy()), eps).sum(dim=0)
        if not resolved(g, w, eps):  # d is rounding noise: a stationary point to working precision
            return torch.zeros_like(w)
        return w
