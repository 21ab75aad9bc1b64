"""Run directories: train, evaluate, predict and compare from a config.

A run directory holds ``config.yaml`` (the resolved config), ``run.json`` (seed, the
config's base directory, versions, label sets), ``vocab.json``, ``best/`` (the selected
weights), ``checkpoints/last`` (for ``--resume``), ``metrics.csv`` (per epoch),
``train_log.csv`` and ``results.json`` (final validation and test metrics).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import yaml

from . import __version__
from .config.build import Experiment
from .config.errors import ConfigError
from .config.load import validate
from .config.schema import Config
from .errors import OptionError
from .data.base import Example
from .engine import checkpoint as ckpt
from .engine.logs import write_json
from .engine.trainer import Trainer, make_loader, planned_steps
from .evaluation.delta_m import delta_m
from .evaluation.evaluate import evaluate, predict
from .evaluation.stats import mean_std, paired_delta_m_ci
from .evaluation.table import comparison_markdown


def versions() -> dict[str, str]:
    return {"polytask": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------- train
@dataclass
class TrainResult:
    run_dir: Path
    val: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    seconds: float
    task_steps: dict[str, int]
    parameters: int
    score: float = float("nan")


def train(cfg: Config, raw: Mapping[str, Any], base_dir: Path, out: Path, *, resume: bool = False,
          experiment: Experiment | None = None) -> TrainResult:
    """Train the configured multi-task model into the run directory ``out``."""
    exp = experiment or Experiment(cfg, base_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / "config.yaml").exists():
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        if saved != json.loads(json.dumps(dict(raw))):
            raise ConfigError(str(out / "config.yaml"), "the run was started with a different config",
                              "resume with the same config and --set options, or use a new --out")
    ckpt.atomic_write_text(out / "config.yaml", yaml.safe_dump(json.loads(json.dumps(dict(raw))), sort_keys=False,
                                                               allow_unicode=True))
    write_json(out / "run.json", {"seed": cfg.seed, "base_dir": str(base_dir.resolve()), "versions": versions(),
                                  "labels": exp.labels_json()})
    write_json(out / "vocab.json", exp.vocab_json())
    model = exp.build_model()
    try:
        trainer = Trainer(model, exp.tasks, exp.build_method(), exp.trainer_config(),
                          sampler=exp.build_sampler(exp.train_sources()))
    except OptionError as err:
        raise ConfigError.from_option(err, "trainer") from None
    collate = exp.collator()
    report = trainer.fit(exp.train_sources(), exp.train_sources(split="val"), collate, run_dir=out, resume=resume)
    test = evaluate(model, exp.tasks, exp.train_sources(split="test"), collate,
                    batch_size=cfg.trainer.eval_batch_size, device=trainer.device)
    result = {"val": report.best_metrics, "test": test, "best_epoch": report.best_epoch, "score": report.best_score,
              "steps": report.steps,
              "task_steps": report.task_steps, "seconds": report.seconds, "parameters": _count(model)}
    write_json(out / "results.json", result)
    return TrainResult(out, report.best_metrics, test, report.seconds, report.task_steps, _count(model),
                       report.best_score)


# ---------------------------------------------------------------------- load / predict
class LoadedRun:
    """A trained run: model, tasks and vocabularies, ready to predict (see :func:`load`)."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").is_file() or not (self.run_dir / "run.json").is_file():
            raise ConfigError(str(self.run_dir), "not a polytask run directory (no config.yaml/run.json)",
                              "give the --out directory of `polytask train`")
        raw = yaml.safe_load((self.run_dir / "config.yaml").read_text(encoding="utf-8"))
        meta = json.loads((self.run_dir / "run.json").read_text(encoding="utf-8"))
        vocab = json.loads((self.run_dir / "vocab.json").read_text(encoding="utf-8"))
        self.cfg = validate(raw)
        self.raw = raw
        self.base_dir = Path(meta["base_dir"])
        self.experiment = Experiment(self.cfg, self.base_dir, vocab=vocab, labels=meta["labels"], load_data=False)
        self.tasks = self.experiment.tasks
        self.model = self.experiment.build_model()
        tensors, _ = ckpt.load_checkpoint(self.run_dir / "best")
        ckpt.restore_model(self.model, tensors, where=str(self.run_dir / "best"))
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.collate = self.experiment.collator()

    def to_examples(self, inputs: Iterable[str | Sequence[str] | Example]) -> list[Example]:
        from .data.readers import tokenize

        chars = self.cfg.data.tokenizer == "chars"
        out = []
        for x in inputs:
            if isinstance(x, Example):
                out.append(x)
            elif isinstance(x, str):
                out.append(Example(inputs={"tokens": tokenize(x, char_level=chars)}))
            else:
                out.append(Example(inputs={"tokens": list(x)}))
        return out

    def predict(self, inputs: Iterable[str | Sequence[str] | Example], batch_size: int = 64) -> list[dict[str, Any]]:
        """One dict per input: ``{task: formatted prediction}`` from one forward pass per batch."""
        examples = self.to_examples(inputs)
        preds = predict(self.model, self.tasks, examples, self.collate, batch_size=batch_size, device=self.device)
        joiner = "" if self.cfg.data.tokenizer == "chars" else " "
        results = []
        for i, ex in enumerate(examples):
            row: dict[str, Any] = {}
            for t, task in self.tasks.items():
                formatted = task.kind.format_prediction(preds[t][i])
                tokens = ex.inputs.get("tokens")
                if tokens is not None and "spans" in formatted:
                    for span in formatted["spans"]:
                        span["text"] = joiner.join(tokens[span["start"]:span["end"]])
                row[t] = formatted
            results.append(row)
        return results

    def evaluate(self, sources: Mapping[str, Sequence[Example]]) -> dict[str, dict[str, float]]:
        return evaluate(self.model, self.tasks, sources, self.collate, device=self.device)


