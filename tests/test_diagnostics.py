"""Training diagnostics (``diagnostics.jsonl``): gradient cosines and conflict at the shared
parameters, the weights a method gave each task, gate usage, the sampling schedule, and a
resumed run that continues the file and still trains bit-identically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_same_tensors, weights

from polytask.balancing import make
from polytask.config.schema import DiagnosticsSection
from polytask.engine import Trainer, TrainerConfig
from polytask.engine import diagnostics as diag
from polytask.engine.logs import RunLogger
from polytask.nn import BiLSTM, heads_for
from polytask.report.collect import Curves, _diagnostics
from polytask.sharing import PLE, CrossStitch, MMoE


def _steps(zh, trainer: Trainer, n: int = 2) -> list[dict[str, Any]]:
    """The plans of the first ``n`` joint steps (one batch of each source)."""
    reviews, news = zh.train["reviews"], zh.train["news"]
    return [
        {
            "reviews": zh.collate(reviews[8 * i : 8 * i + 8], "reviews"),
            "news": zh.collate(news[8 * i : 8 * i + 8], "news"),
        }
        for i in range(n)
    ]


def _direct(trainer: Trainer, batches: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Gradient norms and pairwise cosines from per-task gradients computed one by one with
    ``torch.autograd.grad`` w.r.t. the shared parameters."""
    losses = trainer.step_losses(batches).losses
    shared = [p for p in trainer.model.shared_parameters() if p.requires_grad]
    grads = {}
    for t, loss in losses.items():
        g = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        parts = [torch.zeros_like(p) if x is None else x for p, x in zip(shared, g)]
        grads[t] = torch.cat([x.reshape(-1) for x in parts]).double()
    norms = {t: float(g.norm()) for t, g in grads.items()}
    names = sorted(grads)
    cosines = {
        f"{a}|{b}": float(grads[a] @ grads[b]) / (norms[a] * norms[b])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    return norms, cosines


@pytest.mark.parametrize(
    "method, level, reused",
    [
        ("fixed", None, False),
        ("mgda", "params", True),
        ("db_mtl", "params", True),
        ("upgrad", "features", False),
    ],
)
def test_cosines_and_conflict_equal_a_direct_computation(
    zh, make_model, method, level, reused
) -> None:
    """On a two-source joint step the logged norms, cosines and conflict share equal those
    of separately computed per-task gradients, whatever level the method works at; the
    gradients the update leaves are the same with and without the probe."""
    model = make_model(hard=True)
    config = TrainerConfig(threads=1, level=level)
    # stateful methods (DB-MTL's gradient averages): one instance with the probe, one without
    trainer = Trainer(model, zh.tasks, method=make(method), config=config)
    unprobed = Trainer(model, zh.tasks, method=make(method), config=config)
    for batches in _steps(zh, trainer):
        norms, cosines = _direct(trainer, batches)
        model.zero_grad(set_to_none=True)
        unprobed.train_step(batches)
        plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        probe = diag.Probe()
        trainer.train_step(batches, probe=probe)
        probed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert_same_tensors(probed, plain)
        entry = probe.entry
        assert entry is not None and probe.trace.reused is reused
        assert set(entry["losses"]) == {"sentiment", "ner"}
        assert entry["grad_norms"] == pytest.approx(norms, rel=1e-4)
        assert list(entry["cosines"]) == ["ner|sentiment"]
        assert entry["cosines"] == pytest.approx(cosines, abs=1e-4)
        assert entry["conflict_share"] == float(cosines["ner|sentiment"] < 0)
        assert "gates" not in entry and "stitch" not in entry
        if method == "db_mtl":  # no weighted sum of the rows: no weights
            assert entry["weights"] is None


def test_conflict_share_counts_negative_pairs() -> None:
    g = torch.tensor([[1.0, -0.5, 0.2], [-0.5, 1.0, 0.3], [0.2, 0.3, 0.0]])
    out = diag._conflict(["c", "a", "b"], g)
    assert out["grad_norms"] == {"c": 1.0, "a": 1.0, "b": 0.0}
    assert out["cosines"] == {"a|c": -0.5}  # b's gradient is 0: no direction
    assert out["conflict_share"] == 1.0  # of the pairs with a cosine
    g2 = torch.tensor([[4.0, 1.0, -1.0], [1.0, 1.0, 0.5], [-1.0, 0.5, 1.0]])
    out2 = diag._conflict(["a", "b", "c"], g2)
    assert out2["cosines"] == pytest.approx({"a|b": 0.5, "a|c": -0.5, "b|c": 0.5})
    assert out2["conflict_share"] == pytest.approx(1 / 3)


def _weights_logged(zh, make_model, method, **cfg) -> dict[str, float]:
    model = make_model(hard=True)
    trainer = Trainer(model, zh.tasks, method=method, config=TrainerConfig(threads=1, **cfg))
    probe = diag.Probe()
    trainer.train_step(_steps(zh, trainer, 1)[0], probe=probe)
    assert probe.entry is not None
    return probe.entry["weights"]


def test_logged_weights_are_what_the_method_gave(zh, make_model) -> None:
    fixed = make("fixed", weights={"sentiment": 0.25, "ner": 3.0})
    assert _weights_logged(zh, make_model, fixed) == {"sentiment": 0.25, "ner": 3.0}

    uw = make("uw")
    uw.bind(list(zh.tasks))
    uw.load_state_dict({"log_var": {"sentiment": 0.7, "ner": -0.4}})
    expected = {t: 0.5 * math.exp(-s) for t, s in (("sentiment", 0.7), ("ner", -0.4))}
    assert _weights_logged(zh, make_model, uw) == pytest.approx(expected, rel=1e-6)

    for level in ("params", "features"):  # the engine's weights, at either level
        mgda = make("mgda")
        returned: list[torch.Tensor] = []
        original = mgda.weights

        def spy(
            gramian: Any, losses: Any = None, original: Any = original, out: Any = returned
        ) -> Any:
            out.append(original(gramian, losses))
            return out[-1]

        mgda.weights = spy  # type: ignore[method-assign]
        logged = _weights_logged(zh, make_model, mgda, level=level)
        assert len(returned) == 1
        assert logged == dict(zip(["sentiment", "ner"], returned[0].tolist()))
        assert sorted(logged) == ["ner", "sentiment"]


def _fit(zh, model, run_dir=None, resume=False, method="fixed", **overrides):
    from polytask.data.samplers import JointSampler

    cfg = dict(epochs=2, batch_size=16, threads=1, lr=3e-3, log_every=1) | overrides
    trainer = Trainer(
        model, zh.tasks, method=make(method), config=TrainerConfig(**cfg), sampler=JointSampler()
    )
    trainer.fit(zh.sources(n=48), zh.val_of(), zh.collate, run_dir=run_dir, resume=resume)
    return trainer


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_gates_are_logged_for_mmoe(zh, tmp_path) -> None:
    def build() -> MMoE:
        torch.manual_seed(0)
        return MMoE.from_parts(
            encoder=lambda: BiLSTM(vocab_size=len(zh.vocab), embed_dim=8, hidden=4, layers=1),
            heads=lambda dims: heads_for(list(zh.tasks.values()), dim=8),
            tasks=list(zh.tasks),
            experts=3,
            gate_input="encoder",
        )

    trainer = _fit(zh, build(), tmp_path, epochs=1, max_steps=3, diagnostics_every=1)
    lines = _lines(tmp_path / diag.DIAGNOSTICS_LOG)
    assert [x["step"] for x in lines] == [1, 2, 3]
    for x in lines:
        assert sorted(x["gates"]) == ["ner", "sentiment"]
        for row in x["gates"].values():
            assert len(row) == 3 and sum(row) == pytest.approx(1.0)
    # what the report reads of it
    curves = Curves()
    _diagnostics(tmp_path / diag.DIAGNOSTICS_LOG, curves)
    assert sorted(curves.gates) == ["ner", "sentiment"] and len(curves.gates["ner"]) == 3
    assert [s for s, _ in curves.weights["ner"]] == [1, 2, 3]
    assert [s for s, _ in curves.cosines] == [1, 2, 3]
    # step 1 at the initial weights: the mean over the real tokens of each task's gate
    fresh = build()
    first = next(trainer.make_loader(zh.sources(n=48), zh.collate).iterate(0))
    for source, batch in first.items():
        out = fresh(batch.inputs, tasks=batch.tasks)
        for task, gate in out.gates.items():
            keep = out.mask.unsqueeze(-1).double()
            mean = (gate.double() * keep).sum((0, 1)) / keep.sum()
            assert lines[0]["gates"][task] == pytest.approx(mean.tolist(), rel=1e-5), source


def test_ple_logs_the_gates_of_every_level(zh, tmp_path) -> None:
    """PLE with two extraction levels: the top level's gates by task, and below it every
    task's gate and the shared gate ("level 1: ..."), each a distribution over its experts,
    equal to the model's own gates at the initial weights; the report shows them all."""

    def build() -> PLE:
        torch.manual_seed(0)
        return PLE.from_parts(
            encoder=lambda: BiLSTM(vocab_size=len(zh.vocab), embed_dim=8, hidden=4, layers=1),
            heads=lambda dims: heads_for(list(zh.tasks.values()), dim=8),
            tasks=list(zh.tasks),
            shared_experts=2,
            task_experts=1,
            levels=2,
            gate_input="encoder",
        )

    trainer = _fit(zh, build(), tmp_path, epochs=1, max_steps=2, diagnostics_every=1)
    lines = _lines(tmp_path / diag.DIAGNOSTICS_LOG)
    lower = ["level 1: ner", "level 1: sentiment", "level 1: shared"]
    for x in lines:
        assert sorted(x["gates"]) == ["ner", "sentiment"] and sorted(x["lower_gates"]) == lower
        assert len(x["lower_gates"]["level 1: shared"]) == 4  # 2 task experts + 2 shared
        for row in [*x["gates"].values(), *x["lower_gates"].values()]:
            assert sum(row) == pytest.approx(1.0)
    # step 1 (joint: both sources) at the initial weights: the mean over the real tokens
    # of both batches, for every gate below the top
    fresh = build()
    first = next(trainer.make_loader(zh.sources(n=48), zh.collate).iterate(0))
    sums: dict[str, torch.Tensor] = {}
    tokens = 0.0
    for batch in first.values():
        out = fresh(batch.inputs, tasks=batch.tasks)
        keep = out.mask.unsqueeze(-1).double()
        tokens += float(keep.sum())
        for name, gate in out.lower_gates.items():
            sums[name] = sums.get(name, 0) + (gate.double() * keep).sum((0, 1))
    for name, total in sums.items():
        expected = (total / tokens).tolist()
        assert lines[0]["lower_gates"][name] == pytest.approx(expected, rel=1e-5), name
    curves = Curves()
    _diagnostics(tmp_path / diag.DIAGNOSTICS_LOG, curves)
    assert sorted(curves.gates) == sorted(["ner", "sentiment", *lower])


def test_stitch_values_are_logged_for_cross_stitch(zh, tmp_path) -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=lambda: BiLSTM(vocab_size=len(zh.vocab), embed_dim=8, hidden=4, layers=2),
        heads=lambda dims: heads_for(list(zh.tasks.values()), dim=8),
        tasks=list(zh.tasks),
    )
    initial = model.alpha(1).detach().tolist()
    _fit(zh, model, tmp_path, epochs=1, max_steps=2, diagnostics_every=1, lr=0.05)
    first, second = _lines(tmp_path / diag.DIAGNOSTICS_LOG)
    assert first["stitch"] == {"1": initial}  # at the step's parameters, before its update
    assert second["stitch"]["1"] != initial and "gates" not in first


