"""Soft parameter sharing: one tower per task, tied by a penalty on matched layers.

Duong et al. (2015), "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in
a Neural Network Parser" (squared L2 between towers); Yang & Hospedales (2017), "Trace
Norm Regularised Deep Multi-Task Learning" (trace norm of the stacked weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..nn.base import Encoder
from .base import (
    EncoderFactory,
    HeadsFactory,
    MultiTaskModel,
    MultiTaskOutput,
    _params,
    build_towers,
    check_options,
    invalid_option,
)

#: the tie Ω between towers
NORMS = ("l2", "trace")


def check_weight(weight: object, name: str = "weight") -> float:
    """``weight`` as a float >= 0, or an :class:`~polytask.errors.OptionError` naming ``name``."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not weight >= 0
        or weight == float("inf")
    ):
        raise invalid_option(name, weight, "use a finite number >= 0, e.g. 0.01")
    return float(weight)


class SoftSharing(MultiTaskModel):
    """One tower per task, no shared parameters; towers tied by a penalty.

    ``f_i(x) = g_i(h_i(x))`` with a fresh encoder ``h_i`` (parameters ``θ_i``) per task, and
    the regulariser added to every step (see :meth:`penalty`)

        λ Σ_{i<j} Σ_p ‖θ_i^p − θ_j^p‖²          (``norm="l2"``, Duong et al. 2015)
        λ Σ_p ‖[vec θ_1^p; …; vec θ_K^p]‖_*      (``norm="trace"``, Yang & Hospedales 2017)

    over matched layers ``p`` (the parameters with the same name and shape in every tower);
    ``‖·‖_*`` is the trace (nuclear) norm of the K × |θ^p| matrix whose rows are the towers'
    flattened weights. Each task's loss reaches only its own tower and head; the penalty
    reaches every tower. There are no shared parameters, so no shared features:
    ``shared_features`` is None and ``features[t] = task_features[t]`` = tower t's top layer.

    Args:
        towers: task name -> the task's encoder (towers should be of one architecture so
            that their layers match; unmatched parameters are simply not tied).
        heads: task name -> head ``g_i(features, mask)``.
        weight: λ >= 0.
        norm: ``"l2"`` (default) or ``"trace"``.
    """

    provides_shared_features = False

    def __init__(
        self,
        towers: Mapping[str, Encoder],
        heads: Mapping[str, nn.Module],
        weight: float = 0.01,
        norm: str = "l2",
    ) -> None:
        super().__init__()
        if set(towers) != set(heads) or not heads:
            raise OptionError(
                "towers",
                f"towers {sorted(towers)} and heads {sorted(heads)} name different tasks, or none",
                "give one tower and one head per task",
            )
        self.weight = check_weight(weight)
        if norm not in NORMS:
            raise invalid_option("norm", norm, f"use one of {list(NORMS)}")
        self.norm = norm
        self.task_names = list(heads)
        self.towers = nn.ModuleDict({t: towers[t] for t in self.task_names})
        self.heads = nn.ModuleDict(dict(heads))
        self.check_ownership()

    @classmethod
    def from_parts(
        cls, *, encoder: EncoderFactory, heads: HeadsFactory, tasks: Sequence[str], **options: Any
    ) -> SoftSharing:
        """One fresh ``encoder()`` per task; options ``weight`` (λ) and ``norm``."""
        check_options(options, ("weight", "norm"), "soft sharing")
        return cls(*build_towers(encoder, heads, tasks), **options)

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        outputs, features, mask = {}, {}, None
        for t in tasks:
            enc = self.towers[t](inputs)
            mask = enc.mask if mask is None else mask
            features[t] = enc.last
            outputs[t] = self.heads[t](enc.last, enc.mask)
        return MultiTaskOutput(
            outputs=outputs,
            features=features,
            mask=mask,
            shared_features=None,
            task_features=dict(features),
        )

    def matched_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameter name -> that parameter in each tower (task order), for the names every
        tower has with one shape."""
        named = [dict(self.towers[t].named_parameters()) for t in self.task_names]
        out: dict[str, list[nn.Parameter]] = {}
        for name, p in named[0].items():
            ps = [n.get(name) for n in named]
            if all(q is not None and q.shape == p.shape for q in ps):
                out[name] = ps  # type: ignore[assignment]
        return out

    def penalty(self, output: MultiTaskOutput | None = None) -> Tensor | None:
        """``λ Σ_{i<j} ‖θ_i − θ_j‖²`` (l2) or ``λ Σ_p ‖stack_i vec θ_i^p‖_*`` (trace); ``None``
        when λ = 0 or there is nothing to tie (one tower, no matched parameters)."""
        if self.weight == 0 or len(self.task_names) < 2:
            return None
        matched = self.matched_parameters()
        if not matched:
            return None
        terms: list[Tensor] = []
        for ps in matched.values():
            if self.norm == "l2":
                for i in range(len(ps)):
                    for j in range(i + 1, len(ps)):
                        terms.append((ps[i] - ps[j]).pow(2).sum())
            else:
                stacked = torch.stack([p.reshape(-1) for p in ps])
                terms.append(torch.linalg.matrix_norm(stacked, ord="nuc"))
        return self.weight * torch.stack(terms).sum()

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return _params([self.towers[task], self.heads[task]])
