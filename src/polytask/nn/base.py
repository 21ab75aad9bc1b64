"""Contracts between encoders, heads and sharing architectures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from torch import Tensor, nn


@dataclass
class EncoderOutput:
    """Every layer's output, so that sharing architectures can tap any depth.

    ``layers[d - 1]`` is the output of layer ``d`` (depth counts from 1): (B, T, D_d) for
    sequence encoders, (B, D_d) otherwise, or (B, C_d, H_d, W_d) feature maps for the
    convolutional layers of image encoders. ``mask`` is (B, T) bool (True = real token) for
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
      0 = padding, optional ``chars`` (B, T, C) long), ``"features"`` (``x`` (B, F) float),
      ``"subwords"`` (``input_ids``, ``attention_mask``, ``word_index``, ``word_mask``)
      or ``"image"`` (``image`` (B, C, H, W) float).
    - ``layer_dims``: output width of each layer, depth 1..L (the channels C_d of a map).
    - ``layer_shapes``: per-example shape of each layer's output, e.g. ``(C, H, W)`` for a
      feature map and ``(D,)`` for a vector; ``None`` (the default) where every layer is a
      vector or per-token vector of width ``layer_dims[d - 1]``.
    - ``is_sequence``: whether outputs are per token.
    """

    input_kind: str = "tokens"
    layer_dims: list[int]
    layer_shapes: list[tuple[int, ...]] | None = None
    is_sequence: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.layer_dims)

    @property
    def output_dim(self) -> int:
        return self.layer_dims[-1]

    def forward(self, inputs: Mapping[str, Tensor]) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError
