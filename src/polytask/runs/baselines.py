"""Single-task baselines for ``compare``: trained once, reused by every comparison that
needs the same one.

A single-task model depends on the data, the architecture restricted to its task, the
trainer settings, its step budget and per-step examples, and the seed — not on how the
multi-task run balances its losses: it trains on its task's plain loss (with one task there
is nothing to balance, and a weight λ_i would only rescale the loss). Its result is kept in
``<store>/<task>-<digest>/``, where the digest covers exactly those inputs (the resolved
configuration without ``name``, ``seed``, ``balancing`` and the trainer's logging options;
the task, seed, budget and batch split; the configuration's directory; the polytask and
torch versions). Comparing several balancing methods on one configuration therefore trains
each baseline once. The digest does not cover the contents of the data files.

An entry is ``<task>-<digest>/`` = the single-task run (``best/``, ``checkpoints/``,
``metrics.csv``, ...) plus ``baseline.json`` (the digest, what it was computed from, the
test metrics and the cost). It is trained in a ``.partial-*-<pid>`` directory and renamed
into place when finished, so a killed comparison never leaves a half-trained baseline that a
later one would read; the next comparison that trains into the store removes such leftovers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import __version__
from ..balancing import Sum
from ..config.build import Experiment
from ..config.errors import ConfigError
from ..data.base import Example
from ..data.samplers import JointSampler
from ..engine import checkpoint as ckpt
from ..engine.logs import write_json
from ..engine.trainer import Trainer, make_loader
from ..evaluation.evaluate import evaluate
from ..sharing.base import MultiTaskModel
from .training import count_parameters

__all__ = ["BASELINE", "Baseline", "baseline_inputs", "single_task_baseline"]

BASELINE = "baseline.json"
#: trainer options that change what is logged, not what is learned
_LOGGING_ONLY = ("progress", "log_every", "checkpoint_every", "eval_batch_size")


@dataclass
class Baseline:
    """One trained single-task model and its test metrics."""

    task: str
    digest: str
    directory: Path
    test: dict[str, float]
    seconds: float
    parameters: int
    task_steps: int
    model: torch.nn.Module
    reused: bool


def baseline_inputs(
    exp: Experiment,
    task: str,
    seed: int,
    budget: int,
    batch_sizes: Mapping[str, int] | None,
    base_dir: Path,
) -> tuple[str, dict[str, Any]]:
    """The digest of everything single-task model ``task`` depends on, and those inputs."""
    config = exp.cfg.model_dump(mode="json")
    for key in ("name", "seed", "balancing", "diagnostics"):
        config.pop(key, None)
    for key in _LOGGING_ONLY:
        config["trainer"].pop(key, None)
    inputs = {
        "config": config,
        "task": task,
        "seed": seed,
        "steps": budget,
        "batch_sizes": dict(batch_sizes) if batch_sizes is not None else None,
        "base_dir": str(base_dir.resolve()),
        "polytask": __version__,
        "torch": torch.__version__,
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], inputs


def _read_entry(directory: Path, digest: str) -> dict[str, Any]:
    path = directory / BASELINE
    try:
        entry: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        ok = entry["digest"] == digest and {"test", "seconds", "parameters", "task_steps"} <= set(
            entry
        )
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ConfigError(
            "--baselines",
            f"{path} is not a finished single-task baseline ({type(err).__name__}: {err})",
            f"delete {directory} to train that baseline again",
        ) from None
    if not ok:
        raise ConfigError(
            "--baselines",
            f"{path} does not hold the baseline its directory name promises",
            f"delete {directory} to train that baseline again",
        )
    return entry


def _clean_stale(store: Path) -> None:
    """Remove the ``.partial-*-<pid>`` directories of comparisons that were killed (their
    process is gone); a live process's partial directory is left alone."""
    for partial in store.glob(".partial-*"):
        pid = partial.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def single_task_baseline(
    exp: Experiment,
    task: str,
    seed: int,
    budget: int,
    shares: Mapping[str, int] | None,
    store: Path,
    base_dir: Path,
) -> Baseline:
    """Single-task model ``task``: read back from ``store`` when one with the same inputs
    was trained before, else trained (``budget`` optimisation steps on the task's own
    source(s); under a joint sampler, ``shares`` examples per step from each) and kept."""
    sources = exp.train_sources([task])
    batch_sizes = {s: shares[s] for s in sources} if shares is not None else None
    digest, inputs = baseline_inputs(exp, task, seed, budget, batch_sizes, base_dir)
    final = store / f"{task}-{digest}"
    model = exp.build_model([task], seed=seed)
    reused = final.exists()
    if reused:
        entry = _read_entry(final, digest)
        tensors, _ = ckpt.load_checkpoint(final / "best")
        ckpt.restore_model(model, tensors, where=str(final / "best"))
    else:
        entry = _train(exp, task, model, sources, budget, batch_sizes, store, final, digest, inputs)
    return Baseline(
        task,
        digest,
        final,
        entry["test"],
        entry["seconds"],
        entry["parameters"],
        entry["task_steps"],
        model,
        reused=reused,
    )


def _train(
    exp: Experiment,
    task: str,
    model: MultiTaskModel,
    sources: Mapping[str, Sequence[Example]],
    budget: int,
    batch_sizes: Mapping[str, int] | None,
    store: Path,
    final: Path,
    digest: str,
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """Train ``model`` on the plain loss of ``task`` in a partial directory, evaluate it on
    the test split, and rename the directory to ``final``; the entry of ``baseline.json``."""
    if batch_sizes is None:
        sampler, overrides = exp.build_sampler(sources), {}
    else:
        sampler = JointSampler(
            batch_sizes=batch_sizes, sizes={s: len(v) for s, v in sources.items()}
        )
        overrides = {"batch_size": sum(batch_sizes.values())}
    criterion = exp.cfg.trainer.criterion
    per_epoch = make_loader(
        sources, exp.collator([task]), exp.trainer_config(**overrides), sampler
    ).steps_per_epoch
    tcfg = exp.trainer_config(
        **overrides,
        level=None,
        max_steps=budget,
        criterion=criterion if criterion.partition(".")[0] == task else task,
        baselines={},
        epochs=-(-budget // per_epoch),  # bounded by the step budget; evaluate every pass
        progress=False,
    )
    store.mkdir(parents=True, exist_ok=True)
    _clean_stale(store)
    partial = store / f".partial-{final.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        trainer = Trainer(model, {task: exp.tasks[task]}, Sum(), tcfg, sampler=sampler)
        report = trainer.fit(
            sources,
            exp.train_sources([task], split="val"),
            exp.collator([task]),
            run_dir=partial,
        )
        test = evaluate(
            model,
            {task: exp.tasks[task]},
            exp.train_sources([task], split="test"),
            exp.collator([task], whole=True),  # whole inputs, as the multi-task run's test
            batch_size=exp.cfg.trainer.eval_batch_size,
        )[task]
        entry = {
            "digest": digest,
            "inputs": dict(inputs),
            "test": test,
            "seconds": report.seconds,
            "parameters": count_parameters(model),
            "task_steps": report.task_steps.get(task, 0),
        }
        write_json(partial / BASELINE, entry)
        try:
            os.rename(partial, final)
        except OSError:  # another comparison finished the same baseline first: keep theirs
            if not final.exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entry
