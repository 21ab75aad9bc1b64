"""The training loop: one loop for every architecture and balancing method.

A run is a few named steps over one :class:`~polytask.engine.state.TrainState`:

* **epoch** — the loader's plan for the epoch (from the state's step on, so a resumed run
  continues exactly where it stopped);
* **step** — a step's plan is ``{source: indices}``; the model runs once per source batch,
  every task labelled in the step gives its masked loss, and ``balancing.backward`` (given
  the model's shared feature tensor and shared parameters; the method decides what it
  needs) fills the gradients; after the optimiser's update the method's ``after_step``
  hook gets the losses and a closure that re-evaluates them on the same batches;
* **evaluate** — validation metrics after each epoch;
* **select** — the criterion's score (:mod:`polytask.evaluation.criterion`) keeps the best
  weights and stops early when asked;
* **save** — ``checkpoints/last`` (the state, weights, optimiser, RNG) and ``best/``.

Every ``diagnostics_every`` steps a step also records what the tasks do to each other
(:mod:`polytask.engine.diagnostics`), without changing anything in the training.

The loop never asks which method or architecture it runs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterator, Mapping, Sequence

import torch

from .. import balancing
from ..analysis.affinity import AffinityRecorder
from ..balancing.backward import resolve_level
from ..balancing.base import Closure
from ..balancing.distributed import global_values
from ..data.base import Batch, Example
from ..data.loader import Collate, MultiTaskLoader
from ..errors import OptionError, PolytaskError
from ..evaluation import criterion as selection
from ..evaluation.evaluate import evaluate, labelled_tasks, primary_scores
from ..sharing.base import MultiTaskModel, MultiTaskOutput
from ..tasks.base import Task
from . import checkpoint as ckpt
from . import diagnostics
from .distributed import World, forward_rng, split_evaluation
from .logs import RunLogger
from .optim import ParamGroupRule, Schedule, build_optimizer, build_param_groups
from .progress import Progress
from .replay import RngSnapshot, buffers_kept, replaying
from .state import TrainState

log = logging.getLogger("polytask")


class TrainingError(PolytaskError, RuntimeError):
    """Training cannot go on (a NaN loss, ...): ``option`` names the task, ``problem`` the
    step."""


@dataclass
class TrainerConfig:
    """Everything that controls a run besides model, tasks, method and data."""

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    scheduler: str = "constant"
    warmup_steps: int = 0
    clip_norm: float | None = 5.0
    accumulate: int = 1
    precision: str = "fp32"
    #: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N"
    device: str = "auto"
    #: deterministic kernels (see :func:`deterministic_mode`): bitwise-exact resume on GPUs,
    #: at some speed; without it a resumed GPU run is statistically, not bitwise, the same
    deterministic: bool = False
    seed: int = 0
    threads: int | None = None
    criterion: str = "mean"
    patience: int | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    checkpoint_every: int = 0
    param_groups: list[ParamGroupRule] = field(default_factory=list)
    progress: bool = False
    log_every: int = 20
    #: where gradient methods take per-task gradients: "features" (the model's shared
    #: feature tensor), "params" (the shared parameters), or None: features where the model
    #: gives them and the method allows it, else params (see ``balancing.backward``)
    level: str | None = None
    #: steps between two training-diagnostics samples (gradient conflict, task weights,
    #: gates: :mod:`polytask.engine.diagnostics`), written with a run directory; 0: none
    diagnostics_every: int = diagnostics.DEFAULT_EVERY


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError(
            "device", "'cuda' requested but no CUDA device is available", "use cpu or auto"
        )
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise OptionError("device", f"unknown device {name!r}", "use cpu, cuda or auto")
    return torch.device(name)


#: the cuBLAS workspace setting that makes its kernels deterministic (CUDA >= 10.2)
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Inside, with ``enabled``: ``torch.use_deterministic_algorithms(True)``, cuDNN's
    ``deterministic = True`` and ``benchmark = False``, and on CUDA
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless the environment sets it already; it counts
    from cuBLAS's first use in the process, so set it before any CUDA work when a process
    uses CUDA before training). The previous settings are restored on exit."""
    if not enabled:
        yield
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        torch.backends.cudnn.benchmark = saved[3]


