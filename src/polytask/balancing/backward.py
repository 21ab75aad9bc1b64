"""``backward``: the balanced replacement of ``loss.backward()`` for any training loop."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .base import Balancer, LossWeighting


def _as_mapping(losses: Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Tensor]:
    if isinstance(losses, Mapping):
        return dict(losses)
    return {str(i): loss for i, loss in enumerate(losses)}


def backward(
    losses: Mapping[str, Tensor] | Sequence[Tensor],
    *,
    method: Balancer,
    features: Tensor | Sequence[Tensor] | None = None,
    shared: Iterable[torch.nn.Parameter] | None = None,
    level: str = "features",
    scale: float = 1.0,
) -> Tensor:
    """Fill ``.grad`` of every parameter the losses reach with the balanced update.

    For a :class:`LossWeighting` method this is ``(scale · method.combine(losses)).backward()``:
    shared parameters receive ``Σ_i λ_i ∇L_i`` and task-specific ones ``λ_i ∇L_i``.
    ``scale`` divides the update for gradient accumulation. Returns the combined loss
    (detached). Gradients accumulate into existing ``.grad`` like ``loss.backward()``.
    """
    named = _as_mapping(losses)
    if isinstance(method, LossWeighting):
        total = method.combine(named)
        (total * scale).backward()
        return total.detach()
    raise NotImplementedError(
        f"balancing method {method.name!r} needs {method.needs!r}; gradient-level methods "
        "are not available in this version"
    )
