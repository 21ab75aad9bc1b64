"""Tabular encoder: standardised numeric columns and embedded categorical columns -> MLP.

Input layout (what :class:`~polytask.data.Collator` makes with ``input_kind="tabular"``):
``inputs["x"]`` (B, F + C) float, the ``F`` numeric columns followed by the ``C``
categorical columns as category indices stored as floats (exact up to 2^24). Index ``0``
of column ``j`` is the out-of-vocabulary (OOV) category: unknown and missing values, and
any index outside ``0..K_j`` that reaches the encoder, are looked up there; ``1..K_j`` are
the ``K_j`` categories known from training (see :class:`polytask.data.TabularPreprocessor`).

Keeping one ``x`` tensor, rather than a second long tensor, lets every architecture that
steps an :class:`~polytask.nn.MLP` layer by layer (cross-stitch) or reads ``x`` run the
tabular encoder unchanged: :class:`TabularMLP` *is* an MLP whose first linear map reads
the embedded input.

Embedding width of column ``j`` (Guo & Berkhahn 2016 use a similar rule of thumb)::

    d_j = min(max_dim, (K_j + 1) // 2)        at least 1, max_dim = 16 by default
"""

from __future__ import annotations

from typing import Mapping, Sequence, cast

import torch
from torch import Tensor, nn

from polytask.errors import OptionError
from polytask.nn.base import Encoder, EncoderState
from polytask.nn.mlp import MLP, check_dropout, check_positive

__all__ = ["TabularEmbedding", "TabularInput", "TabularMLP", "embedding_dim"]


