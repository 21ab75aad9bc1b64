"""``polytask compare``: STL vs MTL on the same data, budget and split; Δm and its CI.

Two sources of different sizes (snownlp reviews for sentiment, People's Daily for NER)
under a temperature sampler, so the task mix of the MTL budget is not proportional to the
data: the single-task budget must follow the sampler the MTL run used.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.evaluation.table import comparison_markdown
from polytask.runs import summarise

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("snownlp") is None and os.environ.get("CI") != "true",
    reason="snownlp not installed (pip install polytask[zh])",
)

PRIMARY = {
    "sentiment": "accuracy",
    "ner": "token_accuracy",
}  # token accuracy: an untrained tagger's F1 is 0

CONFIG = {
    "name": "cmp",
    "seed": 0,
    "tasks": {
        "sentiment": {"kind": "classification", "labels": ["neg", "pos"]},
        "ner": {"kind": "tagging", "primary_metric": "token_accuracy"},
    },
    "data": {
        "tokenizer": "chars",
        "max_length": 50,
        "sources": {
            "reviews": {
                "format": "snownlp_sentiment",
                "limit": 300,
                "tasks": {"sentiment": "sentiment"},
            },
            "news": {"format": "snownlp_ner", "limit": 80, "tasks": {"ner": "ner"}},
        },
    },
    "model": {
        "encoder": {"type": "bilstm", "embed_dim": 16, "hidden": 16, "layers": 2},
        "sharing": "hierarchical",
        "taps": {"ner": 1, "sentiment": 2},
    },
    "sampler": {"type": "temperature", "T": 4.0},
    "trainer": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False},
}


def _compare(tmp: Path, seeds: int) -> tuple[dict, dict, Path]:
    config = tmp / "cmp.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    out = tmp / "out"
    result = CliRunner().invoke(
        app, ["compare", str(config), "--seeds", str(seeds), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0]), json.loads((out / "compare.json").read_text(encoding="utf-8")), out


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    return _compare(tmp_path_factory.mktemp("cmp1"), 1)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    return _compare(tmp_path_factory.mktemp("cmp2"), 2)


def _dm(mtl: dict, stl: dict) -> float:
    """Δm by hand: every primary metric here is higher-is-better."""
    return 100 * sum((mtl[t][m] - stl[t][m]) / stl[t][m] for t, m in PRIMARY.items()) / len(PRIMARY)


def test_json_shape_and_delta_m(one_seed):
    printed, summary, _ = one_seed
    assert set(printed) == {"stl", "mtl", "delta_m"}  # no ci95 with one seed
    assert summary["primary"] == PRIMARY
    for side in ("stl", "mtl"):
        assert set(printed[side]) == {"sentiment", "ner"}
        assert set(printed[side]["sentiment"]) == {"accuracy", "macro_f1"}
        assert set(printed[side]["ner"]) == {"precision", "recall", "f1", "token_accuracy"}
        assert all(0.0 <= v <= 1.0 for ms in printed[side].values() for v in ms.values())
    assert printed["delta_m"] == pytest.approx(
        _dm(printed["mtl"], printed["stl"]), rel=1e-12, abs=1e-12
    )
    assert summary["delta_m_per_seed"] == [pytest.approx(printed["delta_m"])]


def test_mtl_test_metrics_are_the_mtl_run_results(one_seed):
    printed, _, out = one_seed
    results = json.loads((out / "seed0" / "mtl" / "results.json").read_text(encoding="utf-8"))
    assert printed["mtl"] == results["test"]


def test_markdown_table(one_seed):
    printed, summary, out = one_seed
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert md == comparison_markdown(summary)
    assert "| task | metric | STL | MTL | better |" in md
    for t, metrics in printed["stl"].items():
        for m, v in metrics.items():
            mark = "*" if PRIMARY[t] == m else ""
            assert f"| {t} | {m}{mark} | {v:.4f} | {printed['mtl'][t][m]:.4f} | higher |" in md
    assert f"**Δm = {printed['delta_m']:+.2f} %**" in md
    assert (
        f"| parameters | {summary['cost']['mtl_parameters']:,} | "
        f"{summary['cost']['stl_parameters']:,} |" in md
    )


def _last_step(metrics_csv: Path) -> int:
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        return max(int(row["step"]) for row in csv.DictReader(f))


def test_stl_gets_the_mtl_step_budget_of_its_task(one_seed):
    _, summary, out = one_seed
    mtl_results = json.loads((out / "seed0" / "mtl" / "results.json").read_text(encoding="utf-8"))
    cost = summary["per_seed"][0]["cost"]
    # every MTL batch of a source labels its task and nothing stops early: the MTL task steps are
    # the budget
    assert cost["mtl_task_steps"] == mtl_results["task_steps"]
    assert sum(mtl_results["task_steps"].values()) == mtl_results["steps"]
    assert cost["stl_task_steps"] == cost["mtl_task_steps"]
    runs = summary["per_seed"][0]["stl_runs"]
    for t, steps in cost["mtl_task_steps"].items():
        assert _last_step(Path(runs[t]["directory"]) / "metrics.csv") == steps
    # parameter counts are counts
    assert isinstance(summary["cost"]["mtl_parameters"], int) and isinstance(
        summary["cost"]["stl_parameters"], int
    )
    assert summary["cost"]["stl_parameters"] > summary["cost"]["mtl_parameters"]


def _compare_again(config: Path, out: Path, baselines: Path, *overrides: str):
    args = ["compare", str(config), "--out", str(out), "--baselines", str(baselines), "--json"]
    for o in overrides:
        args += ["--set", o]
    return CliRunner().invoke(app, args)


def test_baselines_are_reused_across_balancing_methods(one_seed, tmp_path, monkeypatch):
    """Single-task models do not depend on the balancing method: a comparison with another
    method (or other loss weights) reads them back instead of training them again."""
    import polytask.runs.baselines as baselines

    _, summary, out = one_seed
    store = out.parent / "baselines"
    assert sorted(p.name.split("-")[0] for p in store.iterdir()) == ["ner", "sentiment"]

    def no_training(*args, **kwargs):
        raise AssertionError("a single-task baseline was trained again")

    monkeypatch.setattr(baselines, "Trainer", no_training)
    for i, overrides in enumerate(
        [("balancing={method: uw}",), ("balancing={method: fixed, weights: {ner: 0.1}}",)]
    ):
        result = _compare_again(out.parent / "cmp.yaml", tmp_path / f"o{i}", store, *overrides)
        assert result.exit_code == 0, (result.stdout, result.exception)
        again = json.loads((tmp_path / f"o{i}" / "compare.json").read_text(encoding="utf-8"))
        seed = again["per_seed"][0]
        assert seed["stl"] == summary["per_seed"][0]["stl"]
        assert all(r["reused"] for r in seed["stl_runs"].values())
        assert seed["mtl"] != summary["per_seed"][0]["mtl"]  # the MTL model did change


def test_a_baseline_is_trained_again_when_what_it_depends_on_changes(one_seed, tmp_path):
    _, summary, out = one_seed
    store = out.parent / "baselines"
    result = _compare_again(out.parent / "cmp.yaml", tmp_path / "o", store, "trainer.lr=0.01")
    assert result.exit_code == 0, (result.stdout, result.exception)
    seed = json.loads((tmp_path / "o" / "compare.json").read_text(encoding="utf-8"))["per_seed"][0]
    assert not any(r["reused"] for r in seed["stl_runs"].values())
    old = summary["per_seed"][0]["stl_runs"]
    assert all(seed["stl_runs"][t]["directory"] != old[t]["directory"] for t in old)
    assert not list(store.glob(".partial-*"))  # trained in place, then renamed


def test_a_finished_comparison_is_refused_without_resume_or_overwrite(one_seed):
    _, _, out = one_seed
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["compare", str(out.parent / "cmp.yaml"), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith("error: --out:") and "--overwrite" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_killed_comparisons_partial_baseline_is_removed(one_seed, tmp_path):
    """A ``.partial-*-<pid>`` directory whose process is gone is removed by the next
    comparison that trains into the store; a live process's is kept."""
    import os
    import subprocess

    _, _, out = one_seed
    store = tmp_path / "store"
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = store / f".partial-ner-0123456789abcdef-{gone.pid}"
    live = store / f".partial-ner-0123456789abcdef-{os.getppid()}"
    for d in (stale, live):
        (d / "best").mkdir(parents=True)
    result = _compare_again(out.parent / "cmp.yaml", tmp_path / "o", store)
    assert result.exit_code == 0, (result.stdout, result.exception)
    assert not stale.exists() and live.exists()
    assert sorted(p.name.split("-")[0] for p in store.iterdir() if p.is_dir()) == [
        ".partial",
        "ner",
        "sentiment",
    ]


