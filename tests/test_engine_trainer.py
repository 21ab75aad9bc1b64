"""Trainer features on small slices of the real data: gradient accumulation, parameter
groups, early stopping and best-epoch selection, NaN detection, bf16, schedules, logs
and the selection criterion."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import assert_same_tensors, weights

from polytask.engine import ParamGroupRule, Trainer, TrainerConfig, TrainingError
from polytask.engine import trainer as trainer_module
from polytask.engine.optim import lr_factor
from polytask.errors import OptionError
from polytask.evaluation import criterion as criterion_module
from polytask.tasks import Classification, Regression, Task


def _trainer(zh, model, tasks=None, **overrides) -> Trainer:
    cfg = dict(epochs=1, batch_size=16, threads=1, lr=0.05) | overrides
    tasks = zh.tasks if tasks is None else {t: zh.tasks[t] for t in tasks}
    return Trainer(model, tasks, config=TrainerConfig(**cfg))


def _sgd(**overrides) -> dict:
    """Plain SGD: the update is exactly -lr * gradient."""
    return dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, clip_norm=None) | overrides


def _rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


# ------------------------------------------------------------------ accumulation
def test_accumulating_two_half_batches_equals_one_full_batch(zh, make_model) -> None:
    """One source, no dropout: permutations do not depend on the batch size, so batches
    8 + 8 are exactly the 16 examples of the first full batch."""
    train, val = zh.sources("reviews", n=64), zh.val_of("reviews")

    def run(**cfg) -> dict:
        model = make_model(tasks=["sentiment"])
        _trainer(zh, model, tasks=["sentiment"], **_sgd(lr=0.5, **cfg)).fit(train, val, zh.collate)
        return weights(model)

    init = weights(make_model(tasks=["sentiment"]))
    full = run(batch_size=16, max_steps=1)
    accumulated = run(batch_size=8, accumulate=2, max_steps=2)
    two_updates = run(batch_size=8, max_steps=2)
    half = run(batch_size=8, max_steps=1)
    for k in init:
        torch.testing.assert_close(accumulated[k], full[k], rtol=1e-5, atol=1e-6, msg=k)
    moved = [k for k in init if not torch.equal(full[k], init[k])]
    assert len(moved) > len(init) // 2
    for other in (two_updates, half):
        assert any((other[k] - full[k]).abs().max() > 1e-4 for k in moved)


# ------------------------------------------------------------------ parameter groups
def test_frozen_parameters_do_not_change(zh, make_model) -> None:
    model = make_model()
    init = weights(model)
    rules = [
        ParamGroupRule("encoder.embedding.*", freeze=True),
        ParamGroupRule("encoder.lstms.0.*", freeze=True),
    ]
    _trainer(zh, model, param_groups=rules).fit(zh.sources(n=32), zh.val_of(), zh.collate)
    after = weights(model)
    frozen = [k for k in init if k.startswith(("encoder.embedding.", "encoder.lstms.0."))]
    assert frozen and all(torch.equal(after[k], init[k]) for k in frozen)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    trained = [k for k in init if k.startswith(("encoder.lstms.1.", "heads."))]
    assert sum(not torch.equal(after[k], init[k]) for k in trained) > len(trained) // 2


def test_per_group_learning_rates_scale_the_update(zh, make_model) -> None:
    """SGD, one step: heads at 3x the base lr move exactly 3x as far; the rest identically."""
    data = zh.sources("reviews", n=16), zh.val_of("reviews")

    def step(rules) -> dict:
        model = make_model(tasks=["sentiment"])
        before = weights(model)
        _trainer(
            zh, model, tasks=["sentiment"], **_sgd(lr=0.1, max_steps=1, param_groups=rules)
        ).fit(*data, zh.collate)
        return _delta(before, weights(model))

    base = step([])
    scaled = step([ParamGroupRule("heads.*", lr=0.3)])
    for k in base:
        if k.startswith("heads."):
            torch.testing.assert_close(scaled[k], 3 * base[k], rtol=1e-4, atol=1e-7, msg=k)
        else:
            torch.testing.assert_close(scaled[k], base[k], rtol=0, atol=1e-7, msg=k)
    assert max(base[k].abs().max() for k in base if k.startswith("heads.")) > 1e-4


def test_a_param_group_pattern_that_matches_nothing_is_an_error(zh, make_model) -> None:
    with pytest.raises(OptionError, match=r"param_groups: pattern 'decoder\.\*'"):
        _trainer(zh, make_model(), param_groups=[ParamGroupRule("decoder.*", lr=0.1)]).fit(
            zh.sources(n=16), zh.val_of(), zh.collate
        )


# ------------------------------------------------------------------ early stopping / best epoch
def _scripted_scores(monkeypatch, scores: list[float], model) -> list[dict]:
    """Replace the criterion by a script; remember the weights each epoch was scored with."""
    seen: list[dict] = []

    def score(*args, **kwargs) -> float:
        seen.append(weights(model))
        return scores[len(seen) - 1]

    monkeypatch.setattr(criterion_module, "criterion_score", score)
    return seen


@pytest.mark.parametrize("with_run_dir", [False, True])
def test_early_stopping_and_best_epoch(zh, make_model, monkeypatch, tmp_path, with_run_dir) -> None:
    model = make_model()
    # epochs 0, 1 improve; 2 is worse; 3 improves (the count restarts); 4, 5 are worse -> stop
    seen = _scripted_scores(monkeypatch, [0.1, 0.5, 0.3, 0.6, 0.2, 0.55, 0.9, 0.9], model)
    run = tmp_path if with_run_dir else None
    report = _trainer(zh, model, epochs=8, patience=2).fit(
        zh.sources(n=16), zh.val_of(), zh.collate, run_dir=run
    )
    assert len(report.history) == 6 and [h["epoch"] for h in report.history] == list(range(6))
    assert report.steps == 6 * 2
    assert report.best_epoch == 3 and report.best_score == 0.6
    assert_same_tensors(weights(model), seen[3])  # the model ends with the best epoch's weights
    assert any(not torch.equal(seen[3][k], seen[5][k]) for k in seen[3])
    if with_run_dir:
        from safetensors.torch import load_file

        best = load_file(str(tmp_path / "best" / "tensors.safetensors"))
        assert_same_tensors(
            {k[len("model.") :]: v for k, v in best.items() if k.startswith("model.")}, seen[3]
        )
        rows = _rows(tmp_path / "metrics.csv")
        assert [float(r["value"]) for r in rows if r["task"] == "*"] == [
            0.1,
            0.5,
            0.3,
            0.6,
            0.2,
            0.55,
        ]


def test_without_patience_every_epoch_runs(zh, make_model, monkeypatch) -> None:
    model = make_model()
    seen = _scripted_scores(monkeypatch, [0.5, 0.4, 0.3, 0.2], model)
    report = _trainer(zh, model, epochs=4).fit(zh.sources(n=16), zh.val_of(), zh.collate)
    assert len(report.history) == 4 and report.best_epoch == 0
    assert_same_tensors(weights(model), seen[0])


# ------------------------------------------------------------------ NaN
def test_a_nan_loss_raises_naming_the_task_and_step(zh, make_model, monkeypatch) -> None:
    kind = zh.tasks["ner"].kind
    real_loss = kind.loss
    calls = []

    def loss(*args):
        calls.append(1)
        value = real_loss(*args)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(kind, "loss", loss)
    with pytest.raises(TrainingError, match=r"task 'ner': loss is nan at epoch 0, step 3\b"):
        _trainer(zh, make_model()).fit(zh.sources("news", n=64), zh.val_of("news"), zh.collate)


# ------------------------------------------------------------------ bf16
def test_bf16_autocast_on_cpu_trains_with_finite_losses(zh, make_model, tmp_path) -> None:
    model = make_model()
    init = weights(model)
    dtypes: set[torch.dtype] = set()
    hook = (
        model.heads["sentiment"]
        .projection[-1]
        .register_forward_hook(lambda m, i, out: dtypes.add(out.dtype) if m.training else None)
    )
    report = _trainer(zh, model, precision="bf16", log_every=1).fit(
        zh.sources(n=32), zh.val_of(), zh.collate, run_dir=tmp_path
    )
    hook.remove()
    assert dtypes == {torch.bfloat16}  # the forward pass really ran in bf16
    rows = _rows(tmp_path / "train_log.csv")
    losses = [float(r[c]) for r in rows for c in ("loss_sentiment", "loss_ner") if r[c]]
    assert (
        len(rows) == report.steps == 4
        and len(losses) == 4
        and all(math.isfinite(v) for v in losses)
    )
    after = weights(model)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(after[k], init[k]) for k in init)


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize(
    "schedule, warmup, total, expected",
    [
        ("constant", 0, 5, [1, 1, 1, 1, 1]),
        ("constant", 2, 5, [0.5, 1, 1, 1, 1]),
        ("linear", 2, 6, [0.5, 1, 1, 0.75, 0.5, 0.25]),
        ("linear", 0, 4, [1, 0.75, 0.5, 0.25]),
        (
            "cosine",
            0,
            4,
            [1, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4)],
        ),
        ("cosine", 1, 3, [1, 1, 0.5]),
    ],
)
def test_lr_factor_known_values(schedule, warmup, total, expected) -> None:
    got = [lr_factor(s, total, warmup, schedule) for s in range(total)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert lr_factor(total, total, warmup, schedule) == pytest.approx(
        0.0 if schedule != "constant" else 1.0
    )
    with pytest.raises(OptionError, match="scheduler: unknown schedule 'step'"):
        lr_factor(3, 10, 0, "step")


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_schedule_sets_the_lr_of_every_update(
    zh, make_model, monkeypatch, tmp_path, accumulate
) -> None:
    """warm-up 2 then linear decay over 6 updates; a 2x group follows the same factors;
    train_log.csv shows the rate each step's update used."""
    used: list[list[float]] = []
    real_update = Trainer._update

    def update(self, optimizer, scaler):
        used.append([g["lr"] for g in optimizer.param_groups])
        real_update(self, optimizer, scaler)

    monkeypatch.setattr(Trainer, "_update", update)
    trainer = _trainer(
        zh,
        make_model(),
        lr=0.01,
        scheduler="linear",
        warmup_steps=2,
        max_steps=6 * accumulate,
        epochs=10,
        accumulate=accumulate,
        param_groups=[ParamGroupRule("heads.*", lr=0.02)],
        log_every=1,
    )
    trainer.fit(zh.sources(n=32), zh.val_of(), zh.collate, run_dir=tmp_path)
    factors = [0.5, 1, 1, 0.75, 0.5, 0.25]
    assert [u[0] for u in used] == pytest.approx([0.01 * f for f in factors], rel=1e-9)
    assert [u[1] for u in used] == pytest.approx([0.02 * f for f in factors], rel=1e-9)
    logged = [float(r["lr"]) for r in _rows(tmp_path / "train_log.csv")]
    assert logged == pytest.approx([0.01 * f for f in factors for _ in range(accumulate)], rel=1e-9)


