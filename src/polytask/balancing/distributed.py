"""Balancing across processes: N ranks give the update one process gives on the global batch.

In data-parallel training each rank holds a shard of the step's batch. Give
:func:`polytask.balancing.backward` each rank's **share** of every task loss — the part that
sums to the global loss over the ranks, ``L_i = Σ_r L_i^{(r)}`` (for a masked mean over
``C_i`` labelled items, ``L_i^{(r)} = mean_r · c_r / C_i``; zero where a shard holds no label
of task i) — and a :class:`Collective`, and every rank's ``.grad`` ends up holding the
update one process computes from the global losses:

* the loss values are summed over the ranks, and the method sees the global ones: each share
  is replaced by ``L_i^{(r)} + (L_i − L_i^{(r)})`` with the bracket detached (the global
  value, this rank's gradient), so a loss weighting's ``∂ combine / ∂L_i`` is taken at the
  global losses and the ranks' gradients sum to ``∇ combine(L)``;
* gradient methods at the shared **parameters**: the (K, P) per-task gradients are summed
  over the ranks (the Jacobian of the global losses) and every rank aggregates the same J;
* at the shared **features**: rows of different ranks are different examples, so the
  global Gramian is the sum of the ranks' Gramians — a Gramian method all-reduces only the
  K × K matrix, and each rank applies the weights to its own rows; any other aggregator
  sees the rows of all ranks (gathered, in rank order) and each rank keeps its part;
* every other gradient (task-specific parameters, the penalty) is summed over the ranks.

No collective depends on the local data, so ranks never mismatch: every rank passes the
same tasks in the same order (a zero tensor where its shard has no label) and the same
``params``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from . import _autograd
from ._gramian import accumulation_dtype, gramian
from .base import Balancer, GradientAggregator, GramianWeighting, LossWeighting

if TYPE_CHECKING:
    from .backward import Trace

__all__ = [
    "Collective",
    "ProcessGroup",
    "distributed_backward",
    "global_values",
    "reduce_grads",
    "surrogates",
]


@runtime_checkable
class Collective(Protocol):
    """What balancing needs from the processes it runs in (``torch.distributed`` gives it:
    :class:`ProcessGroup`)."""

    @property
    def world_size(self) -> int: ...

    @property
    def rank(self) -> int: ...

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place; returns it."""
        ...

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's ``tensor`` (same shape on every rank), in rank order."""
        ...


class ProcessGroup:
    """A :class:`Collective` over a ``torch.distributed`` process group (default: the world
    group)."""

    def __init__(self, group: Any = None) -> None:
        self.group: Any = group

    @property
    def world_size(self) -> int:
        import torch.distributed as dist

        return int(dist.get_world_size(self.group))

    @property
    def rank(self) -> int:
        import torch.distributed as dist

        return int(dist.get_rank(self.group))

    @property
    def device(self) -> torch.device:
        """Where this group's collectives take their tensors (NCCL: the current GPU)."""
        import torch.distributed as dist

        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_reduce(self, tensor: Tensor) -> Tensor:
        import torch.distributed as dist

        dist.all_reduce(tensor, group=self.group)
        return tensor

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        import torch.distributed as dist

        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous(), group=self.group)
        return out


def global_values(values: Sequence[Tensor], collective: Collective) -> Tensor:
    """(K,) the losses summed over the ranks, detached, float32 or better."""
    if not values:
        return torch.zeros(0)
    stacked = torch.stack([v.detach() for v in values])
    stacked = stacked.to(torch.promote_types(stacked.dtype, torch.float32))
    return collective.all_reduce(stacked.clone())


def surrogates(values: Sequence[Tensor], totals: Tensor) -> list[Tensor]:
    """Each share with the global value and its own gradient: ``v + (T − v).detach()``."""
    out = []
    for v, t in zip(values, totals):
        t = t.to(v.dtype)
        out.append(v + (t - v.detach()) if v.requires_grad else t.clone())
    return out


def reached_anywhere(
    flags: Sequence[bool], collective: Collective, device: torch.device
) -> list[bool]:
    """Per item, whether any rank's flag is set (one all-reduce of a small vector)."""
    if not flags:
        return []
    counts = torch.tensor([float(f) for f in flags], device=device)
    return [n > 0 for n in collective.all_reduce(counts).tolist()]


