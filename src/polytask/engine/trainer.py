"""The training loop: one loop for every architecture and balancing method.

Per step: a batch from the task sampler -> one forward pass for the tasks labelled in it
-> each task's masked loss -> ``balancing.backward`` (given the model's shared feature
tensor and shared parameters; the method decides what it needs) -> optimiser step. The
loop never asks which method or architecture it runs. After each epoch it evaluates on validation
data, keeps the best checkpoint under the chosen criterion and stops early when asked.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .. import balancing
from ..balancing.backward import resolve_level
from ..data.base import Batch, Example
from ..evaluation.evaluate import evaluate, labelled_tasks, primary_scores
from ..sharing.base import MultiTaskModel, MultiTaskOutput
from ..tasks.base import Task
from . import checkpoint as ckpt
from .logs import RunLogger
from .progress import Progress
from .optim import ParamGroupRule, Schedule, build_optimizer, build_param_groups


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, ...); the message names the task and the step."""


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
    device: str = "cpu"
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device: 'cuda' requested but no CUDA device is available; fix: use cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"trainer.device: unknown device {name!r}; fix: use cpu, cuda or auto")
    return torch.device(name)


def criterion_score(criterion: str, metrics: Mapping[str, Mapping[str, float]], tasks: Mapping[str, Task],
                    baselines: Mapping[str, float]) -> float:
    """Higher-is-better score used for early stopping and best-checkpoint selection.

    ``"mean"``: mean over tasks of the primary metric, negated where lower is better;
    ``"delta_m"``: Δm of the primary metrics against ``baselines`` (single-task scores);
    ``"TASK"`` or ``"TASK.METRIC"``: one task's (primary or named) metric, negated where
    lower is better.
    """
    if criterion == "mean":
        prim = primary_scores(metrics, tasks)
        return sum(v if tasks[t].higher_is_better else -v for t, v in prim.items()) / len(prim)
    if criterion == "delta_m":
        from ..evaluation.delta_m import delta_m

        prim = primary_scores(metrics, tasks)
        return delta_m(prim, {t: baselines[t] for t in prim},
                       {t: bool(tasks[t].higher_is_better) for t in prim})
    task, _, metric = criterion.partition(".")
    metric = metric or str(tasks[task].primary_metric)
    value = float(metrics[task][metric])
    return value if tasks[task].kind.higher_is_better(metric) else -value


def validate_criterion(criterion: str, tasks: Mapping[str, Task], baselines: Mapping[str, float]) -> None:
    if criterion == "mean":
        return
    if criterion == "delta_m":
        missing = [t for t in tasks if t not in baselines]
        if missing:
            raise ValueError(f"trainer.baselines: no single-task score for {missing}; fix: give "
                             "trainer.baselines {task: score} or run `polytask compare` first")
        return
    task, _, metric = criterion.partition(".")
    if task not in tasks:
        raise ValueError(f"trainer.criterion: {criterion!r} names no task; fix: use mean, delta_m, "
                         f"or one of {list(tasks)} (optionally TASK.METRIC)")
    names = tasks[task].kind.metric_names()
    if metric and names and metric not in names:
        raise ValueError(f"trainer.criterion: task {task!r} has no metric {metric!r}; fix: use one of {names}")


@dataclass
class FitReport:
    best_epoch: int
    best_score: float
    best_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    steps: int
    task_steps: dict[str, int]
    seconds: float


