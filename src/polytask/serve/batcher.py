"""Dynamic micro-batching: requests wait at most ``max_wait`` seconds to share one forward
pass of up to ``max_batch`` inputs; a bounded queue refuses what it cannot hold.

One model serves every task from one forward pass; batching the inputs of concurrent
requests is what makes that pass cheap per input. The queue is bounded: when it is full
:meth:`Batcher.submit` raises :class:`Overloaded` at once (the server answers 503 with
``Retry-After``), so a burst never turns into a hang. The model runs in one worker thread,
so the event loop keeps answering ``/health`` while it computes.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Batcher", "Overloaded"]

Predict = Callable[[list[Any]], list[dict[str, Any]]]


class Overloaded(Exception):
    """The queue is full: try again after :attr:`retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    inputs: list[Any]
    future: asyncio.Future[list[dict[str, Any]]]
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects the inputs of queued requests into batches for ``predict``.

    ``queue_size`` counts inputs waiting (not requests), so one large request cannot hide
    behind a small count. A request larger than ``max_batch`` runs as its own batch.
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch: int = 32,
        max_wait: float = 0.005,
        queue_size: int = 1024,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait >= 0")
        self.predict = predict
        self.max_batch, self.max_wait, self.queue_size = max_batch, max_wait, queue_size
        self._jobs: asyncio.Queue[_Job] | None = None
        self._waiting = 0  # inputs queued, not yet taken into a batch
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polytask-model")
        #: served batches and inputs, and requests refused for overload
        self.stats = {"batches": 0, "inputs": 0, "refused": 0}

    async def start(self) -> None:
        self._jobs = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """The predictions of ``inputs``, computed in a shared batch."""
        assert self._jobs is not None, "Batcher.start() first"
        if self._waiting + len(inputs) > self.queue_size:
            self.stats["refused"] += 1
            raise Overloaded(retry_after=max(1, round(self._waiting / (self.max_batch * 50))))
        job = _Job(list(inputs), asyncio.get_running_loop().create_future())
        self._waiting += len(job.inputs)
        self._jobs.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        assert self._jobs is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._jobs.get()]
            size = len(batch[0].inputs)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._jobs.get(), timeout)
                except asyncio.TimeoutError:
                    break
                batch.append(job)
                size += len(job.inputs)
            self._waiting -= size
            inputs = [x for job in batch for x in job.inputs]
            try:
                outputs = await loop.run_in_executor(self._pool, self.predict, inputs)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.stats["batches"] += 1
            self.stats["inputs"] += len(inputs)
            start = 0
            for job in batch:
                if not job.future.done():  # a client that went away is skipped
                    job.future.set_result(outputs[start : start + len(job.inputs)])
                start += len(job.inputs)
