"""Per-task gradients of K losses w.r.t. given tensors: the autograd under ``backward``.

Torch only, no knowledge of models or data. These primitives serve
:func:`polytask.balancing.backward`:

* :func:`feature_jacobian` — the K rows ``∇_z L_i`` of a shared feature tensor z from one
  backward pass through the heads, split by hooks on the operations that read z
  (:func:`split_jacobian`), else K passes through the heads only;
* :func:`one_pass_feature_backward` — the whole feature-level step in one backward pass:
  the rows are captured on the way down through the heads and z's gradient is replaced
  by the combined update before the pass enters the trunk;
* :func:`jacobian` — the K rows ``∇_x L_i`` for every input tensor x, by ONE batched
  vector-Jacobian product (``torch.autograd.grad(..., is_grads_batched=True)``: the K
  one-hot cotangents travel through the graph together), optionally in chunks of rows to
  bound memory; where the graph cannot be batched it falls back to K retained backward
  passes and says so once in the log (logger ``polytask.balancing``).
* :func:`reached_leaves` — the leaf tensors (parameters) the losses reach, read off the
  autograd graph, so the engine can give every parameter it was not told about its plain
  gradient ``∇ Σ_i L_i`` with a backward pass restricted to those leaves.
* :func:`separates` — whether a tensor z is a cut between some roots and the leaves below
  z (every path from such a leaf to a root passes through z); the precondition of the
  feature-level update, checked by architectures that pick z.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.autograd.graph import get_gradient_edge

from ._options import is_integer, require

log = logging.getLogger("polytask.balancing")

_warned: set[str] = set()


def _log_once(key: str, message: str, level: int = logging.WARNING) -> None:
    if key not in _warned:
        _warned.add(key)
        log.log(level, message)


def batched_grad(
    outputs: Tensor, inputs: Sequence[Tensor], cotangents: Tensor
) -> tuple[Tensor, ...]:
    """``torch.autograd.grad`` of ``outputs`` (K,) w.r.t. ``inputs`` with C cotangent rows
    (C, K) at once; returns tensors of shape (C, *input.shape). Keeps the graph."""
    return torch.autograd.grad(
        outputs,
        list(inputs),
        grad_outputs=cotangents,
        retain_graph=True,
        allow_unused=True,
        materialize_grads=True,
        is_grads_batched=True,
    )


def looped_grad(losses: Sequence[Tensor], inputs: Sequence[Tensor]) -> list[Tensor]:
    """K retained backward passes (the fallback): tensors of shape (K, *input.shape)."""
    rows: list[list[Tensor]] = [[] for _ in inputs]
    for loss in losses:
        if loss.requires_grad:
            grads = torch.autograd.grad(
                loss, list(inputs), retain_graph=True, allow_unused=True, materialize_grads=True
            )
        else:
            grads = tuple(torch.zeros_like(x) for x in inputs)
        for r, g in zip(rows, grads):
            r.append(g)
    return [torch.stack(r) for r in rows]


def jacobian(
    losses: Sequence[Tensor],
    inputs: Sequence[Tensor],
    chunk_size: int | None = None,
    *,
    batched: bool = True,
) -> list[Tensor]:
    """Per-task gradients: for each input x a tensor (K, *x.shape) whose row i is ∇_x L_i.

    One batched vector-Jacobian product over all K rows (or ``ceil(K / chunk_size)``
    products of ``chunk_size`` rows each). Inputs a loss does not reach get zero rows. The
    graph is kept (the caller finishes with its own backward pass).

    ``batched=False`` takes K separate backward passes instead. That is the cheaper choice
    when the losses come from different batches (one forward pass per source): each pass
    then walks only its own loss's part of the graph, so the K passes together cost one
    ordinary backward pass, whereas the batched product carries all K cotangent rows
    (zeros for the other tasks) through every batch's graph.
    """
    require(
        chunk_size is None or (is_integer(chunk_size) and chunk_size >= 1),
        "chunk_size",
        f"{chunk_size!r} must be an integer ≥ 1 (rows per batched product)",
        "give a positive integer or None",
    )
    if not inputs:
        return []
    if not batched:
        return looped_grad(list(losses), inputs)
    k = len(losses)
    stacked = torch.stack(list(losses))
    if not stacked.requires_grad:
        return [torch.zeros((k, *x.shape), dtype=x.dtype, device=x.device) for x in inputs]
    step = k if chunk_size is None else min(chunk_size, k)
    eye = torch.eye(k, dtype=stacked.dtype, device=stacked.device)
    try:
        parts = [batched_grad(stacked, inputs, eye[i : i + step]) for i in range(0, k, step)]
        if len(parts) == 1:
            return list(parts[0])
        return [torch.cat([p[j] for p in parts]) for j in range(len(inputs))]
    except (RuntimeError, NotImplementedError) as err:
        _log_once(
            "batched",
            "polytask.balancing: the batched vector-Jacobian product failed on this "
            f"model ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "falling back to one backward pass per task, which is slower",
        )
    return looped_grad(list(losses), inputs)


@dataclass
class Cut:
    """The autograd graph of K losses seen from a tensor z they read (:func:`cut_at`).

    Attributes:
        above: the leaves the losses reach without passing through z, in the order found.
        below: the leaves z depends on, in the order found (walked on first use).
        owners: z's *consumers* (the nodes that read z directly), each mapped to the one
            loss that reaches it and the input slots where it reads z; None where a
            consumer is reached by several losses, or a loss is z itself.
        reads: whether some loss reads z at all.
    """

    above: list[Tensor]
    owners: dict[Any, tuple[int, list[int]]] | None
    reads: bool
    node: Any = field(repr=False)

    @functools.cached_property
    def below(self) -> list[Tensor]:
        return _leaves([self.node], None)

    def leaves(self) -> list[Tensor]:
        """Every leaf the losses reach (above, then those below z not already seen)."""
        seen = {id(p) for p in self.above}
        below = [p for p in self.below if id(p) not in seen] if self.reads else []
        return self.above + below


def cut_at(losses: Sequence[Tensor], z: Tensor) -> Cut:
    """One walk over the graph of ``losses`` down to z, and on demand one below it
    (:class:`Cut`): what :func:`split_consumers`, :func:`reached_leaves` and the checks of
    :func:`jacobian_through` need, without walking the same nodes several times (a walk
    costs host time per node: about a microsecond each, thousands in a transformer)."""
    edge = get_gradient_edge(z)
    node_z, nr = edge.node, edge.output_nr
    above: list[Tensor] = []
    seen_leaf: set[int] = set()
    owners: dict[Any, tuple[int, list[int]]] = {}
    splittable = True
    for i, loss in enumerate(losses):
        root = loss.grad_fn
        if root is None:
            if loss.requires_grad and id(loss) not in seen_leaf:
                seen_leaf.add(id(loss))
                above.append(loss)
            continue
        if root is node_z:
            splittable = False
            continue
        for node in _walk([root], node_z):
            var = getattr(node, "variable", None)
            if var is not None:
                if id(var) not in seen_leaf:
                    seen_leaf.add(id(var))
                    above.append(var)
                continue
            idxs = [
                j for j, (nxt, k) in enumerate(node.next_functions) if nxt is node_z and k == nr
            ]
            if idxs:
                if owners.get(node, (i,))[0] != i:
                    splittable = False
                owners[node] = (i, idxs)
    return Cut(above, owners if splittable else None, bool(owners) or not splittable, node_z)


def split_consumers(losses: Sequence[Tensor], z: Tensor) -> dict[Any, tuple[int, list[int]]] | None:
    """The autograd nodes that read z directly (z's *consumers*), each mapped to the one
    loss that reaches it and the input slots where it reads z; None where a consumer is
    reached by several losses, or a loss is z itself (no one-pass split is possible).

    Raises :class:`~polytask.errors.OptionError` (``features``) when no loss reaches z.
    """
    if not z.requires_grad:
        return None
    return _owners(cut_at(losses, z))


def _owners(cut: Cut) -> dict[Any, tuple[int, list[int]]] | None:
    require(
        cut.reads,
        "features",
        "no loss depends on the feature tensor given",
        "pass the tensor the task heads read (the model output's shared_features)",
    )
    return cut.owners


class _RowCapture:
    """Hooks on z's consumers that collect what each sends to z as row ``owner`` of a
    (rows, *z.shape) tensor (summing where one loss reads z through several operations).

    A hook only keeps the tensor it is handed; :meth:`finish` stacks the rows in one
    operation (on a GPU every operation is a kernel launch, and hooks run once per task)."""

    def __init__(self, owners: dict[Any, tuple[int, list[int]]], rows: int, z: Tensor) -> None:
        self.z = z
        self.parts: list[Tensor | None] = [None] * rows
        self.handles = [
            node.register_hook(self._hook(i, idxs)) for node, (i, idxs) in owners.items()
        ]

    def _hook(self, i: int, idxs: list[int]) -> Callable[..., None]:
        parts, shape = self.parts, self.z.shape

        def hook(grad_inputs: tuple[Any, ...], _grad_outputs: tuple[Any, ...]) -> None:
            for j in idxs:
                g = grad_inputs[j]
                if g is None:
                    continue
                if g.requires_grad:
                    g = g.detach()
                if g.shape != shape:
                    g = g.reshape(shape)
                before = parts[i]
                parts[i] = g if before is None else before + g

        return hook

    def finish(self) -> Tensor:
        """The rows, stacked; rows no consumer wrote (a loss that does not reach z) are
        zero."""
        rows = [torch.zeros_like(self.z) if g is None else g for g in self.parts]
        return torch.stack(rows).to(self.z.dtype)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def split_jacobian(losses: Sequence[Tensor], z: Tensor) -> Tensor | None:
    """The K rows ∇_z L_i (K, *z.shape) from ONE backward pass of Σ_i L_i down to z, or None
    where that is impossible.

    Every autograd node that reads z directly (a *consumer* of z) sends z its part of the
    gradient; when each consumer is reached by one loss only (each head reads z through
    its own operations), row i is the sum of what loss i's consumers send, captured by
    hooks on those nodes. A walk over the graph above z (the heads) finds the consumers
    (:func:`split_consumers`); where one is shared by several losses (e.g. two tasks tapping
    a deeper layer computed from z) or a loss is z itself, this returns None and the caller
    takes K passes. Raises ``ValueError`` when no loss reaches z. Keeps the graph.
    """
    owners = split_consumers(losses, z)
    if owners is None:
        return None
    capture = _RowCapture(owners, len(losses), z)
    try:
        total = torch.stack([loss for loss in losses]).sum()
        torch.autograd.grad(total, z, retain_graph=True, allow_unused=True)
    finally:
        capture.remove()
    return capture.finish()


def one_pass_feature_backward(
    losses: Sequence[Tensor],
    z: Tensor,
    total: Tensor,
    replace: Callable[[Tensor], Tensor],
    extra: Tensor | None = None,
) -> bool:
    """``total.backward()`` in ONE pass in which z's gradient is replaced by
    ``replace(rows)``, where ``rows`` (K [+1], *z.shape) holds what each loss (and ``extra``,
    a regulariser, as the last row) sends to z in this pass — the per-task feature
    gradients, times whatever factor ``total`` applies to the losses.

    The heads run backward once: hooks on z's consumers capture the rows as the pass goes
    by, and a hook on z swaps the gradient that reaches z before the pass continues into
    the trunk. Returns False, having done nothing, where the rows cannot be split off in
    one pass (:func:`split_consumers`); the caller then takes K passes through the heads.
    """
    roots = list(losses) if extra is None else [*losses, extra]
    owners = split_consumers(roots, z)
    if owners is None:
        return False
    capture = _RowCapture(owners, len(roots), z)
    handle = z.register_hook(  # type: ignore[no-untyped-call]
        lambda _grad: replace(capture.finish())
    )
    try:
        torch.autograd.backward(total)
    finally:
        handle.remove()
        capture.remove()
    return True


def feature_jacobian(losses: Sequence[Tensor], z: Tensor) -> Tensor:
    """Per-task gradients of the shared features, (K, *z.shape): one backward pass through
    the heads (:func:`split_jacobian`) where each head reads z through its own operations,
    else K passes through the heads only. (A batched product here would push all K rows
    through every head: K² head passes. Keeps the graph.)"""
    rows = split_jacobian(losses, z)
    if rows is not None:
        return rows
    _log_once(
        "split",
        "polytask.balancing: the losses share operations above the feature tensor, so "
        "its per-task gradients take one pass through the heads per task",
        logging.DEBUG,
    )
    return looped_grad(list(losses), [z])[0]


def jacobian_through(
    losses: Sequence[Tensor],
    z: Tensor,
    below: Sequence[Tensor],
    above: Sequence[Tensor],
    chunk_size: int | None = None,
    cut: Cut | None = None,
) -> tuple[list[Tensor], list[Tensor]] | None:
    """Per-task gradients of the parameters ``below`` the shared features z, (K, *p.shape)
    each, and the plain gradient ``∇ Σ_i L_i`` of the parameters ``above`` it (the heads),
    in two stages: ONE pass through the heads that splits what each loss sends to z
    (:func:`split_jacobian`'s hooks) and gives the heads' gradients, then one batched
    vector-Jacobian product of z with those K rows through the trunk.

    A batched product from the losses pushes all K cotangent rows through every head (K²
    head passes, each as wide as z) where each head has one non-zero row; this pushes K
    rows through the trunk only (as torchjd's ``mtl_backward`` does). Returns None, having
    done nothing, where it does not apply: a consumer of z shared by several losses, a
    parameter of ``below`` not below z, one of ``above`` below it, or a path from below z to
    a loss that avoids z. ``cut``: :func:`cut_at` of the same losses and z, where the caller
    has it already. Keeps the graph."""
    if not z.requires_grad or z.grad_fn is None:
        return None
    cut = cut_at(losses, z) if cut is None else cut
    beneath = {id(p) for p in cut.below}
    if not all(id(p) in beneath for p in below) or any(id(p) in beneath for p in above):
        return None
    if beneath & {id(p) for p in cut.above}:  # a path around z (see separates())
        return None
    owners = _owners(cut)
    if owners is None:
        return None
    capture = _RowCapture(owners, len(losses), z)
    try:
        total = torch.stack(list(losses)).sum()
        grads = torch.autograd.grad(
            total, [z, *above], retain_graph=True, allow_unused=True, materialize_grads=True
        )
    finally:
        capture.remove()
    rows = capture.finish()
    k = rows.shape[0]
    if not below:
        return [], list(grads[1:])
    step = k if chunk_size is None else min(chunk_size, k)
    try:
        parts = [batched_grad(z, below, rows[i : i + step]) for i in range(0, k, step)]
        jac = list(parts[0]) if len(parts) == 1 else [torch.cat(c) for c in zip(*parts)]
    except (RuntimeError, NotImplementedError):
        jac = [
            torch.stack(r)
            for r in zip(
                *(
                    torch.autograd.grad(
                        z, list(below), grad_outputs=rows[i], retain_graph=True,
                        allow_unused=True, materialize_grads=True,
                    )
                    for i in range(k)
                )
            )
        ]  # fmt: skip
    return jac, list(grads[1:])


def reached_leaves(roots: Iterable[Tensor]) -> list[Tensor]:
    """Leaf tensors with ``requires_grad`` that the roots' autograd graph reaches, in the
    order found (each once)."""
    roots = list(roots)
    out = [r for r in roots if r.grad_fn is None and r.requires_grad]
    out = list({id(r): r for r in out}.values())
    seen = {id(r) for r in out}
    return out + [p for p in _leaves([r.grad_fn for r in roots], None) if id(p) not in seen]


def _walk(starts: Iterable[Any], stop: object | None) -> Iterator[Any]:
    """Every autograd node below the nodes ``starts`` once, depth first, without entering
    ``stop`` or going below a leaf's node (which is given: its ``variable`` is the leaf)."""
    seen: set[Any] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node is None or node in seen or node is stop:
            continue
        seen.add(node)
        yield node
        if getattr(node, "variable", None) is None:
            stack.extend(nxt for nxt, _ in node.next_functions)


def _leaves(starts: Iterable[Any], stop: object | None) -> list[Tensor]:
    """The leaves below the nodes ``starts`` (not walking through ``stop``), in the order
    found, each once."""
    found = (getattr(node, "variable", None) for node in _walk(starts, stop))
    return list({id(var): var for var in found if var is not None}.values())


def _leaf_ids(starts: Iterable[Any], stop: object | None) -> set[int]:
    return {id(p) for p in _leaves(starts, stop)}


def separates(z: Tensor, roots: Iterable[Tensor]) -> bool:
    """Whether every path from a leaf below ``z`` (one that z depends on) to a root passes
    through z — the condition under which replacing z's gradient redirects the whole update
    of those leaves. A walk over the autograd graph (cost: its number of nodes)."""
    if z.grad_fn is None:
        return True
    below = _leaf_ids([z.grad_fn], None)
    around = _leaf_ids([r.grad_fn for r in roots], z.grad_fn)
    return not (below & around)