def test_a_corrupt_baseline_is_named_with_the_fix(one_seed, tmp_path):
    import shutil

    _, summary, out = one_seed
    store = tmp_path / "store"
    shutil.copytree(out.parent / "baselines", store)
    entry = Path(summary["per_seed"][0]["stl_runs"]["ner"]["directory"]).name
    (store / entry / "baseline.json").write_text("{not json", encoding="utf-8")
    result = _compare_again(out.parent / "cmp.yaml", tmp_path / "o", store)
    assert result.exit_code != 0
    assert "--baselines" in result.output and "delete" in result.output
    assert entry in result.output


def test_two_seeds_ci(two_seeds):
    printed, summary, out = two_seeds
    assert set(printed) == {"stl", "mtl", "delta_m", "ci95"}
    assert summary["seeds"] == [0, 1]
    per_seed = [_dm(s["mtl"], s["stl"]) for s in summary["per_seed"]]
    assert summary["delta_m_per_seed"] == pytest.approx(per_seed)
    mean = sum(per_seed) / 2
    half = (
        12.706205 * abs(per_seed[0] - per_seed[1]) / 2
    )  # t_{0.975,1} · s / √2 with s = |d1 − d2| / √2
    lo, hi = printed["ci95"]
    assert (lo, hi) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert lo <= mean <= hi
    assert summary["delta_m_paired_mean"] == pytest.approx(mean)
    # Δm of the mean metrics
    assert printed["delta_m"] == pytest.approx(_dm(printed["mtl"], printed["stl"]))
    for t, m in PRIMARY.items():
        assert printed["stl"][t][m] == pytest.approx(
            sum(s["stl"][t][m] for s in summary["per_seed"]) / 2
        )
    for s in summary["per_seed"]:
        assert s["cost"]["stl_task_steps"] == s["cost"]["mtl_task_steps"]
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert f"paired 95% CI over seeds [{lo:+.2f}, {hi:+.2f}]" in md
    assert "±" in md
    assert (out / "seed1" / "mtl" / "best").is_dir()


