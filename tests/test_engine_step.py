"""One training step: its plan ``{source: indices}``, its losses, and the step hook.

The step hook (``Balancer.after_step(losses, closure)``) re-evaluates the step's losses
on the same batches after the update: same dropout masks, no trace left in the training
(RNG stream, module buffers), so a method that calls it trains bit-identically to one
that does not, apart from what it does with the numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from conftest import assert_same_tensors, weights

from polytask.balancing import FAMO, Sum, make
from polytask.engine import Trainer, TrainerConfig


class RecordingSum(Sum):
    """Σ L_i that calls the step hook ``calls`` times per step and keeps what it saw."""

    def __init__(self, calls: int = 1) -> None:
        super().__init__()
        self.calls = calls
        self.seen: list[tuple[dict[str, float], list[dict[str, float]]]] = []

    def after_step(self, losses: Any, closure: Any = None) -> None:
        again = [{t: float(v) for t, v in closure().items()} for _ in range(self.calls)]
        self.seen.append(({t: float(v) for t, v in losses.items()}, again))


def _fit(zh, model, method, **cfg) -> Trainer:
    config = TrainerConfig(**(dict(epochs=1, batch_size=16, threads=1, lr=0.05, max_steps=6) | cfg))
    trainer = Trainer(model, zh.tasks, method=method, config=config)
    trainer.fit(zh.sources(n=48), zh.val_of(), zh.collate)
    return trainer


def test_the_step_hook_leaves_no_trace_in_training(zh, make_model) -> None:
    """With dropout, calling the closure twice per step changes nothing in the weights: it
    draws its masks from a replayed RNG state and restores the training stream."""
    plain, hooked = make_model(dropout=0.3), make_model(dropout=0.3)
    _fit(zh, plain, Sum())
    method = RecordingSum(calls=2)
    _fit(zh, hooked, method)
    assert_same_tensors(weights(hooked), weights(plain))
    assert len(method.seen) == 6
    for before, (first, second) in method.seen:
        assert first == second  # the same masks each time it is called
        assert set(first) == set(before)


def test_the_closure_gives_the_losses_at_the_updated_parameters(zh, make_model) -> None:
    """Without dropout the closure's losses are the step's batch evaluated after the update
    (and they differ from the losses before it: the step moved the parameters)."""
    model = make_model()
    trainer = Trainer(
        model,
        zh.tasks,
        method=RecordingSum(),
        config=TrainerConfig(
            epochs=1, batch_size=16, threads=1, lr=0.05, optimizer="sgd", momentum=0.0
        ),
    )
    loader = trainer.make_loader(zh.sources(n=48), zh.collate)
    step = next(loader.iterate(0))
    losses, closure = trainer.train_step(step)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.05)
        expected = trainer.step_losses(step).losses
    again = closure()
    assert set(again) == set(losses) == set(expected)
    for t in again:
        assert torch.equal(again[t], expected[t]), t
        assert not torch.equal(again[t], losses[t]), t


def test_a_step_over_two_sources_carries_both_tasks(zh, make_model) -> None:
    """A step's plan may hold batches of several sources: one forward pass each, every
    task's loss goes to the method (here a gradient method: with a feature tensor per source
    and no level given, it balances at the shared parameters)."""
    model = make_model()
    trainer = Trainer(model, zh.tasks, method=make("mgda"), config=TrainerConfig(threads=1))
    reviews = zh.collate(zh.train["reviews"][:8], "reviews")
    news = zh.collate(zh.train["news"][:8], "news")
    out = trainer.step_losses({"reviews": reviews, "news": news})
    assert set(out.losses) == {"sentiment", "ner"}
    assert isinstance(out.features, dict) and set(out.features) == {"reviews", "news"}
    alone = trainer.step_losses({"news": news})
    assert alone.features is not None and set(alone.losses) == {"ner"}
    torch.testing.assert_close(out.losses["ner"], alone.losses["ner"])
    losses, _ = trainer.train_step({"reviews": reviews, "news": news})
    assert set(losses) == {"sentiment", "ner"}
    shared = model.shared_parameters()
    assert all(p.grad is not None for p in shared) and any(p.grad.abs().sum() > 0 for p in shared)


def test_famo_in_the_trainer_uses_the_same_batch_rule(zh, make_model) -> None:
    """FAMO's default rule reads the closure: its logits move during training (a FAMO that
    compared a step's losses with themselves would stay at 0)."""
    method = FAMO()
    mixed = {"mixed": zh.train["reviews"][:40] + zh.train["news"][:40]}  # both tasks per batch
    config = TrainerConfig(epochs=1, batch_size=32, threads=1, lr=0.05, max_steps=8)
    Trainer(make_model(), zh.tasks, method=method, config=config).fit(
        mixed, zh.val_of(), zh.collate
    )
    assert method.mode == "same_batch"
    assert method.logits and any(abs(v) > 1e-3 for v in method.logits.values()), method.logits