class Trainer:
    """Trains a :class:`~polytask.sharing.MultiTaskModel` on per-source data.

    Args:
        model: the multi-task model.
        tasks: the tasks, keyed by name (or a list).
        method: a balancing method (default: fixed weights 1).
        config: a :class:`TrainerConfig`.
        sampler: the task sampler (see :mod:`polytask.data.samplers`); default proportional.
    """

    def __init__(self, model: MultiTaskModel, tasks: Mapping[str, Task] | Sequence[Task],
                 method: balancing.Balancer | None = None, config: TrainerConfig | None = None,
                 sampler: Any = None) -> None:
        self.model = model
        self.tasks = dict(tasks) if isinstance(tasks, Mapping) else {t.name: t for t in tasks}
        self.method = method or balancing.make("fixed")
        self.method.bind(list(self.tasks))
        self.config = config or TrainerConfig()
        self.sampler = sampler
        validate_criterion(self.config.criterion, self.tasks, self.config.baselines)
        if self.config.accumulate < 1:
            raise ValueError("trainer.accumulate: must be ≥ 1")
        resolve_level(self.method, self.config.level,
                      has_features=getattr(model, "provides_shared_features", None),
                      has_shared=bool(model.shared_parameters()))
        if self.config.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"trainer.precision: {self.config.precision!r}; fix: use fp32, bf16 or fp16")
        self.device = resolve_device(self.config.device)
        if self.config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("trainer.precision: fp16 needs CUDA; fix: use bf16 on CPU")

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.config.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def make_loader(self, train: Mapping[str, Sequence[Example]], collate: Callable) -> Any:
        from ..data.loader import MultiTaskLoader

        return MultiTaskLoader({s: list(v) for s, v in train.items()}, collate, self.config.batch_size,
                               self.sampler or "proportional", seed=self.config.seed,
                               total_epochs=self.config.epochs)

    def forward_losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], MultiTaskOutput]:
        """One forward pass for the tasks labelled in ``batch``: (their losses, the model output)."""
        present = [t for t in batch.tasks if t in self.tasks]
        with self._autocast():
            out = self.model(batch.inputs, tasks=present)
            losses = {t: self.tasks[t].kind.loss(out.outputs[t], *batch.targets[t]) for t in present}
        return {t: v.float() for t, v in losses.items()}, out

    def compute_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The losses of the tasks labelled in ``batch`` (see :meth:`forward_losses`)."""
        return self.forward_losses(batch)[0]

    # ---------------------------------------------------------------------- fit
    def fit(self, train: Mapping[str, Sequence[Example]], val: Mapping[str, Sequence[Example]],
            collate: Callable, run_dir: str | Path | None = None, resume: bool = False) -> FitReport:
        """Train; evaluate on ``val`` after each epoch; keep the best weights in the model.

        With ``run_dir`` it writes ``checkpoints/last`` (every ``checkpoint_every`` steps, put
        off to the end of an accumulated update, and at each epoch end), ``best`` (weights of
        the best epoch), ``metrics.csv`` and ``train_log.csv``. ``resume=True`` continues from
        ``checkpoints/last`` to the same final weights as an uninterrupted run.
        """
        cfg = self.config
        self._check_val(val)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        run = Path(run_dir) if run_dir else None
        self.model.to(self.device)
        shared = self.model.shared_parameters()
        loader = self.make_loader(train, collate)
        steps_per_epoch = loader.steps_per_epoch
        total = min(cfg.max_steps or cfg.epochs * steps_per_epoch, cfg.epochs * steps_per_epoch)

        def epoch_length(epoch: int) -> int:
            return max(0, min(steps_per_epoch, total - epoch * steps_per_epoch))

        # gradients accumulate over `accumulate` steps and never across an epoch boundary
        total_updates = sum(math.ceil(epoch_length(e) / cfg.accumulate) for e in range(cfg.epochs))
        groups = build_param_groups(self.model, cfg.param_groups, cfg.lr, cfg.weight_decay,
                                    extra=self.method.parameters())
        optimizer = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum)
        schedule = Schedule(optimizer, total_updates, cfg.warmup_steps, cfg.scheduler)
        scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        logger = RunLogger(run, list(self.tasks))
        state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best_score": None,
                                 "best_epoch": -1, "bad_epochs": 0, "history": [],
                                 "task_steps": {t: 0 for t in self.tasks}, "seconds": 0.0,
                                 "best_metrics": {}, "done": False}
        if resume:
            if run is None:
                raise ValueError("resume needs a run directory")
            last = run / "checkpoints" / "last"
            ckpt.recover(last)
            if last.exists():
                state = self._restore(last, optimizer, schedule)
                logger.truncate(state["step"], state["epoch"])
        started = time.perf_counter() - state["seconds"]
        progress = Progress(cfg.progress, total, state["step"])
        self.model.train()

        def save_last() -> None:
            if run is None:
                return
            state["seconds"] = time.perf_counter() - started
            state["schedule"] = schedule.state_dict()
            state["balancer"], balancer_tensors = ckpt.split_tensors(self.method.state_dict(), "balancer")
            ckpt.save_checkpoint(run / "checkpoints" / "last", model=self.model, optimizer=optimizer,
                                 state=state, extra_tensors=balancer_tensors)

        checkpoint_due = False
        while not state["done"] and state["epoch"] < cfg.epochs and state["step"] < total:
            epoch = state["epoch"]
            length = epoch_length(epoch)
            optimizer.zero_grad(set_to_none=True)
            for batch in loader.iterate(epoch, start_step=state["step_in_epoch"]):
                if state["step"] >= total:
                    break
                i = state["step_in_epoch"]
                group_start = i - i % cfg.accumulate
                group_size = min(cfg.accumulate, length - group_start)
                updated = i + 1 == group_start + group_size
                batch = batch.to(self.device)
                losses, out = self.forward_losses(batch)
                for t, v in losses.items():
                    if not torch.isfinite(v):
                        raise TrainingError(
                            f"task {t!r}: loss is {v.item()} at epoch {epoch}, step {state['step'] + 1} "
                            "(numbered as in train_log.csv); "
                            "fix: lower trainer.lr, enable trainer.clip_norm, or check this task's labels")
                if losses:
                    scale: Any = 1.0 / group_size
                    if scaler is not None:
                        scale = scaler.scale(torch.tensor(scale, device=self.device))
                    balancing.backward(losses, method=self.method, features=out.shared_features, shared=shared,
                                       level=cfg.level, scale=scale, penalty=self.model.penalty(out))
                del out
                for t in losses:
                    state["task_steps"][t] += 1
                state["step"] += 1
                state["step_in_epoch"] += 1
                lr = optimizer.param_groups[0]["lr"]  # the rate of this step's update (logged below)
                if updated:
                    self._update(optimizer, scaler)
                    schedule.step()
                    self.method.after_step({t: v.detach() for t, v in losses.items()})
                progress.step(state["step"])
                if state["step"] % cfg.log_every == 0:
                    progress.step(state["step"], {t: v.item() for t, v in losses.items()})
                    logger.log_step(state["step"], epoch, {t: v.item() for t, v in losses.items()}, lr)
                if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                    checkpoint_due = True
                # never between the micro-batches of one update: their gradients are not saved
                if checkpoint_due and updated:
                    save_last()
                    checkpoint_due = False
            # end of epoch (or of the step budget)
            self.method.on_epoch_end()
            metrics = evaluate(self.model, self.tasks, val, collate, batch_size=cfg.eval_batch_size,
                               device=self.device)
            score = criterion_score(cfg.criterion, metrics, self.tasks, cfg.baselines)
            state["history"].append({"epoch": epoch, "step": state["step"], "score": score, "metrics": metrics})
            logger.log_epoch(epoch, state["step"], metrics, score)
            improved = state["best_score"] is None or score > state["best_score"]
            progress.epoch(epoch, state["step"], score, primary_scores(metrics, self.tasks), improved)
            if improved:
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_metrics=metrics)
                if run is not None:
                    ckpt.save_checkpoint(run / "best", model=self.model, state={"epoch": epoch, "score": score})
                else:
                    self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                state["bad_epochs"] += 1
                if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
                    state["done"] = True
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            save_last()
            checkpoint_due = False
        progress.close()
        self._load_best(run)
        logger.close()
        return FitReport(best_epoch=state["best_epoch"], best_score=state["best_score"],
                         best_metrics=state["best_metrics"], history=state["history"], steps=state["step"],
                         task_steps=dict(state["task_steps"]), seconds=time.perf_counter() - started)

    def _check_val(self, val: Mapping[str, Sequence[Example]]) -> None:
        """The criterion is computed on ``val`` after every epoch: fail now, not after an epoch."""
        labelled = {t for examples in val.values() for t in labelled_tasks(examples, self.tasks)}
        if not labelled:
            raise ValueError("fit: the validation data label no task, so no epoch can be scored; fix: give "
                             "validation examples (data.val_fraction > 0 or a val file)")
        task = self.config.criterion.partition(".")[0]
        if task in self.tasks and task not in labelled:
            raise ValueError(f"trainer.criterion: {self.config.criterion!r} needs validation labels for task "
                             f"{task!r} but the validation data has none; fix: add them or use criterion mean")

    def _update(self, optimizer: torch.optim.Optimizer, scaler: Any) -> None:
        cfg = self.config
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.clip_norm:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _restore(self, last: Path, optimizer: torch.optim.Optimizer, schedule: Schedule) -> dict[str, Any]:
        tensors, meta = ckpt.load_checkpoint(last)
        ckpt.restore_model(self.model, tensors, where=str(last))
        ckpt.restore_optimizer(optimizer, tensors, meta)
        state = meta["state"]
        schedule.load_state_dict(state["schedule"])
        self.method.load_state_dict(ckpt.join_tensors(state.get("balancer", {}), tensors))
        ckpt.restore_rng(tensors)
        return state

    def _load_best(self, run: Path | None) -> None:
        if run is not None and (run / "best").exists():
            tensors, _ = ckpt.load_checkpoint(run / "best")
            ckpt.restore_model(self.model, tensors, where=str(run / "best"))
        elif getattr(self, "_best_weights", None) is not None:
            self.model.load_state_dict(self._best_weights)