def test_accumulation_never_crosses_an_epoch_boundary(zh, make_model, monkeypatch) -> None:
    """An epoch with an odd number of steps ends with a short accumulated update: every
    planned update happens, and the schedule's horizon counts exactly those updates."""
    updates: list[int] = []
    real_update = Trainer._update

    def update(self, optimizer, scaler):
        updates.append(1)
        real_update(self, optimizer, scaler)

    monkeypatch.setattr(Trainer, "_update", update)
    trainer = _trainer(zh, make_model(), epochs=2, accumulate=2, batch_size=16, scheduler="linear")
    sources = zh.sources("reviews", n=48)
    steps = trainer.make_loader(sources, zh.collate).steps_per_epoch
    assert steps % 2 == 1, "the slice must give an odd number of steps per epoch"
    horizons = []
    real_init = trainer_module.Schedule.__init__

    def init(self, optimizer, total, warmup, schedule):
        horizons.append(total)
        real_init(self, optimizer, total, warmup, schedule)

    monkeypatch.setattr(trainer_module.Schedule, "__init__", init)
    trainer.fit(sources, zh.val_of(), zh.collate)
    assert len(updates) == 2 * math.ceil(steps / 2) == horizons[0]


# ------------------------------------------------------------------ logs
def test_csv_logs_have_the_expected_columns_and_rows(zh, make_model, tmp_path) -> None:
    report = _trainer(zh, make_model(), epochs=2, log_every=2).fit(
        zh.sources(n=48), zh.val_of(), zh.collate, run_dir=tmp_path
    )
    assert report.steps == 12
    with open(tmp_path / "train_log.csv", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["step", "epoch", "lr", "loss_sentiment", "loss_ner"]
    assert [int(r["step"]) for r in rows] == list(range(2, 13, 2))
    assert [int(r["epoch"]) for r in rows] == [0, 0, 0, 1, 1, 1]
    for r in rows:  # a batch comes from one source: exactly one task has a loss
        present = [c for c in ("loss_sentiment", "loss_ner") if r[c] != ""]
        assert len(present) == 1 and float(r[present[0]]) > 0
        assert float(r["lr"]) == pytest.approx(0.05)
    with open(tmp_path / "metrics.csv", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        metrics = list(reader)
    assert reader.fieldnames == ["epoch", "step", "task", "metric", "value"]
    for epoch, hist in enumerate(report.history):
        mine = [r for r in metrics if int(r["epoch"]) == epoch]
        assert {int(r["step"]) for r in mine} == {6 * (epoch + 1)}
        assert {(r["task"], r["metric"]) for r in mine} == (
            {("sentiment", m) for m in ("accuracy", "macro_f1")}
            | {("ner", m) for m in ("precision", "recall", "f1", "token_accuracy")}
            | {("*", "criterion")}
        )
        by_key = {(r["task"], r["metric"]): float(r["value"]) for r in mine}
        assert by_key[("*", "criterion")] == pytest.approx(hist["score"])
        assert by_key[("sentiment", "accuracy")] == pytest.approx(
            hist["metrics"]["sentiment"]["accuracy"]
        )
        assert hist["score"] == pytest.approx(
            (hist["metrics"]["sentiment"]["accuracy"] + hist["metrics"]["ner"]["f1"]) / 2
        )


# ------------------------------------------------------------------ criterion
TASKS = {
    "sentiment": Task("sentiment", Classification(["neg", "pos"])),
    "reg": Task("reg", Regression()),
}
METRICS = {
    "sentiment": {"accuracy": 0.88, "macro_f1": 0.7},
    "reg": {"mae": 1.2, "rmse": 1.5, "r2": 0.3},
}


@pytest.mark.parametrize(
    "criterion, expected",
    [
        ("mean", (0.88 - 1.5) / 2),
        ("delta_m", 100 * ((0.88 - 0.8) / 0.8 - (1.5 - 2.0) / 2.0) / 2),
        ("sentiment", 0.88),
        ("sentiment.macro_f1", 0.7),
        ("reg", -1.5),
        ("reg.mae", -1.2),
        ("reg.r2", 0.3),
    ],
)
def test_criterion_score(criterion, expected) -> None:
    baselines = {"sentiment": 0.8, "reg": 2.0}
    criterion_module.validate_criterion(criterion, TASKS, baselines)
    assert criterion_module.criterion_score(criterion, METRICS, TASKS, baselines) == pytest.approx(
        expected
    )


@pytest.mark.parametrize(
    "criterion, baselines, option, problem",
    [
        ("delta_m", {"sentiment": 0.8}, "baselines", r"no single-task score for \['reg'\]"),
        ("pos", {}, "criterion", r"'pos' names no task"),
        ("pos.f1", {}, "criterion", r"'pos\.f1' names no task"),
        ("reg.accuracy", {}, "criterion", r"'accuracy'"),
    ],
)
def test_bad_criteria_are_rejected_before_training(criterion, baselines, option, problem) -> None:
    with pytest.raises(OptionError, match=problem) as err:
        criterion_module.validate_criterion(criterion, TASKS, baselines)
    assert err.value.option == option
    if criterion == "reg.accuracy":
        assert "reg.mae" in err.value.fix and "reg.r2" in err.value.fix


def test_trainer_rejects_bad_settings(zh, make_model) -> None:
    model = make_model()
    for cfg, option, problem in (
        (dict(accumulate=0), "accumulate", "0 is not"),
        (dict(precision="fp8"), "precision", "'fp8'"),
        (dict(device="tpu"), "device", "unknown device 'tpu'"),
        (dict(criterion="delta_m"), "baselines", "no single-task score"),
    ):
        with pytest.raises(OptionError, match=problem) as err:
            Trainer(model, zh.tasks, config=TrainerConfig(**cfg))
        assert err.value.option == option
    with pytest.raises(OptionError, match=r"optimizer: unknown optimizer 'lamb'"):
        _trainer(zh, model, optimizer="lamb").fit(zh.sources(n=16), zh.val_of(), zh.collate)


def test_validation_data_without_the_needed_labels_fails_before_training(zh, make_model) -> None:
    model = make_model()
    init = weights(model)
    with pytest.raises(ValueError, match="validation data label no task"):
        _trainer(zh, model).fit(zh.sources(n=16), {"reviews": [], "news": []}, zh.collate)
    with pytest.raises(
        OptionError, match=r"criterion: 'ner\.f1' needs validation labels for task 'ner'"
    ):
        _trainer(zh, model, criterion="ner.f1").fit(
            zh.sources(n=16), zh.val_of("reviews"), zh.collate
        )
    assert_same_tensors(weights(model), init)  # nothing was trained
    # "mean" and "delta_m" score the tasks that have validation labels
    report = _trainer(zh, model).fit(zh.sources(n=16), zh.val_of("reviews"), zh.collate)
    assert report.best_score == pytest.approx(report.best_metrics["sentiment"]["accuracy"])
