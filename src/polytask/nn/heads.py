"""Task heads g_i: sequence/vector classifiers and token taggers (softmax or CRF)."""

from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor, nn

from polytask.errors import OptionError
from polytask.nn.crf import CRF, is_bio
from polytask.nn.mlp import check_dropout, check_positive
from polytask.nn.pooling import POOLINGS, AttentionPooling, pool
from polytask.tasks.base import TagScores, Task


def _projection(in_dim: int, out_dim: int, hidden: int | None, dropout: float) -> nn.Sequential:
    """``dropout -> Linear(out)``, or with ``hidden``:
    ``dropout -> Linear(hidden) -> ReLU -> dropout -> Linear(out)``.
    """
    if hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
    check_positive(hidden, "hidden")
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_dim),
    )


class ClassifierHead(nn.Module):
    """One score vector per example: ``logits = MLP(pool(h, mask))`` (B, out_dim).

    Used for classification (out_dim = #classes), multilabel (#labels) and regression
    (#targets). Sequence features (B, T, D) are pooled over real tokens with ``pooling``
    (required for them); vector features (B, D) are used as they are.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        pooling: str | None = None,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(in_dim, "in_dim")
        check_positive(out_dim, "out_dim")
        check_dropout(dropout)
        if pooling is not None and pooling not in POOLINGS:
            raise OptionError(
                "pooling", f"{pooling!r} is unknown", f"use None or one of {list(POOLINGS)}"
            )
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.pooling = pooling
        self.attention = AttentionPooling(in_dim) if pooling == "attention" else None
        self.projection = _projection(in_dim, out_dim, hidden, dropout)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        if features.shape[-1] != self.in_dim or features.dim() not in (2, 3):
            raise ValueError(
                f"ClassifierHead expects features (B, {self.in_dim}) or (B, T, {self.in_dim}); "
                f"got {tuple(features.shape)}"
            )
        if features.dim() == 3:
            if self.pooling is None:
                raise ValueError(
                    "ClassifierHead got sequence features (B, T, D) but pooling=None; "
                    f"build it with pooling in {list(POOLINGS)}"
                )
            features = pool(features, mask, self.pooling, self.attention)
        scores: Tensor = self.projection(features)
        return scores


class TaggerHead(nn.Module):
    """Per-token scores ``E_t = MLP(h_t)`` (B, T, num_tags).

    With ``crf=False`` it returns the emission logits (a softmax tagger); with ``crf=True``
    it owns a :class:`~polytask.nn.crf.CRF` and returns
    :class:`~polytask.tasks.base.TagScores` (emissions plus transition/start/end scores).
    """

    def __init__(
        self,
        in_dim: int,
        num_tags: int,
        crf: bool = False,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(in_dim, "in_dim")
        check_positive(num_tags, "num_tags")
        check_dropout(dropout)
        self.in_dim = in_dim
        self.num_tags = num_tags
        self.projection = _projection(in_dim, num_tags, hidden, dropout)
        self.crf = CRF(num_tags) if crf else None

    def constrain_bio(self, labels: Sequence[str]) -> TaggerHead:
        """Forbid impossible IOB2 transitions in the CRF (see :meth:`CRF.constrain_bio`)."""
        if self.crf is None:
            raise OptionError(
                "crf",
                "constrain_bio needs a CRF (a softmax tagger has no transition scores)",
                "build the head with crf=True",
            )
        self.crf.constrain_bio(labels)
        return self

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor | TagScores:
        """``features`` (B, T, in_dim); ``mask`` is accepted for a uniform head interface."""
        if features.dim() != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(
                f"TaggerHead expects per-token features (B, T, {self.in_dim}); "
                f"got {tuple(features.shape)}"
            )
        emissions: Tensor = self.projection(features)
        if self.crf is None:
            return emissions
        tag_scores: TagScores = self.crf(emissions)
        return tag_scores


def heads_for(
    tasks: Sequence[Task],
    dim: int | Mapping[str, int],
    pooling: str = "attention",
    dropout: float = 0.0,
    sequence: bool = True,
    hidden: int | None = None,
    bio_constraints: bool = True,
) -> nn.ModuleDict:
    """One head per task, keyed by task name.

    Token-level kinds (``task.kind.is_token_level``) get a :class:`TaggerHead` over
    ``task.kind.output_size`` tags, with a CRF when ``task.kind.crf``; when the kind's
    ``tags`` are an IOB2 tag set and ``bio_constraints`` is set, impossible transitions are
    forbidden.
    Every other kind gets a :class:`ClassifierHead` with ``out_dim = task.kind.output_size``,
    pooling with ``pooling`` when the features are sequences (``sequence=True``).
    ``dim`` is the feature width every head reads, or a task name -> width mapping.
    """
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise OptionError("tasks", f"duplicate task names {names}", "give each task its own name")
    if isinstance(dim, Mapping):
        missing = [name for name in names if name not in dim]
        if missing:
            raise OptionError(
                "dim", f"no width for tasks {missing}", "give dim[name] for every task"
            )
    heads = nn.ModuleDict()
    for task in tasks:
        width = dim[task.name] if isinstance(dim, Mapping) else dim
        heads[task.name] = head_for(
            task,
            width,
            pooling=pooling,
            dropout=dropout,
            sequence=sequence,
            hidden=hidden,
            bio_constraints=bio_constraints,
        )
    return heads


def head_for(
    task: Task,
    dim: int,
    pooling: str | None = "attention",
    dropout: float = 0.0,
    sequence: bool = True,
    hidden: int | None = None,
    bio_constraints: bool = True,
) -> nn.Module:
    """The head :func:`heads_for` builds for one task reading ``dim``-wide features."""
    kind = task.kind
    if kind.is_token_level:
        if not sequence:
            raise OptionError(
                "sequence",
                f"task {task.name!r} tags tokens but sequence=False",
                "taggers need per-token features from a sequence encoder",
            )
        tags = [str(tag) for tag in kind.tags or []]
        head = TaggerHead(dim, kind.output_size, crf=bool(kind.crf), hidden=hidden, dropout=dropout)
        if (
            head.crf is not None
            and bio_constraints
            and len(tags) == kind.output_size
            and is_bio(tags)
        ):
            head.constrain_bio(tags)
        return head
    return ClassifierHead(
        dim, kind.output_size, pooling=pooling if sequence else None, hidden=hidden, dropout=dropout
    )