def reduce_grads(params: Sequence[torch.nn.Parameter], collective: Collective) -> None:
    """Sum the ``.grad`` of ``params`` over the ranks, in one flat buffer per dtype and
    device. A parameter no rank's losses reached keeps no gradient (as in one process: an
    optimiser then leaves it alone); one reached elsewhere counts as zeros here."""
    if not params:
        return
    live = reached_anywhere([p.grad is not None for p in params], collective, params[0].device)
    groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
    for p, used in zip(params, live):
        if used:
            groups.setdefault((p.dtype, p.device), []).append(p)
    for (dtype, _device), ps in groups.items():
        flat = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                for p in ps
            ]
        )
        collective.all_reduce(flat)
        for p, g in zip(ps, torch.split(flat, [p.numel() for p in ps])):
            p.grad = g.view_as(p).clone()


class FreshGrads:
    """Inside: every parameter's ``.grad`` starts empty; on :meth:`merge` the gradients
    gathered there (this step's, now reduced) are added to the ones held before (gradient
    accumulation keeps what earlier micro-steps left)."""

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.params = list(params)
        self.saved = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None

    def merge(self) -> None:
        for p, old in zip(self.params, self.saved):
            if old is None:
                continue
            p.grad = old if p.grad is None else old.add_(p.grad)


def gather_columns(rows: Tensor, collective: Collective) -> tuple[Tensor, int, int]:
    """(K, n_r) rows of every rank side by side (K, Σ n_r), in rank order; with this rank's
    column range ``[start, end)``."""
    k, n = rows.shape
    sizes = collective.all_gather(torch.tensor([n], device=rows.device, dtype=torch.long))
    widths = [int(s.item()) for s in sizes]
    width = max(widths)
    padded = torch.zeros((k, width), dtype=rows.dtype, device=rows.device)
    padded[:, :n] = rows
    parts = collective.all_gather(padded)
    rank = collective.rank
    full = torch.cat([p[:, :w] for p, w in zip(parts, widths)], dim=1)
    start = sum(widths[:rank])
    return full, start, start + n


#: the most dimensions a feature tensor may have for :func:`gather_batches`
_MAX_DIMS = 8


def gather_batches(rows: Tensor | None, collective: Collective) -> tuple[Tensor, slice]:
    """Per-task feature gradients (K, B_r, *F_r) of every rank, stacked along the batch
    (K, Σ B_r, *F) with each trailing dimension padded with zeros to the largest over the
    ranks (as one process pads the global batch); with this rank's rows. ``rows`` is None on
    a rank without a batch."""
    k = -1 if rows is None else rows.shape[0]
    shape = [] if rows is None else list(rows.shape[1:])
    if len(shape) > _MAX_DIMS:
        raise ValueError(f"features with {len(shape)} dimensions; at most {_MAX_DIMS}")
    device = _device(collective) if rows is None else rows.device
    info = torch.tensor([k, len(shape), *shape, *[0] * (_MAX_DIMS - len(shape))], device=device)
    infos = [t.tolist() for t in collective.all_gather(info)]
    known = [i for i in infos if i[0] >= 0]
    k, dims = known[0][0], known[0][1]
    sizes = [i[2] if i[0] >= 0 else 0 for i in infos]
    trailing = [max(i[3 + d] for i in known) for d in range(dims - 1)]
    dtype = torch.float32 if rows is None else rows.dtype
    padded = torch.zeros((k, max(sizes), *trailing), dtype=dtype, device=device)
    if rows is not None:
        padded[(slice(None), *(slice(0, n) for n in rows.shape[1:]))] = rows
    parts = collective.all_gather(padded)
    full = torch.cat([p[:, :n] for p, n in zip(parts, sizes)], dim=1)
    start = sum(sizes[: collective.rank])
    return full, slice(start, start + sizes[collective.rank])


def _device(collective: Collective) -> torch.device:
    """Where ``collective`` takes tensors that no local data places (the CPU by default)."""
    return getattr(collective, "device", torch.device("cpu"))


def _most(n: int, collective: Collective) -> int:
    """The largest ``n`` over the ranks."""
    counts = collective.all_gather(torch.tensor([n], device=_device(collective)))
    return max(int(c.item()) for c in counts)