def test_summarise_hand_computed():
    """acc 0.9 vs 0.8 (+12.5 %), mae 0.5 vs 0.4 (lower is better: −25 %) -> Δm −6.25 %."""
    kinds = {
        "cls": SimpleNamespace(higher_is_better=lambda m: m != "mae"),
        "reg": SimpleNamespace(higher_is_better=lambda m: m != "mae"),
    }
    exp = SimpleNamespace(tasks={t: SimpleNamespace(kind=k) for t, k in kinds.items()})
    cost = {
        "mtl_parameters": 10,
        "stl_parameters": 20,
        "mtl_train_seconds": 1.0,
        "stl_train_seconds": 2.0,
        "mtl_infer_seconds": 0.1,
        "stl_infer_seconds": 0.2,
        "mtl_task_steps": {"cls": 3, "reg": 3},
        "stl_task_steps": {"cls": 3, "reg": 3},
    }
    prim, hib = {"cls": "acc", "reg": "mae"}, {"cls": True, "reg": False}
    seed0 = {
        "seed": 0,
        "mtl": {"cls": {"acc": 0.9}, "reg": {"mae": 0.5}},
        "stl": {"cls": {"acc": 0.8}, "reg": {"mae": 0.4}},
        "delta_m": -6.25,
        "cost": cost,
    }
    one = summarise("toy", [seed0], prim, hib, exp)
    assert one["delta_m"] == pytest.approx(-6.25)
    assert "ci95" not in one and one["cost"] == cost
    md = comparison_markdown(one)
    assert "**Δm = -6.25 %**" in md
    assert "| reg | mae* | 0.4000 | 0.5000 | lower |" in md
    assert "| parameters | 10 | 20 |" in md
    # a second seed with MTL acc 0.8 vs 0.8 (0 %), mae 0.4 vs 0.4 (0 %): Δm_1 = 0
    seed1 = {
        "seed": 1,
        "mtl": {"cls": {"acc": 0.8}, "reg": {"mae": 0.4}},
        "stl": {"cls": {"acc": 0.8}, "reg": {"mae": 0.4}},
        "delta_m": 0.0,
        "cost": dict(cost, mtl_train_seconds=3.0),
    }
    two = summarise("toy", [seed0, seed1], prim, hib, exp)
    # Δm of the means: acc 0.85 vs 0.8 (+6.25 %), mae 0.45 vs 0.4 (−12.5 %)
    assert two["delta_m"] == pytest.approx(-3.125)
    assert two["delta_m_paired_mean"] == pytest.approx(-3.125)
    half = 12.706205 * 6.25 / 2
    assert two["ci95"] == [pytest.approx(-3.125 - half), pytest.approx(-3.125 + half)]
    assert two["std"]["mtl"]["cls"]["acc"] == pytest.approx(0.1 / math.sqrt(2))
    assert (
        two["cost"]["mtl_train_seconds"] == pytest.approx(2.0)
        and two["cost"]["mtl_parameters"] == 10
    )
    assert "0.8500 ± 0.0707" in comparison_markdown(two)


