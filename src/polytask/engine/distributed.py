"""Data-parallel training across processes: ``torchrun --nproc_per_node=N -m polytask train``.

torchrun starts N processes (ranks) with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in their environment; :func:`init_world` joins them into one process group
(gloo on the CPU, NCCL on GPUs: rank r uses ``cuda:LOCAL_RANK``). What makes N ranks give the
update one process gives on the same global batch:

* **one plan, N shards**: every rank draws the same step plan (the loader's, seeded by the
  run's seed; ``trainer.batch_size`` is the global batch), and rank r collates the r-th
  contiguous part of each source's indices (:meth:`World.shard`) — so a run can resume with
  another number of ranks;
* **global losses**: each task's loss on a rank is its share of the global mean, weighted by
  the rank's count of labelled items over the all-reduced count
  (:meth:`~polytask.tasks.base.TaskKind.loss_count`), and
  :func:`polytask.balancing.backward` balances the global losses and per-task gradients
  (:mod:`polytask.balancing.distributed`), so every rank applies the same update;
* **the same random numbers where they must agree**: a balancing method's draws (PCGrad's
  order, RLW's weights) come from a stream every rank advances alike, while each rank's
  forward pass (dropout, word dropout) draws from its own stream, seeded by (seed, step,
  rank) — independent masks per shard, and the same masks again after a resume;
* **evaluation** gathers the predictions of each rank's part of the examples, in order, so
  metrics equal single-process evaluation;
* **one writer**: only rank 0 writes checkpoints and logs; the others resume from the run
  directory (on a shared file system when the ranks run on several machines).

After every epoch the ranks compare a checksum of their weights; a difference is an error,
not a silently diverging run.
"""

from __future__ import annotations

import datetime as dt
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch

from ..balancing.distributed import ProcessGroup
from ..data.samplers import stable_seed
from ..errors import OptionError, PolytaskError

__all__ = [
    "World",
    "init_world",
    "world_size_from_env",
    "forward_rng",
    "split_evaluation",
    "DivergedError",
]

T = TypeVar("T")

#: seconds a collective waits for the other ranks (a rank that died ends the job sooner:
#: torchrun stops the others)
TIMEOUT_ENV = "POLYTASK_DDP_TIMEOUT"


class DivergedError(PolytaskError, RuntimeError):
    """The ranks' weights differ after an epoch (they must apply the same updates)."""


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 outside torchrun)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise OptionError(
            "WORLD_SIZE", f"{raw!r} is not a number", "start the ranks with torchrun"
        ) from None


@dataclass
class World:
    """This process's place among the ranks, and the collectives the engine needs."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    collective: ProcessGroup

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> Sequence[T]:
        """This rank's contiguous part of ``items``: ``items[⌊nr/N⌋ : ⌊n(r+1)/N⌋]`` (the
        parts of all ranks, in rank order, are ``items``)."""
        n = len(items)
        return items[n * self.rank // self.size : n * (self.rank + 1) // self.size]

    def gather(self, part: list[Any]) -> list[Any]:
        """Every rank's ``part`` concatenated in rank order (on every rank)."""
        import torch.distributed as dist

        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, part)
        return [x for p in parts for x in p]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's values of ``tensors`` into every rank's (in place)."""
        import torch.distributed as dist

        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def check_in_sync(self, module: torch.nn.Module, where: str) -> None:
        """Raise :class:`DivergedError` unless every rank holds the same weights (two
        float64 checksums per rank, gathered)."""
        with torch.no_grad():
            values = [p.detach().double() for p in module.parameters()]
            own = torch.stack(
                [
                    sum((v.sum() for v in values), torch.zeros((), dtype=torch.float64)),
                    sum(
                        ((v * (i + 1)).abs().sum() for i, v in enumerate(values)),
                        torch.zeros((), dtype=torch.float64),
                    ),
                ]
            ).cpu()
        sums = self.gather([own.tolist()])
        if any(s != sums[0] for s in sums):
            raise DivergedError(
                "ranks",
                f"the ranks' weights differ {where} (checksums {sums})",
                "report this as a bug with the config; a method or module that draws random "
                "numbers outside the engine's streams makes ranks diverge",
            )

    def close(self) -> None:
        """Tear the process group down (after an error: without waiting for the others)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def leave(self) -> None:
        """After a completed job: wait for every rank, then :meth:`close`. Ranks that tear
        their process group down while a peer still works (rank 0 writing the run) can be
        aborted at exit by gloo's transport threads; leaving together avoids that."""
        self.barrier()
        self.close()


def init_world(device: str = "auto") -> World | None:
    """Join the ranks torchrun started (None for one process). ``device``: the run's
    ``trainer.device``; a CUDA device becomes ``cuda:LOCAL_RANK``."""
    size = world_size_from_env()
    if size <= 1:
        return None
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise OptionError(
                "device", "'cuda' requested but no CUDA device is available", "use cpu or auto"
            )
        torch.cuda.set_device(local)
        where = torch.device("cuda", local)
    else:
        where = torch.device("cpu")
    if not dist.is_initialized():
        seconds = float(os.environ.get(TIMEOUT_ENV, "1800"))
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=dt.timedelta(seconds=seconds)
        )
    return World(rank, size, local, where, ProcessGroup())


def split_evaluation(world: World | None) -> dict[str, Any]:
    """The options of :func:`polytask.evaluation.evaluate.evaluate` that split the examples
    over the ranks and gather the predictions (none for one process)."""
    return {} if world is None else {"part": world.shard, "gather": world.gather}


@contextmanager
def forward_rng(world: World | None, seed: int, step: int, device: torch.device) -> Iterator[None]:
    """Inside (with ``world``): this rank's random stream for the forward pass of ``step``,
    seeded by (seed, step, rank); outside, the stream every rank shares is untouched."""
    if world is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(stable_seed("forward", seed, step, world.rank))
        yield
