"""Multi-task batch loading: deterministic, resumable epochs over several sources.

A *source* is a list of examples that labels one or more tasks (one file per task, or
one file labelling every task: then each batch serves all of them in one forward pass).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from polytask.data.base import Batch, Example
from polytask.data.samplers import TaskSampler, make_sampler, stable_seed

__all__ = ["MultiTaskLoader", "sequential_batches"]

Collate = Callable[[list[Example], str], Batch]
#: one training step: the example indices it takes from each source (one entry under the
#: one-source samplers; several when a step joins batches of several sources)
StepPlan = dict[str, list[int]]
Plan = list[StepPlan]


class MultiTaskLoader:
    """Batches from several sources, mixed by a task sampler.

    **Epoch.** An epoch has ``steps_per_epoch`` steps, by default
    ``Σ_s ceil(n_s / batch_size)``: under proportional sampling each example is seen
    about once per epoch, and with a single source (mixed batches that label every
    task) an epoch is exactly one pass over it, the last batch being the remainder.
    Under a joint sampler (:class:`~polytask.data.samplers.JointSampler`: every source in
    every step, ``B_s`` examples of source ``s``) the default is ``max_s ceil(n_s / B_s)``.

    **Plan.** A step's plan is a mapping ``{source: example indices}``. At each step the
    sampler picks a source (``sampler.draw``, seeded by ``(seed, epoch)``), so the step's
    plan has one entry; the source then gives its next ``batch_size`` indices from a
    permutation stream: permutation ``c`` of source ``s`` in epoch ``e`` comes from a
    ``torch.Generator`` seeded with a stable hash of ``(seed, e, s, c)`` (identity when
    ``shuffle=False``). A batch never straddles two permutations: the end of a
    permutation gives a short batch, and the next step of that source starts permutation
    ``c + 1``. Every epoch starts each source at permutation 0 of that epoch.

    The whole plan of an epoch is therefore a pure function of ``(seed, epoch)`` (and the
    fixed configuration): resuming needs only ``(epoch, step)``, which the trainer stores;
    ``iterate(epoch, start_step=k)`` yields exactly the tail of ``iterate(epoch)``.

    Time-dependent samplers (annealed) see the global step ``epoch * steps_per_epoch + i``
    of ``total_epochs * steps_per_epoch``, so they need ``total_epochs``.
    """

    def __init__(
        self,
        sources: Mapping[str, Sequence[Example]],
        collate: Collate,
        batch_size: int,
        sampler: TaskSampler | str = "proportional",
        seed: int = 0,
        steps_per_epoch: int | None = None,
        shuffle: bool = True,
        total_epochs: int | None = None,
    ) -> None:
        if not sources:
            raise ValueError("MultiTaskLoader: no sources; give {source_name: examples}")
        for name, exs in sources.items():
            if len(exs) == 0:
                raise ValueError(f"MultiTaskLoader: source {name!r} has no examples; drop it")
        if batch_size < 1:
            raise ValueError(f"MultiTaskLoader: batch_size must be >= 1, got {batch_size}")
        self.sources: dict[str, Sequence[Example]] = dict(sources)
        self.sizes = {name: len(exs) for name, exs in self.sources.items()}
        if isinstance(sampler, str):
            sampler = make_sampler(sampler)
        if sampler.sizes is None:
            sampler = sampler.bind(self.sizes)
        elif sampler.sizes != self.sizes:
            raise ValueError(
                f"MultiTaskLoader: the sampler is bound to sizes {sampler.sizes} but the "
                f"sources have {self.sizes}; pass an unbound sampler"
            )
        self.sampler = sampler
        self.collate = collate
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        #: per-source examples of a joint step (every source in every step), else None
        self.shares = sampler.step_shares(self.batch_size)
        if self.shares is None:
            default = sum(math.ceil(n / self.batch_size) for n in self.sizes.values())
        else:
            default = max(math.ceil(n / self.shares[s]) for s, n in self.sizes.items())
        self.steps_per_epoch = int(steps_per_epoch) if steps_per_epoch is not None else default
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"MultiTaskLoader: steps_per_epoch must be >= 1, got {steps_per_epoch}"
            )
        if sampler.is_time_dependent and total_epochs is None:
            raise ValueError(
                f"MultiTaskLoader: {type(sampler).__name__} changes over training, so give "
                "total_epochs= (the number of epochs you will train)"
            )
        self.total_epochs = total_epochs
        self._cache: tuple[int, Plan] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def total_steps(self) -> int:
        """Steps of the whole run (``steps_per_epoch`` when ``total_epochs`` is unknown)."""
        return self.steps_per_epoch * (self.total_epochs or 1)

    # ------------------------------------------------------------------ planning

    def source_sequence(self, epoch: int) -> list[str]:
        """The source of every step of ``epoch`` (one-source samplers)."""
        S = self.steps_per_epoch
        return self.sampler.draw(
            epoch * S, S, self.total_steps, stable_seed(self.seed, epoch, "sources")
        )

    def _permutation(self, epoch: int, source: str, cycle: int) -> list[int]:
        n = self.sizes[source]
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(stable_seed(self.seed, epoch, source, cycle))
        return torch.randperm(n, generator=g).tolist()

    def plan(self, epoch: int) -> Plan:
        """``[{source: example indices}, ...]``, one mapping per step of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return [dict(step) for step in self._cache[1]]
        streams: dict[str, tuple[int, list[int], int]] = {}  # source -> (cycle, perm, pos)

        def take(src: str, size: int) -> list[int]:
            if src not in streams:
                streams[src] = (0, self._permutation(epoch, src, 0), 0)
            cycle, perm, pos = streams[src]
            if pos >= len(perm):
                cycle, pos = cycle + 1, 0
                perm = self._permutation(epoch, src, cycle)
            idx = perm[pos : pos + size]
            streams[src] = (cycle, perm, pos + len(idx))
            return idx

        if self.shares is not None:  # joint: every source in every step, in its share
            out = [
                {s: take(s, b) for s, b in self.shares.items()} for _ in range(self.steps_per_epoch)
            ]
        else:
            out = [{src: take(src, self.batch_size)} for src in self.source_sequence(epoch)]
        self._cache = (epoch, out)
        return [dict(step) for step in out]

    def iterate(
        self,
        epoch: int,
        start_step: int = 0,
        part: Callable[[list[int]], Sequence[int]] | None = None,
    ) -> Iterator[dict[str, Batch]]:
        """The steps of ``epoch`` from ``start_step`` on, each as ``{source: collated
        batch}`` (earlier steps are skipped without collating). ``part`` (data-parallel
        training) picks this process's part of each source's indices; a source whose part
        is empty is left out of the step."""
        if start_step < 0:
            raise ValueError(f"MultiTaskLoader.iterate: start_step must be >= 0, got {start_step}")
        for step in self.plan(epoch)[start_step:]:
            parts = {src: list(part(idx)) if part else idx for src, idx in step.items()}
            yield {
                src: self.collate([self.sources[src][i] for i in idx], src)
                for src, idx in parts.items()
                if idx
            }

    def task_steps(
        self,
        tasks_of_source: Mapping[str, str | Iterable[str]],
        steps: int,
    ) -> dict[str, int]:
        """Per task, the number of the first ``steps`` steps (across epochs, from epoch 0)
        whose plan holds a source labelling it. Used to give single-task baselines the
        same number of update steps as the multi-task run."""
        if steps < 0:
            raise ValueError(f"task_steps: steps must be >= 0, got {steps}")
        labels = {
            src: {tasks} if isinstance(tasks, str) else set(tasks)
            for src, tasks in tasks_of_source.items()
        }
        missing = set(self.sizes) - set(labels)
        if missing:
            raise ValueError(f"task_steps: no tasks given for source(s) {sorted(missing)}")
        counts: dict[str, int] = {t: 0 for ts in labels.values() for t in sorted(ts)}
        epoch, done = 0, 0
        while done < steps:
            for step in self.plan(epoch)[: steps - done]:
                for t in set().union(*(labels[src] for src in step)):
                    counts[t] += 1
                done += 1
            epoch += 1
        return counts


def sequential_batches(
    examples: Sequence[Example], collate: Collate, batch_size: int, source: str = ""
) -> Iterator[Batch]:
    """Batches of ``examples`` in order, without shuffling (evaluation, prediction)."""
    if batch_size < 1:
        raise ValueError(f"sequential_batches: batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(examples), batch_size):
        yield collate(list(examples[i : i + batch_size]), source)
