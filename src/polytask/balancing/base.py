"""The balancing interface: how N task losses become one update.

Two families share one lifecycle:

* :class:`LossWeighting` maps the task losses to one scalar, ``L = Σ_i λ_i L_i`` with
  weights that may be fixed, learned or adapted; one backward pass of that scalar gives
  every parameter its update (task-specific parameters receive ``λ_i ∇L_i``).
* :class:`GradientAggregator` maps per-task gradients ``J`` (K × P) to one update (P,).

A method declares what it needs per step in :attr:`Balancer.needs` (``"losses"``,
``"gramian"`` or ``"jacobian"``) so that the engine computes exactly that; the training
loop never asks which method it runs. Stateful methods own their state and expose it
through :meth:`state_dict` / :meth:`load_state_dict` (JSON-able values and tensors), so
checkpoints capture it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from ._gramian import check_gramian, combine, for_solver, input_eps

#: the step hook: the losses of the step's batches re-evaluated at the current parameters
Closure = Callable[[], Mapping[str, Tensor]]


class Balancer(ABC):
    """Common lifecycle of every balancing method."""

    #: name in the registry (``polytask.balancing.available()``)
    name: str = ""
    #: what the engine must compute per step: "losses", "gramian" or "jacobian"
    needs: str = "losses"
    #: levels at which per-task gradients may be taken ("features", "params")
    levels: tuple[str, ...] = ("features", "params")
    #: whether the update depends on how the task signals of a step relate (True: a step
    #: with one task leaves the method nothing to balance — the engine counts such steps;
    #: False for fixed weights, which mean the same with one task as with several)
    needs_several_tasks: bool = True

    def bind(self, tasks: Sequence[str]) -> None:
        """Called once with the task names before training; validates options."""
        self.tasks = list(tasks)

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters the method owns (optimised with the model's)."""
        return []

    def to(self, device: torch.device | str) -> Balancer:
        """Move the method's learnable parameters to ``device`` in place (the objects stay,
        so an optimiser built from :meth:`parameters` keeps them): beside the model, a
        learned weight costs no transfer between host and device per step."""
        with torch.no_grad():
            for p in self.parameters():
                p.data = p.data.to(device)
        return self

    def after_step(self, losses: Mapping[str, Tensor], closure: Closure | None = None) -> None:
        """Hook after the optimiser step.

        Args:
            losses: the detached losses of the step just taken, computed at the parameters
                *before* the update.
            closure: the step hook, as ``torch.optim``'s ``step(closure)``: calling it
                re-evaluates the task losses on the same step's batches at the updated
                parameters (no gradient, same dropout masks, no change to module buffers
                or to the training RNG) and returns them. It costs one forward pass, so a
                method calls it only when its rule needs it (FAMO's same-batch rule).
        """

    def on_epoch_end(self) -> None:
        """Hook at the end of each training epoch."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able values and tensors that checkpoints must keep."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(
                f"balancing method {self.name!r} has no state, got keys {sorted(state)}"
            )


class LossWeighting(Balancer):
    """A method that combines the losses into one scalar to differentiate.

    Shared parameters receive ``∇ combine(losses)``; a task-specific parameter of task i
    receives ``λ_i ∇L_i``.
    """

    needs = "losses"

    @abstractmethod
    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """One scalar from the losses of the tasks present in this batch (with graph)."""


class GradientAggregator(Balancer):
    """A method that maps a (K, P) matrix of per-task gradients to a (P,) update.

    Rows follow the order of ``losses`` (task name -> detached loss value), which the
    engine passes so that stateful methods can key their state by task; a third party
    may call ``aggregate(J)`` without it (rows are then tasks ``"0"``, ``"1"``, ...).
    Task-specific parameters receive their own task's gradient ``∇L_i``. At the feature
    level the engine passes the per-task feature gradients unflattened, (K, B, *F), and
    expects the feature shape (B, *F) back, so that rules defined over the batch (GradDrop's
    sign purity of batch-summed gradients) can see it.
    """

    needs = "jacobian"

    @abstractmethod
    def aggregate(self, jacobian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        """(K, P) per-task gradients -> (P,) update."""


class GramianWeighting(GradientAggregator):
    """An aggregator whose update is ``wᵀ J`` with K weights computed from the Gramian
    ``G = J Jᵀ`` (K × K) alone, so the engine never has to keep ``J`` itself.

    A method implements :meth:`_solve` only. :meth:`weights` (public; the contract is
    "(K, K) Gramian -> (K,) weights in the Gramian's dtype and device") checks the shape,
    names the rows, hands a K = 0 problem back empty, and gives ``_solve`` the Gramian once
    converted. Precision policy (:mod:`._gramian`), the same for :meth:`aggregate` and the
    engine, which share one path (:func:`._gramian.combine`): G is accumulated in float32
    or better (float64 rows: float64; float32 rows: float32; bf16/fp16 rows upcast to
    float32 first), the solve runs in float64 on the CPU with the tolerances of the
    accumulation dtype, and the weights are applied to J in J's dtype.
    """

    needs = "gramian"

    def weights(self, gramian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        """(K, K) Gramian -> (K,) weights of the rows of J, in the Gramian's dtype and device."""
        k = check_gramian(self.name, gramian)
        names = self._row_names(k, losses)
        if k == 0:
            return gramian.new_zeros(0)
        w = self._solve(for_solver(gramian), input_eps(gramian.dtype), names, losses)
        return w.to(device=gramian.device, dtype=gramian.dtype)

    def _row_names(self, k: int, losses: Mapping[str, Tensor] | None) -> list[str]:
        """Names of the K rows (:func:`task_names`)."""
        return task_names(k, losses)

    @abstractmethod
    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        """The weights (K,) in float64 from the symmetrised float64 CPU Gramian (K ≥ 1).

        ``eps``: the unit roundoff of the dtype the Gramian was accumulated in (what the
        Gramian is known to); ``names``: the rows' task names; ``losses`` as given to
        :meth:`weights`.
        """

    def aggregate(self, jacobian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        if jacobian.dim() != 2:
            raise ValueError(
                f"{self.name}: the Jacobian must be (K, P), got shape {tuple(jacobian.shape)}"
            )
        return combine(self, [jacobian], losses)[0]


def task_names(k: int, losses: Mapping[str, Tensor] | None) -> list[str]:
    """Row names: the keys of ``losses`` (checked against K), else ``"0" .. "K-1"``."""
    if losses is None:
        return [str(i) for i in range(k)]
    names = list(losses)
    if len(names) != k:
        raise ValueError(f"{k} gradient rows but {len(names)} losses {names}")
    return names
