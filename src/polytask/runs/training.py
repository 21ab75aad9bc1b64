"""``train``: one multi-task run from a config into its run directory."""

from __future__ import annotations

import logging
import os
import platform
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import __version__
from ..analysis.affinity import AffinityRecorder
from ..config.build import Experiment
from ..config.errors import ConfigError
from ..config.schema import Config
from ..data.collate import Collator
from ..engine import checkpoint as ckpt
from ..engine.distributed import World, init_world, split_evaluation
from ..engine.logs import write_json
from ..engine.trainer import FitReport, Trainer, TrainerConfig
from ..errors import OptionError
from ..evaluation.evaluate import evaluate
from .directory import AFFINITY, ENCODER, config_text, open_run, write_manifest

log = logging.getLogger("polytask")

__all__ = ["TrainResult", "count_parameters", "train", "versions"]


#: what a Hugging Face model folder holds besides its weights (config and tokenizer)
_ENCODER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "added_tokens.json",
)


def copy_encoder_files(exp: Experiment, run: Path) -> None:
    """A transformer encoder's config and tokenizer files into ``RUN/encoder/`` (its weights
    are in the run's checkpoints), so that the run predicts without the folder it was
    trained from; listed in the manifest."""
    if exp.input_kind != "subwords":
        return
    folder = Path(exp._encoder_path(exp.cfg.model.encoder.options()))
    target = run / ENCODER
    target.mkdir(mode=ckpt.DIR_MODE, exist_ok=True)
    for name in _ENCODER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, target / name)
            ckpt.set_mode(target / name)


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

    @classmethod
    def of(
        cls, out: Path, report: FitReport, test: dict[str, dict[str, float]], model: Any
    ) -> TrainResult:
        """The result of a fit ``report`` into ``out``, with its ``test`` metrics."""
        return cls(
            out,
            report.best_metrics,
            test,
            report.seconds,
            report.task_steps,
            count_parameters(model),
            report.best_score,
        )


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


def _warn_truncation(exp: Experiment, collate: Collator) -> None:
    """One warning per run: how many training examples training reads cut short."""
    examples = [ex for split in exp.train_sources().values() for ex in split]
    longer, beyond = collate.truncation(examples)
    if longer:
        log.warning(
            "%d of %d training examples are longer than data.max_length = %s tokens and are "
            "cut to it in training and validation (eval and predict read whole inputs); set "
            "data.max_length: null (or a larger limit) to train on whole inputs",
            longer,
            len(examples),
            exp.cfg.data.max_length,
        )
    if beyond:
        log.warning(
            "%d of %d training examples exceed the encoder's %s sub-token positions and are "
            "cut to them in training and validation (eval and predict read long inputs in "
            "windows); raise model.encoder.max_length, up to the model's limit, to keep more",
            beyond,
            len(examples),
            getattr(collate.tokenizer, "max_length", "?"),
        )


def train(
    cfg: Config,
    raw: Mapping[str, Any],
    base_dir: Path,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    experiment: Experiment | None = None,
    affinity_every: int = 0,
) -> TrainResult:
    """Train the configured multi-task model into the run directory ``out``.

    ``affinity_every`` > 0 also records the task affinity every that many steps
    (:mod:`polytask.analysis.affinity`) into ``RUN/affinity.json``.

    Config, data, model, method and sampler are built before anything is written. A run
    already in ``out`` is continued with ``resume=True`` (from ``checkpoints/last``, after its
    files are checked against its manifest) or replaced with ``overwrite=True`` (trained
    beside it and swapped in when complete); otherwise it is an error, as is ``resume=True``
    without a checkpoint (unless ``overwrite=True``: then it starts again). See
    :mod:`polytask.runs.directory`.
    """
    exp = experiment or Experiment(cfg, base_dir)
    world = init_world(cfg.trainer.device)
    try:
        result = _train(exp, raw, base_dir, out, resume, overwrite, affinity_every, world)
        if world is not None:
            world.leave()
            world = None
        return result
    finally:
        if world is not None:  # an error: no waiting for ranks that may never come
            world.close()


