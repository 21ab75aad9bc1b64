"""Cheap signals during training: what the tasks do to each other, every N steps.

Every ``every`` steps (steps 1, 1 + N, 1 + 2N, ... as numbered in ``train_log.csv``) the
trainer records one sample, a JSON object on one line of ``diagnostics.jsonl`` in the run
directory (and TensorBoard scalars ``diag/...`` when TensorBoard is installed):

* ``step``, ``epoch``;
* ``losses`` {task: float}: the step's task losses;
* ``grad_norms`` {task: float}: ‖∇_θ L_i‖ at the shared parameters θ;
* ``cosines`` {"a|b": float} (names sorted within the key): the cosine of the two tasks'
  gradients at the shared parameters (a pair is left out where a gradient is zero; any
  value that is not finite, e.g. after an fp16 overflow, is left out of its mapping);
* ``conflict_share``: the share of task pairs with a negative cosine (null with fewer than
  two tasks in the step);
* ``weights`` {task: float} or null: the weights the balancing method gave the tasks — a
  loss weighting's ``λ_i = ∂ combine / ∂L_i`` (fixed weights, uw's ``exp(−s_i)``, ...), a
  Gramian weighting's weights as the engine computed them (at the method's own level);
  null for the other aggregators (PCGrad, GradDrop, ...: their update is no weighted sum
  of the task gradients);
* ``gates`` {task: [mean gate weight per expert]}: gated architectures only (MMoE,
  CGC/PLE: the gate of the mixture the task's head reads, averaged over the step's rows
  and real tokens);
* ``lower_gates`` {"level d: task" | "level d: shared": [...]}: PLE's gates below the top
  level, the same way;
* ``stitch`` {depth: K × K matrix}: cross-stitch only (rows receiving task, columns
  source task, in the model's task order).

Everything is taken on the step's own batches at the step's parameters, and always at the
*parameter* level whatever level the method balances at (at the feature level the rows of
different sources are orthogonal by construction, so conflict would be invisible there).
Where the method computes the per-task gradients of the shared parameters anyway (a
gradient method at level ``params``) their Gramian is reused: no extra backward pass.
Otherwise the sample costs K retained backward passes through the shared part of the
step's graph (for a joint step over separate sources, about one ordinary backward pass),
no forward pass: no random numbers are drawn and no state changes, so a run trains
bit-identically with or without diagnostics and resumes exactly.

The default ``every`` (:data:`DEFAULT_EVERY`) samples at least once per 50 steps; its
cost is measured by ``benchmarks/diagnostics_cost.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .. import balancing
from ..sharing.base import MultiTaskModel, MultiTaskOutput
from ..sharing.cross_stitch import CrossStitch
from .logs import DIAGNOSTICS_LOG

__all__ = ["DEFAULT_EVERY", "DIAGNOSTICS_LOG", "Probe", "due", "pair_key"]

#: steps between two samples by default (at least one sample per 50 steps)
DEFAULT_EVERY = 50


def due(every: int, step: int) -> bool:
    """Whether step ``step`` (1-based, as numbered in ``train_log.csv``) is sampled:
    steps 1, 1 + every, 1 + 2·every, ...; never with ``every`` = 0."""
    return every > 0 and step >= 1 and (step - 1) % every == 0


def pair_key(a: str, b: str) -> str:
    """The key of a task pair in ``cosines``: the names sorted, joined by ``|``."""
    return "|".join(sorted((a, b)))


@dataclass
class Probe:
    """One sample in the making: :func:`polytask.balancing.backward` fills ``trace``, then
    :meth:`observe` turns it and the step's forward pass into ``entry`` (every key of a
    sample but ``step`` and ``epoch``)."""

    trace: balancing.Trace = field(default_factory=balancing.Trace)
    entry: dict[str, Any] | None = None

    def observe(
        self,
        model: MultiTaskModel,
        losses: Mapping[str, torch.Tensor],
        outputs: Mapping[str, MultiTaskOutput],
    ) -> None:
        trace = self.trace
        entry: dict[str, Any] = {"losses": _finite({t: v.detach() for t, v in losses.items()})}
        entry.update(_conflict(trace.tasks, trace.gramian))
        weights = trace.weights
        entry["weights"] = (
            None
            if weights is None
            else _finite(dict(zip(trace.tasks, weights.detach().cpu().tolist())))
        )
        gates = _gates(outputs)
        if gates:
            entry["gates"] = gates
        lower = _gates(outputs, lower=True)
        if lower:
            entry["lower_gates"] = lower
        if isinstance(model, CrossStitch):
            entry["stitch"] = {
                str(d): model.alpha(d).detach().float().cpu().tolist() for d in model.after
            }
        self.entry = entry


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite values as floats; the others are left out (JSON has no NaN)."""
    out = {k: float(v) for k, v in values.items()}
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _conflict(tasks: list[str], gramian: torch.Tensor | None) -> dict[str, Any]:
    """Gradient norms, pairwise cosines and the conflicting share from the Gramian at the
    shared parameters."""
    if gramian is None:
        return {"grad_norms": {}, "cosines": {}, "conflict_share": None}
    g = gramian.detach().to(device="cpu", dtype=torch.float64)
    g = 0.5 * (g + g.T)
    norms = g.diagonal().clamp(min=0).sqrt()
    cosines: dict[str, float] = {}
    negative = counted = 0
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            denom = float(norms[i] * norms[j])
            cos = float(g[i, j]) / denom if denom > 0 else math.nan
            cos = max(-1.0, min(1.0, cos)) if math.isfinite(cos) else math.nan
            if math.isfinite(cos):  # a zero gradient has no direction: no cosine
                cosines[pair_key(tasks[i], tasks[j])] = cos
                counted += 1
                negative += cos < 0
    return {
        "grad_norms": _finite(dict(zip(tasks, norms.tolist()))),
        "cosines": dict(sorted(cosines.items())),
        "conflict_share": negative / counted if counted else None,
    }


def _gates(outputs: Mapping[str, MultiTaskOutput], lower: bool = False) -> dict[str, list[float]]:
    """Per task the mean gate weight of each expert over the step's rows (and real tokens);
    ``lower``: PLE's gates below the top level instead."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, float] = {}
    for out in outputs.values():
        for task, gate in (out.lower_gates if lower else out.gates).items():
            g = gate.detach().double()
            flat = g.reshape(-1, g.shape[-1])
            if g.dim() == 3 and out.mask is not None:  # per token: real tokens only
                keep = out.mask.reshape(-1).to(device=flat.device, dtype=flat.dtype)
                total, n = (flat * keep.unsqueeze(-1)).sum(0), float(keep.sum())
            else:
                total, n = flat.sum(0), float(flat.shape[0])
            sums[task] = sums[task] + total if task in sums else total
            counts[task] = counts.get(task, 0.0) + n
    return {
        t: [float(v) for v in (sums[t] / counts[t]).cpu().tolist()]
        for t in sorted(sums)
        if counts[t] > 0
    }
