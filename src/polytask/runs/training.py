"""``train``: one multi-task run from a config into its run directory."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from .. import __version__
from ..config.build import Experiment
from ..config.errors import ConfigError
from ..config.schema import Config
from ..engine import checkpoint as ckpt
from ..engine.logs import write_json
from ..engine.trainer import Trainer, TrainerConfig
from ..errors import OptionError
from ..evaluation.evaluate import evaluate

__all__ = ["TrainResult", "count_parameters", "train", "versions"]


def versions() -> dict[str, str]:
    return {
        "polytask": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class TrainResult:
    run_dir: Path
    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    seconds: float
    task_steps: dict[str, int]
    parameters: int
    score: float = float("nan")


#: Trainer options that sit outside the ``trainer:`` section of a config
_SECTION_OF = {"level": "balancing"}
_TRAINER_OPTIONS = {f.name for f in fields(TrainerConfig)}


def located(err: OptionError) -> OptionError:
    """A Trainer's option error at its config path (``optimizer`` -> ``trainer.optimizer``);
    errors that already carry a path or name a file are returned as they are."""
    head = err.option.partition(".")[0]
    if isinstance(err, ConfigError) or head not in _TRAINER_OPTIONS:
        return err
    return ConfigError.from_option(err, _SECTION_OF.get(head, "trainer"))


def train(
    cfg: Config,
    raw: Mapping[str, Any],
    base_dir: Path,
    out: Path,
    *,
    resume: bool = False,
    experiment: Experiment | None = None,
) -> TrainResult:
    """Train the configured multi-task model into the run directory ``out``."""
    exp = experiment or Experiment(cfg, base_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / "config.yaml").exists():
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        if saved != json.loads(json.dumps(dict(raw))):
            raise ConfigError(
                str(out / "config.yaml"),
                "the run was started with a different config",
                "resume with the same config and --set options, or use a new --out",
            )
    ckpt.atomic_write_text(
        out / "config.yaml",
        yaml.safe_dump(json.loads(json.dumps(dict(raw))), sort_keys=False, allow_unicode=True),
    )
    write_json(
        out / "run.json",
        {
            "seed": cfg.seed,
            "base_dir": str(base_dir.resolve()),
            "versions": versions(),
            "labels": exp.labels_json(),
        },
    )
    write_json(out / "vocab.json", exp.vocab_json())
    model = exp.build_model()
    collate = exp.collator()
    try:
        trainer = Trainer(
            model,
            exp.tasks,
            exp.build_method(),
            exp.trainer_config(),
            sampler=exp.build_sampler(exp.train_sources()),
        )
        report = trainer.fit(
            exp.train_sources(), exp.train_sources(split="val"), collate, run_dir=out, resume=resume
        )
    except OptionError as err:
        raise located(err) from None
    test = evaluate(
        model,
        exp.tasks,
        exp.train_sources(split="test"),
        collate,
        batch_size=cfg.trainer.eval_batch_size,
        device=trainer.device,
    )
    result = {
        "val": report.best_metrics,
        "test": test,
        "best_epoch": report.best_epoch,
        "score": report.best_score,
        "steps": report.steps,
        "task_steps": report.task_steps,
        "multi_task_steps": report.multi_task_steps,
        "multi_task_share": report.multi_task_share,
        "seconds": report.seconds,
        "parameters": count_parameters(model),
    }
    write_json(out / "results.json", result)
    return TrainResult(
        out,
        report.best_metrics,
        test,
        report.seconds,
        report.task_steps,
        count_parameters(model),
        report.best_score,
    )
