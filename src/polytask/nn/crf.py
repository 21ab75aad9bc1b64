"""Parameters of a linear-chain CRF (Lafferty et al., 2001; Lample et al., 2016).

The score of a tag path ``y_1..y_T`` given emissions ``E`` is

    s(y) = start[y_1] + Σ_t E[t, y_t] + Σ_{t>1} A[y_{t-1}, y_t] + end[y_T].

This module only holds ``A`` (transitions), ``start`` and ``end`` and returns them with the
emissions as :class:`~polytask.tasks.base.TagScores`; the likelihood and Viterbi decoding
live with the tagging task (:mod:`polytask.tasks.linear_chain`). Tags are read by
:mod:`polytask.tasks.schemes`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from polytask.errors import OptionError
from polytask.nn.mlp import check_positive
from polytask.tasks.base import TagScores
from polytask.tasks.schemes import parse_tag

#: score added to impossible transitions (finite, so log-sum-exp stays well defined)
FORBIDDEN = -1e4


def is_bio(labels: Sequence[str]) -> bool:
    """Whether ``labels`` are an IOB2 tag set: every label valid in the ``BIO`` scheme
    (:func:`~polytask.tasks.schemes.parse_tag`) and at least one ``B-X``."""
    try:
        parts = [parse_tag(label, "BIO") for label in labels]
    except ValueError:
        return False
    return any(prefix == "B" for prefix, _ in parts)


def bio_allowed(labels: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Allowed transitions (C, C) and allowed first tags (C,) under IOB2.

    ``I-X`` may only follow ``B-X`` or ``I-X``; so O→I-X, B-Y→I-X, I-Y→I-X (Y ≠ X) and
    start→I-X are impossible. Every other transition, and every last tag, is allowed.
    """
    parts = [parse_tag(label, "BIO") for label in labels]
    size = len(labels)
    allowed = torch.ones(size, size, dtype=torch.bool)
    first = torch.ones(size, dtype=torch.bool)
    for j, (prefix_j, type_j) in enumerate(parts):
        if prefix_j != "I":
            continue
        first[j] = False
        for i, (prefix_i, type_i) in enumerate(parts):
            allowed[i, j] = prefix_i != "O" and type_i == type_j
    return allowed, first


class CRF(nn.Module):
    """Learned transition, start and end scores of a linear-chain CRF over ``num_tags`` tags.

    Parameters start uniform in ``[-init_scale, init_scale]``. :meth:`constrain_bio` adds a
    fixed mask (``FORBIDDEN`` on impossible transitions, 0 elsewhere, kept in buffers so it is
    saved with the model) on top of the learned scores.
    """

    # buffers registered in __init__
    transition_constraints: Tensor
    start_constraints: Tensor
    end_constraints: Tensor

    def __init__(self, num_tags: int, init_scale: float = 0.1) -> None:
        super().__init__()
        check_positive(num_tags, "num_tags")
        if init_scale < 0:
            raise OptionError("init_scale", f"{init_scale!r} is negative", "give a number >= 0")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start = nn.Parameter(torch.empty(num_tags))
        self.end = nn.Parameter(torch.empty(num_tags))
        for p in (self.transitions, self.start, self.end):
            nn.init.uniform_(p, -init_scale, init_scale)
        self.register_buffer("transition_constraints", torch.zeros(num_tags, num_tags))
        self.register_buffer("start_constraints", torch.zeros(num_tags))
        self.register_buffer("end_constraints", torch.zeros(num_tags))

    def constrain_bio(self, labels: Sequence[str]) -> CRF:
        """Forbid the transitions that IOB2 ``labels`` make impossible (see :func:`bio_allowed`)."""
        labels = list(labels)
        if len(labels) != self.num_tags:
            raise OptionError(
                "labels",
                f"{len(labels)} labels for a CRF over {self.num_tags} tags",
                "pass the tagging task's full label list, in index order",
            )
        allowed, first = bio_allowed(labels)
        forbidden = torch.tensor(FORBIDDEN)
        self.transition_constraints.copy_(torch.where(allowed, 0.0, forbidden))
        self.start_constraints.copy_(torch.where(first, 0.0, forbidden))
        self.end_constraints.zero_()
        return self

    def forward(self, emissions: Tensor) -> TagScores:
        """``emissions`` (B, T, C) -> :class:`TagScores` with the constrained CRF scores."""
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(
                f"emissions must be (B, T, {self.num_tags}); got {tuple(emissions.shape)}"
            )
        return TagScores(
            emissions=emissions,
            transitions=self.transitions + self.transition_constraints,
            start=self.start + self.start_constraints,
            end=self.end + self.end_constraints,
        )
