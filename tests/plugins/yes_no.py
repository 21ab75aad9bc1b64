"""A task kind: yes / no from one logit, scored by ``agreement``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.tasks import TaskKind

LABELS = ("no", "yes")


class YesNo(TaskKind):
    """A yes / no answer from one logit ``z``: loss ``BCE(σ(z), y)``, metric ``agreement``."""

    kind = "yes_no"
    default_primary = "agreement"

    @property
    def output_size(self) -> int:
        return 1

    def metric_names(self) -> list[str]:
        return ["agreement"]

    def encode_target(self, raw: Any) -> tuple[float, bool]:
        if raw is None:
            return 0.0, False
        if raw not in LABELS:
            raise ValueError(f"unknown label {raw!r}: the label set is {list(LABELS)}")
        return float(LABELS.index(raw)), True

    def loss(self, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        target = torch.as_tensor(target, device=output.device, dtype=output.dtype)
        return F.binary_cross_entropy_with_logits(output[mask, 0], target[mask])

    def decode(self, output: Tensor, mask: Tensor | None = None) -> list[float]:
        return torch.sigmoid(output.detach().float()[:, 0]).tolist()

    def metrics(self, predictions: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
        pairs = [(p > 0.5, t == "yes") for p, t in zip(predictions, targets) if t is not None]
        return {"agreement": sum(p == t for p, t in pairs) / len(pairs) if pairs else float("nan")}

    def format_prediction(self, prediction: float) -> dict[str, Any]:
        return {"label": LABELS[prediction > 0.5], "probability": float(prediction)}
