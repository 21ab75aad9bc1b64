"""Contracts between encoders, heads and sharing architectures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from torch import Tensor, nn


@dataclass
class EncoderOutput:
    """Every layer's output, so that sharing architectures can tap any depth.

    ``layers[d - 1]`` is the output of layer ``d`` (depth counts from 1): (B, T, D_d) for
    sequence encoders, (B, D_d) otherwise. ``mask`` is (B, T) bool (True = real token) for
    sequence encoders and ``None`` otherwise. For sub-word encoders, ``layers`` are already
    gathered to word level (one vector per word) and ``mask`` is the word mask.
    """

    layers: list[Tensor]
    mask: Tensor | None = None

    @property
    def last(self) -> Tensor:
        return self.layers[-1]


class Encoder(nn.Module):
    """Base class of encoders. Subclasses set the attributes below in ``__init__``.

    - ``input_kind``: which batch inputs it reads: ``"tokens"`` (``tokens`` (B, T) long,
      0 = padding, optional ``chars`` (B, T, C) long), ``"features"`` (``x`` (B, F) float)
      or ``"subwords"`` (``input_ids``, ``attention_mask``, ``word_index``, ``word_mask``).
    - ``layer_dims``: output width of each layer, depth 1..L.
    - ``is_sequence``: whether outputs are per token.
    """

    input_kind: str = "tokens"
    layer_dims: list[int]
    is_sequence: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.layer_dims)

    @property
    def output_dim(self) -> int:
        return self.layer_dims[-1]

    def forward(self, inputs: Mapping[str, Tensor]) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError
