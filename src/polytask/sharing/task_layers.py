"""Task-specific layers ``h_i`` placed between the shared stack and a task's head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.bilstm import run_packed
from ..registry import Registry


class DenseLayer(nn.Module):
    """``h_i(x) = act(W x + b)`` applied to vectors or to every token of a sequence."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        out: Tensor = self.dropout(torch.relu(self.linear(x)))
        return out


class SequenceLayer(nn.Module):
    """A task-private bidirectional LSTM layer over the shared token features."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * hidden

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or mask is None:
            raise ValueError("SequenceLayer needs sequence features (B, T, D) and a token mask")
        out, _ = run_packed(self.lstm, x, mask.sum(1))
        dropped: Tensor = self.dropout(out)
        return dropped * mask.unsqueeze(-1).to(out.dtype)


#: the task layers: a name or ``package.module:Class`` -> an ``nn.Module`` class built with
#: ``in_dim`` and its options (``out_dim`` read back when it has one)
TASK_LAYERS: Registry[type[nn.Module]] = Registry(
    "task layer",
    base=nn.Module,
    expects="a torch.nn.Module class taking in_dim",
    builtins={"dense": DenseLayer, "bilstm": SequenceLayer},
)
