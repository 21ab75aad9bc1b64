"""The task abstraction: a name, a kind (loss, decoding, metrics) and a primary metric.

A :class:`TaskKind` is stateless apart from its label space; it never owns parameters.
Targets reach a kind already encoded by the data layer as a pair ``(target, mask)``:

==============  =====================  ==================  =======================
kind            output (logits)        target              mask (True = labelled)
==============  =====================  ==================  =======================
classification  (B, C) float           (B,) long           (B,)
multilabel      (B, L) float           (B, L) float 0/1    (B, L)
regression      (B, D) float           (B, D) float        (B, D)
tagging,        (B, T, C) float or     (B, T) long         (B, T) (False on padding
token_classif.  :class:`TagScores`                          and unlabelled tokens)
==============  =====================  ==================  =======================

Missing labels are data, not errors: every loss is averaged over the labelled
entries only, and a batch without any labelled entry for a task must not call
:meth:`TaskKind.loss` for it (``mask.any()`` is False).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from polytask.errors import OptionError


class TaskKind(ABC):
    """Loss, decoding and metrics of one kind of task."""

    #: name used in configs ("classification", "multilabel", "regression", "tagging",
    #: "token_classification")
    kind: str = ""
    #: metric used by default as the task's primary metric
    default_primary: str = ""
    #: whether the task's head gives :class:`TagScores` (a linear-chain CRF over the
    #: ``output_size`` tags) rather than plain scores
    crf: bool = False

    @property
    @abstractmethod
    def output_size(self) -> int:
        """Number of scores the head must produce per example (per token for tagging)."""

    @property
    def is_token_level(self) -> bool:
        return False

    @property
    def tags(self) -> list[str] | None:
        """The tag of each of a token-level kind's ``output_size`` scores, in index order
        (what a CRF head's transition constraints are read from); ``None`` otherwise."""
        return None

    def pad_prediction(self, prediction: Any, length: int) -> Any:
        """A token-level prediction for an input cut short (e.g. by ``max_length``), completed
        to ``length`` tokens with what the kind predicts for tokens the model never saw;
        unchanged by default."""
        return prediction

    @abstractmethod
    def encode_target(self, raw: Any) -> tuple[Any, Any]:
        """Raw label from a data file (or ``None`` when missing) -> ``(value, mask)``.

        Unknown labels raise ``ValueError`` naming the label and the known label set.
        """

    @abstractmethod
    def loss(self, output: Any, target: Tensor, mask: Tensor) -> Tensor:
        """Scalar loss averaged over labelled entries (``mask``); requires ``mask.any()``."""

    def loss_count(self, output: Any, target: Tensor, mask: Tensor) -> Tensor:
        """The number of items :meth:`loss` averages over (a 0-d tensor): the labelled
        entries of ``mask`` by default. Data-parallel training weights each rank's loss by
        it, so that the ranks' losses sum to the mean over the global batch; a kind whose
        loss averages over other units (a CRF: sequences) overrides it."""
        return torch.as_tensor(mask).bool().sum()

    @abstractmethod
    def decode(self, output: Any, mask: Tensor | None = None) -> list[Any]:
        """One prediction per example, as plain Python objects (see :meth:`metrics`)."""

    @abstractmethod
    def metrics(self, predictions: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
        """Metrics over a whole evaluation set; ``targets`` are raw labels, ``None`` = missing."""

    @abstractmethod
    def format_prediction(self, prediction: Any) -> dict[str, Any]:
        """JSON-ready form of one prediction (used by ``polytask predict``)."""

    def higher_is_better(self, metric: str) -> bool:
        return metric not in {"mae", "rmse", "mse", "loss"}

    def metric_names(self) -> list[str]:
        return []


@dataclass
class Task:
    """A named task: ``Task("sentiment", Classification(["neg", "pos"]))``."""

    name: str
    kind: TaskKind
    primary_metric: str | None = None
    higher_is_better: bool | None = None

    def __post_init__(self) -> None:
        if not self.name or not str(self.name).replace("_", "").replace("-", "").isalnum():
            raise OptionError(
                "name",
                f"task name {self.name!r} has other characters than letters, digits, '_' and '-'",
                "use letters, digits, '_' or '-'",
            )
        if self.primary_metric is None:
            self.primary_metric = self.kind.default_primary
        names = self.kind.metric_names()
        if names and self.primary_metric not in names:
            raise OptionError(
                "primary_metric",
                f"{self.primary_metric!r} is not a metric of task {self.name!r}",
                f"use one of {names}",
            )
        if self.higher_is_better is None:
            self.higher_is_better = self.kind.higher_is_better(self.primary_metric)


@dataclass
class TagScores:
    """Output of a CRF tagging head: per-token emission scores and the CRF's transition scores.

    ``emissions``: (B, T, C); ``transitions[i, j]``: score of tag i followed by tag j (C, C);
    ``start`` / ``end``: (C,) scores of the first / last tag. A plain softmax tagger returns
    the bare (B, T, C) emission tensor instead.
    """

    emissions: Tensor
    transitions: Tensor
    start: Tensor
    end: Tensor
