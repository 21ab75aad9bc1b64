"""An architecture: one shared encoder whose top layer each task reads through its own gate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polytask.nn.base import Encoder
from polytask.sharing import MultiTaskModel, MultiTaskOutput


class Gated(MultiTaskModel):
    """``f_i(x) = g_i(σ(a_i) ⊙ h(x))``: hard sharing with a learned per-feature gate per task.

    Shared: the encoder ``h``; task i's own: its gate logits ``a_i`` and its head ``g_i``.
    """

    provides_shared_features = True

    def __init__(self, encoder: Encoder, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.task_names = list(heads)
        width = encoder.layer_dims[-1]
        self.gates = nn.ParameterDict({t: nn.Parameter(torch.zeros(width)) for t in heads})
        self.check_ownership()

    @classmethod
    def from_parts(cls, *, encoder: Any, heads: Any, tasks: Sequence[str], **options: Any) -> Gated:
        """One ``encoder()``; heads read its top layer (the config's way to build it)."""
        enc = encoder()
        return cls(enc, heads({t: enc.layer_dims[-1] for t in tasks}), **options)

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        enc = self.encoder(inputs)
        top = enc.layers[-1]
        outputs = {t: self.heads[t](torch.sigmoid(self.gates[t]) * top, enc.mask) for t in tasks}
        return MultiTaskOutput(
            outputs=outputs, features={t: top for t in tasks}, mask=enc.mask, shared_features=top
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [self.gates[task], *self.heads[task].parameters()]