def _shared_rows(
    k: int,
    rows: Sequence[Tensor],
    reached: Sequence[torch.nn.Parameter],
    shared: Sequence[torch.nn.Parameter],
    extra: Sequence[Tensor | None] | None,
    collective: Collective,
) -> tuple[list[Tensor], Tensor | None]:
    """The (K, numel) rows of every shared parameter summed over the ranks (zeros where
    this rank's losses do not reach it), and the penalty's row likewise when ``extra``
    holds its gradients: one all-reduce of a (K [+ 1], P_shared) buffer in float32 or
    better."""
    if not shared:
        return [], None
    dtype = torch.promote_types(shared[0].dtype, torch.float32)
    for r in rows:
        dtype = torch.promote_types(dtype, r.dtype)
    device = shared[0].device
    sizes = [p.numel() for p in shared]
    offsets = {id(p): sum(sizes[:i]) for i, p in enumerate(shared)}
    height = k + (1 if extra is not None else 0)
    buf = torch.zeros((height, sum(sizes)), dtype=dtype, device=device)
    for i, (p, r) in enumerate(zip(reached, rows)):
        start = offsets[id(p)]
        buf[:k, start : start + p.numel()] = r.reshape(k, -1).to(dtype)
        if extra is not None and extra[i] is not None:
            buf[k, start : start + p.numel()] = extra[i].reshape(-1).to(dtype)  # type: ignore[union-attr]
    collective.all_reduce(buf)
    blocks = list(torch.split(buf[:k], sizes, dim=1))
    return blocks, (buf[k] if extra is not None else None)


def _reached_shared(
    mine: Sequence[torch.nn.Parameter],
    shared: Sequence[torch.nn.Parameter],
    collective: Collective,
) -> list[bool]:
    """Per shared parameter, whether any rank's losses reach it."""
    ids = {id(p) for p in mine}
    device = shared[0].device if shared else torch.device("cpu")
    return reached_anywhere([id(p) in ids for p in shared], collective, device)


def distributed_backward(
    losses: Mapping[str, Tensor],
    *,
    method: Balancer,
    level: str | None,
    features: Sequence[Tensor],
    shared: Sequence[torch.nn.Parameter],
    params: Sequence[torch.nn.Parameter],
    scale: float | Tensor,
    chunk_size: int | None,
    penalty: Tensor | None,
    trace: Trace | None,
    collective: Collective,
) -> Tensor:
    """:func:`polytask.balancing.backward` across ranks (see the module docstring):
    ``losses`` are this rank's shares, ``level`` the resolved level, ``params`` every
    parameter whose gradient is summed over the ranks (the model's, in the same order on
    every rank). Returns the global combined loss, detached."""
    from .backward import _amp, _loss_weights, _scaled, _shared_update, reached_through

    names = list(losses)
    k = len(names)
    shares = list(losses.values())
    totals = global_values(shares, collective)
    values = surrogates(shares, totals)
    detached = {t: totals[i] for i, t in enumerate(names)}
    stacked = torch.stack(values)
    pen = penalty if penalty is not None and penalty.requires_grad else None
    disjoint = len(features) > 1
    fresh = FreshGrads(params)
    try:
        if trace is not None:
            trace.tasks, trace.level = names, level
        if isinstance(method, LossWeighting):
            total = method.combine(dict(zip(names, values)))
            if trace is not None:
                trace.weights = _loss_weights(total, values)
                trace.gramian = _global_gramian(values, shared, scale, disjoint, collective)
            loss = total if pen is None else total + pen
            if loss.requires_grad:
                torch.autograd.backward(loss * scale)
            reduce_grads(params, collective)
            return total.detach()
        if not isinstance(method, GradientAggregator):
            raise TypeError(
                f"balancing method {method.name!r} is neither a LossWeighting nor a "
                "GradientAggregator"
            )
        if level == "features":
            if trace is not None:
                trace.gramian = _global_gramian(values, shared, scale, disjoint, collective)
            _features(values, detached, method, features, scale, pen, trace, collective)
            reduce_grads(params, collective)
            return totals.sum()
        z = features[0] if len(features) == 1 else None
        reached, cut = reached_through(stacked, values, z, pen)
        shared_ids = {id(p) for p in shared}
        reached_ids = {id(p) for p in reached}
        mine = [p for p in shared if id(p) in reached_ids]
        others = [p for p in reached if id(p) not in shared_ids]
        jac, other_sums = _local_rows(
            _scaled(values, scale), z, len(features), mine, others, chunk_size, cut
        )
        if _amp(scale):
            jac = [r / scale for r in jac]
            other_sums = [r / scale for r in other_sums]
        grads: tuple[Tensor | None, ...] = (None,) * len(mine + others)
        if pen is not None:
            grads = torch.autograd.grad(pen, mine + others, retain_graph=True, allow_unused=True)
        for p, r, e in zip(others, other_sums, grads[len(mine) :]):
            g = r if e is None else r + e
            p.grad = (g * scale).to(p.dtype)
        blocks, extra = _shared_rows(
            k,
            jac,
            mine,
            shared,
            grads[: len(mine)] if pen is not None else None,
            collective,
        )
        update = _shared_update(method, blocks, detached, scale, trace)
        reduce_grads([p for p in params if id(p) not in shared_ids], collective)
        used = _reached_shared(mine, shared, collective)
        start = 0
        for p, d, u in zip(shared, update, used):
            if extra is not None:
                d = d + extra[start : start + p.numel()].to(d.dtype)
            start += p.numel()
            if u:  # as in one process: a shared parameter no loss reaches gets no gradient
                p.grad = (d * scale).reshape(p.shape).to(p.dtype)
        return totals.sum()
    finally:
        fresh.merge()


