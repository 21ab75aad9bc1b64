"""IMTL: the hybrid of IMTL-L loss scales and IMTL-G gradient weights (Liu et al., ICLR 2021)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ._gramian import from_numpy
from ._state import LearnedLogScales
from .base import GramianWeighting, task_names
from .imtl_g import imtl_g_alpha


class IMTL(LearnedLogScales, GramianWeighting):
    r"""Impartial Multi-Task Learning, the hybrid IMTL = IMTL-L + IMTL-G (Liu, Li, Kuang, Xue,
    Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021, Alg. 1).

    Every task learns a loss scale :math:`s_i` (IMTL-L); the gradients of the scaled losses,
    :math:`\tilde g_i = e^{s_i} g_i` with :math:`g_i = ∇L_i` at the shared level, are
    combined with the IMTL-G weights α (equal projections of the update onto every unit
    :math:`\tilde g_i / \|\tilde g_i\|`, :math:`\sum_i α_i = 1`). From the Gramian
    :math:`G = J J^\top` of the plain gradients alone:

    .. math::

        \tilde G = D G D,\; D = \operatorname{diag}(e^{s}), \qquad
        α = \text{IMTL-G}(\tilde G), \qquad
        d = \sum_i α_i \tilde g_i = \sum_i (α_i e^{s_i})\, g_i ,

    so :meth:`weights` returns :math:`α ⊙ e^{s}`. The scales follow IMTL-L's objective
    :math:`\sum_i e^{s_i} L_i - s_i`: when ``losses`` are given, :meth:`weights` *adds*
    :math:`∂/∂s_i = e^{s_i} L_i - 1` to ``s_i.grad`` (as a backward pass would), and the
    optimiser that holds :meth:`parameters` (the Trainer's) steps them; ``zero_grad`` clears
    them with the model's gradients. :meth:`state_dict` saves the s_i, keyed by task.
    The engine's ``scale`` (gradient accumulation, AMP loss scale) does not reach s.grad:
    each call adds the unscaled gradient (with accumulation over n micro-batches, n times
    it — harmless under Adam, n times the step under SGD).
    Called without ``losses``, the rows are the bound tasks in order (when K matches), else
    ``"0" … "K-1"``.

    Deviation: in the paper task-specific parameters receive the gradient of the scaled loss
    :math:`e^{s_i} ∇L_i`; under the engine they receive :math:`∇L_i`, as for every gradient
    aggregator.
    """

    name = "imtl"
    needs = "gramian"

    def _row_names(self, k: int, losses: Mapping[str, Tensor] | None) -> list[str]:
        bound = getattr(self, "tasks", None)
        # without losses, rows of a bound method are its tasks in order when K matches
        if losses is None and bound and len(bound) == k:
            return list(bound)
        return task_names(k, losses)

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        params = [self.scales.get(t) for t in names]
        e = torch.stack([p.detach().cpu() for p in params]).double().exp()
        scaled = e.unsqueeze(1) * gramian * e.unsqueeze(0)
        # IMTL-G's rank cut-off follows the precision of the Gramian given
        alpha = from_numpy(imtl_g_alpha(scaled.numpy(), len(names) * eps))
        if losses is not None:
            for p, ei, v in zip(params, e.tolist(), losses.values()):
                g = torch.tensor(ei * float(v.detach()) - 1.0, dtype=p.dtype, device=p.device)
                p.grad = g if p.grad is None else p.grad + g
        return alpha * e
