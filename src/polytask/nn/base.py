"""Contracts between encoders, heads and sharing architectures.

An encoder is a stack of ``num_layers`` layers run by one protocol:

    state = encoder.start(inputs)            # embedding / input stage: the input of layer 1
    for i in range(encoder.num_layers):
        state = encoder.layer(i, state)      # state.h is now the output of layer i + 1

``forward`` is that loop (:meth:`Encoder.forward`), returning every layer's output. A sharing
architecture that must act *between* layers (cross-stitch units mix the towers' ``state.h``)
runs the same loop itself and replaces ``state.h`` (:meth:`EncoderState.with_h`) before the
next layer reads it; so any encoder that implements ``start`` and ``layer`` — a user's too —
can be stitched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from torch import Tensor, nn

__all__ = ["Encoder", "EncoderOutput", "EncoderState", "steps_layerwise"]


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


@dataclass(frozen=True)
class EncoderState:
    """What flows between an encoder's layers.

    Attributes:
        h: after :meth:`Encoder.start`, the input of layer 1; after ``layer(i, ·)``, the
            output of layer ``i + 1`` (the tensor :class:`EncoderOutput` lists).
        mask: (B, T) bool token mask (True = real token) of sequence encoders, else ``None``.
        context: anything else the layers need and that no architecture changes (e.g. a
            recurrent encoder's sequence lengths); ``None`` by default.
    """

    h: Tensor
    mask: Tensor | None = None
    context: Any = None

    def with_h(self, h: Tensor) -> EncoderState:
        """The same state carrying ``h`` (what an architecture mixing layers hands on)."""
        return replace(self, h=h)


class Encoder(nn.Module):
    """Base class of encoders. Subclasses set the attributes below in ``__init__`` and
    implement :meth:`start` and :meth:`layer` (``forward`` runs them).

    - ``input_kind``: which batch inputs it reads: ``"tokens"`` (``tokens`` (B, T) long,
      0 = padding, optional ``chars`` (B, T, C) long), ``"features"`` (``x`` (B, F) float),
      ``"subwords"`` (``input_ids``, ``attention_mask``, ``word_index``, ``word_mask``)
      or ``"image"`` (``image`` (B, C, H, W) float).
    - ``layer_dims``: output width of each layer, depth 1..L (the channels C_d of a map).
    - ``layer_shapes``: per-example shape of each layer's output, e.g. ``(C, H, W)`` for a
      feature map and ``(D,)`` for a vector; ``None`` (the default) where every layer is a
      vector or per-token vector of width ``layer_dims[d - 1]``.
    - ``is_sequence``: whether outputs are per token.
    - ``layerwise``: whether ``layer(i, state)`` computes its output from ``state.h`` (and the
      state's mask and context) alone, so that an architecture may change ``state.h`` between
      layers; ``False`` for an encoder that computes every layer at once in :meth:`start`.
    """

    input_kind: str = "tokens"
    layer_dims: list[int]
    layer_shapes: list[tuple[int, ...]] | None = None
    is_sequence: bool = True
    layerwise: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.layer_dims)

    @property
    def output_dim(self) -> int:
        return self.layer_dims[-1]

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """Check ``inputs`` and compute the input of layer 1 (embeddings, a cast, ...)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Encoder.start")

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """Run layer ``i`` (0-based) on ``state.h``; the returned ``h`` is its output."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Encoder.layer")

    def forward(self, inputs: Mapping[str, Tensor]) -> EncoderOutput:
        """Every layer's output: :meth:`start`, then :meth:`layer` for each depth."""
        state = self.start(inputs)
        layers: list[Tensor] = []
        for i in range(self.num_layers):
            state = self.layer(i, state)
            layers.append(state.h)
        return EncoderOutput(layers=layers, mask=state.mask)


def steps_layerwise(encoder: nn.Module) -> bool:
    """Whether ``encoder`` runs one layer at a time through :meth:`Encoder.start` /
    :meth:`Encoder.layer` with layers that read ``state.h`` (``Encoder.layerwise``)."""
    if not isinstance(encoder, Encoder) or not encoder.layerwise:
        return False
    cls = type(encoder)
    return cls.start is not Encoder.start and cls.layer is not Encoder.layer