def _local_rows(
    losses: list[Tensor],
    z: Tensor | None,
    batches: int,
    below: Sequence[Tensor],
    above: Sequence[Tensor],
    chunk_size: int | None,
    cut: _autograd.Cut | None,
) -> tuple[list[Tensor], list[Tensor]]:
    """This rank's per-task gradients of the shared parameters ``below`` (K, *p.shape) and
    the plain gradients of the others ``above``, as one process takes them: through the one
    feature tensor z where its ``cut`` applies (the heads once, then K rows through the trunk:
    :func:`._autograd.jacobian_through`), else one batched product from the losses (K
    passes for the losses of ``batches`` > 1 separate batches). Local: no collective, so
    ranks may take different paths."""
    staged = None
    if z is not None and cut is not None and cut.reads and below:
        staged = _autograd.jacobian_through(losses, z, below, above, chunk_size, cut)
    if staged is not None:
        return staged
    rows = _autograd.jacobian(losses, [*below, *above], chunk_size, batched=batches <= 1)
    return rows[: len(below)], [r.sum(0) for r in rows[len(below) :]]


def _features(
    values: list[Tensor],
    losses: Mapping[str, Tensor],
    method: GradientAggregator,
    features: Sequence[Tensor],
    scale: float | Tensor,
    penalty: Tensor | None,
    trace: Trace | None,
    collective: Collective,
) -> None:
    """The feature-level rule across ranks: the update of this rank's feature rows goes down
    through its own graph (the caller then sums the parameters' gradients)."""
    from .backward import _amp, _backward_with_updates, _finite, _scaled

    k = len(values)
    stacked = torch.stack(values)
    live = [z for z in features if z.requires_grad] if stacked.requires_grad else []
    if (
        isinstance(method, GramianWeighting)
        and len(live) == 1
        and _one_pass(values, stacked, losses, method, live[0], scale, penalty, trace, collective)
    ):
        return
    scaled = _scaled(values, scale)
    if len(live) == 1:  # one pass through the heads where each reads z through its own ops
        jacobians = [_autograd.feature_jacobian(scaled, live[0])]
    else:
        jacobians = _autograd.looped_grad(scaled, live) if live else []
    blocks = [j.reshape(k, -1) for j in jacobians]
    if _amp(scale):
        blocks = [b / scale for b in blocks]
    if isinstance(method, GramianWeighting):
        dtype = accumulation_dtype(stacked.dtype)
        g = gramian(blocks) if blocks else torch.zeros((k, k), dtype=dtype)
        g = collective.all_reduce(g.to(device=stacked.device, dtype=dtype))
        if _amp(scale) and not _finite([g]):  # overflow: the scaler skips this step
            update = [b.sum(0) for b in blocks]
        else:
            w = method.weights(g, losses)
            if trace is not None:
                trace.weights = w.detach()
            update = [w.to(device=b.device, dtype=b.dtype) @ b for b in blocks]
    elif _most(len(live), collective) <= 1:
        # one batch per rank: the aggregator sees the global batch (K, B, *F), as in one
        # process (batch-aware rules such as GradDrop need the batch dimension)
        own = blocks[0].reshape(k, *live[0].shape) if blocks else None
        full, mine = gather_batches(own, collective)
        if _amp(scale) and not _finite([full]):
            d = full.sum(0)
        else:
            d = method.aggregate(full, losses)
            if tuple(d.shape) != tuple(full.shape[1:]):
                raise ValueError(
                    f"{method.name}: aggregate() returned shape {tuple(d.shape)} at the "
                    f"feature level, expected the feature shape {tuple(full.shape[1:])}"
                )
        if own is None:
            update = []
        else:
            part = d[(mine, *(slice(0, n) for n in own.shape[2:]))]
            update = [part.reshape(-1)]
    else:
        device = stacked.device
        rows = torch.cat(blocks, dim=1) if blocks else torch.zeros((k, 0), device=device)
        full, start, end = gather_columns(rows, collective)
        if _amp(scale) and not _finite([full]):
            d = full.sum(0)
        else:
            d = method.aggregate(full, losses)
            if tuple(d.shape) != (full.shape[1],):
                raise ValueError(
                    f"{method.name}: aggregate() returned shape {tuple(d.shape)}, expected "
                    f"({full.shape[1]},)"
                )
        update = list(torch.split(d[start:end], [b.shape[1] for b in blocks]))
    total = stacked.sum() if penalty is None else stacked.sum() + penalty
    _backward_with_updates(total * scale, live, update, penalty, scale)