def test_resume_reads_finished_seeds_back_without_training(two_seeds, monkeypatch):
    """An interrupted comparison resumes: finished seeds are read back (no training), and
    the summary equals the one of the uninterrupted run."""
    import polytask.runs.comparison as comparison

    _, summary, out = two_seeds
    config = out.parent / "cmp.yaml"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(comparison, "train", no_training)
    result = CliRunner().invoke(
        app, ["compare", str(config), "--seeds", "2", "--out", str(out), "--json", "--resume"]
    )
    assert result.exit_code == 0, (result.stdout, result.exception)
    resumed = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert resumed["per_seed"] == summary["per_seed"]
    assert resumed["delta_m"] == summary["delta_m"] and resumed["ci95"] == summary["ci95"]


def test_resume_refuses_seeds_of_another_configuration(two_seeds, tmp_path):
    _, _, out = two_seeds
    changed = dict(CONFIG, trainer=dict(CONFIG["trainer"], lr=0.5))
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(changed), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["compare", str(config), "--seeds", "2", "--out", str(out), "--resume"]
    )
    assert result.exit_code != 0
    assert "--resume" in result.output and "different configuration" in result.output


def test_resume_trains_only_the_seed_that_was_interrupted(two_seeds, tmp_path, monkeypatch):
    """A seed killed mid-way (its directory there, its result not) is trained again, into its
    old directory; the finished seed is read back."""
    import shutil

    import polytask.runs.comparison as runs

    _, summary, out = two_seeds
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "seed1" / runs.SEED_RESULT).unlink()
    trained = []
    real_train = runs.train

    def counting_train(cfg, *args, **kwargs):
        trained.append(cfg.seed)
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(runs, "train", counting_train)
    result = CliRunner().invoke(
        app,
        [
            "compare",
            str(out.parent / "cmp.yaml"),
            "--seeds",
            "2",
            "--out",
            str(copy),
            "--json",
            "--resume",
        ],
    )
    assert result.exit_code == 0, (result.stdout, result.exception)
    assert trained == [1]
    resumed = json.loads((copy / "compare.json").read_text(encoding="utf-8"))
    assert resumed["per_seed"][0] == summary["per_seed"][0]
    assert resumed["seeds"] == [0, 1] and (copy / "seed1" / runs.SEED_RESULT).exists()
