"""Wrap any ``nn.Module`` as a multi-task model by declaring what is shared."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from ..errors import OptionError
from .base import EncoderFactory, HeadsFactory, MultiTaskModel, MultiTaskOutput


class Custom(MultiTaskModel):
    """A user module plus a declaration of parameter ownership.

    ``module(inputs, tasks)`` must return a :class:`MultiTaskOutput`, a pair
    ``(outputs, features)`` of dicts keyed by task, or a triple ``(outputs, features,
    shared_features)`` whose last item is the one tensor every task's loss passes through
    (or None; it enables feature-level gradient balancing). ``shared`` lists parameter-name
    prefixes of the shared part; ``task_params[task]`` lists those of each task. Every
    parameter must be declared exactly once (checked at construction).
    """

    provides_shared_features = None  # whatever the module returns

    def __init__(
        self,
        module: nn.Module,
        tasks: Sequence[str],
        shared: Sequence[str],
        task_params: Mapping[str, Sequence[str]],
    ) -> None:
        super().__init__()
        self.module = module
        self.task_names = list(tasks)
        self._shared = tuple(shared)
        self._task = {t: tuple(task_params.get(t, ())) for t in self.task_names}
        unknown = sorted(set(task_params) - set(self.task_names))
        if unknown:
            raise OptionError("task_params", f"unknown task(s) {unknown}", f"use {self.task_names}")
        self.check_ownership()

    @classmethod
    def from_parts(
        cls, *, encoder: EncoderFactory, heads: HeadsFactory, tasks: Sequence[str], **options: Any
    ) -> Custom:
        """Not buildable from parts: a :class:`Custom` wraps a module of your own."""
        raise OptionError(
            "sharing",
            "Custom wraps a module of your own and is not built from an encoder and heads",
            "construct Custom(module, tasks, shared, task_params), "
            "or write a MultiTaskModel with from_parts",
        )

    def _select(self, prefixes: tuple[str, ...]) -> list[nn.Parameter]:
        return [
            p
            for n, p in self.module.named_parameters()
            if any(n == pre or n.startswith(pre.rstrip(".") + ".") for pre in prefixes)
        ]

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        out: Any = self.module(inputs, tasks)
        if isinstance(out, MultiTaskOutput):
            return out
        if len(out) == 3:
            outputs, features, shared = out
            return MultiTaskOutput(
                outputs=dict(outputs), features=dict(features), shared_features=shared
            )
        outputs, features = out
        return MultiTaskOutput(outputs=dict(outputs), features=dict(features))

    def shared_parameters(self) -> list[nn.Parameter]:
        return self._select(self._shared)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return self._select(self._task[task])
