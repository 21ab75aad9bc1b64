"""Masked pooling of token features into one vector per sequence.

Padding never influences the result: padded features are replaced (not multiplied) by a
neutral value before reducing, so even ``inf`` / ``nan`` at padded positions cannot leak.
A sequence without any real token pools to the zero vector.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polytask.errors import OptionError
from polytask.nn.mlp import check_positive

POOLINGS = ("mean", "max", "attention")


def _check(features: Tensor, mask: Tensor | None) -> Tensor:
    if features.dim() != 3:
        raise ValueError(f"pooling needs features (B, T, D); got {tuple(features.shape)}")
    if mask is None:
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    if mask.shape != features.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, T) = {tuple(features.shape[:2])}")
    return mask.bool()


class AttentionPooling(nn.Module):
    """Additive attention pooling (Yang et al., 2016, "Hierarchical Attention Networks").

        s_t = vᵀ tanh(W h_t + b),   α = softmax_{t : mask_t}(s),   pooled = Σ_t α_t h_t

    The softmax runs over real tokens only (padded scores get the dtype's lowest value).
    ``v`` plays the role of HAN's context vector ``u_w``.
    """

    def __init__(self, dim: int, attention_dim: int | None = None) -> None:
        super().__init__()
        check_positive(dim, "dim")
        attention_dim = dim if attention_dim is None else attention_dim
        check_positive(attention_dim, "attention_dim")
        self.proj = nn.Linear(dim, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)

    def weights(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention weights α (B, T): zero on padding, summing to 1 over real tokens."""
        mask = _check(features, mask)
        safe = torch.where(mask.unsqueeze(-1), features, 0.0)
        scores = self.context(torch.tanh(self.proj(safe))).squeeze(-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        alpha = torch.softmax(scores, dim=-1)  # exp(min - max) underflows to exactly 0
        return torch.where(mask, alpha, 0.0)  # rows without real tokens pool to zero

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """``features`` (B, T, D), ``mask`` (B, T) bool -> pooled (B, D)."""
        mask = _check(features, mask)
        alpha = self.weights(features, mask)
        safe = torch.where(mask.unsqueeze(-1), features, 0.0)
        return torch.einsum("bt,btd->bd", alpha, safe)


def pool(
    features: Tensor,
    mask: Tensor | None = None,
    how: str = "mean",
    attention_module: AttentionPooling | None = None,
) -> Tensor:
    """Pool (B, T, D) features over real tokens (``mask`` (B, T), True = real) into (B, D).

    - ``"mean"``: Σ_t m_t h_t / max(1, Σ_t m_t);
    - ``"max"``: max over real tokens, per dimension;
    - ``"attention"``: ``attention_module(features, mask)`` (see :class:`AttentionPooling`).
    """
    mask = _check(features, mask)
    keep = mask.unsqueeze(-1)
    if how == "mean":
        total = torch.where(keep, features, 0.0).sum(dim=1)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(features.dtype)
        return total / count
    if how == "max":
        lowest = torch.finfo(features.dtype).min
        best = torch.where(keep, features, lowest).amax(dim=1)
        return torch.where(mask.any(dim=1, keepdim=True), best, 0.0)
    if how == "attention":
        if attention_module is None:
            raise OptionError(
                "attention_module",
                "how='attention' needs an attention module",
                "pass attention_module=AttentionPooling(dim)",
            )
        pooled: Tensor = attention_module(features, mask)
        return pooled
    raise OptionError("how", f"{how!r} is unknown", f"use one of {list(POOLINGS)}")
