"""FAMO: fast adaptive multitask optimisation with one backward pass per step (Liu et al.,
NeurIPS 2023)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import DataError
from ._options import known_tasks, number, require
from ._state import TaskAdam, check_state_keys
from .base import Closure, LossWeighting

MODES = ("same_batch", "next_step")


def _floats(losses: Mapping[str, Tensor]) -> dict[str, float]:
    return {t: float(v.detach()) for t, v in losses.items()}


class FAMO(LossWeighting):
    r"""Fast Adaptive Multitask Optimization (Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive
    Multitask Optimization", NeurIPS 2023, Algorithm 1).

    Task logits :math:`w` (initialised to 0) give :math:`z = \operatorname{softmax}(w)`
    over the tasks present. With :math:`D_i = L_i - m_i + ε` (``min_losses`` :math:`m_i`,
    default 0), :meth:`combine` returns

    .. math::

        L = \sum_i \frac{z_i}{c} \log D_i, \qquad c = \sum_i \frac{z_i}{D_i}
        \;(\text{no gradient}), \qquad
        \text{so}\quad ∇L = \sum_i \frac{z_i}{c\,D_i} ∇L_i

    — a convex combination of the task gradients, one backward pass per step (the value of
    ``L`` itself is not a loss to monitor). After a step, with the improvement of the log
    losses :math:`δ_i = \log D_i^{\text{before}} - \log D_i^{\text{after}}`, the logits take
    one Adam step (``lr``, L2 ``weight_decay`` γ) on

    .. math::

        ∇_w = J_{\text{softmax}}(w)^\top δ = z ⊙ (δ - ⟨z, δ⟩),

    which raises the weight of the tasks whose loss fell least. The logits and their Adam
    state are owned by the method and updated here, not by the model's optimiser, so
    :meth:`parameters` is empty; :meth:`state_dict` saves them (keyed by task).

    Which losses are "before" and "after" (``mode``):

    * ``"same_batch"`` (default; the paper's rule and the official code's loop): δ is the
      change of the losses *on the same batch* over one update. Given the step hook
      (``after_step(losses, closure)``, which the Trainer passes), "before" are the step's
      losses and "after" are ``closure()``: the same batches re-evaluated at the updated
      parameters, one extra forward pass without gradient. A loop without a closure
      re-evaluates itself and passes the new losses as ``after_step(after)``; "before" are
      then the losses :meth:`combine` saw last.
    * ``"next_step"`` (cheaper, an approximation): :meth:`after_step` uses the losses of
      the step just taken as "after" and those of the previous step as "before": δ measures
      the change over one update across two consecutive batches, without an extra forward
      pass. The first call only stores its losses.

    Only tasks present in both "before" and "after" are updated (softmax over them). The
    official code also clips the gradient norm of the shared parameters at 1; here that is
    the Trainer's ``clip_norm``. The losses must exceed ``min_losses``. Defaults: ``lr``
    0.025 (the paper's), γ = 1e-3 (the official class defaults to 1e-5, its experiments set
    γ per data set; tune it like a learning rate).
    """

    name = "famo"

    def __init__(
        self,
        lr: float = 0.025,
        weight_decay: float = 1e-3,
        eps: float = 1e-8,
        min_losses: Mapping[str, float] | None = None,
        mode: str = "same_batch",
    ) -> None:
        self.lr = number(
            "lr", lr, low=0.0, strict=True, fix="the logits' learning rate, e.g. 0.025"
        )
        self.weight_decay = number(
            "weight_decay",
            weight_decay,
            low=0.0,
            strict=False,
            fix="the logits' decay γ ≥ 0, e.g. 0.001",
        )
        self.eps = number(
            "eps", eps, low=0.0, strict=True, fix="a small positive number, e.g. 1e-8"
        )
        self.min_losses = {}
        for t, m in (min_losses or {}).items():
            self.min_losses[t] = number(
                f"min_losses.{t}",
                m,
                low=-math.inf,
                strict=True,
                fix="give each task's lower bound of its loss, e.g. 0",
            )
        require(
            mode in MODES,
            "mode",
            f"{mode!r}",
            f"use one of {list(MODES)} (same_batch: losses "
            "re-evaluated on the same batch after the step; next_step: the losses of the next "
            "step)",
        )
        self.mode = mode
        self.logits: dict[str, float] = {}
        self.adam = TaskAdam(self.lr, weight_decay=self.weight_decay)
        self.before: dict[str, float] = {}

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)
        known_tasks("min_losses", self.min_losses, tasks)

    def _z(self, tasks: list[str]) -> Tensor:
        w = torch.tensor([self.logits.get(t, 0.0) for t in tasks], dtype=torch.float64)
        return torch.softmax(w, dim=0)

    def weights(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The effective weights z_i / (c D_i) of ∇L_i (float64, summing to 1)."""
        z = self._z(list(losses))
        d = torch.tensor(
            [v - self.min_losses.get(t, 0.0) + self.eps for t, v in _floats(losses).items()],
            dtype=torch.float64,
        )
        return (z / d) / (z / d).sum()

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        tasks = list(losses)
        d = torch.stack([v - self.min_losses.get(t, 0.0) + self.eps for t, v in losses.items()])
        z = self._z(tasks).to(d.device)  # the logits live on the host, the losses anywhere
        if bool((d.detach() <= 0).any()):
            bad = [
                t
                for t, v in _floats(losses).items()
                if v - self.min_losses.get(t, 0.0) + self.eps <= 0
            ]
            raise DataError(
                "losses",
                f"famo: losses of {bad} are not above their min_losses",
                "set min_losses below the lowest value each loss can take",
            )
        c = (z / d.detach().double()).sum()
        if self.mode == "same_batch":
            self.before = _floats(losses)
        return ((z / c).to(d.dtype) * torch.log(d)).sum()

    def _update(self, before: Mapping[str, float], after: Mapping[str, float]) -> None:
        tasks = [t for t in after if t in before]
        if not tasks:
            return
        z = self._z(tasks)
        delta = torch.tensor(
            [
                math.log(before[t] - self.min_losses.get(t, 0.0) + self.eps)
                - math.log(after[t] - self.min_losses.get(t, 0.0) + self.eps)
                for t in tasks
            ],
            dtype=torch.float64,
        )
        grad = z * (delta - (z * delta).sum())
        values = {t: self.logits.get(t, 0.0) for t in tasks}
        self.logits.update(self.adam.step(values, {t: float(g) for t, g in zip(tasks, grad)}))

    def after_step(self, losses: Mapping[str, Tensor], closure: Closure | None = None) -> None:
        if self.mode == "same_batch" and closure is not None:
            before, after = _floats(losses), _floats(closure())
        else:
            before, after = self.before, _floats(losses)
        for t, v in after.items():
            if not v - self.min_losses.get(t, 0.0) + self.eps > 0:
                raise DataError(
                    "losses",
                    f"famo: loss of {t!r} ({v}) is not above its min_loss",
                    "set min_losses below the lowest value each loss can take",
                )
        self._update(before, after)
        # next_step: this step's losses are the "before" of the next update; same_batch:
        # combine() sets "before" again for the next step
        self.before = after if self.mode == "next_step" else {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "logits": dict(self.logits),
            "adam": self.adam.state_dict(),
            "before": dict(self.before),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"logits", "adam", "before"})
        self.logits = {t: float(v) for t, v in state.get("logits", {}).items()}
        self.adam.load_state_dict(state.get("adam", {}))
        self.before = {t: float(v) for t, v in state.get("before", {}).items()}