def embedding_dim(cardinality: int, max_dim: int = 16) -> int:
    """``min(max_dim, (cardinality + 1) // 2)``, at least 1: the width of a column with
    ``cardinality`` known categories."""
    check_positive(max_dim, "max_embedding_dim")
    return max(1, min(max_dim, (int(cardinality) + 1) // 2))


def _check_columns(numeric: int, cardinalities: Sequence[int]) -> list[int]:
    if isinstance(numeric, bool) or not isinstance(numeric, int) or numeric < 0:
        raise OptionError(
            "numeric",
            f"{numeric!r} is not a number (>= 0) of numeric columns",
            "give the count of numeric columns",
        )
    if isinstance(cardinalities, (str, bytes, int)):
        raise OptionError(
            "cardinalities",
            f"{cardinalities!r} is not a list",
            "give the known categories per categorical column, e.g. [3, 7]",
        )
    cards = list(cardinalities)
    for j, k in enumerate(cards):
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise OptionError(
                f"cardinalities[{j}]",
                f"{k!r} is not an integer >= 0",
                "give the known categories of the column (OOV excluded)",
            )
    if numeric + len(cards) == 0:
        raise OptionError(
            "cardinalities",
            "a tabular encoder needs at least one numeric or categorical column",
            "set numeric > 0 or give cardinalities",
        )
    return cards


class TabularEmbedding(Encoder):
    """The embedded input as a one-layer encoder: ``[x_num; E_1[c_1]; …; E_C[c_C]]``.

    Layer 1 is the concatenation itself (no weights besides the embeddings), of width
    ``numeric + Σ_j d_j``. :class:`TabularMLP` reads it; on its own it is what the gates of
    MMoE / CGC / PLE read when they should see the (embedded) input, as in those papers
    (``gate_encoder=TabularEmbedding(...)``).

    Args:
        numeric: number of numeric columns ``F`` (the first ``F`` entries of ``x``).
        cardinalities: known categories ``K_j`` of each categorical column (OOV excluded);
            column ``j`` gets ``nn.Embedding(K_j + 1, d_j)``.
        embedding_dims: widths ``d_j``; default :func:`embedding_dim` of each ``K_j``.
        max_embedding_dim: cap of the default rule.
    """

    input_kind = "tabular"
    is_sequence = False
    _cards: Tensor  # buffer registered in __init__: each column's K_j

    def __init__(
        self,
        numeric: int,
        cardinalities: Sequence[int],
        embedding_dims: Sequence[int] | None = None,
        max_embedding_dim: int = 16,
    ) -> None:
        super().__init__()
        cards = _check_columns(numeric, cardinalities)
        if embedding_dims is None:
            dims = [embedding_dim(k, max_embedding_dim) for k in cards]
        else:
            dims = list(embedding_dims)
            if len(dims) != len(cards):
                raise OptionError(
                    "embedding_dims",
                    f"{len(dims)} widths for {len(cards)} categorical columns",
                    "give one width per categorical column",
                )
            for j, d in enumerate(dims):
                check_positive(d, f"embedding_dims[{j}]")
        self.numeric = numeric
        self.cardinalities = cards
        self.embedding_dims = dims
        self.input_dim = numeric + len(cards)
        self.embeddings = nn.ModuleList(nn.Embedding(k + 1, d) for k, d in zip(cards, dims))
        self.register_buffer("_cards", torch.tensor(cards, dtype=torch.long), persistent=False)
        self.layer_dims = [numeric + sum(dims)]

    def indices(self, x: Tensor) -> Tensor:
        """(B, C) long category indices from ``x``; anything outside ``0..K_j`` (or not finite)
        -> 0."""
        raw = x[:, self.numeric :]
        finite = torch.isfinite(raw)
        idx = torch.where(finite, raw, torch.zeros_like(raw)).round().long()
        known = finite & (idx >= 0) & (idx <= self._cards)
        return torch.where(known, idx, torch.zeros_like(idx))

    def embed(self, x: Tensor) -> Tensor:
        """``[x_num; E_1[c_1]; …; E_C[c_C]]`` (B, numeric + Σ d_j) from ``x`` (B, F + C)."""
        if x.dim() != 2 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"tabular encoder expects inputs['x'] of shape (B, {self.input_dim}) = "
                f"{self.numeric} numeric + "
                f"{len(self.cardinalities)} categorical columns; got {tuple(x.shape)}"
            )
        idx = self.indices(x)
        parts = [x[:, : self.numeric]]
        embeddings = cast(Sequence[nn.Embedding], self.embeddings)  # only nn.Embedding in it
        dtype = embeddings[0].weight.dtype if len(embeddings) else x.dtype
        parts = [parts[0].to(dtype)] + [emb(idx[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=-1)

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """The raw row ``inputs["x"]`` (B, F + C)."""
        if "x" not in inputs:
            raise KeyError(
                f"tabular encoder reads inputs['x'] (B, F + C); got keys {sorted(inputs)}"
            )
        return EncoderState(inputs["x"])

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """The one layer: the embedded row (:meth:`embed`)."""
        if i != 0:
            raise IndexError(f"TabularEmbedding has one layer (0); got {i}")
        return state.with_h(self.embed(state.h))


class TabularInput(nn.Module):
    """The first layer's map of :class:`TabularMLP`: ``W_1 dropout(embed(x)) + b_1``."""

    def __init__(self, embedding: TabularEmbedding, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(embedding.output_dim, out_dim)

    @property
    def weight(self) -> Tensor:
        """The linear map's weight (its dtype is the dtype the encoder casts ``x`` to)."""
        return self.linear.weight

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear(self.dropout(self.embedding.embed(x)))
        return out


class TabularMLP(MLP):
    """Numeric columns + per-column category embeddings -> fully connected layers.

    ``h_0 = [x_num; E_1[c_1]; …; E_C[c_C]]``, ``h_d = act(W_d dropout(h_{d-1}) + b_d)``: an
    :class:`~polytask.nn.MLP` whose input is the embedded row (see the module docstring for
    the layout of ``inputs["x"]``, the OOV index and the width rule). It keeps the MLP's
    attributes (``linears``, ``activations``, ``dropout``, ``input_dim`` = F + C), so
    sharing architectures that run an MLP one layer at a time (cross-stitch) run it as
    they are: ``linears[0]`` is a :class:`TabularInput` (embedding, dropout, linear map),
    ``linears[d]`` for ``d ≥ 1`` are ``Sequential(Dropout, Linear)``, and the encoder-wide
    ``dropout`` is the identity (dropout never touches the category indices).

    ``input_kind`` is ``"tabular"``: MMoE / CGC / PLE then gate on an encoder of the row
    (``gate_input: encoder``, or ``gate_encoder=TabularEmbedding(...)``), never on the raw
    indices in ``x``.

    Args:
        numeric: number of numeric columns ``F``.
        cardinalities: known categories ``K_j`` per categorical column (OOV excluded).
        hidden: layer widths, e.g. ``[64, 32]``.
        dropout: dropout on each layer's input (the embedded row for layer 1).
        activation: see :data:`polytask.nn.mlp.ACTIVATIONS`.
        embedding_dims: widths ``d_j``; default ``min(max_embedding_dim, (K_j + 1) // 2)``.
        max_embedding_dim: cap of the default rule (16).
    """

    input_kind = "tabular"

    def __init__(
        self,
        numeric: int,
        cardinalities: Sequence[int],
        hidden: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
        embedding_dims: Sequence[int] | None = None,
        max_embedding_dim: int = 16,
    ) -> None:
        cards = _check_columns(numeric, cardinalities)
        check_dropout(dropout)
        super().__init__(numeric + len(cards), hidden, dropout=0.0, activation=activation)
        embedding = TabularEmbedding(numeric, cards, embedding_dims, max_embedding_dim)
        self.numeric = numeric
        self.cardinalities = cards
        self.embedding_dims = embedding.embedding_dims
        widths = list(self.layer_dims)
        self.linears = nn.ModuleList(
            [TabularInput(embedding, widths[0], dropout)]
            + [
                nn.Sequential(nn.Dropout(dropout), nn.Linear(i, o))
                for i, o in zip(widths[:-1], widths[1:])
            ]
        )
        self.dropout = nn.Identity()  # type: ignore[assignment]

    @property
    def embedding(self) -> TabularEmbedding:
        return self.linears[0].embedding  # type: ignore[return-value]
