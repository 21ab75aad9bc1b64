"""Re-evaluating a step: the same random numbers, and no trace left behind.

The step hook (``Balancer.after_step(losses, closure)``) lets a method see the losses of
the step's batches again after the update (FAMO's same-batch rule). For that second
forward pass to measure only the change of the parameters, it must draw the same dropout
masks as the step's own forward pass, and it must not move the training: the training
RNG stream and the modules' buffers (batch-norm running statistics) are left as they were.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

__all__ = ["RngSnapshot", "replaying", "buffers_kept"]


@dataclass(frozen=True)
class RngSnapshot:
    """The CPU generator's state and, on CUDA, the device generator's state."""

    cpu: torch.Tensor
    device: torch.device
    cuda: torch.Tensor | None

    @classmethod
    def take(cls, device: torch.device) -> RngSnapshot:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), device, cuda)


@contextmanager
def replaying(snapshot: RngSnapshot) -> Iterator[None]:
    """Inside: the RNG state of ``snapshot``; after: the state from before the block."""
    devices = [snapshot.device] if snapshot.cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(snapshot.cpu)
        if snapshot.cuda is not None:
            torch.cuda.set_rng_state(snapshot.cuda, snapshot.device)
        yield


@contextmanager
def buffers_kept(module: torch.nn.Module) -> Iterator[None]:
    """Restore every buffer of ``module`` (running statistics, counters) on exit."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