def test_the_default_samples_at_least_once_per_50_steps(zh, make_model, tmp_path) -> None:
    every = TrainerConfig().diagnostics_every
    assert every == diag.DEFAULT_EVERY == DiagnosticsSection().every
    assert 1 <= every <= 50
    for start in range(1, 301):
        assert any(diag.due(every, s) for s in range(start, start + 50)), start
    assert not any(diag.due(0, s) for s in range(1, 100))
    trainer = _fit(zh, make_model(), tmp_path, epochs=1, max_steps=3)
    assert trainer.config.diagnostics_every == every
    assert [x["step"] for x in _lines(tmp_path / diag.DIAGNOSTICS_LOG)] == [1]
    _fit(zh, make_model(), tmp_path / "off", epochs=1, max_steps=3, diagnostics_every=0)
    assert not (tmp_path / "off" / diag.DIAGNOSTICS_LOG).exists()


class _Killed(Exception):
    pass


def test_a_resumed_run_continues_the_file_and_trains_the_same(
    zh, make_model, tmp_path, monkeypatch
) -> None:
    """Killed at step 6 after sampling step 5 (checkpoint at step 3) and resumed: the file equals an
    uninterrupted run's (no step twice), and the weights equal those of runs with and
    without diagnostics (dropout on: the samples draw no random numbers)."""
    opts = dict(checkpoint_every=3, diagnostics_every=2, method="uw")
    ref_model = make_model(dropout=0.2)
    _fit(zh, ref_model, tmp_path / "ref", **opts)
    off_model = make_model(dropout=0.2)
    _fit(zh, off_model, tmp_path / "off", **(opts | {"diagnostics_every": 0}))
    assert_same_tensors(weights(ref_model), weights(off_model))
    ref_lines = (tmp_path / "ref" / diag.DIAGNOSTICS_LOG).read_text()
    steps = [x["step"] for x in _lines(tmp_path / "ref" / diag.DIAGNOSTICS_LOG)]
    assert steps == list(range(1, steps[-1] + 1, 2)) and len(steps) >= 4

    original = RunLogger.log_step

    def crash(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == 6:
            raise _Killed(step)

    monkeypatch.setattr(RunLogger, "log_step", crash)
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        _fit(zh, make_model(dropout=0.2), run, **opts)
    assert [x["step"] for x in _lines(run / diag.DIAGNOSTICS_LOG)] == [1, 3, 5]
    monkeypatch.setattr(RunLogger, "log_step", original)
    resumed = make_model(seed=9, dropout=0.2)
    _fit(zh, resumed, run, resume=True, **opts)
    assert (run / diag.DIAGNOSTICS_LOG).read_text() == ref_lines
    assert_same_tensors(weights(resumed), weights(ref_model))