def load(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """``polytask.load(RUN_DIR)``: the trained model with its vocabularies and ``predict()``."""
    return LoadedRun(run_dir, device=device)


# ---------------------------------------------------------------------- compare
def _planned_task_steps(exp: Experiment) -> dict[str, int]:
    """Per task, the steps of the multi-task run's budget whose plan holds a source
    labelling it (read from the run's own loader plan: its sampler decides the budget)."""
    cfg = exp.trainer_config()
    sources = exp.train_sources()
    loader = make_loader(sources, exp.collator(), cfg, exp.build_sampler(sources))
    tasks_of_source = {s: list(exp.cfg.data.sources[s].tasks) for s in sources}
    return loader.task_steps(tasks_of_source, planned_steps(cfg, loader.steps_per_epoch))


def _time_inference(models: Sequence[tuple[torch.nn.Module, list[str]]], exp: Experiment,
                    examples: Sequence[Example], batch_size: int) -> float:
    collate = exp.collator()
    start = time.perf_counter()
    for model, names in models:
        predict(model, exp.tasks, examples, collate, task_names=names, batch_size=batch_size)
    return time.perf_counter() - start


SEED_RESULT = "seed_result.json"


def _config_digest(raw: Mapping[str, Any]) -> str:
    """A digest of the configuration without its seed: what a finished seed must match to be reused."""
    text = json.dumps({k: v for k, v in raw.items() if k != "seed"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _finished_seed(path: Path, digest: str) -> dict[str, Any] | None:
    """The saved result of one seed of a comparison, or ``None`` if it was not finished."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_digest, entry = saved["config_digest"], saved["result"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError("--resume", f"{path} is not a finished seed's result ({err})",
                          "delete that seed's directory to train it again") from None
    if saved_digest != digest:
        raise ConfigError("--resume", f"{path} was written by a different configuration",
                          "compare into a new --out directory, or drop --resume to train every seed again")
    return entry


def compare(cfg: Config, raw: Mapping[str, Any], base_dir: Path, out: Path, seeds: int = 1, *,
            resume: bool = False) -> dict[str, Any]:
    """Train the MTL model and one STL model per task per seed; write compare.json / compare.md.

    Single-task model i uses the same encoder and architecture restricted to task i, the
    same data splits, the same stopping rule, and as many optimisation steps as the MTL
    budget contains batches with task i's data. Test data is used only for the final table.

    Each finished seed's result is written (atomically) to ``seed<s>/seed_result.json``;
    with ``resume=True`` those seeds are read back instead of trained again, provided they
    were written by the same configuration (the seed aside), so an interrupted comparison
    loses at most the seed it was training.
    """
    if seeds < 1:
        raise ConfigError("--seeds", f"{seeds} is not ≥ 1", "give a positive number of seeds")
    out.mkdir(parents=True, exist_ok=True)
    digest = _config_digest(raw)
    per_seed: list[dict[str, Any]] = []
    exp: Experiment | None = None
    for i in range(seeds):
        seed = cfg.seed + i
        finished = _finished_seed(out / f"seed{seed}" / SEED_RESULT, digest) if resume else None
        if finished is not None:
            per_seed.append(finished)
            continue
        started = time.perf_counter()
        scfg = cfg.model_copy(update={"seed": seed})
        sraw = dict(raw, seed=seed)
        exp = Experiment(scfg, base_dir)
        mtl = train(scfg, sraw, base_dir, out / f"seed{seed}" / "mtl", experiment=exp)
        mtl_model = load(mtl.run_dir).model
        names = list(exp.tasks)
        planned = _planned_task_steps(exp)
        stl_metrics: dict[str, dict[str, float]] = {}
        stl_models, stl_seconds, stl_params, stl_steps = [], 0.0, 0, {}
        for t in names:
            model = exp.build_model([t], seed=seed)
            sources = exp.train_sources([t])
            criterion = scfg.trainer.criterion
            crit = criterion if criterion.partition(".")[0] == t else t
            sampler = exp.build_sampler(sources)
            budget = max(planned.get(t, 1), 1)
            # epochs bounded by the step budget; evaluate after each pass over the data
            per_epoch = make_loader(sources, exp.collator([t]), exp.trainer_config(),
                                    sampler).steps_per_epoch
            tcfg = exp.trainer_config(max_steps=budget, criterion=crit, baselines={},
                                      epochs=-(-budget // per_epoch), progress=False)
            tr = Trainer(model, {t: exp.tasks[t]}, exp.build_method([t]), tcfg, sampler=sampler)
            report = tr.fit(sources, exp.train_sources([t], split="val"), exp.collator([t]),
                            run_dir=out / f"seed{seed}" / f"stl_{t}")
            test = evaluate(model, {t: exp.tasks[t]}, exp.train_sources([t], split="test"), exp.collator([t]),
                            batch_size=scfg.trainer.eval_batch_size)
            stl_metrics[t] = test[t]
            stl_models.append((model, [t]))
            stl_seconds += report.seconds
            stl_params += _count(model)
            stl_steps[t] = report.task_steps.get(t, 0)
        test_inputs = [ex for s in exp.sources.values() for ex in s.test]
        bs = scfg.trainer.eval_batch_size
        mtl_infer = _time_inference([(mtl_model, names)], exp, test_inputs, bs)
        stl_infer = _time_inference(stl_models, exp, test_inputs, bs)
        prim, hib = _primary_metrics(exp)
        dm, _ = _delta_m_or_error({t: mtl.test[t][prim[t]] for t in names},
                                  {t: stl_metrics[t][prim[t]] for t in names}, hib)
        per_seed.append({"seed": seed, "mtl": mtl.test, "stl": stl_metrics, "delta_m": dm, "cost": {
            "mtl_parameters": mtl.parameters, "stl_parameters": stl_params,
            "mtl_train_seconds": mtl.seconds, "stl_train_seconds": stl_seconds,
            "mtl_infer_seconds": mtl_infer, "stl_infer_seconds": stl_infer,
            "mtl_task_steps": mtl.task_steps, "stl_task_steps": stl_steps,
            "compare_seconds": time.perf_counter() - started}})
        write_json(out / f"seed{seed}" / SEED_RESULT, {"config_digest": digest, "result": per_seed[-1]})
    if exp is None:  # every seed was read back
        exp = Experiment(cfg, base_dir)
    prim, hib = _primary_metrics(exp)
    summary = summarise(cfg.name, per_seed, prim, hib, exp)
    write_json(out / "compare.json", summary)
    (out / "compare.md").write_text(comparison_markdown(summary), encoding="utf-8")
    if summary["delta_m"] is None:
        raise ConfigError("delta_m", summary["delta_m_error"],
                          f"per-task results are in {out / 'compare.md'}; give each task a primary metric that is "
                          "positive for its single-task model (tasks.<task>.primary_metric) or train longer")
    return summary


def _primary_metrics(exp: Experiment) -> tuple[dict[str, str], dict[str, bool]]:
    """Each task's primary metric (the one Δm uses) and whether higher is better."""
    return ({t: str(task.primary_metric) for t, task in exp.tasks.items()},
            {t: bool(task.higher_is_better) for t, task in exp.tasks.items()})


def _delta_m_or_error(mtl: Mapping[str, float], stl: Mapping[str, float],
                      hib: Mapping[str, bool]) -> tuple[float | None, str | None]:
    """Δm, or ``None`` and the reason when it is undefined (a single-task metric ≤ 0)."""
    try:
        return delta_m(mtl, stl, hib), None
    except ValueError as err:
        message = str(err)
        return None, message[len("delta_m: "):] if message.startswith("delta_m: ") else message


def summarise(name: str, per_seed: list[dict[str, Any]], prim: Mapping[str, str], hib: Mapping[str, bool],
              exp: Experiment) -> dict[str, Any]:
    """Mean (± std) over seeds, Δm of the means, and a paired 95% CI of Δm with ≥ 2 seeds."""
    def agg(side: str) -> tuple[dict, dict]:
        mean, std = {}, {}
        for t in per_seed[0][side]:
            mean[t], std[t] = {}, {}
            for m in per_seed[0][side][t]:
                mu, sd = mean_std([s[side][t][m] for s in per_seed])
                mean[t][m], std[t][m] = mu, sd
        return mean, std

    stl, stl_std = agg("stl")
    mtl, mtl_std = agg("mtl")
    def mean_of(values: list[Any]) -> Any:  # equal values (a parameter count) keep their type
        if all(v == values[0] for v in values):
            return values[0]
        if isinstance(values[0], dict):
            return {t: mean_of([v[t] for v in values]) for t in values[0]}
        return sum(values) / len(values)

    cost = {k: mean_of([s["cost"][k] for s in per_seed]) for k in per_seed[0]["cost"]}
    dm, error = _delta_m_or_error({t: mtl[t][prim[t]] for t in prim}, {t: stl[t][prim[t]] for t in prim}, hib)
    summary: dict[str, Any] = {
        "name": name, "seeds": [s["seed"] for s in per_seed], "stl": stl, "mtl": mtl, "delta_m": dm,
        "delta_m_per_seed": [s["delta_m"] for s in per_seed], "primary": dict(prim),
        "higher_is_better": {t: {m: exp.tasks[t].kind.higher_is_better(m) for m in stl[t]} for t in stl},
        "cost": cost, "per_seed": per_seed}
    if error is not None or any(s["delta_m"] is None for s in per_seed):
        summary["delta_m"] = None
        summary["delta_m_error"] = error or "Δm is undefined for at least one seed (a single-task metric ≤ 0)"
    elif len(per_seed) > 1:
        summary["std"] = {"stl": stl_std, "mtl": mtl_std}
        mean, lo, hi = paired_delta_m_ci([{t: s["mtl"][t][prim[t]] for t in prim} for s in per_seed],
                                         [{t: s["stl"][t][prim[t]] for t in prim} for s in per_seed], hib)
        summary["ci95"] = [lo, hi]
        summary["delta_m_paired_mean"] = mean
    return summary
