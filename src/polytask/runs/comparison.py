"""``compare``: the multi-task model against one single-task model per task, per seed."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..config.build import Experiment
from ..config.errors import ConfigError
from ..config.schema import Config
from ..data.base import Example
from ..data.samplers import JointSampler
from ..engine.logs import write_json
from ..engine.trainer import Trainer, make_loader, planned_steps
from ..evaluation.evaluate import evaluate, predict
from ..evaluation.table import comparison_markdown
from .prediction import load
from .summary import delta_m_or_error, primary_metrics, summarise
from .training import count_parameters, train

__all__ = ["SEED_RESULT", "compare"]


def _planned_task_steps(exp: Experiment) -> tuple[dict[str, int], dict[str, int] | None]:
    """Per task, the steps of the multi-task run's budget whose plan holds a source
    labelling it (read from the run's own loader plan: its sampler decides the budget); and
    under a joint sampler each source's examples per step (else None)."""
    cfg = exp.trainer_config()
    sources = exp.train_sources()
    loader = make_loader(sources, exp.collator(), cfg, exp.build_sampler(sources))
    tasks_of_source = {s: list(exp.cfg.data.sources[s].tasks) for s in sources}
    steps = planned_steps(cfg, loader.steps_per_epoch)
    return loader.task_steps(tasks_of_source, steps), loader.shares


def _single_task_sampler(
    exp: Experiment, sources: Mapping[str, Sequence[Example]], shares: Mapping[str, int] | None
) -> tuple[Any, dict[str, int]]:
    """The sampler of a single-task baseline and its trainer overrides: the configured one;
    under a joint sampler, the same examples per step from each of its sources as in the
    multi-task run (``batch_sizes`` from the joint run's shares)."""
    if shares is None:
        return exp.build_sampler(sources), {}
    mine = {s: shares[s] for s in sources}
    sampler = JointSampler(batch_sizes=mine, sizes={s: len(v) for s, v in sources.items()})
    return sampler, {"batch_size": sum(mine.values())}


def _time_inference(
    models: Sequence[tuple[torch.nn.Module, list[str]]],
    exp: Experiment,
    examples: Sequence[Example],
    batch_size: int,
) -> float:
    collate = exp.collator()
    start = time.perf_counter()
    for model, names in models:
        predict(model, exp.tasks, examples, collate, task_names=names, batch_size=batch_size)
    return time.perf_counter() - start


SEED_RESULT = "seed_result.json"


def _config_digest(raw: Mapping[str, Any]) -> str:
    """A digest of the configuration without its seed: what a finished seed must match to be
    reused."""
    text = json.dumps({k: v for k, v in raw.items() if k != "seed"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _finished_seed(path: Path, digest: str) -> dict[str, Any] | None:
    """The saved result of one seed of a comparison, or ``None`` if it was not finished."""
    if not path.exists():
        return None
    entry: dict[str, Any]  # the per-seed dict that compare() saved under "result"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_digest, entry = saved["config_digest"], saved["result"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(
            "--resume",
            f"{path} is not a finished seed's result ({err})",
            "delete that seed's directory to train it again",
        ) from None
    if saved_digest != digest:
        raise ConfigError(
            "--resume",
            f"{path} was written by a different configuration",
            "compare into a new --out directory, or drop --resume to train every seed again",
        )
    return entry


def compare(
    cfg: Config,
    raw: Mapping[str, Any],
    base_dir: Path,
    out: Path,
    seeds: int = 1,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the MTL model and one STL model per task per seed; write compare.json / compare.md.

    Single-task model i uses the same encoder and architecture restricted to task i, the
    same data splits, the same stopping rule, and as many optimisation steps as the MTL
    budget contains batches with task i's data — under a joint sampler, with the same
    examples per step from its own source(s) as the joint run gave them. Test data is used
    only for the final table.

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
        planned, shares = _planned_task_steps(exp)
        stl_metrics: dict[str, dict[str, float]] = {}
        stl_models, stl_seconds, stl_params, stl_steps = [], 0.0, 0, {}
        for t in names:
            model = exp.build_model([t], seed=seed)
            sources = exp.train_sources([t])
            criterion = scfg.trainer.criterion
            crit = criterion if criterion.partition(".")[0] == t else t
            sampler, same_share = _single_task_sampler(exp, sources, shares)
            budget = max(planned.get(t, 1), 1)
            # epochs bounded by the step budget; evaluate after each pass over the data
            per_epoch = make_loader(
                sources, exp.collator([t]), exp.trainer_config(**same_share), sampler
            ).steps_per_epoch
            tcfg = exp.trainer_config(
                **same_share,
                max_steps=budget,
                criterion=crit,
                baselines={},
                epochs=-(-budget // per_epoch),
                progress=False,
            )
            tr = Trainer(model, {t: exp.tasks[t]}, exp.build_method([t]), tcfg, sampler=sampler)
            report = tr.fit(
                sources,
                exp.train_sources([t], split="val"),
                exp.collator([t]),
                run_dir=out / f"seed{seed}" / f"stl_{t}",
            )
            test = evaluate(
                model,
                {t: exp.tasks[t]},
                exp.train_sources([t], split="test"),
                exp.collator([t]),
                batch_size=scfg.trainer.eval_batch_size,
            )
            stl_metrics[t] = test[t]
            stl_models.append((model, [t]))
            stl_seconds += report.seconds
            stl_params += count_parameters(model)
            stl_steps[t] = report.task_steps.get(t, 0)
        test_inputs = [ex for s in exp.sources.values() for ex in s.test]
        bs = scfg.trainer.eval_batch_size
        mtl_infer = _time_inference([(mtl_model, names)], exp, test_inputs, bs)
        stl_infer = _time_inference(stl_models, exp, test_inputs, bs)
        prim, hib = primary_metrics(exp)
        dm, _ = delta_m_or_error(
            {t: mtl.test[t][prim[t]] for t in names},
            {t: stl_metrics[t][prim[t]] for t in names},
            hib,
        )
        per_seed.append(
            {
                "seed": seed,
                "mtl": mtl.test,
                "stl": stl_metrics,
                "delta_m": dm,
                "cost": {
                    "mtl_parameters": mtl.parameters,
                    "stl_parameters": stl_params,
                    "mtl_train_seconds": mtl.seconds,
                    "stl_train_seconds": stl_seconds,
                    "mtl_infer_seconds": mtl_infer,
                    "stl_infer_seconds": stl_infer,
                    "mtl_task_steps": mtl.task_steps,
                    "stl_task_steps": stl_steps,
                    "compare_seconds": time.perf_counter() - started,
                },
            }
        )
        write_json(
            out / f"seed{seed}" / SEED_RESULT, {"config_digest": digest, "result": per_seed[-1]}
        )
    if exp is None:  # every seed was read back
        exp = Experiment(cfg, base_dir)
    prim, hib = primary_metrics(exp)
    summary = summarise(cfg.name, per_seed, prim, hib, exp)
    write_json(out / "compare.json", summary)
    (out / "compare.md").write_text(comparison_markdown(summary), encoding="utf-8")
    if summary["delta_m"] is None:
        raise ConfigError(
            "delta_m",
            summary["delta_m_error"],
            f"per-task results are in {out / 'compare.md'}; give each task a primary metric that "
            "is "
            "positive for its single-task model (tasks.<task>.primary_metric) or train longer",
        )
    return summary
