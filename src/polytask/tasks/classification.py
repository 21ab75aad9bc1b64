"""Single-label classification: softmax cross-entropy."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor

from polytask.tasks._common import check_labels, check_shape, nan, require_labelled
from polytask.tasks.base import TaskKind


class Classification(TaskKind):
    """One label out of ``C``: ``Classification(["neg", "neu", "pos"])``.

    Loss over the labelled examples ``L = {b : mask_b}``:

        loss = −(1/|L|) Σ_{b∈L} log softmax(z_b)[y_b].

    Metrics: ``accuracy`` and ``macro_f1`` (unweighted mean of per-class F1 over *all*
    ``C`` classes, a class never seen nor predicted scoring 0), both from scikit-learn.
    """

    kind = "classification"
    default_primary = "accuracy"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = check_labels(labels, "Classification", minimum=2)
        self.index = {label: i for i, label in enumerate(self.labels)}

    def __repr__(self) -> str:
        return f"Classification({self.labels!r})"

    @property
    def output_size(self) -> int:
        return len(self.labels)

    def metric_names(self) -> list[str]:
        return ["accuracy", "macro_f1"]

    def label_index(self, raw: Any) -> int:
        """Label (a string, or an int whose ``str`` is a label) -> class index."""
        key = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        if isinstance(key, str) and key in self.index:
            return self.index[key]
        raise ValueError(f"unknown label {raw!r}: the label set is {self.labels}")

    def encode_target(self, raw: Any) -> tuple[int, bool]:
        if raw is None:
            return 0, False
        return self.label_index(raw), True

    def loss(self, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        mask = require_labelled(mask, "Classification")
        check_shape("output", output, (mask.shape[0], self.output_size), "Classification")
        target = torch.as_tensor(target, device=output.device).long()
        return F.cross_entropy(output[mask], target[mask])

    def decode(self, output: Tensor, mask: Tensor | None = None) -> list[list[float]]:
        """Class probabilities ``softmax(z_b)`` per example."""
        return torch.softmax(output.detach().float(), dim=-1).tolist()

    def _predicted_index(self, prediction: Any) -> int:
        if isinstance(prediction, (str, int)) and not isinstance(prediction, bool):
            return self.label_index(prediction)
        probs = list(prediction)
        if len(probs) != len(self.labels):
            raise ValueError(
                f"prediction has {len(probs)} scores, expected {len(self.labels)} (one per label)"
            )
        return max(range(len(probs)), key=probs.__getitem__)

    def metrics(self, predictions: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
        """``predictions``: probability lists (from :meth:`decode`) or labels."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        pairs = [
            (self._predicted_index(p), self.label_index(t))
            for p, t in zip(predictions, targets)
            if t is not None
        ]
        if not pairs:
            return {"accuracy": nan(), "macro_f1": nan()}
        pred, true = zip(*pairs)
        return {
            "accuracy": float(accuracy_score(true, pred)),
            "macro_f1": float(
                f1_score(
                    true,
                    pred,
                    labels=list(range(len(self.labels))),
                    average="macro",
                    zero_division=0,
                )
            ),
        }

    def format_prediction(self, prediction: Sequence[float]) -> dict[str, Any]:
        probs = [float(p) for p in prediction]
        return {
            "label": self.labels[self._predicted_index(probs)],
            "probabilities": dict(zip(self.labels, probs)),
        }