def make_loader(
    train: Mapping[str, Sequence[Example]],
    collate: Collate,
    config: TrainerConfig,
    sampler: Any = None,
) -> MultiTaskLoader:
    """The loader a run with ``config`` trains from (its plan fixes every step's batches)."""
    return MultiTaskLoader(
        {s: list(v) for s, v in train.items()},
        collate,
        config.batch_size,
        sampler or "proportional",
        seed=config.seed,
        total_epochs=config.epochs,
    )


def epoch_length(total: int, steps_per_epoch: int, epoch: int) -> int:
    """Steps of ``epoch`` within a budget of ``total`` steps (0 once the budget is spent)."""
    return max(0, min(steps_per_epoch, total - epoch * steps_per_epoch))


def planned_steps(config: TrainerConfig, steps_per_epoch: int) -> int:
    """The run's step budget: ``epochs`` passes, cut at ``max_steps`` when given."""
    full = config.epochs * steps_per_epoch
    return min(config.max_steps or full, full)


@dataclass
class FitReport:
    best_epoch: int
    best_score: float
    best_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    steps: int
    task_steps: dict[str, int]
    seconds: float
    #: steps that carried two tasks or more (a balancing method's material)
    multi_task_steps: int = 0
    #: fp16: updates skipped because the scaled gradients overflowed
    skipped_steps: int = 0

    @property
    def multi_task_share(self) -> float:
        """The share of steps with two tasks or more (0 without steps)."""
        return self.multi_task_steps / self.steps if self.steps else 0.0


@dataclass
class StepLosses:
    """The task losses of one step (float32 or better) and what the balanced backward pass
    needs besides them: the shared features (the tensor of the step's one batch, or one per
    source batch: ``balancing.backward`` then balances at the shared parameters unless told
    otherwise) and the model's penalty."""

    losses: dict[str, torch.Tensor]
    features: torch.Tensor | dict[str, torch.Tensor] | None
    penalty: torch.Tensor | None
    #: each source batch's model output
    outputs: dict[str, MultiTaskOutput] = field(default_factory=dict)


@dataclass
class _Fit:
    """What one ``fit`` call works with besides the :class:`TrainState`."""

    run: Path | None
    loader: MultiTaskLoader
    total: int
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: Any
    logger: RunLogger
    progress: Progress
    state: TrainState
    shared: list[torch.nn.Parameter]
    started: float = 0.0
    checkpoint_due: bool = False
    best_weights: dict[str, torch.Tensor] | None = None

    def epoch_length(self, epoch: int) -> int:
        return epoch_length(self.total, self.loader.steps_per_epoch, epoch)


