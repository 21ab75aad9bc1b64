"""Token classification: one label per token from any label set (part of speech, chunk tags
read as plain labels, morphological features ...), softmax or a CRF without span constraints.

A kind of its own rather than a ``scheme: none`` of :class:`~polytask.tasks.Tagging`: what a
tagging task *is* follows from its span scheme (an outside tag is required, entity F1 is its
metric, cut tokens are predicted outside, prediction output lists spans, the CRF forbids
impossible span transitions). A label set without spans changes all five, so a separate kind
keeps both free of ``if scheme == ...`` branches; the loss and decoding are the same
functions (:mod:`polytask.tasks._tokens`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from sklearn.metrics import f1_score
from torch import Tensor

from polytask.tasks._common import check_labels, nan
from polytask.tasks._tokens import (
    emissions_of,
    full_mask,
    token_decode,
    token_loss,
    token_loss_count,
)
from polytask.tasks.base import TagScores, TaskKind
from polytask.tasks.linear_chain import crf_log_partition


def token_probabilities(output: Tensor | TagScores, mask: Tensor | None) -> list[list[list[float]]]:
    """Per-token label probabilities of the tokens under ``mask``: ``softmax(z_t)`` for a
    softmax head; for a CRF the marginals ``p(y_t = c | x)``, computed as the gradient of
    ``log Z`` with respect to the emissions (∂ log Z / ∂ e_t[c] = p(y_t = c | x))."""
    emissions = emissions_of(output).detach().float()
    keep = full_mask(emissions, mask)
    if isinstance(output, TagScores):
        with torch.enable_grad():
            e = emissions.clone().requires_grad_(True)
            log_z = crf_log_partition(
                e,
                keep,
                output.transitions.detach().float(),
                output.start.detach().float(),
                output.end.detach().float(),
            )
            (probs,) = torch.autograd.grad(log_z.sum(), e)
    else:
        probs = torch.softmax(emissions, dim=-1)
    return [row[m].tolist() for row, m in zip(probs, keep)]


class TokenClassification(TaskKind):
    """One label per token: ``TokenClassification(["DT", "NN", "VBZ"], crf=False)``.

    Output is a (B, T, C) score tensor (``crf=False``) or a :class:`TagScores` (``crf=True``,
    a linear-chain CRF whose transitions are all learned: no label pair is forbidden, since
    the labels have no span structure; ``tags`` is ``None`` so heads add no constraints).

    - Softmax: mean token cross-entropy over the labelled tokens ``M = {(b,t) : mask_{bt}}``,
      ``−(1/|M|) Σ_{(b,t)∈M} log softmax(z_{bt})[y_{bt}]``.
    - CRF: mean negative log-likelihood ``−(1/|S|) Σ_{b∈S} log p(y_b | x_b)`` over the
      labelled sequences ``S = {b : mask_b.any()}``; each mask row must be a prefix.

    Metrics over the labelled tokens: ``token_accuracy`` (primary) and ``macro_f1``, the
    unweighted mean of per-label F1 (scikit-learn) over the labels that occur in the
    evaluated targets. Not over the whole label set, unlike classification: a label set
    inferred over every split holds labels an evaluated split may never have, and scoring
    those 0 would measure the label set rather than the model. A wrong prediction of any
    label still lowers the recall of the true label.

    ``decode`` gives label indices per token; with ``probabilities=True`` it gives each
    token's label probabilities instead (softmax, or CRF marginals), and ``polytask predict``
    prints them beside the labels (on a loaded run: ``run.tasks[name].kind.probabilities =
    True``). Tokens cut from the input (``data.max_length``) are predicted ``None``: there
    is no neutral label to give them, and metrics count them wrong.
    """

    kind = "token_classification"
    default_primary = "token_accuracy"

    def __init__(
        self, labels: Sequence[str], crf: bool = False, probabilities: bool = False
    ) -> None:
        self.labels = check_labels(labels, "TokenClassification", minimum=2)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.crf = bool(crf)
        self.probabilities = bool(probabilities)

    def __repr__(self) -> str:
        return (
            f"TokenClassification({self.labels!r}, crf={self.crf}, "
            f"probabilities={self.probabilities})"
        )

    @property
    def output_size(self) -> int:
        return len(self.labels)

    @property
    def is_token_level(self) -> bool:
        return True

    def pad_prediction(self, prediction: Sequence[Any], length: int) -> list[Any]:
        """Tokens beyond ``prediction`` (cut from the input) are predicted ``None``."""
        return list(prediction) + [None] * (length - len(prediction))

    def metric_names(self) -> list[str]:
        return ["token_accuracy", "macro_f1"]

    def label_index(self, label: str) -> int:
        if label in self.index:
            return self.index[label]
        raise ValueError(f"unknown label {label!r}: the label set is {self.labels}")

    def encode_target(self, raw: Sequence[str | None] | None) -> tuple[list[int], list[bool]]:
        """Label list -> (label indices, mask); ``None`` labels are unlabelled tokens, a
        missing sequence (``None``) encodes to ``([], [])`` (padded with mask False)."""
        if raw is None:
            return [], []
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise ValueError(
                f"token_classification target {raw!r}: expected a list of labels, one per token"
            )
        return (
            [0 if t is None else self.label_index(t) for t in raw],
            [t is not None for t in raw],
        )

    def loss(self, output: Tensor | TagScores, target: Tensor, mask: Tensor) -> Tensor:
        return token_loss(output, target, mask, self.crf, self.output_size, "TokenClassification")

    def loss_count(self, output: Tensor | TagScores, target: Tensor, mask: Tensor) -> Tensor:
        return token_loss_count(output, mask)

    def decode(self, output: Tensor | TagScores, mask: Tensor | None = None) -> list[list[Any]]:
        """Per sequence, the label index of each token under ``mask`` (argmax or Viterbi), or
        with ``probabilities`` each token's label probabilities."""
        if self.probabilities:
            return token_probabilities(output, mask)
        return token_decode(output, mask)

    def _index_of(self, p: Any, where: str) -> int | None:
        """A prediction for one token (label, index, probability list or ``None``) -> index."""
        if p is None:
            return None
        if isinstance(p, str):
            return self.label_index(p)
        if isinstance(p, int) and not isinstance(p, bool) and 0 <= p < len(self.labels):
            return p
        if isinstance(p, Sequence) and len(p) == len(self.labels):
            return max(range(len(p)), key=lambda c: float(p[c]))
        raise ValueError(
            f"{where}: {p!r} is neither a label, a label index in [0, {len(self.labels)}) nor "
            f"{len(self.labels)} probabilities"
        )

    def metrics(
        self, predictions: Sequence[Sequence[Any]], targets: Sequence[Any]
    ) -> dict[str, float]:
        """Targets: label lists (``None`` = missing sequence or token, skipped); a prediction
        shorter than its target is padded with ``None`` (:meth:`pad_prediction`)."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        true: list[int] = []
        pred: list[int] = []
        for i, (p, t) in enumerate(zip(predictions, targets)):
            if t is None:
                continue
            if len(p) > len(t):
                raise ValueError(f"prediction {i} has {len(p)} labels for {len(t)} target labels")
            for pt, tt in zip(self.pad_prediction(p, len(t)), t):
                if tt is None:
                    continue
                true.append(self.label_index(tt))
                index = self._index_of(pt, f"prediction {i}")
                pred.append(-1 if index is None else index)
        if not true:
            return {"token_accuracy": nan(), "macro_f1": nan()}
        correct = sum(a == b for a, b in zip(true, pred))
        macro = f1_score(true, pred, labels=sorted(set(true)), average="macro", zero_division=0)
        return {"token_accuracy": correct / len(true), "macro_f1": float(macro)}

    def format_prediction(self, prediction: Sequence[Any]) -> dict[str, Any]:
        """``{"labels": [...]}``, and with probabilities ``"probabilities"``: per token a
        label -> probability mapping (``None`` for a token cut from the input)."""
        indices = [self._index_of(p, "prediction") for p in prediction]
        out: dict[str, Any] = {"labels": [None if i is None else self.labels[i] for i in indices]}
        if any(p is not None and not isinstance(p, (str, int)) for p in prediction):
            out["probabilities"] = [
                None if p is None else dict(zip(self.labels, (float(x) for x in p)))
                for p in prediction
            ]
        return out
