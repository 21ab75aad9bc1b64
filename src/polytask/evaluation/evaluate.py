"""Run a multi-task model over examples: predictions per task and metrics per task."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, cast

import torch

from ..data.base import Batch, Example
from ..tasks.base import Task, TaskKind

Collate = Callable[[list[Example], str], Batch]


def labelled_tasks(examples: Sequence[Example], tasks: Mapping[str, Task]) -> list[str]:
    """Tasks with at least one label among ``examples`` (in ``tasks`` order)."""
    return [t for t in tasks if any(ex.targets.get(t) is not None for ex in examples)]


def _pad_outside(pred: list[Any], example: Example, kind: TaskKind) -> list[Any]:
    """Tokens cut by a length limit: the kind says what they get (:meth:`TaskKind.pad_prediction`,
    the outside tag for tagging): the model never saw them."""
    tokens = example.inputs.get("tokens")
    if tokens is None or len(pred) >= len(tokens):
        return pred
    padded: list[Any] = kind.pad_prediction(pred, len(tokens))
    return padded


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    tasks: Mapping[str, Task],
    examples: Sequence[Example],
    collate: Collate,
    *,
    task_names: Sequence[str] | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    source: str = "",
) -> dict[str, list[Any]]:
    """Decoded predictions ``{task: [one per example]}``, from one forward pass per batch."""
    names = list(task_names) if task_names is not None else list(tasks)
    was_training = model.training
    model.eval()
    preds: dict[str, list[Any]] = {t: [] for t in names}
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]), source).to(device)
            out = model(batch.inputs, tasks=names)
            chunk = examples[start : start + batch_size]
            for t in names:
                decoded = tasks[t].kind.decode(out.outputs[t], out.mask)
                if tasks[t].kind.is_token_level:
                    decoded = [_pad_outside(p, ex, tasks[t].kind) for p, ex in zip(decoded, chunk)]
                preds[t].extend(decoded)
    finally:
        model.train(was_training)
    return preds


def evaluate(
    model: torch.nn.Module,
    tasks: Mapping[str, Task],
    sources: Mapping[str, Sequence[Example]],
    collate: Collate,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Metrics ``{task: {metric: value}}`` over every example that labels the task.

    Examples of all sources that label a task are pooled; unlabelled ones are skipped
    by the task's metrics (their target is ``None``).
    """
    preds: dict[str, list[Any]] = {t: [] for t in tasks}
    golds: dict[str, list[Any]] = {t: [] for t in tasks}
    for source, examples in sources.items():
        names = labelled_tasks(examples, tasks)
        if not names:
            continue
        p = predict(
            model,
            tasks,
            examples,
            collate,
            task_names=names,
            batch_size=batch_size,
            device=device,
            source=source,
        )
        for t in names:
            preds[t].extend(p[t])
            golds[t].extend(ex.targets.get(t) for ex in examples)
    return {t: tasks[t].kind.metrics(preds[t], golds[t]) for t in tasks if golds[t]}


def primary_scores(
    metrics: Mapping[str, Mapping[str, float]], tasks: Mapping[str, Task]
) -> dict[str, float]:
    """``{task: value of its primary metric}``."""
    # Task.__post_init__ sets primary_metric (the kind's default when not given)
    return {t: float(metrics[t][cast(str, tasks[t].primary_metric)]) for t in metrics}
