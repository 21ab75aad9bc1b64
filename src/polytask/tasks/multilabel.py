"""Multi-label (and binary) classification: one sigmoid per label."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor

from polytask.tasks._common import as_binary, check_labels, check_shape, nan, require_labelled
from polytask.tasks.base import TaskKind


class Multilabel(TaskKind):
    """``L`` independent yes/no labels: ``Multilabel(["food", "service"])``.

    A binary task is ``Multilabel(["positive"])``. With the labelled entries
    ``M = {(b, l) : mask_{b,l}}``, the loss is the mean binary cross-entropy

        loss = −(1/|M|) Σ_{(b,l)∈M} [y_{bl} log σ(z_{bl}) + (1 − y_{bl}) log(1 − σ(z_{bl}))].

    Raw targets: a list of ``L`` values 0/1/None, a dict ``label -> 0/1/None`` (absent
    labels are missing), a bare 0/1 when ``L = 1``, or ``None`` (all missing).

    Metrics, per label on its labelled entries, then averaged over the labels where both
    classes occur (``nan`` if none does): ``roc_auc`` and ``average_precision``
    (scikit-learn); plus ``accuracy`` of the decisions ``σ(z) ≥ 0.5`` over all labelled
    entries.
    """

    kind = "multilabel"
    default_primary = "roc_auc"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = check_labels(labels, "Multilabel", minimum=1)
        self.index = {label: i for i, label in enumerate(self.labels)}

    def __repr__(self) -> str:
        return f"Multilabel({self.labels!r})"

    @property
    def output_size(self) -> int:
        return len(self.labels)

    def metric_names(self) -> list[str]:
        return ["roc_auc", "average_precision", "accuracy"]

    def _values(self, raw: Any) -> list[float | None]:
        n = len(self.labels)
        if raw is None:
            return [None] * n
        if isinstance(raw, Mapping):
            unknown = [k for k in raw if k not in self.index]
            if unknown:
                raise ValueError(f"unknown label(s) {unknown}: the label set is {self.labels}")
            return [as_binary(raw.get(label), f"label {label!r}") for label in self.labels]
        if isinstance(raw, (bool, int, float)):
            if n != 1:
                raise ValueError(
                    f"a single value {raw!r} given for {n} labels {self.labels}: "
                    "give a list of 0/1/None, one per label, or a dict label -> 0/1"
                )
            return [as_binary(raw, f"label {self.labels[0]!r}")]
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise ValueError(
                f"multilabel target {raw!r}: give a list of 0/1/None (one per label "
                f"{self.labels}) or a dict label -> 0/1/None"
            )
        if len(raw) != n:
            raise ValueError(
                f"multilabel target {list(raw)!r} has {len(raw)} values, expected {n} "
                f"(one per label {self.labels})"
            )
        return [as_binary(v, f"label {label!r}") for label, v in zip(self.labels, raw)]

    def encode_target(self, raw: Any) -> tuple[list[float], list[bool]]:
        values = self._values(raw)
        return [0.0 if v is None else v for v in values], [v is not None for v in values]

    def loss(self, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        mask = require_labelled(mask, "Multilabel")
        check_shape("output", output, tuple(mask.shape), "Multilabel")
        target = torch.as_tensor(target, device=output.device, dtype=output.dtype)
        return F.binary_cross_entropy_with_logits(output[mask], target[mask])

    def decode(self, output: Tensor, mask: Tensor | None = None) -> list[list[float]]:
        """Per-label probabilities ``σ(z_b)``."""
        return torch.sigmoid(output.detach().float()).tolist()

    def metrics(
        self, predictions: Sequence[Sequence[float]], targets: Sequence[Any]
    ) -> dict[str, float]:
        """``predictions``: per-label probability lists (from :meth:`decode`)."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        n = len(self.labels)
        scores = np.full((len(targets), n), np.nan)
        truth = np.full((len(targets), n), np.nan)
        for i, (p, t) in enumerate(zip(predictions, targets)):
            p = list(p)
            if len(p) != n:
                raise ValueError(
                    f"prediction {i} has {len(p)} scores, expected {n} (one per label)"
                )
            scores[i] = p
            truth[i] = [np.nan if v is None else v for v in self._values(t)]
        present = ~np.isnan(truth)
        return {
            "roc_auc": _mean_per_label(roc_auc_score, scores, truth, present),
            "average_precision": _mean_per_label(average_precision_score, scores, truth, present),
            "accuracy": float(((scores >= 0.5) == (truth == 1))[present].mean())
            if present.any()
            else nan(),
        }

    def format_prediction(self, prediction: Sequence[float]) -> dict[str, Any]:
        probs = [float(p) for p in prediction]
        return {
            "probabilities": dict(zip(self.labels, probs)),
            "labels": [label for label, p in zip(self.labels, probs) if p >= 0.5],
        }


def _mean_per_label(
    metric: Callable[..., float], scores: np.ndarray, truth: np.ndarray, present: np.ndarray
) -> float:
    values = []
    for col in range(truth.shape[1]):
        y = truth[present[:, col], col]
        if len(np.unique(y)) == 2:
            values.append(float(metric(y, scores[present[:, col], col])))
    return float(np.mean(values)) if values else math.nan
