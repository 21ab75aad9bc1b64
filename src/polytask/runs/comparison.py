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
from ..engine.logs import write_json
from ..engine.trainer import make_loader, planned_steps
from ..evaluation.evaluate import predict
from ..evaluation.table import comparison_markdown
from .baselines import single_task_baseline
from .prediction import load
from .summary import delta_m_or_error, primary_metrics, summarise
from .training import train

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
    overwrite: bool = False,
    baselines: Path | None = None,
) -> dict[str, Any]:
    """Train the MTL model and one STL model per task per seed; write compare.json / compare.md.

    Single-task model i uses the same encoder and architecture restricted to task i, the
    same data splits, the same stopping rule, its task's plain loss, and as many
    optimisation steps as the MTL budget contains batches with task i's data — under a joint
    sampler, with the same examples per step from its own source(s) as the joint run gave
    them. Test data is used only for the final table. Single-task models do not depend on
    the balancing method: they are kept in ``baselines`` (default ``out.parent /
    "baselines"``) under a digest of what they depend on and reused by any comparison that
    needs the same one (:mod:`polytask.runs.baselines`).

    Each finished seed's result is written (atomically) to ``seed<s>/seed_result.json``;
    with ``resume=True`` those seeds are read back instead of trained again, provided they
    were written by the same configuration (the seed aside), so an interrupted comparison
    loses at most the seed it was training (whose MTL run continues from its last
    checkpoint). An ``out`` that already holds seeds is refused unless ``resume`` or
    ``overwrite`` (each seed's runs then replaced atomically) is given.
    """
    if seeds < 1:
        raise ConfigError("--seeds", f"{seeds} is not ≥ 1", "give a positive number of seeds")
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file, not a directory", "give a directory")
    if not resume and not overwrite and out.is_dir():
        taken = sorted(p.name for p in out.glob("seed*") if p.is_dir())
        if taken:
            raise ConfigError(
                "--out",
                f"{out} already holds a comparison ({', '.join(taken)})",
                "add --resume to keep its finished seeds, --overwrite to replace them, "
                "or give another --out",
            )
    # ``out`` is created by the first seed's MTL run directory, once its config, data and
    # model are built: a config error leaves nothing behind
    store = baselines if baselines is not None else out.resolve().parent / "baselines"
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
        # an unfinished seed: its MTL run continues from its checkpoint under resume,
        # else it is trained again (replaced atomically)
        mtl = train(
            scfg,
            sraw,
            base_dir,
            out / f"seed{seed}" / "mtl",
            experiment=exp,
            resume=resume,
            overwrite=True,
        )
        mtl_model = load(mtl.run_dir, device=scfg.trainer.device).model
        names = list(exp.tasks)
        planned, shares = _planned_task_steps(exp)
        stl_metrics: dict[str, dict[str, float]] = {}
        stl_models, stl_seconds, stl_params, stl_steps = [], 0.0, 0, {}
        stl_runs: dict[str, dict[str, Any]] = {}
        for t in names:
            stl = single_task_baseline(
                exp, t, seed, max(planned.get(t, 1), 1), shares, store, base_dir
            )
            stl_metrics[t] = stl.test
            stl_models.append((stl.model, [t]))
            stl_seconds += stl.seconds
            stl_params += stl.parameters
            stl_steps[t] = stl.task_steps
            stl_runs[t] = {"directory": str(stl.directory), "reused": stl.reused}
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
                "stl_runs": stl_runs,
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
