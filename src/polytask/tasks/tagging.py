"""Sequence tagging (BIO / BIOES): token softmax or linear-chain CRF."""

from __future__ import annotations

from typing import Any, Sequence

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2, IOBES
from torch import Tensor

from polytask.errors import OptionError
from polytask.tasks._common import check_labels, nan
from polytask.tasks._tokens import token_decode, token_loss, token_loss_count
from polytask.tasks.base import TagScores, TaskKind
from polytask.tasks.schemes import OUTSIDE, normalize_scheme, parse_tag, spans

_SEQEVAL_SCHEME = {"BIO": IOB2, "BIOES": IOBES}


class Tagging(TaskKind):
    """One tag per token: ``Tagging(["O", "B-ASP", "I-ASP"], scheme="BIO", crf=False)``.

    Output is a (B, T, C) score tensor (``crf=False``) or a :class:`TagScores` (``crf=True``).

    - Softmax: mean token cross-entropy over the labelled tokens ``M = {(b,t) : mask_{bt}}``,
      ``−(1/|M|) Σ_{(b,t)∈M} log softmax(z_{bt})[y_{bt}]``.
    - CRF: mean negative log-likelihood ``−(1/|S|) Σ_{b∈S} log p(y_b | x_b)`` over the
      labelled sequences ``S = {b : mask_b.any()}`` (see :mod:`polytask.tasks.linear_chain`); each
      mask row must be a prefix, since a CRF scores whole label sequences.

    Metrics: seqeval entity ``precision``, ``recall`` and ``f1`` (micro-averaged, strict
    mode with IOB2 or IOBES, so an entity counts only when its type and both boundaries
    are exact; Tjong Kim Sang & De Meulder 2003), and ``token_accuracy``.
    """

    kind = "tagging"
    default_primary = "f1"

    def __init__(self, labels: Sequence[str], scheme: str = "BIO", crf: bool = False) -> None:
        self.scheme = normalize_scheme(scheme)
        self.labels = check_labels(labels, "Tagging", minimum=2)
        if OUTSIDE not in self.labels:
            raise OptionError(
                "labels",
                f"{self.labels} lack the outside tag {OUTSIDE!r}",
                f"add {OUTSIDE!r} to the labels, or use kind: token_classification for labels "
                "without spans (e.g. part of speech)",
            )
        for label in self.labels:
            try:
                parse_tag(label, self.scheme)
            except ValueError as err:
                raise OptionError(
                    "labels",
                    str(err),
                    f"use {OUTSIDE!r} and tags of the {self.scheme} scheme, set scheme, or use "
                    "kind: token_classification for labels without spans (e.g. part of speech)",
                ) from None
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.crf = bool(crf)

    def __repr__(self) -> str:
        return f"Tagging({self.labels!r}, scheme={self.scheme!r}, crf={self.crf})"

    @property
    def output_size(self) -> int:
        return len(self.labels)

    @property
    def is_token_level(self) -> bool:
        return True

    @property
    def tags(self) -> list[str]:
        return list(self.labels)

    def pad_prediction(self, prediction: Sequence[Any], length: int) -> list[Any]:
        """Tokens beyond ``prediction`` (cut from the input) get the outside tag's index."""
        return list(prediction) + [self.index[OUTSIDE]] * (length - len(prediction))

    def metric_names(self) -> list[str]:
        return ["precision", "recall", "f1", "token_accuracy"]

    def tag_index(self, tag: str) -> int:
        if tag in self.index:
            return self.index[tag]
        raise ValueError(f"unknown tag {tag!r}: the tag set is {self.labels}")

    def encode_target(self, raw: Sequence[str | None] | None) -> tuple[list[int], list[bool]]:
        """Tag list -> (tag indices, mask); ``None`` tags are unlabelled tokens.

        A missing sequence (``None``) encodes to ``([], [])``: the collator pads it with
        mask False to the token length.
        """
        if raw is None:
            return [], []
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise ValueError(f"tagging target {raw!r}: expected a list of tags, one per token")
        return ([0 if t is None else self.tag_index(t) for t in raw], [t is not None for t in raw])

    def loss(self, output: Tensor | TagScores, target: Tensor, mask: Tensor) -> Tensor:
        return token_loss(output, target, mask, self.crf, self.output_size, "Tagging")

    def loss_count(self, output: Tensor | TagScores, target: Tensor, mask: Tensor) -> Tensor:
        return token_loss_count(output, mask)

    def decode(self, output: Tensor | TagScores, mask: Tensor | None = None) -> list[list[int]]:
        """Tag indices of the tokens under ``mask`` (all tokens if ``None``): argmax or Viterbi."""
        return token_decode(output, mask)

    def _as_tags(self, prediction: Sequence[Any], where: str) -> list[str]:
        tags = []
        for p in prediction:
            if isinstance(p, str):
                self.tag_index(p)
                tags.append(p)
            elif isinstance(p, int) and 0 <= p < len(self.labels):
                tags.append(self.labels[p])
            else:
                raise ValueError(
                    f"{where}: {p!r} is neither a tag nor a tag index in [0, {len(self.labels)})"
                )
        return tags

    def metrics(
        self, predictions: Sequence[Sequence[Any]], targets: Sequence[Any]
    ) -> dict[str, float]:
        """Targets: tag lists (``None`` = missing sequence, skipped).

        Token accuracy counts every labelled token; entity metrics use the sequences that
        are fully labelled (a partly labelled one has no well-defined entities). A
        prediction shorter than its target (the input was cut by ``max_length``) is padded
        with the outside tag (:meth:`pad_prediction`), so the entities of the cut tokens count
        as missed.
        """
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        true_seqs, pred_seqs = [], []
        correct = total = 0
        for i, (p, t) in enumerate(zip(predictions, targets)):
            if t is None:
                continue
            if len(p) > len(t):
                raise ValueError(f"prediction {i} has {len(p)} tags for {len(t)} target tags")
            pred = self._as_tags(self.pad_prediction(p, len(t)), f"prediction {i}")
            for pt, tt in zip(pred, t):
                if tt is not None:
                    correct += pt == self.labels[self.tag_index(tt)]
                    total += 1
            if all(tt is not None for tt in t):
                true_seqs.append(list(t))
                pred_seqs.append(pred)
        out = {
            "precision": nan(),
            "recall": nan(),
            "f1": nan(),
            "token_accuracy": correct / total if total else nan(),
        }
        if true_seqs:
            kw = dict(mode="strict", scheme=_SEQEVAL_SCHEME[self.scheme], zero_division=0)
            out["precision"] = float(precision_score(true_seqs, pred_seqs, **kw))
            out["recall"] = float(recall_score(true_seqs, pred_seqs, **kw))
            out["f1"] = float(f1_score(true_seqs, pred_seqs, **kw))
        return out

    def format_prediction(self, prediction: Sequence[Any]) -> dict[str, Any]:
        tags = self._as_tags(prediction, "prediction")
        return {
            "tags": tags,
            "spans": [
                {"type": typ, "start": s, "end": e} for typ, s, e in spans(tags, self.scheme)
            ],
        }
