"""Train a model on one fixed batch with the Trainer's step (forward_losses +
balancing.backward)."""

from __future__ import annotations

from typing import Any

import torch

from polytask import balancing
from polytask.engine import Trainer, TrainerConfig


def overfit(
    model: Any, tasks: Any, batch: Any, steps: int, lr: float, stop_below: float | None = None
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Adam on ``batch`` for ``steps`` steps (fixed weights, the model's penalty added), stopping
    early once every loss is below ``stop_below``; returns the first and the final losses."""
    torch.set_num_threads(1)
    method = balancing.make("fixed")
    trainer = Trainer(model, tasks, method, TrainerConfig(seed=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shared = model.shared_parameters()
    first: dict[str, float] | None = None
    for _ in range(steps):
        losses, out = trainer.forward_losses(batch)
        first = first or {t: v.item() for t, v in losses.items()}
        optimizer.zero_grad(set_to_none=True)
        balancing.backward(
            losses,
            method=method,
            features=out.shared_features,
            shared=shared,
            penalty=model.penalty(out),
        )
        optimizer.step()
        if stop_below is not None and max(v.item() for v in losses.values()) < stop_below:
            break
    with torch.no_grad():
        last = trainer.compute_losses(batch)
    return first or {}, last
