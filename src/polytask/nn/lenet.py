"""LeNet-style 2-D convolutional encoder for small images (LeCun et al., 1998), in the shape
Sener & Koltun (2018, "Multi-Task Learning as Multi-Objective Optimization") share between
the two MultiMNIST tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polytask.errors import OptionError
from polytask.nn.base import Encoder, EncoderState
from polytask.nn.mlp import check_dropout, check_positive


def _size_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise OptionError(
            name, f"{value!r} is neither an int nor a pair (height, width)", f"e.g. {name}: 36"
        )
    for i, v in enumerate(value):
        check_positive(v, f"{name}[{i}]")
    return int(value[0]), int(value[1])


class LeNet(Encoder):
    """Two convolution blocks and one fully connected layer over ``inputs["image"]`` (B, C, H, W):

        h^1 = ReLU(maxpool_2(conv_k(x)))                          (B, c_1, H_1, W_1)
        h^2 = ReLU(maxpool_2(conv_k(dropout2d(h^1))))             (B, c_2, H_2, W_2)
        h^3 = ReLU(W vec(dropout(h^2)) + b)                       (B, hidden)

    with valid (unpadded) ``k × k`` convolutions and 2 × 2 max pooling (floor), so
    ``H_1 = ⌊(H − k + 1) / 2⌋`` and ``H_2 = ⌊(H_1 − k + 1) / 2⌋``. The defaults are the
    MultiMNIST LeNet: conv(1→10, 5) + pool + ReLU, conv(10→20, 5) + pool + ReLU, fc to 50;
    on 36 × 36 inputs the layers are (10, 16, 16), (20, 6, 6) and (50,). Dropout (default 0)
    drops whole channels before the second convolution and units before the fc layer.

    Every layer's output is returned (``layer_dims = [c_1, c_2, hidden]`` are the channel
    counts of the maps and the width of the vector; ``layer_shapes`` the per-example shapes),
    so sharing architectures can tap, attend to (MTAN) or stitch (cross-stitch) any depth.
    :meth:`start` and :meth:`layer` run the network one layer at a time (the encoder
    protocol); ``forward`` is exactly those steps. Heads read the top layer, a (B, hidden) vector.
    """

    input_kind = "image"
    is_sequence = False

    def __init__(
        self,
        image_size: int | Sequence[int] = 36,
        in_channels: int = 1,
        channels: Sequence[int] = (10, 20),
        kernel_size: int = 5,
        hidden: int = 50,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        height, width = _size_pair(image_size, "image_size")
        check_positive(in_channels, "in_channels")
        check_positive(kernel_size, "kernel_size")
        check_positive(hidden, "hidden")
        check_dropout(dropout)
        if isinstance(channels, (int, str)) or len(channels) != 2:
            raise OptionError(
                "channels",
                f"{channels!r} is not two widths (one per conv block)",
                "e.g. channels: [10, 20]",
            )
        for i, c in enumerate(channels):
            check_positive(c, f"channels[{i}]")
        sizes = [(height, width)]
        for _ in range(2):
            h, w = sizes[-1]
            h, w = (h - kernel_size + 1) // 2, (w - kernel_size + 1) // 2
            if h < 1 or w < 1:
                raise OptionError(
                    "image_size",
                    f"{(height, width)} is too small for two "
                    f"{kernel_size}×{kernel_size} conv + 2×2 pool blocks",
                    f"use images of at least {3 * kernel_size - 1} pixels a side or a smaller "
                    "kernel_size",
                )
            sizes.append((h, w))
        self.image_size = (height, width)
        self.in_channels = in_channels
        c1, c2 = int(channels[0]), int(channels[1])
        self.layer_dims = [c1, c2, hidden]
        self.layer_shapes: list[tuple[int, ...]] = [(c1, *sizes[1]), (c2, *sizes[2]), (hidden,)]
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size)
        self.fc = nn.Linear(c2 * sizes[2][0] * sizes[2][1], hidden)
        self.dropout2d = nn.Dropout2d(dropout)
        self.dropout = nn.Dropout(dropout)

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """The input of layer 1: ``inputs["image"]`` checked and cast to the weights' dtype."""
        if "image" not in inputs:
            raise KeyError(f"LeNet reads inputs['image'] (B, C, H, W); got keys {sorted(inputs)}")
        x = inputs["image"]
        expected = (self.in_channels, *self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"LeNet expects inputs['image'] of shape (B, {', '.join(map(str, expected))}); "
                f"got {tuple(x.shape)}"
            )
        return EncoderState(x.to(self.conv1.weight.dtype))

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """Output of layer ``i`` (0-based) given that layer's input ``state.h``."""
        h = state.h
        if i == 0:
            h = torch.relu(F.max_pool2d(self.conv1(h), 2))
        elif i == 1:
            h = torch.relu(F.max_pool2d(self.conv2(self.dropout2d(h)), 2))
        elif i == 2:
            h = torch.relu(self.fc(self.dropout(h.flatten(1))))
        else:
            raise IndexError(f"LeNet has layers 0..2; got {i}")
        return state.with_h(h)
