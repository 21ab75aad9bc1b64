"""GradNorm: weights that equalise the task gradients' norms, adjusted by training rates (Chen et
al., ICML 2018)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ._options import OptionError, number
from ._state import TaskAdam, check_state_keys
from .base import GramianWeighting


class GradNorm(GramianWeighting):
    r"""Gradient normalisation (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient
    Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, Alg. 1).

    The update is :math:`\sum_i w_i ∇L_i` with task weights :math:`w_i` (initially 1). At
    each step, with :math:`n_i = \|∇_W L_i\| = \sqrt{G_{ii}}` read off the Gramian of the
    per-task gradients (W: the tensors the engine differentiates, i.e. the shared features
    or the shared parameters — the paper uses the last shared layer), the loss ratios
    :math:`\tilde r_i = L_i(t) / L_i(0)` and the relative inverse training rates
    :math:`r_i = \tilde r_i / \operatorname{mean}_j \tilde r_j`,

    .. math::

        G_W^{(i)} = w_i n_i, \qquad \bar G_W = \operatorname{mean}_j G_W^{(j)}, \qquad
        L_{\text{grad}} = \sum_i \big| G_W^{(i)} - \bar G_W\, r_i^{α} \big|,

    with the targets :math:`\bar G_W r_i^α` held constant, so
    :math:`∂L_{\text{grad}}/∂w_i = \operatorname{sign}(w_i n_i - \bar G_W r_i^α)\, n_i`.

    :meth:`weights` returns the current w (for this step's update) and then takes one Adam
    step (learning rate ``lr``) on :math:`L_{\text{grad}}` for the next step, after which
    the weights are clipped to stay positive and rescaled so their sum is unchanged — with
    every task present that sum is K, as in the paper's renormalisation. The gradient is
    divided by :math:`\operatorname{mean}_j n_j` before the Adam step, which makes the whole
    trajectory of w independent of the gradients' units (Adam is so already, up to its ε).
    The weights are owned and updated by the method (not by the model's optimiser), so
    :meth:`parameters` is empty; :meth:`state_dict` saves w, :math:`L_i(0)` and the Adam
    state, keyed by task. :math:`L_i(0)` is the first loss seen for task i; a non-positive
    one makes :math:`\tilde r_i = 1`. ``α`` (``alpha``) sets the strength of the restoring
    force toward equal training rates: α = 0 equalises the weighted gradient norms.

    A task absent from a batch keeps its weight; the others are updated with the sum of
    their weights preserved. ``losses`` (the detached loss values) are required. Every call
    is one step of w: with gradient accumulation the weights move once per micro-batch.
    """

    name = "gradnorm"

    def __init__(self, alpha: float = 1.5, lr: float = 0.025) -> None:
        self.alpha = number(
            "alpha",
            alpha,
            low=0.0,
            strict=False,
            fix="the asymmetry α ≥ 0 (1.5 in the paper's NYUv2 runs, 0.12 on its synthetic task)",
        )
        self.lr = number(
            "lr", lr, low=0.0, strict=True, fix="the weights' learning rate, e.g. 0.025"
        )
        self.w: dict[str, float] = {}
        self.initial: dict[str, float] = {}
        self.adam = TaskAdam(self.lr)
        #: diagnostics of the last call (float64): norms n_i, weighted norms w_i n_i,
        #: targets Ḡ r_i^α
        self.last: dict[str, Tensor] = {}

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        if losses is None:
            raise OptionError(
                "losses",
                "gradnorm needs the task losses (for the training rates r_i)",
                "pass losses= to weights()/aggregate()",
            )
        loss = torch.tensor([float(v.detach()) for v in losses.values()], dtype=torch.float64)
        for t, v in zip(names, loss.tolist()):
            self.initial.setdefault(t, v)
        w_old = torch.tensor([self.w.get(t, 1.0) for t in names], dtype=torch.float64)
        norms = torch.diagonal(gramian).clamp_min(0).sqrt()
        l0 = torch.tensor([self.initial[t] for t in names], dtype=torch.float64)
        ratio = torch.where(
            l0 > 0, loss / torch.where(l0 > 0, l0, torch.ones_like(l0)), torch.ones_like(l0)
        )
        r = ratio / ratio.mean()
        weighted = w_old * norms
        target = weighted.mean() * r.pow(self.alpha)
        self.last = {"norms": norms, "targets": target, "weighted_norms": weighted}
        scale = norms.mean()
        if scale > 0 and torch.isfinite(scale):
            grad = torch.sign(weighted - target) * norms / scale
            new = self.adam.step(dict(zip(names, w_old.tolist())), dict(zip(names, grad.tolist())))
            w_new = torch.tensor([new[t] for t in names], dtype=torch.float64)
            total = w_old.sum()
            w_new = w_new.clamp_min(1e-6 * float(total) / len(names))
            w_new = w_new * (total / w_new.sum())
            self.w.update(zip(names, w_new.tolist()))
        return w_old

    def current_weights(self, tasks: list[str]) -> dict[str, float]:
        return {t: self.w.get(t, 1.0) for t in tasks}

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.w),
            "initial_losses": dict(self.initial),
            "adam": self.adam.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"weights", "initial_losses", "adam"})
        self.w = {t: float(v) for t, v in state.get("weights", {}).items()}
        self.initial = {t: float(v) for t, v in state.get("initial_losses", {}).items()}
        self.adam.load_state_dict(state.get("adam", {}))
