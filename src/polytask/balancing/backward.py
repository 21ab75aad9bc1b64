"""``backward``: the balanced replacement of ``loss.backward()`` for any training loop.

.. code-block:: python

    losses = {"a": loss_a, "b": loss_b}
    polytask.balancing.backward(losses, method=polytask.balancing.make("upgrad"),
                                features=trunk_out, shared=trunk.parameters())
    optimizer.step()

What each parameter receives (``.grad`` accumulates, as with ``loss.backward()``):

* loss weighting (``combine``): every parameter gets ``scale · ∇ combine(losses)`` — shared
  ones ``Σ_i λ_i ∇L_i``, task-specific ones ``λ_i ∇L_i``;
* gradient aggregator, level ``"params"``: with ``J`` the (K, P) per-task gradients of the
  shared parameters, shared parameters get ``scale · d`` with ``d = wᵀJ`` (Gramian methods,
  ``w = method.weights(J Jᵀ)``) or ``d = method.aggregate(J)``; every other parameter the
  losses reach gets ``scale · ∇ Σ_i L_i`` — for a parameter of task i alone, its own ∇L_i;
* gradient aggregator, level ``"features"``: the same rule applied at the shared feature
  tensor z (every loss passes through it): with ``J_z`` the (K, numel z) per-task
  gradients of z, the gradient arriving at z is replaced by ``scale · d_z`` and
  back-propagated, so everything below z gets ``scale · (∂z/∂θ)ᵀ d_z``; everything above z
  (heads, task layers) gets ``scale · ∇ Σ_i L_i``. With MGDA this is MGDA-UB (Sener & Koltun
  2018): the weights come from the Gramian of the feature gradients. Cost: ONE backward
  pass — hooks split what the heads send to z by task on the way down, and z's gradient is
  swapped for the update before the pass enters the trunk; where heads share operations
  above z, K passes through the heads first, then one ordinary backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from . import _autograd
from ._gramian import combine, gramian
from ._options import OptionError, require
from .base import Balancer, GradientAggregator, GramianWeighting, LossWeighting

if TYPE_CHECKING:
    from .distributed import Collective

LEVELS = ("features", "params")

#: the shared features: one tensor, or one per batch of the step (source -> tensor, or a list)
Features = Tensor | Mapping[str, Tensor] | Sequence[Tensor] | None


@dataclass
class Trace:
    """What one :func:`backward` call's update was made of, filled when passed as
    ``trace=`` (for monitoring: gradient conflict, the weights a method gave each task).

    Attributes:
        tasks: the task names, in the order of ``losses`` (the rows of the fields below).
        level: the level the method took per-task gradients at (None: a loss weighting).
        gramian: (K, K) Gramian ``J Jᵀ`` of the per-task gradients at the shared
            parameters, float32 or better, detached — at that level whatever level the
            method works at (at the features of separate batches the rows are orthogonal
            by construction). None without shared parameters.
        weights: (K,) the weights the method gave the tasks: ``λ_i = ∂ combine / ∂L_i``
            for a loss weighting, the Gramian weighting's ``w`` (at its own level), None
            for other aggregators (their update is no weighted sum of the rows) and when an
            fp16 overflow left the method uncalled.
        reused: whether ``gramian`` came from the per-task gradients the update itself
            needed (a gradient method at the shared parameters: no extra work beyond a
            K × K product); otherwise it took K retained backward passes of its own through
            the shared part.
    """

    tasks: list[str] = field(default_factory=list)
    level: str | None = None
    gramian: Tensor | None = None
    weights: Tensor | None = None
    reused: bool = False


def _as_mapping(losses: Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Tensor]:
    if isinstance(losses, Mapping):
        return dict(losses)
    return {str(i): loss for i, loss in enumerate(losses)}


def resolve_level(
    method: Balancer,
    level: str | None,
    *,
    has_features: bool | None,
    has_shared: bool | None = None,
) -> str | None:
    """The level at which ``method`` takes per-task gradients, or raise an
    :class:`~polytask.errors.OptionError` naming ``level`` (or ``method``) and the fix.

    ``level=None`` chooses ``"features"`` where a shared feature tensor is available and the
    method allows it, else ``"params"``. ``has_features`` / ``has_shared``: whether the model
    gives a shared feature tensor / has shared parameters (``None``: not known yet — only
    what is known is checked). Returns ``None`` for a loss weighting (no per-task gradients)
    and where the choice must wait for the model's output.
    """
    require(
        level is None or level in LEVELS,
        "level",
        f"unknown level {level!r}",
        "use features, params, or leave it out to choose automatically",
    )
    if isinstance(method, LossWeighting) or method.needs == "losses":
        return None
    name = method.name or type(method).__name__
    allowed = tuple(getattr(method, "levels", LEVELS))
    require(
        has_shared is not False,
        "method",
        f"{name!r} balances per-task gradients of the shared part, but the model has no "
        "shared parameters (e.g. pure soft sharing)",
        "use a loss-weighting method (fixed, uw, dwa, ...) or a model with shared parameters",
    )
    if level is None:
        if "features" in allowed and has_features is not False:
            return "features" if has_features else None
        level = "params"
    if level not in allowed:
        hint = "features" if "features" in allowed else "params"
        where = (
            " with a model that gives shared features (hard or hierarchical sharing)"
            if hint == "features" and has_features is False
            else ""
        )
        levels = " or ".join(allowed)
        raise OptionError(
            "level",
            f"method {name!r} works at level {levels} only, not {level!r}",
            f"set level: {hint}{where}",
        )
    require(
        not (level == "features" and has_features is False),
        "level",
        "'features' needs the shared feature tensor, but the model gives none",
        "use level: params, or a model that declares shared features "
        "(hard or hierarchical sharing; a Custom module returns shared_features)",
    )
    return level


def backward(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
    *,
    method: Balancer,
    features: Features = None,
    shared: Iterable[torch.nn.Parameter] | None = None,
    level: str | None = None,
    scale: float | Tensor = 1.0,
    chunk_size: int | None = None,
    penalty: Tensor | None = None,
    trace: Trace | None = None,
    collective: Collective | None = None,
    params: Iterable[torch.nn.Parameter] | None = None,
) -> Tensor:
    """Fill ``.grad`` of every parameter the losses reach with the balanced update.

    Args:
        losses: task name -> scalar loss (or a list: tasks ``"0"``, ``"1"``, ...).
        method: the balancing method.
        features: the shared feature tensor z — one tensor every loss passes through, and
            through which alone the parameters below it reach the losses; or, when the
            step's tasks read different batches (one forward pass per source), the feature
            tensor of each (a mapping source -> tensor, or a list). Rows of different
            batches are disjoint, so every off-diagonal Gramian entry at that level is 0
            and the methods degenerate (MGDA becomes inverse-norm weighting): with several
            tensors and ``level=None`` the update is taken at the shared parameters, and an
            explicit ``level="features"`` warns once.
        shared: the shared parameters (needed at level ``"params"``; when given and empty,
            a gradient method is an error).
        level: ``"features"``, ``"params"``, or ``None``: features where one feature
            tensor is given and the method allows it, else params (ignored by loss
            weightings).
        scale: multiplies the update (``1/accumulate`` for gradient accumulation, or an
            AMP loss scale). A tensor is taken for a GradScaler's loss scale: a gradient
            method's per-task gradients are then taken of the scaled losses (fp16 gradients
            do not underflow) and unscaled before the method sees them; where they overflow,
            the method is not called and the update is left non-finite, so the scaler skips
            the step (and lowers its scale).
        chunk_size: level ``"params"``: at most this many rows per batched
            vector-Jacobian product (bounds memory; ``None``: all K at once).
        penalty: an optional scalar regulariser that is not a task loss (soft sharing's
            tie between towers, a representation-similarity term). It is not balanced:
            every parameter it reaches gets its plain gradient, added to the update.
        trace: a :class:`Trace` to fill (the update is the same with or without it).
        collective: data-parallel training (:mod:`polytask.balancing.distributed`): the
            ranks to balance across. ``losses`` are then this rank's *shares* (summing to
            the global losses over the ranks; a zero tensor where its shard has no label of
            a task, so that every rank passes the same tasks), and every rank's ``.grad``
            gets the update one process computes on the global batch. With a collective
            of one rank this is the ordinary path.
        params: with ``collective``: every parameter whose gradient is summed over the
            ranks (the model's ``parameters()``, the same order on every rank).

    Returns:
        The combined loss, detached: ``method.combine(losses)`` for a loss weighting,
        ``Σ_i L_i`` for a gradient method.

    Raises:
        OptionError: unknown level; level ``"features"`` without ``features``; a gradient
            method without shared parameters; a level the method does not support.
        ValueError: no losses, a loss that is not a scalar.
    """
    named = _as_mapping(losses)
    if not named:
        raise ValueError("no task losses to balance: the batch has no labels for any task")
    shared_list = None if shared is None else list(shared)
    zs = _feature_list(features)
    disjoint = len(zs) > 1
    ranks = collective is not None and collective.world_size > 1
    resolved = resolve_level(
        method,
        "params" if disjoint and level is None and shared_list else level,
        # across ranks a shard may give no batch (and no features) where others do
        has_features=bool(zs) or (None if ranks else False),
        has_shared=None if shared_list is None else bool(shared_list),
    )
    if disjoint and resolved == "features":
        _autograd._log_once(
            "disjoint-features",
            f"polytask.balancing: {method.name or type(method).__name__} takes per-task "
            f"gradients at the features of {len(zs)} separate batches: rows of different "
            "batches are disjoint, so the Gramian's off-diagonal entries are 0 and the method "
            "cannot see conflicts between those tasks (MGDA becomes inverse-norm weighting); "
            "leave balancing.level out (or set params) to balance at the shared parameters",
        )
    if penalty is not None and penalty.dim() != 0:
        raise ValueError(f"the penalty must be a scalar, got shape {tuple(penalty.shape)}")
    if collective is not None and ranks:
        if params is None:
            raise OptionError(
                "params",
                "balancing across ranks needs every parameter whose gradient is summed",
                "pass params=model.parameters() with collective=...",
            )
        if resolved is None and not isinstance(method, LossWeighting) and method.needs != "losses":
            raise OptionError(
                "level",
                "across ranks the level must not depend on one rank's batch",
                "pass level='features' or level='params' explicitly",
            )
        for t, v in named.items():
            if v.dim() != 0:
                raise ValueError(
                    f"the loss of task {t!r} must be a scalar, got shape {tuple(v.shape)}"
                )
        from .distributed import distributed_backward

        return distributed_backward(
            named,
            method=method,
            level=resolved,
            features=zs,
            shared=shared_list or [],
            params=list(params),
            scale=scale,
            chunk_size=chunk_size,
            penalty=penalty,
            trace=trace,
            collective=collective,
        )
    values = list(named.values())
    if trace is not None:
        trace.tasks, trace.level = list(named), resolved
        if isinstance(method, LossWeighting) or resolved == "features":
            trace.gramian = _shared_gramian(values, shared_list, scale, disjoint)
    if isinstance(method, LossWeighting):
        total = method.combine(named)
        if trace is not None:
            trace.weights = _loss_weights(total, values)
        torch.autograd.backward(_times(total if penalty is None else total + penalty, scale))
        return total.detach()
    if not isinstance(method, GradientAggregator):
        raise TypeError(
            f"balancing method {method.name!r} is neither a LossWeighting nor a GradientAggregator"
        )
    for t, v in named.items():
        if v.dim() != 0:
            raise ValueError(f"the loss of task {t!r} must be a scalar, got shape {tuple(v.shape)}")
    stacked = torch.stack(values)
    plain = stacked.detach()
    detached = dict(zip(named, plain.unbind()))  # (one operation for all K)
    if resolved == "features" and disjoint:
        _features_backward(stacked, values, detached, method, zs, scale, penalty, trace)
    elif resolved == "features":
        _feature_backward(
            stacked, values, detached, method, zs[0], scale, chunk_size, penalty, trace
        )
    else:
        if shared_list is None:
            raise OptionError(
                "shared",
                "level 'params' needs `shared`, the shared parameters",
                "pass shared=model.shared_parameters() (or features=... for the feature level)",
            )
        _param_backward(
            stacked,
            values,
            detached,
            method,
            shared_list,
            scale,
            chunk_size,
            penalty,
            disjoint,
            trace,
            z=zs[0] if len(zs) == 1 else None,
        )
    return plain.sum()


def _loss_weights(total: Tensor, values: list[Tensor]) -> Tensor | None:
    """``∂ total / ∂L_i`` (K,): the weight a loss weighting gave each task in this step
    (a walk through the combination only; the graph is kept)."""
    live = [i for i, v in enumerate(values) if v.requires_grad]
    if not total.requires_grad or not live:
        return None
    grads = torch.autograd.grad(
        total, [values[i] for i in live], retain_graph=True, allow_unused=True
    )
    out = torch.zeros(len(values), dtype=total.dtype, device=total.device)
    for i, g in zip(live, grads):
        if g is not None:
            out[i] = g.detach()
    return out


def _shared_gramian(
    values: list[Tensor],
    shared: list[torch.nn.Parameter] | None,
    scale: float | Tensor,
    disjoint: bool,
) -> Tensor | None:
    """The Gramian of the per-task gradients at the shared parameters, for a :class:`Trace`
    where the update does not compute them: K retained backward passes through the shared
    part (one per loss; for losses of separate batches each walks its own batch)."""
    if not shared or any(v.dim() != 0 for v in values):  # a bad loss: backward says so
        return None
    k = len(values)
    stacked = torch.stack(values)
    ids = {id(p) for p in shared}
    params = [p for p in _autograd.reached_leaves([stacked]) if id(p) in ids]
    if not params:
        return torch.zeros((k, k), dtype=torch.promote_types(stacked.dtype, torch.float32))
    rows = _autograd.jacobian(_scaled(values, scale), params, batched=not disjoint)
    if _amp(scale):
        rows = [r / scale for r in rows]
    return gramian([r.reshape(k, -1) for r in rows])


def _amp(scale: float | Tensor) -> bool:
    """Whether ``scale`` is a GradScaler's loss scale (a tensor)."""
    return isinstance(scale, Tensor)


def _unit(scale: float | Tensor) -> bool:
    """Whether ``scale`` is the number 1 (a product with it would only add an operation and
    its backward node to the step)."""
    return not isinstance(scale, Tensor) and scale == 1.0


def _times(x: Tensor, scale: float | Tensor) -> Tensor:
    """``x · scale``, or ``x`` itself for a scale of 1."""
    return x if _unit(scale) else x * scale


def _scaled(values: list[Tensor], scale: float | Tensor) -> list[Tensor]:
    """The losses whose per-task gradients are taken: scaled under AMP."""
    return [v * scale for v in values] if _amp(scale) else values


def _finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every entry of ``tensors`` is finite (one host synchronisation)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _feature_list(features: Features) -> list[Tensor]:
    if features is None:
        return []
    if isinstance(features, Tensor):
        return [features]
    items = list(features.values()) if isinstance(features, Mapping) else list(features)
    if not all(isinstance(z, Tensor) for z in items):
        raise OptionError(
            "features",
            "not a tensor, a mapping of tensors or a list of tensors",
            "pass the shared feature tensor of each forward pass",
        )
    return items


def _features_backward(
    stacked: Tensor,
    values: list[Tensor],
    losses: Mapping[str, Tensor],
    method: GradientAggregator,
    zs: list[Tensor],
    scale: float | Tensor,
    penalty: Tensor | None,
    trace: Trace | None = None,
) -> None:
    """The feature-level rule over several feature tensors (one per batch of the step): the
    rows are the per-task gradients of all of them, flattened and concatenated; each
    tensor's gradient is replaced by its block of the update, then one backward pass."""
    if not stacked.requires_grad:
        return
    total = _times(stacked.sum() if penalty is None else stacked.sum() + penalty, scale)
    live = [z for z in zs if z.requires_grad]
    if not live:
        torch.autograd.backward(total)
        return
    k = len(values)
    blocks = [j.reshape(k, -1) for j in _autograd.looped_grad(_scaled(values, scale), live)]
    if _amp(scale):
        blocks = [b / scale for b in blocks]
    if _amp(scale) and not _finite(blocks):  # overflow: the scaler skips this step
        update = [b.sum(0) for b in blocks]
    else:
        update = _combine(method, blocks, losses, trace)
    _backward_with_updates(total, live, update, penalty, scale)


def _backward_with_updates(
    total: Tensor,
    live: Sequence[Tensor],
    update: Sequence[Tensor],
    penalty: Tensor | None,
    scale: float | Tensor,
) -> None:
    """``total.backward()`` with the gradient arriving at each feature tensor of ``live``
    replaced by ``scale · (its block of the update + the penalty's plain gradient there)``."""
    extra: tuple[Tensor | None, ...] = (None,) * len(live)
    if penalty is not None and penalty.requires_grad and live:  # unbalanced: plain gradient
        extra = torch.autograd.grad(penalty, list(live), retain_graph=True, allow_unused=True)
    handles = []
    for z, d, e in zip(live, update, extra):
        dz = d.reshape(z.shape) if e is None else d.reshape(z.shape) + e
        replacement = _times(dz, scale).to(z.dtype)
        handles.append(z.register_hook(lambda _grad, r=replacement: r))  # type: ignore[no-untyped-call]
    try:
        if total.requires_grad:
            torch.autograd.backward(total)
    finally:
        for handle in handles:
            handle.remove()


def _combine(
    method: GradientAggregator,
    blocks: Sequence[Tensor],
    losses: Mapping[str, Tensor],
    trace: Trace | None = None,
    params: bool = False,
) -> list[Tensor]:
    """The update from per-task gradient blocks (K, P_b) of one Jacobian [J_1 … J_B]: for a
    Gramian method ``wᵀJ_b`` with ``w = weights(Σ_b J_b J_bᵀ)`` (J is never concatenated;
    :func:`._gramian.combine`, the path ``aggregate()`` takes too), else the split of
    ``aggregate([J_1 … J_B])``. ``trace`` gets the weights, and the Gramian when the
    blocks are the shared parameters' (``params``)."""
    if isinstance(method, GramianWeighting):
        if trace is None:
            return combine(method, blocks, losses)

        def seen(g: Tensor, w: Tensor) -> None:
            assert trace is not None
            trace.weights = w.detach()
            if params:
                trace.gramian, trace.reused = g, True

        return combine(method, blocks, losses, seen)
    if trace is not None and params:
        trace.gramian, trace.reused = gramian(blocks), True
    jac = blocks[0] if len(blocks) == 1 else torch.cat(list(blocks), dim=1)
    d = method.aggregate(jac, losses)
    if tuple(d.shape) != (jac.shape[1],):
        raise ValueError(
            f"{method.name}: aggregate() returned shape {tuple(d.shape)}, expected "
            f"({jac.shape[1]},)"
        )
    d = d.to(jac.dtype)
    return list(torch.split(d, [b.shape[1] for b in blocks]))


def _shared_update(
    method: GradientAggregator,
    blocks: Sequence[Tensor],
    losses: Mapping[str, Tensor],
    scale: float | Tensor,
    trace: Trace | None,
) -> list[Tensor]:
    """The update of the shared parameters from their per-task gradient blocks: the
    method's, or under AMP, where the blocks overflowed, their plain sum (non-finite: the
    scaler then skips the step)."""
    if _amp(scale) and not _finite(blocks):
        if trace is not None:
            trace.gramian = gramian(blocks)
        return [b.sum(0) for b in blocks]
    return _combine(method, blocks, losses, trace, params=True)


def _feature_update(
    method: GradientAggregator,
    jz: Tensor,
    losses: Mapping[str, Tensor],
    shape: torch.Size,
    trace: Trace | None = None,
) -> Tensor:
    """The aggregated feature gradient (``shape``) from the rows ∇_z L_i (K, *shape)."""
    k = jz.shape[0]
    if isinstance(method, GramianWeighting):
        (dz,) = _combine(method, [jz.reshape(k, -1)], losses, trace)
        return dz.reshape(shape)
    # a Jacobian aggregator sees (K, *feature shape): batch-aware rules (GradDrop) need it
    dz = method.aggregate(jz.reshape(k, *shape), losses)
    if tuple(dz.shape) != tuple(shape):
        raise ValueError(
            f"{method.name}: aggregate() returned shape {tuple(dz.shape)} at the feature "
            f"level, expected the feature shape {tuple(shape)}"
        )
    return dz


def _feature_backward(
    stacked: Tensor,
    values: list[Tensor],
    losses: Mapping[str, Tensor],
    method: GradientAggregator,
    z: Tensor,
    scale: float | Tensor,
    chunk_size: int | None,
    penalty: Tensor | None,
    trace: Trace | None = None,
) -> None:
    if not stacked.requires_grad:
        return
    total = _times(stacked.sum() if penalty is None else stacked.sum() + penalty, scale)
    if not z.requires_grad:
        torch.autograd.backward(total)
        return
    k = len(values)
    unit = _unit(scale)
    extra = penalty if penalty is not None and penalty.requires_grad else None

    def replace(rows: Tensor) -> Tensor:  # rows are scale · ∇_z L_i (+ scale · ∇_z penalty last)
        jz = rows[:k] if unit else rows[:k] / scale
        if _amp(scale) and not _finite([jz]):  # overflow: the scaler skips this step
            return rows.sum(0).to(z.dtype)
        dz = _feature_update(method, jz, losses, z.shape, trace)
        out = dz if unit else dz * scale
        if extra is not None:  # the penalty's path through z, unbalanced
            out = out + rows[k]
        return out.to(z.dtype)

    if _autograd.one_pass_feature_backward(values, z, total, replace, extra=extra):
        return
    # K passes through the heads, then one backward with z's gradient replaced
    jz = _autograd.feature_jacobian(_scaled(values, scale), z)
    if _amp(scale):
        jz = jz / scale
    if _amp(scale) and not _finite([jz]):  # overflow: the scaler skips this step
        dz = jz.sum(0)
    else:
        dz = _feature_update(method, jz, losses, z.shape, trace)
    if extra is not None:
        (pz,) = torch.autograd.grad(extra, z, retain_graph=True, allow_unused=True)
        if pz is not None:
            dz = dz + pz
    replacement = _times(dz, scale).to(z.dtype)
    handle = z.register_hook(lambda _grad: replacement)  # type: ignore[no-untyped-call]
    try:
        torch.autograd.backward(total)
    finally:
        handle.remove()


def reached_through(
    stacked: Tensor, values: list[Tensor], z: Tensor | None, penalty: Tensor | None
) -> tuple[list[Tensor], _autograd.Cut | None]:
    """Every leaf the losses (``stacked``: the K losses stacked) and the penalty reach, and
    the cut at the shared features z that found them (None without z): one walk over the
    graph serves both, and the cut is handed on to :func:`._autograd.jacobian_through` (a
    cut no loss reads too: it says so)."""
    cut = _autograd.cut_at(values, z) if z is not None and z.grad_fn is not None else None
    if cut is not None and cut.reads:
        reached = cut.leaves()
        if penalty is not None:
            known = {id(p) for p in reached}
            more = _autograd.reached_leaves([penalty])
            reached += [p for p in more if id(p) not in known]
        return reached, cut
    roots = [stacked] if penalty is None else [stacked, penalty]
    return _autograd.reached_leaves(roots), cut


def _param_backward(
    stacked: Tensor,
    values: list[Tensor],
    losses: Mapping[str, Tensor],
    method: GradientAggregator,
    shared: list[torch.nn.Parameter],
    scale: float | Tensor,
    chunk_size: int | None,
    penalty: Tensor | None,
    disjoint: bool = False,
    trace: Trace | None = None,
    z: Tensor | None = None,
) -> None:
    if not stacked.requires_grad:
        return
    # through the shared features: one walk of the graph serves the split and the leaves
    reached, cut = reached_through(stacked, values, None if disjoint else z, penalty)
    shared_ids = {id(p) for p in shared}
    params = [p for p in reached if id(p) in shared_ids]
    others = [p for p in reached if id(p) not in shared_ids]
    if not params:  # nothing shared is reached: the plain gradient (+ penalty) of the rest
        if trace is not None:
            k = len(values)
            trace.gramian = torch.zeros(
                (k, k), dtype=torch.promote_types(stacked.dtype, torch.float32)
            )
        total = stacked.sum() if penalty is None else stacked.sum() + penalty
        torch.autograd.backward(_times(total, scale), inputs=others)
        return
    # One walk down the graph gives the shared rows and the task-specific parameters'
    # gradient ∇ Σ_i L_i (the sum of their rows) together. Losses of separate batches are
    # differentiated one at a time: each pass then visits only its own batch's graph.
    # Through the shared features when given: the heads once, then K rows through the trunk.
    scaled = _scaled(values, scale)
    staged = (
        _autograd.jacobian_through(scaled, z, params, others, chunk_size, cut)
        if z is not None and not disjoint
        else None
    )
    if staged is not None:
        jac, other_sums = staged
    else:
        rows = _autograd.jacobian(scaled, params + others, chunk_size, batched=not disjoint)
        jac, other_sums = rows[: len(params)], [r.sum(0) for r in rows[len(params) :]]
    if _amp(scale):  # unscaled before the method (and the rule below) sees them
        jac = [r / scale for r in jac]
        other_sums = [r / scale for r in other_sums]
    penalty_grads: tuple[Tensor | None, ...] = (None,) * len(reached)
    if penalty is not None and penalty.requires_grad:  # unbalanced: its plain gradient
        penalty_grads = torch.autograd.grad(
            penalty, params + others, retain_graph=True, allow_unused=True
        )
    for p, r, e in zip(others, other_sums, penalty_grads[len(params) :]):
        g = r if e is None else r + e
        g = _times(g, scale).to(p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
    extra = penalty_grads[: len(params)] if penalty is not None else None
    k = len(values)
    blocks = [j.reshape(k, -1) for j in jac]
    update = _shared_update(method, blocks, losses, scale, trace)
    if extra is not None:
        update = [d if e is None else d + e.reshape(-1).to(d.dtype) for d, e in zip(update, extra)]
    for p, d in zip(params, update):
        g = _times(d, scale).reshape(p.shape).to(p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
