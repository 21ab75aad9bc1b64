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
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor


class Balancer(ABC):
    """Common lifecycle of every balancing method."""

    #: name in the registry (``polytask.balancing.available()``)
    name: str = ""
    #: what the engine must compute per step: "losses", "gramian" or "jacobian"
    needs: str = "losses"

    def bind(self, tasks: Sequence[str]) -> None:
        """Called once with the task names before training; validates options."""
        self.tasks = list(tasks)

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters the method owns (optimised with the model's)."""
        return []

    def after_step(self, losses: Mapping[str, Tensor]) -> None:
        """Hook after the optimiser step (detached losses of this step)."""

    def on_epoch_end(self) -> None:
        """Hook at the end of each training epoch."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"balancing method {self.name!r} has no state, got keys {sorted(state)}")


class LossWeighting(Balancer):
    """A method that combines the losses into one scalar to differentiate."""

    needs = "losses"

    @abstractmethod
    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """One scalar from the losses of the tasks present in this batch."""


class GradientAggregator(Balancer):
    """A method that maps a (K, P) matrix of per-task gradients to a (P,) update."""

    needs = "jacobian"

    @abstractmethod
    def aggregate(self, jacobian: Tensor) -> Tensor:
        """(K, P) per-task gradients -> (P,) update."""
