"""Multi-layer perceptron encoder for fixed-size feature vectors."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, cast

from torch import Tensor, nn

from polytask.errors import OptionError
from polytask.nn.base import Encoder, EncoderState

#: activation name -> module factory (shared with the heads)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise OptionError(
            "activation", f"{name!r} is unknown", f"use one of {sorted(ACTIVATIONS)}"
        ) from None


def check_dropout(dropout: float, name: str = "dropout") -> None:
    """Raise :class:`~polytask.errors.OptionError` naming ``name`` unless ``0 <= dropout < 1``."""
    if not 0.0 <= float(dropout) < 1.0:
        raise OptionError(name, f"{dropout!r} is not in [0, 1)", f"e.g. {name}: 0.1")


def check_positive(value: int, name: str) -> None:
    """Raise :class:`~polytask.errors.OptionError` naming ``name`` unless ``value`` is an
    integer > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OptionError(name, f"{value!r} is not a positive integer", "give an integer > 0")


class MLP(Encoder):
    """Stack of fully connected layers: ``h_d = act(W_d dropout(h_{d-1}) + b_d)``, ``h_0 = x``.

    Reads ``inputs["x"]`` (B, F) float and returns every layer's output (B, hidden[d-1]),
    so a sharing architecture can tap any depth. Dropout is applied to each layer's input.
    """

    input_kind = "features"
    is_sequence = False

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive(input_dim, "input_dim")
        if isinstance(hidden, int) or not hidden:
            raise OptionError(
                "hidden",
                f"{hidden!r} is not a non-empty list of layer widths",
                "e.g. hidden: [64, 64]",
            )
        for i, width in enumerate(hidden):
            check_positive(width, f"hidden[{i}]")
        check_dropout(dropout)
        make_activation(activation)  # validates the name early
        self.input_dim = input_dim
        self.layer_dims = list(hidden)
        self.dropout = nn.Dropout(dropout)
        widths = [input_dim, *hidden]
        self.linears = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(make_activation(activation) for _ in hidden)

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """``inputs["x"]`` checked and cast to the weights' dtype."""
        if "x" not in inputs:
            raise KeyError(f"MLP reads inputs['x'] (B, F); got keys {sorted(inputs)}")
        h = inputs["x"]
        if h.dim() != 2 or h.shape[-1] != self.input_dim:
            raise ValueError(
                f"MLP expects inputs['x'] of shape (B, {self.input_dim}); got {tuple(h.shape)}"
            )
        first = cast(nn.Linear, self.linears[0])  # __init__ fills linears with nn.Linear only
        return EncoderState(h.to(first.weight.dtype))

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """``act(W_i dropout(h) + b_i)``."""
        return state.with_h(self.activations[i](self.linears[i](self.dropout(state.h))))
