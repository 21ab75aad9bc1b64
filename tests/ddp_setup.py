"""The small data-parallel problem the DDP tests share, and the worker torchrun starts.

Two sources: ``rows`` labels a regression task ``y`` everywhere and a second one ``sparse``
only on a few examples (so a rank's shard of a step often holds no label of it), ``other``
labels a classification task ``cls``. A hard-sharing MLP, dropout off; one run per
(method, level, sampler) case.

As a worker (``python -m torch.distributed.run --nproc_per_node=N tests/ddp_setup.py OUT
CASES_JSON [CRASH_AT RESUME]``) each rank trains every case with the same config as the
single-process reference and saves its weights to ``OUT/<case>.rank<r>.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from polytask import balancing
from polytask.cli import exit_rank
from polytask.data import Collator, Example
from polytask.engine import Trainer, TrainerConfig
from polytask.engine.logs import RunLogger
from polytask.nn import MLP, heads_for
from polytask.sharing import HardSharing
from polytask.tasks import Classification, Regression, Task

TASKS = {
    "y": Task("y", Regression()),
    "sparse": Task("sparse", Regression()),
    "cls": Task("cls", Classification(["a", "b"])),
}


def _cases() -> list[dict[str, Any]]:
    """Every method at every level it supports (features: one source per step; params:
    joint steps over both sources), and gradient accumulation for two of them."""
    from polytask.balancing.base import LossWeighting

    cases: list[dict[str, Any]] = []
    for name in balancing.available():
        method = balancing.make(name)
        if isinstance(method, LossWeighting) or method.needs == "losses":
            cases.append({"method": name, "level": None, "sampler": "joint"})
            continue
        for level, sampler in (("features", "proportional"), ("params", "joint")):
            if level in getattr(method, "levels", ("features", "params")):
                cases.append({"method": name, "level": level, "sampler": sampler})
    return [
        *cases,
        {"method": "upgrad", "level": "params", "sampler": "joint", "name": "-accumulate2",
         "overrides": {"accumulate": 2}},
        {"method": "uw", "level": None, "sampler": "joint", "name": "-accumulate3",
         "overrides": {"accumulate": 3}},
    ]  # fmt: skip


CASES = _cases()


def case_name(case: dict[str, Any]) -> str:
    return f"{case['method']}-{case['level']}-{case['sampler']}{case.get('name', '')}"


def data() -> tuple[dict[str, list[Example]], dict[str, list[Example]]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    rows = [
        Example(
            inputs={"features": r.tolist()},
            targets={
                "y": float(torch.sin(r.sum())),
                "sparse": float(r[0] * r[1]) if i % 5 == 0 else None,
            },
            id=f"r{i}",
        )
        for i, r in enumerate(x[:32])
    ]
    other = [
        Example(
            inputs={"features": r.tolist()},
            targets={"cls": "a" if float(r[2]) > 0 else "b"},
            id=f"o{i}",
        )
        for i, r in enumerate(x[32:])
    ]
    train = {"rows": rows[:24], "other": other[:12]}
    val = {"rows": rows[24:], "other": other[12:]}
    return train, val


def model() -> HardSharing:
    torch.manual_seed(0)
    return HardSharing(
        MLP(4, [8, 8], activation="tanh"), heads_for(list(TASKS.values()), 8, sequence=False)
    )


def config(case: dict[str, Any], **overrides: Any) -> TrainerConfig:
    opts: dict[str, Any] = dict(
        epochs=2,
        batch_size=8,
        lr=0.05,
        threads=1,
        level=case["level"],
        log_every=1,
        seed=3,
        diagnostics_every=0,
    )
    return TrainerConfig(**(opts | overrides))


def trainer(case: dict[str, Any], world: Any = None, **overrides: Any) -> Trainer:
    from polytask.data.samplers import make_sampler

    return Trainer(
        model(),
        TASKS,
        balancing.make(case["method"]),
        config(case, **overrides),
        sampler=make_sampler(case["sampler"]),
        world=world,
    )


def collate() -> Collator:
    return Collator(TASKS, input_kind="features")


class Crash(Exception):
    """Raised by the worker's logger at a chosen step (a killed run, in process)."""


def crash_at(step: int) -> None:
    original = RunLogger.log_step

    def crashing(self: RunLogger, at: int, *args: Any, **kwargs: Any) -> None:
        original(self, at, *args, **kwargs)
        if at == step:
            raise Crash(at)

    RunLogger.log_step = crashing  # type: ignore[method-assign]


def record_restores() -> list[int]:
    """The step of every checkpoint a Trainer restores from here on (a resumed run that
    silently started afresh would end with the same weights: this tells them apart)."""
    steps: list[int] = []
    original = Trainer._restore

    def restore(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        state = original(self, *args, **kwargs)
        steps.append(state.step)
        return state

    Trainer._restore = restore  # type: ignore[method-assign]
    return steps


def main() -> None:
    from polytask.engine.distributed import init_world

    out = Path(sys.argv[1])
    cases = json.loads(sys.argv[2])
    crash = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    world = init_world("cpu")
    assert world is not None
    if crash:
        crash_at(crash)
    restored = record_restores()
    train, val = data()
    for case in cases:
        t = trainer(case, world, **case.get("overrides", {}))
        del restored[:]
        run = out / case_name(case) if crash or resume else None
        try:
            t.fit(train, val, collate(), run_dir=run, resume=resume)
        except Crash:
            pass
        state = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
        torch.save(state, out / f"{case_name(case)}.rank{world.rank}.pt")
        if resume:
            record = out / f"{case_name(case)}.rank{world.rank}.restored.json"
            record.write_text(json.dumps(restored))
    world.leave()
    exit_rank(0)  # no interpreter finalisation: gloo's threads can abort it


if __name__ == "__main__":
    main()