class Trainer:
    """Trains a :class:`~polytask.sharing.MultiTaskModel` on per-source data.

    Args:
        model: the multi-task model.
        tasks: the tasks, keyed by name (or a list).
        method: a balancing method (default: fixed weights 1).
        config: a :class:`TrainerConfig`.
        sampler: the task sampler (see :mod:`polytask.data.samplers`); default proportional.

    Raises:
        OptionError: a bad :class:`TrainerConfig` field, named by its own name.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Mapping[str, Task] | Sequence[Task],
        method: balancing.Balancer | None = None,
        config: TrainerConfig | None = None,
        sampler: Any = None,
        world: World | None = None,
    ) -> None:
        self.model = model
        #: the ranks of data-parallel training (:mod:`polytask.engine.distributed`), or None
        self.world = world
        self.tasks = dict(tasks) if isinstance(tasks, Mapping) else {t.name: t for t in tasks}
        self.method = method or balancing.make("fixed")
        self.method.bind(list(self.tasks))
        self.config = config or TrainerConfig()
        self.sampler = sampler
        #: task affinity, recorded every few steps when set (``polytask affinity``:
        #: :class:`polytask.analysis.affinity.AffinityRecorder`)
        self.affinity: AffinityRecorder | None = None
        cfg = self.config
        selection.validate_criterion(cfg.criterion, self.tasks, cfg.baselines)
        if cfg.accumulate < 1:
            raise OptionError(
                "accumulate",
                f"{cfg.accumulate} is not ≥ 1",
                "give the number of steps per update, 1 for none",
            )
        if cfg.diagnostics_every < 0:
            raise OptionError(
                "diagnostics_every",
                f"{cfg.diagnostics_every} is not ≥ 0",
                "give the number of steps between two diagnostics samples, 0 for none",
            )
        resolve_level(
            self.method,
            cfg.level,
            has_features=getattr(model, "provides_shared_features", None),
            has_shared=bool(model.shared_parameters()),
        )
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise OptionError(
                "precision", f"unknown precision {cfg.precision!r}", "use fp32, bf16 or fp16"
            )
        self.device = world.device if world is not None else resolve_device(cfg.device)
        #: the sources of the loader being trained from (data-parallel steps count per source)
        self._sources: list[str] = []
        #: the level gradient methods work at (data-parallel: fixed for the whole run)
        self._level: str | None = self.config.level

    @property
    def _writes(self) -> bool:
        """Whether this process writes the run and the log (one process, or rank 0)."""
        return self.world is None or self.world.is_main

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> ContextManager[Any]:
        if self.config.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def make_loader(
        self, train: Mapping[str, Sequence[Example]], collate: Collate
    ) -> MultiTaskLoader:
        return make_loader(train, collate, self.config, self.sampler)

    def forward_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], MultiTaskOutput]:
        """One forward pass for the tasks labelled in ``batch``: (their losses, the model
        output)."""
        present = [t for t in batch.tasks if t in self.tasks]
        with self._autocast():
            out = self.model(batch.inputs, tasks=present)
            losses = {
                t: self.tasks[t].kind.loss(out.outputs[t], *batch.targets[t]) for t in present
            }
        # float32 at least: half-precision losses are raised, float64 ones kept
        return {
            t: v.to(torch.promote_types(v.dtype, torch.float32)) for t, v in losses.items()
        }, out

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The losses of the tasks labelled in ``batch`` (see :meth:`forward_losses`)."""
        return self.forward_losses(batch)[0]

    def step_losses(self, batches: Mapping[str, Batch]) -> StepLosses:
        """The losses of one step: one forward pass per source batch. A task labelled in
        several of the step's batches gets the mean of its losses over them."""
        per_task: dict[str, list[torch.Tensor]] = {}
        outputs: dict[str, MultiTaskOutput] = {}
        for source, batch in batches.items():
            losses, out = self.forward_losses(batch)
            outputs[source] = out
            for t, v in losses.items():
                per_task.setdefault(t, []).append(v)
        penalties = [p for p in map(self.model.penalty, outputs.values()) if p is not None]
        features = {s: o.shared_features for s, o in outputs.items()}
        return StepLosses(
            losses={t: _mean(vs) for t, vs in per_task.items()},
            features=_one_or_all(features),
            penalty=_mean(penalties) if penalties else None,
            outputs=outputs,
        )

    def step_shares(self, batches: Mapping[str, Batch]) -> StepLosses:
        """Data-parallel training: this rank's shares of the step's global losses (see
        :mod:`polytask.engine.distributed`). A task's loss on source s is the mean over the
        labelled items of all ranks: this rank's mean times its count over the all-reduced
        count; a task labelled in several sources gets the mean over those sources; a task
        no item of this rank labels gets a zero share (every rank passes the same tasks)."""
        assert self.world is not None
        names = list(self.tasks)
        counts = torch.zeros((len(self._sources), len(names)), dtype=torch.float64)
        counts = counts.to(self.device)
        means: dict[tuple[int, int], torch.Tensor] = {}
        outputs: dict[str, MultiTaskOutput] = {}
        for i, source in enumerate(self._sources):
            batch = batches.get(source)
            if batch is None:
                continue
            losses, out = self.forward_losses(batch)
            outputs[source] = out
            for t, v in losses.items():
                j = names.index(t)
                means[i, j] = v
                counts[i, j] = self.tasks[t].kind.loss_count(out.outputs[t], *batch.targets[t])
        totals = self.world.collective.all_reduce(counts.clone())
        cells: dict[str, list[tuple[int, int]]] = {}
        for i, row in enumerate(totals.tolist()):  # the step's one host synchronisation
            for j, n in enumerate(row):
                if n > 0:
                    cells.setdefault(names[j], []).append((i, j))
        shares: dict[str, torch.Tensor] = {}
        for t, where in cells.items():
            parts = [
                means[c] * (counts[c] / totals[c]).to(means[c].dtype) for c in where if c in means
            ]
            if parts:
                shares[t] = torch.stack(parts).sum() / len(where)
            else:
                shares[t] = torch.zeros((), device=self.device)
        penalties = [p for p in map(self.model.penalty, outputs.values()) if p is not None]
        features = {s: o.shared_features for s, o in outputs.items()}
        return StepLosses(
            losses=shares,
            features=_one_or_all(features) if outputs else None,
            penalty=_mean(penalties) / self.world.size if penalties else None,
            outputs=outputs,
        )

    def _step(self, batches: Mapping[str, Batch]) -> StepLosses:
        return self.step_losses(batches) if self.world is None else self.step_shares(batches)

    def _values(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step's loss values, detached: summed over the ranks in data-parallel training."""
        if self.world is None:
            return {t: v.detach() for t, v in losses.items()}
        totals = global_values(list(losses.values()), self.world.collective)
        return dict(zip(losses, totals))

    def train_step(
        self,
        batches: Mapping[str, Batch],
        scale: Any = 1.0,
        *,
        epoch: int = 0,
        step: int = 0,
        probe: diagnostics.Probe | None = None,
    ) -> tuple[dict[str, torch.Tensor], Closure]:
        """Forward and balanced backward pass of one step (gradients accumulate in
        ``.grad``); returns the detached losses and the step hook's closure, which
        re-evaluates them on the same batches at the current parameters. A ``probe`` gets
        the step's diagnostics (the update is the same with or without it)."""
        with forward_rng(self.world, self.config.seed, step, self.device):
            rng = RngSnapshot.take(self.device)
            out = self._step(batches)
        values = self._values(out.losses)
        # one host synchronisation per step for every task together
        if values and not bool(torch.isfinite(torch.stack(list(values.values()))).all()):
            t, v = next((t, v) for t, v in values.items() if not torch.isfinite(v))
            raise TrainingError(
                f"task {t!r}",
                f"loss is {v.item()} at epoch {epoch}, step {step} (numbered as in train_log.csv)",
                "lower trainer.lr, enable trainer.clip_norm, or check this task's labels",
            )
        sampled = None  # task affinity: gradients before the backward pass, lookahead after it
        if (
            self.world is None
            and self.affinity is not None
            and self.affinity.due(step)
            and len(out.losses) > 1
        ):
            sampled = self.affinity.gradients(out.losses, self.model.shared_parameters())
        if out.losses:
            balancing.backward(
                out.losses,
                method=self.method,
                features=out.features,
                shared=self.model.shared_parameters(),
                level=self._level,
                scale=scale,
                penalty=out.penalty,
                trace=None if probe is None else probe.trace,
                collective=None if self.world is None else self.world.collective,
                params=None if self.world is None else list(self.model.parameters()),
            )
        if probe is not None:
            probe.observe(self.model, values, out.outputs)
        if sampled is not None and self.affinity is not None:

            def lookahead() -> dict[str, torch.Tensor]:
                with torch.no_grad(), replaying(rng), buffers_kept(self.model):
                    return self.step_losses(batches).losses

            self.affinity.measure(sampled, self.model.shared_parameters(), lookahead)

        def closure() -> dict[str, torch.Tensor]:
            with torch.no_grad(), replaying(rng), buffers_kept(self.model):
                return self._values(self._step(batches).losses)

        return values, closure

    # ---------------------------------------------------------------------- fit
    def fit(
        self,
        train: Mapping[str, Sequence[Example]],
        val: Mapping[str, Sequence[Example]],
        collate: Collate,
        run_dir: str | Path | None = None,
        resume: bool = False,
    ) -> FitReport:
        """Train; evaluate on ``val`` after each epoch; keep the best weights in the model.

        With ``run_dir`` it writes ``checkpoints/last`` (every ``checkpoint_every`` steps,
        put off to the end of an accumulated update, and at each epoch end), ``best``
        (weights of the best epoch), ``metrics.csv`` and ``train_log.csv``. ``resume=True``
        continues from ``checkpoints/last`` to the same final weights as an uninterrupted
        run.
        """
        self._check_val(val)
        with deterministic_mode(self.config.deterministic, self.device):
            return self._fit(train, val, collate, run_dir, resume)

    def _fit(
        self,
        train: Mapping[str, Sequence[Example]],
        val: Mapping[str, Sequence[Example]],
        collate: Collate,
        run_dir: str | Path | None,
        resume: bool,
    ) -> FitReport:
        fit = self._start(train, collate, Path(run_dir) if run_dir else None, resume)
        self.model.train()
        state = fit.state
        try:
            while not state.done and state.epoch < self.config.epochs and state.step < fit.total:
                self._train_epoch(fit)
                if self.world is not None:
                    self.world.check_in_sync(self.model, f"after epoch {state.epoch}")
                self.method.on_epoch_end()
                self._select(fit, self._evaluate(val, collate))
                self._save_last(fit)
        finally:  # also when training fails: no log writer thread outlives its directory
            fit.progress.close()
            fit.logger.close()
        self._load_best(fit)
        few = state.step - state.multi_task_steps
        if self._balances() and few and self._writes:  # one rank warns for all
            log.warning(
                "polytask: %d of %d steps carried fewer than two tasks: balancing method %r had "
                "nothing to balance in those steps",
                few,
                state.step,
                self.method.name or type(self.method).__name__,
            )
        if state.skipped_steps and self._writes:
            log.warning(
                "polytask: %d of %d updates skipped: their fp16-scaled gradients overflowed "
                "(the loss scale was lowered each time)",
                state.skipped_steps,
                state.step,
            )
        return FitReport(
            best_epoch=state.selection.best_epoch,
            best_score=state.selection.best_score,  # type: ignore[arg-type]
            best_metrics=state.best_metrics,
            multi_task_steps=state.multi_task_steps,
            skipped_steps=state.skipped_steps,
            history=state.history,
            steps=state.step,
            task_steps=dict(state.task_steps),
            seconds=time.perf_counter() - fit.started,
        )

    def _start(
        self,
        train: Mapping[str, Sequence[Example]],
        collate: Collate,
        run: Path | None,
        resume: bool,
    ) -> _Fit:
        """Seed, loader, optimiser, schedule and logs; the state from ``checkpoints/last``
        when resuming."""
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model.to(self.device)
        self.method.to(self.device)  # its learned scalars (uw, imtl_l) beside the model
        world = self.world
        if world is not None:  # every rank starts from rank 0's weights
            world.broadcast_tensors(
                [*self.model.parameters(), *self.model.buffers(), *self.method.parameters()]
            )
        loader = self.make_loader(train, collate)
        self._sources = list(loader.sources)
        self._level = self._run_level(loader)
        total = planned_steps(cfg, loader.steps_per_epoch)
        per = loader.steps_per_epoch
        # gradients accumulate over `accumulate` steps and never across an epoch boundary
        updates = sum(
            math.ceil(epoch_length(total, per, e) / cfg.accumulate) for e in range(cfg.epochs)
        )
        groups = build_param_groups(
            self.model, cfg.param_groups, cfg.lr, cfg.weight_decay, extra=self.method.parameters()
        )
        optimizer = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum)
        schedule = Schedule(optimizer, updates, cfg.warmup_steps, cfg.scheduler)
        writer = self._writes
        logger = RunLogger(run if writer else None, list(self.tasks))
        state = TrainState.start(list(self.tasks), cfg.patience)
        restored = False
        scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        if resume:
            if run is None:
                raise OptionError(
                    "resume",
                    "resuming needs a run directory",
                    "give run_dir (the directory the run was saved in)",
                )
            last = run / "checkpoints" / "last"
            if writer:
                ckpt.recover(last)
            if world is not None:  # the others read what rank 0 recovered
                world.barrier()
            if last.exists():
                state = self._restore(last, optimizer, schedule, scaler)
                logger.truncate(state.step, state.epoch)
                restored = True
        if not restored:  # a fresh start: the logs hold this run only
            logger.reset()
        fit = _Fit(
            run,
            loader,
            total,
            optimizer,
            schedule,
            scaler,
            logger,
            Progress(cfg.progress and writer, total, state.step),
            state,
            self.model.shared_parameters(),
        )
        fit.started = time.perf_counter() - state.seconds
        if (not resume or state.step == 0) and writer:
            self._warn_if_inert(train, loader)
        return fit

    def _run_level(self, loader: MultiTaskLoader) -> str | None:
        """The level of the run's gradient method. One process decides per step (from the
        feature tensors the step gives); data-parallel ranks must agree whatever their
        shards hold, so it is fixed from the plan: the shared parameters where steps draw
        several sources, else the features where the model gives them."""
        cfg = self.config
        if self.world is None or cfg.level is not None:
            return cfg.level
        if isinstance(self.method, balancing.LossWeighting) or self.method.needs == "losses":
            return None
        if loader.shares is not None and len(loader.sources) > 1:
            return "params"
        has = bool(getattr(self.model, "provides_shared_features", False))
        return resolve_level(self.method, None, has_features=has, has_shared=True) or "params"

    def _balances(self) -> bool:
        """Whether the method has tasks to balance against each other (not a single-task
        model, not fixed weights)."""
        return len(self.tasks) > 1 and self.method.needs_several_tasks

    def _warn_if_inert(
        self, train: Mapping[str, Sequence[Example]], loader: MultiTaskLoader
    ) -> None:
        """Say at the start when no step can ever carry two tasks although the method needs
        them: one source per step, and every source labels a single task."""
        if not self._balances() or loader.shares is not None:
            return
        if any(len(labelled_tasks(list(ex), self.tasks)) > 1 for ex in train.values()):
            return
        name = self.method.name or type(self.method).__name__
        log.warning(
            "polytask: balancing method %r needs two tasks or more in a step, but each step "
            "draws one source and every source labels one task: the method will see one task "
            "at a time and balance nothing; fix: use sampler: {type: joint} (every source in "
            "every step)",
            name,
        )

    def _train_epoch(self, fit: _Fit) -> None:
        """The steps of the state's epoch, from its ``step_in_epoch`` on."""
        cfg, state = self.config, fit.state
        length = fit.epoch_length(state.epoch)
        fit.optimizer.zero_grad(set_to_none=True)
        part = None if self.world is None else self.world.shard
        for batches in fit.loader.iterate(state.epoch, start_step=state.step_in_epoch, part=part):
            if state.step >= fit.total:
                break
            i = state.step_in_epoch
            group_start = i - i % cfg.accumulate
            group_size = min(cfg.accumulate, length - group_start)
            updated = i + 1 == group_start + group_size
            scale: Any = 1.0 / group_size
            if fit.scaler is not None:
                scale = fit.scaler.scale(torch.tensor(scale, device=self.device))
            batches = {s: b.to(self.device) for s, b in batches.items()}
            sampled = fit.run is not None and diagnostics.due(cfg.diagnostics_every, state.step + 1)
            probe = diagnostics.Probe() if sampled else None
            if self.affinity is not None:  # the lookahead steps at this step's rate
                self.affinity.lr = float(fit.optimizer.param_groups[0]["lr"])
            losses, closure = self.train_step(
                batches, scale, epoch=state.epoch, step=state.step + 1, probe=probe
            )
            state.count_step(list(losses))
            lr = fit.optimizer.param_groups[0]["lr"]  # the rate of this step's update
            if updated:
                applied = self._update(fit.optimizer, fit.scaler)
                fit.schedule.step()
                if applied:
                    self.method.after_step(losses, closure)
                else:  # fp16 overflow: no task's update was taken, the method waits too
                    state.skipped_steps += 1
            self._log_step(fit, losses, lr)
            if probe is not None and probe.entry is not None:
                fit.logger.log_diagnostics(
                    {"step": state.step, "epoch": state.epoch, **probe.entry}
                )
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                fit.checkpoint_due = True
            # never between the micro-batches of one update: their gradients are not saved
            if fit.checkpoint_due and updated:
                self._save_last(fit)

    def _log_step(self, fit: _Fit, losses: Mapping[str, torch.Tensor], lr: float) -> None:
        step = fit.state.step
        fit.progress.step(step)
        if step % self.config.log_every == 0:
            values = {t: v.item() for t, v in losses.items()}
            fit.progress.step(step, values)
            fit.logger.log_step(step, fit.state.epoch, values, lr)

    def _evaluate(
        self, val: Mapping[str, Sequence[Example]], collate: Collate
    ) -> dict[str, dict[str, float]]:
        return evaluate(
            self.model,
            self.tasks,
            val,
            collate,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            **split_evaluation(self.world),
        )

    def _select(self, fit: _Fit, metrics: dict[str, dict[str, float]]) -> None:
        """Score the epoch, log it, and keep the weights when it is the best so far."""
        cfg, state = self.config, fit.state
        epoch = state.epoch
        score = selection.criterion_score(cfg.criterion, metrics, self.tasks, cfg.baselines)
        improved = state.end_epoch(metrics, score)
        fit.logger.log_epoch(epoch, state.step, metrics, score)
        fit.progress.epoch(epoch, state.step, score, primary_scores(metrics, self.tasks), improved)
        if not improved:
            return
        if fit.run is not None and self._writes:
            ckpt.save_checkpoint(
                fit.run / "best", model=self.model, state={"epoch": epoch, "score": score}
            )
        else:
            fit.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _save_last(self, fit: _Fit) -> None:
        """``checkpoints/last``: the train state, weights, optimiser, RNG, schedule and the
        method's state."""
        fit.checkpoint_due = False
        if fit.run is None or not self._writes:
            return
        fit.state.seconds = time.perf_counter() - fit.started
        balancer, tensors = ckpt.split_tensors(self.method.state_dict(), "balancer")
        saved = dict(fit.state.to_json(), schedule=fit.schedule.state_dict(), balancer=balancer)
        if fit.scaler is not None:
            saved["scaler"] = fit.scaler.state_dict()
        ckpt.save_checkpoint(
            fit.run / "checkpoints" / "last",
            model=self.model,
            optimizer=fit.optimizer,
            state=saved,
            extra_tensors=tensors,
        )

    def _check_val(self, val: Mapping[str, Sequence[Example]]) -> None:
        """The criterion is computed on ``val`` after every epoch: fail now, not after an
        epoch."""
        labelled = {t for examples in val.values() for t in labelled_tasks(examples, self.tasks)}
        if not labelled:
            raise OptionError(
                "val",
                "the validation data label no task, so no epoch can be scored",
                "give validation examples (data.val_fraction > 0 or a val file)",
            )
        task = self.config.criterion.partition(".")[0]
        if task in self.tasks and task not in labelled:
            raise OptionError(
                "criterion",
                f"{self.config.criterion!r} needs validation labels "
                f"for task {task!r} but the validation data has none",
                "add them or use criterion mean",
            )

    def _update(self, optimizer: torch.optim.Optimizer, scaler: Any) -> bool:
        """The optimiser's step; False when the GradScaler skipped it (fp16: the scaled
        gradients overflowed, so the scale was lowered and no parameter moved)."""
        cfg = self.config
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.clip_norm:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        applied = True
        if scaler is not None:
            before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            applied = not scaler.get_scale() < before  # lowered only after an overflow
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return applied

    def _restore(
        self, last: Path, optimizer: torch.optim.Optimizer, schedule: Schedule, scaler: Any = None
    ) -> TrainState:
        tensors, meta = ckpt.load_checkpoint(last)
        ckpt.restore_model(self.model, tensors, where=str(last))
        ckpt.restore_optimizer(optimizer, tensors, meta)
        saved = meta["state"]
        schedule.load_state_dict(saved["schedule"])
        if scaler is not None and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        self.method.load_state_dict(ckpt.join_tensors(saved.get("balancer", {}), tensors))
        ckpt.restore_rng(tensors)
        return TrainState.from_json(saved, self.config.patience)

    def _load_best(self, fit: _Fit) -> None:
        if fit.best_weights is not None:  # without a run directory, and ranks other than 0
            self.model.load_state_dict(fit.best_weights)
        elif fit.run is not None and (fit.run / "best").exists():
            tensors, _ = ckpt.load_checkpoint(fit.run / "best")
            ckpt.restore_model(self.model, tensors, where=str(fit.run / "best"))


def _one_or_all(
    features: dict[str, torch.Tensor | None],
) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """The step's feature tensor, each source's when it has several, None when one is
    missing (balancing then works at the shared parameters)."""
    present = {s: z for s, z in features.items() if z is not None}
    if len(present) < len(features) or not present:
        return None
    return next(iter(present.values())) if len(present) == 1 else present


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return values[0] if len(values) == 1 else torch.stack(values).mean()
