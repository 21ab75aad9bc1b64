"""1-D convolutional encoder over word embeddings (Collobert et al., 2011; Kim, 2014)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from polytask.errors import OptionError
from polytask.nn.base import Encoder, EncoderState
from polytask.nn.mlp import check_dropout, check_positive


class CNN(Encoder):
    """Stack of same-length 1-D convolutions over word embeddings.

    With ``e_t`` the embedding of token ``t`` and ``k = kernel_size``, layer ``d`` computes

        h^d_t = ReLU(b_d + sum_{j} W_{d,j} dropout(h^{d-1})_{t + j}),   h^0 = e,

    with ``j`` in ``-(k-1)/2 .. (k-1)/2`` (``k`` odd, PyTorch ``padding="same"``)
    and positions outside the sequence read as zero. Padding positions are zeroed in every
    layer's input and output, so they act exactly like the zero border: the outputs at real
    positions do not depend on how much padding the batch has. Each layer's output is
    (B, T, channels[d-1]); ``mask = tokens != padding_idx``.
    """

    input_kind = "tokens"
    is_sequence = True

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        channels: Sequence[int],
        kernel_size: int = 3,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        check_positive(vocab_size, "vocab_size")
        check_positive(embed_dim, "embed_dim")
        check_positive(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise OptionError(
                "kernel_size",
                f"{kernel_size} is even: the window must be centred "
                "on each token (same-length output)",
                "use an odd size, e.g. kernel_size: 3",
            )
        if isinstance(channels, int) or not channels:
            raise OptionError(
                "channels",
                f"{channels!r} is not a non-empty list of widths",
                "e.g. channels: [128, 128]",
            )
        for i, width in enumerate(channels):
            check_positive(width, f"channels[{i}]")
        check_dropout(dropout)
        if not 0 <= padding_idx < vocab_size:
            raise OptionError(
                "padding_idx",
                f"{padding_idx} is outside [0, vocab_size={vocab_size})",
                "give an index of the vocabulary",
            )
        self.padding_idx = padding_idx
        self.layer_dims = list(channels)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        widths = [embed_dim, *channels]
        self.convs = nn.ModuleList(
            nn.Conv1d(i, o, kernel_size, padding="same") for i, o in zip(widths[:-1], widths[1:])
        )
        self.dropout = nn.Dropout(dropout)

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """Word embeddings of ``inputs["tokens"]`` and the token mask."""
        if "tokens" not in inputs:
            raise KeyError(f"CNN reads inputs['tokens'] (B, T); got keys {sorted(inputs)}")
        tokens = inputs["tokens"]
        return EncoderState(self.embedding(tokens), mask=tokens != self.padding_idx)

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """Convolution ``i`` over ``dropout(h)``, padding positions zeroed before and after."""
        assert state.mask is not None
        keep = state.mask.unsqueeze(-1)
        x = torch.where(keep, self.dropout(state.h), 0.0)
        h = torch.relu(self.convs[i](x.transpose(1, 2))).transpose(1, 2)
        return state.with_h(torch.where(keep, h, 0.0))