def _train(
    exp: Experiment,
    raw: Mapping[str, Any],
    base_dir: Path,
    out: Path,
    resume: bool,
    overwrite: bool,
    affinity_every: int,
    world: World | None,
) -> TrainResult:
    labels, vocab = exp.labels_json(), exp.vocab_json()
    model = exp.build_model()
    collate = exp.collator()
    try:
        trainer = Trainer(
            model,
            exp.tasks,
            exp.build_method(),
            exp.trainer_config(),
            sampler=exp.build_sampler(exp.train_sources()),
            world=world,
        )
    except OptionError as err:
        raise located(err) from None
    if affinity_every:
        if world is not None:
            raise OptionError(
                "affinity",
                "task affinity is recorded in one process, not across torchrun's ranks",
                "run polytask affinity without torchrun",
            )
        trainer.affinity = AffinityRecorder(list(exp.tasks), affinity_every)
    if world is not None and not world.is_main:
        return _follow(exp, trainer, out, world)
    announced = False
    try:
        with open_run(out, raw, labels, vocab, resume=resume, overwrite=overwrite) as target:
            if world is not None:  # where the other ranks read a checkpoint from
                world.broadcast({"directory": str(target.directory), "resume": target.resume})
                announced = True
            files = (raw, labels, vocab)
            result = _train_in(exp, files, base_dir, out, trainer, collate, target, world)
    except BaseException as err:
        if world is not None and not announced:  # the others wait for the run directory
            world.broadcast({"error": f"{type(err).__name__}: {err}"})
        raise
    return result


def _follow(exp: Experiment, trainer: Trainer, out: Path, world: World) -> TrainResult:
    """A rank other than 0: trains beside rank 0, in the run directory rank 0 opened (read
    for resuming only), and takes its part of the test evaluation; writes nothing."""
    told = world.broadcast(None)
    if "error" in told:
        raise OptionError(
            "rank 0", f"stopped before training: {told['error']}", "see rank 0's message"
        )
    report = trainer.fit(
        exp.train_sources(),
        exp.train_sources(split="val"),
        exp.collator(),
        run_dir=Path(told["directory"]),
        resume=bool(told["resume"]),
    )
    return TrainResult.of(out, report, _test_metrics(exp, trainer), trainer.model)


def _test_metrics(exp: Experiment, trainer: Trainer) -> dict[str, dict[str, float]]:
    """Test metrics of the trained model, on whole inputs as `polytask eval` reads them
    (each rank predicts its part when training ran across ranks)."""
    return evaluate(
        trainer.model,
        exp.tasks,
        exp.train_sources(split="test"),
        exp.collator(whole=True),
        batch_size=exp.cfg.trainer.eval_batch_size,
        device=trainer.device,
        **split_evaluation(trainer.world),
    )


def _train_in(
    exp: Experiment,
    files: tuple[Mapping[str, Any], dict[str, Any], dict[str, Any]],
    base_dir: Path,
    out: Path,
    trainer: Trainer,
    collate: Collator,
    target: Any,
    world: World | None,
) -> TrainResult:
    """Training and the results, inside the run directory ``target`` (rank 0 or the one
    process); ``files``: the raw config, the label sets and the vocabularies it records."""
    cfg = exp.cfg
    model = trainer.model
    raw, labels, vocab = files
    run = target.directory
    if target.restarted:
        log.warning(
            "%s stopped before its first checkpoint; --resume starts it again from step 0",
            run,
        )
    if target.fresh:
        ckpt.atomic_write_text(run / "config.yaml", config_text(raw))
        copy_encoder_files(exp, run)
        write_json(
            run / "run.json",
            {
                "seed": cfg.seed,
                "base_dir": str(base_dir.resolve()),
                # the config's folder seen from the run: data paths resolve against it
                # when run and data move together (else against base_dir)
                "base_dir_from_run": os.path.relpath(base_dir.resolve(), out.resolve()),
                "versions": versions(),
                "labels": labels,
                # how each source split raw text: predict splits it the same way
                "tokenizers": {name: s.tokenizer for name, s in exp.sources.items()},
            },
        )
        write_json(run / "vocab.json", vocab)
        write_manifest(run, raw, labels, complete=False)
    _warn_truncation(exp, collate)
    try:
        report = trainer.fit(
            exp.train_sources(),
            exp.train_sources(split="val"),
            collate,
            run_dir=run,
            resume=target.resume,
        )
    except OptionError as err:
        raise located(err) from None
    test = _test_metrics(exp, trainer)
    result = {
        "val": report.best_metrics,
        "test": test,
        "best_epoch": report.best_epoch,
        "score": report.best_score,
        "steps": report.steps,
        "task_steps": report.task_steps,
        "multi_task_steps": report.multi_task_steps,
        "multi_task_share": report.multi_task_share,
        "skipped_steps": report.skipped_steps,  # fp16 overflows (see trainer.precision)
        "seconds": report.seconds,
        "parameters": count_parameters(model),
        "ranks": 1 if world is None else world.size,
    }
    write_json(run / "results.json", result)
    if trainer.affinity is not None:
        write_json(run / AFFINITY, trainer.affinity.to_json())
    write_manifest(run, raw, labels, complete=True)
    return TrainResult.of(out, report, test, model)