def _one_pass(
    values: list[Tensor],
    stacked: Tensor,
    losses: Mapping[str, Tensor],
    method: GramianWeighting,
    z: Tensor,
    scale: float | Tensor,
    penalty: Tensor | None,
    trace: Trace | None,
    collective: Collective,
) -> bool:
    """A Gramian method at one feature tensor across ranks in ONE backward pass, as in one
    process (:func:`._autograd.one_pass_feature_backward`): the heads run backward once,
    the hook at z all-reduces this rank's K × K Gramian, and the weights of the global one
    give the update of this rank's rows before the pass enters the trunk. False, having
    done nothing and called no collective, where the rows cannot be split in one pass
    (the caller then takes them first; either way every rank all-reduces one Gramian)."""
    from .backward import _amp, _finite, _times, _unit

    k = len(values)
    dtype = accumulation_dtype(stacked.dtype)
    extra = penalty if penalty is not None and penalty.requires_grad else None

    def replace(rows: Tensor) -> Tensor:  # scale · ∇_z L_i (+ scale · ∇_z penalty last)
        jz = (rows[:k] if _unit(scale) else rows[:k] / scale).reshape(k, -1)
        g = collective.all_reduce(gramian([jz]).to(device=stacked.device, dtype=dtype))
        if _amp(scale) and not _finite([g]):  # overflow on some rank: the scaler skips
            return rows.sum(0).to(z.dtype)
        w = method.weights(g, losses)
        if trace is not None:
            trace.weights = w.detach()
        out = _times(torch.mv(jz.T, w.to(device=jz.device, dtype=jz.dtype)), scale)
        out = out.reshape(z.shape)
        if extra is not None:  # the penalty's path through z, unbalanced
            out = out + rows[k]
        return out.to(z.dtype)

    total = _times(stacked.sum() if penalty is None else stacked.sum() + penalty, scale)
    return _autograd.one_pass_feature_backward(values, z, total, replace, extra=extra)


def _global_gramian(
    values: list[Tensor],
    shared: Sequence[torch.nn.Parameter],
    scale: float | Tensor,
    disjoint: bool,
    collective: Collective,
) -> Tensor | None:
    """The Gramian of the global per-task gradients at the shared parameters (for a
    :class:`~polytask.balancing.backward.Trace`): this rank's rows, summed over the ranks."""
    from .backward import _amp, _scaled

    if not shared:
        return None
    k = len(values)
    stacked = torch.stack(values)
    reached = _autograd.reached_leaves([stacked]) if stacked.requires_grad else []
    reached_ids = {id(p) for p in reached}
    mine = [p for p in shared if id(p) in reached_ids]
    rows = _autograd.jacobian(_scaled(values, scale), mine, batched=not disjoint) if mine else []
    if _amp(scale):
        rows = [r / scale for r in rows]
    blocks, _ = _shared_rows(k, rows, mine, shared, None, collective)
    return gramian(blocks)
