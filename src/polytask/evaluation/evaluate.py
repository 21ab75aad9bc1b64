"""Run a multi-task model over examples: predictions per task and metrics per task."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence, cast

import torch
from torch import Tensor

from ..data.base import Batch, Example
from ..errors import DataError
from ..tasks.base import Task, TaskKind

Collate = Callable[[list[Example], str], Batch]


class NonFiniteOutputError(DataError):
    """A model's outputs for a task hold NaN or infinity, so its predictions would be
    meaningless: ``option`` names the task (``task 'ner'``)."""


def _tensors(output: Any) -> list[Tensor]:
    """The tensors of a task's output: itself, or those of a dataclass (``TagScores``),
    mapping or sequence."""
    if isinstance(output, Tensor):
        return [output]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        values: Any = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, Mapping):
        values = list(output.values())
    elif isinstance(output, (list, tuple)):
        values = list(output)
    else:
        return []
    return [t for v in values for t in _tensors(v)]


def _bad_rows(output: Any, size: int, mask: Tensor | None) -> list[int]:
    """Rows (examples) whose output is not finite; per-token values count on real tokens
    only (padding may hold anything), values without a batch dimension count for every row."""
    bad = torch.zeros(size, dtype=torch.bool)
    for t in _tensors(output):
        if not (t.is_floating_point() or t.is_complex()):
            continue
        wrong = ~torch.isfinite(t)
        if t.dim() == 0 or t.shape[0] != size:  # shared by the batch (CRF transitions)
            if bool(wrong.any()):
                return list(range(size))
            continue
        if mask is not None and t.dim() >= 2 and tuple(t.shape[:2]) == tuple(mask.shape):
            wrong = wrong & mask.bool().reshape(*mask.shape, *[1] * (t.dim() - 2))
        bad |= wrong.reshape(size, -1).any(dim=1).cpu()
    return bad.nonzero().squeeze(-1).tolist()


def check_finite(
    task: str, output: Any, mask: Tensor | None, examples: Sequence[Example], offset: int = 0
) -> None:
    """Raise :class:`NonFiniteOutputError` naming ``task`` when ``output`` (a batch of
    ``examples``, the first being number ``offset`` of its input) holds NaN or infinity;
    ``mask`` (B, T), given for a token-level task, limits the check to real tokens."""
    rows = _bad_rows(output, len(examples), mask)
    if not rows:
        return
    first = rows[0]
    which = examples[first].id
    name = f"{which!r}" if which is not None else f"number {offset + first + 1}"
    raise NonFiniteOutputError(
        f"task {task!r}",
        f"the model's outputs hold NaN or infinity for input {name} ({len(rows)} of the "
        f"{len(examples)} inputs of its batch), so its predictions would be meaningless",
        "the run's weights hold NaN or infinity, or training diverged: train it again "
        "(e.g. with a lower trainer.lr or trainer.clip_norm)",
    )


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model`` runs: the device of its first parameter (or buffer); the CPU for a
    model without tensors."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


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
    device: torch.device | str | None = None,
    source: str = "",
) -> dict[str, list[Any]]:
    """Decoded predictions ``{task: [one per example]}``, from one forward pass per batch;
    the batches go to ``device`` (default: where the model is).

    Outputs holding NaN or infinity (on real tokens) raise :class:`NonFiniteOutputError`
    naming the task, never a prediction decoded from them."""
    names = list(task_names) if task_names is not None else list(tasks)
    device = model_device(model) if device is None else device
    was_training = model.training
    model.eval()
    preds: dict[str, list[Any]] = {t: [] for t in names}
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]), source).to(device)
            out = model(batch.inputs, tasks=names)
            chunk = examples[start : start + batch_size]
            for t in names:
                token_mask = out.mask if tasks[t].kind.is_token_level else None
                check_finite(t, out.outputs[t], token_mask, chunk, offset=start)
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
    device: torch.device | str | None = None,
    part: Callable[[Sequence[Example]], Sequence[Example]] | None = None,
    gather: Callable[[list[Any]], list[Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics ``{task: {metric: value}}`` over every example that labels the task (the
    batches go to ``device``, default where the model is).

    Examples of all sources that label a task are pooled; unlabelled ones are skipped
    by the task's metrics (their target is ``None``).

    Across processes (data-parallel training), ``part`` picks this process's contiguous
    part of each source's examples and ``gather`` concatenates every process's list in
    order: the metrics are those of one process predicting every example.
    """
    preds: dict[str, list[Any]] = {t: [] for t in tasks}
    golds: dict[str, list[Any]] = {t: [] for t in tasks}
    for source, examples in sources.items():
        names = labelled_tasks(examples, tasks)
        if not names:
            continue
        mine = part(examples) if part is not None else examples
        p = predict(
            model,
            tasks,
            mine,
            collate,
            task_names=names,
            batch_size=batch_size,
            device=device,
            source=source,
        )
        if gather is not None:
            parts = gather([p])
            p = {t: [x for q in parts for x in q[t]] for t in names}
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
