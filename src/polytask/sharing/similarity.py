"""Representation-similarity penalty: pull the tasks' own representations together.

An optional regulariser for any architecture with task-specific features (soft sharing's
towers, cross-stitch towers, gated mixtures, attention-selected features): squared
distance between the tasks' features, or one minus linear CKA (Kornblith, Norouzi, Lee &
Hinton 2019, "Similarity of Neural Network Representations Revisited").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..nn.pooling import pool
from .base import MultiTaskModel, MultiTaskOutput, invalid_option

MEASURES = ("l2", "cka")


def linear_cka(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """Linear CKA of two representations of the same B examples (Kornblith et al. 2019):

        CKA(X, Y) = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)

    with X (B, D1) and Y (B, D2) centred over the examples (columns of mean 0). It is 1
    for identical features, in [0, 1], and invariant to orthogonal transforms and isotropic
    scaling of either side. Returns 0 where one side has no variance (a 0/0)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"linear_cka needs (B, D1) and (B, D2) with the same B; got {tuple(x.shape)}, "
            f"{tuple(y.shape)}"
        )
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = (y.transpose(0, 1) @ x).pow(2).sum()
    # torch.linalg's functions are untyped in torch's stubs
    nx: Tensor = torch.linalg.matrix_norm(x.transpose(0, 1) @ x)
    ny: Tensor = torch.linalg.matrix_norm(y.transpose(0, 1) @ y)
    return cross / (nx * ny).clamp(min=eps)


class RepresentationSimilarity(MultiTaskModel):
    """Wraps a multi-task model and adds a term pulling its tasks' features together.

    Everything (forward, parameter ownership, shared features) is the inner model's; only
    :meth:`penalty` changes:

        penalty = inner penalty (if any) + λ · mean_{i<j} Ω(f_i, f_j)

    over the pairs of tasks in the output's ``task_features``, with
    ``Ω = mean over examples and dimensions of (f_i − f_j)²`` (``measure="l2"``; the features
    must have the same shape) or ``Ω = 1 − CKA(f_i, f_j)`` (``measure="cka"``, linear CKA of
    Kornblith et al. 2019; widths may differ). Sequence features (B, T, D) are first
    mean-pooled over real tokens with the output's mask, giving (B, D).

    Args:
        model: the wrapped :class:`MultiTaskModel`; it must fill ``task_features``.
        weight: λ >= 0.
        measure: ``"l2"`` (default) or ``"cka"``.
    """

    def __init__(self, model: MultiTaskModel, weight: float = 0.01, measure: str = "l2") -> None:
        super().__init__()
        if not isinstance(model, MultiTaskModel):
            raise TypeError(
                f"RepresentationSimilarity wraps a MultiTaskModel; got {type(model).__name__}"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not 0 <= weight < float("inf")
        ):
            raise invalid_option("weight", weight, "use a finite number >= 0, e.g. 0.01")
        if measure not in MEASURES:
            raise invalid_option("measure", measure, f"use one of {list(MEASURES)}")
        self.model = model
        self.weight = float(weight)
        self.measure = measure
        self.task_names = list(model.task_names)
        self.provides_shared_features = model.provides_shared_features

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        out: MultiTaskOutput = self.model(inputs, tasks)
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        return self.model.shared_parameters()

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return self.model.task_parameters(task)

    def _vectors(self, output: MultiTaskOutput) -> dict[str, Tensor]:
        out = {}
        for t, f in output.task_features.items():
            if f.dim() == 3:
                f = pool(f, output.mask, "mean")
            elif f.dim() != 2:
                raise ValueError(
                    f"task_features[{t!r}] has shape {tuple(f.shape)}; expected (B, D) or (B, T, D)"
                )
            out[t] = f
        return out

    def similarity_term(self, output: MultiTaskOutput) -> Tensor | None:
        """``mean_{i<j} Ω(f_i, f_j)`` (without λ); None with fewer than two tasks."""
        if not output.task_features:
            raise OptionError(
                "model",
                f"{type(self.model).__name__} gives no task_features (every head reads "
                "the same shared tensor), so a similarity penalty has nothing to pull together",
                "use an architecture with task-specific features (soft, cross_stitch, mmoe, ...) "
                "or drop the penalty",
            )
        feats = self._vectors(output)
        names = list(feats)
        terms = []
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                a, b = feats[names[i]], feats[names[j]]
                if self.measure == "l2":
                    if a.shape != b.shape:
                        raise OptionError(
                            "measure",
                            f"'l2' compares task_features of one shape, but "
                            f"{names[i]!r} {tuple(a.shape)} and {names[j]!r} {tuple(b.shape)} "
                            "differ",
                            "give the tasks features of one width or use measure='cka'",
                        )
                    terms.append((a - b).pow(2).mean())
                else:
                    terms.append(1.0 - linear_cka(a, b))
        if not terms:
            return None
        return torch.stack(terms).mean()

    def penalty(self, output: MultiTaskOutput) -> Tensor | None:
        inner = self.model.penalty(output)
        term = self.similarity_term(output)
        if term is None or self.weight == 0:
            return inner
        term = self.weight * term
        return term if inner is None else inner + term
