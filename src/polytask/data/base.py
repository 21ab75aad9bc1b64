"""Examples, data sets and batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class Example:
    """One input with labels for some tasks.

    ``inputs``: ``{"tokens": [str, ...]}`` (optionally ``"id"``) for text, or
    ``{"features": [float, ...]}`` for tabular data. ``targets``: task name -> raw label
    (a string / number for classification and regression, a list of tags for tagging,
    a list of 0/1/None for multilabel); a missing label is ``None`` or absent.
    """

    inputs: dict[str, Any]
    targets: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class Batch:
    """What a collator returns: model inputs and, per task, ``(target, mask)`` tensors.

    ``source`` names the data set the batch came from; ``tasks`` lists the tasks that
    have at least one labelled entry in it (only those get a loss).
    """

    inputs: dict[str, Tensor]
    targets: dict[str, tuple[Tensor, Tensor]]
    source: str = ""
    size: int = 0
    ids: list[Any] | None = None

    @property
    def tasks(self) -> list[str]:
        return [t for t, (_, m) in self.targets.items() if bool(m.any())]

    def to(self, device: Any) -> Batch:
        return Batch(
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            targets={t: (y.to(device), m.to(device)) for t, (y, m) in self.targets.items()},
            source=self.source,
            size=self.size,
            ids=self.ids,
        )
