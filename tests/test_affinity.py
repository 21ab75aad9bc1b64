"""Task affinity and grouping end to end (issue 14, points 2 and 3): ``polytask affinity``
trains the joint model and records Z[i][j] = 1 − L_j(θ − η∇L_i) / L_j(θ); on a synthetic
problem with two clusters of mutually helpful tasks that conflict across clusters (a
shared one-unit bottleneck: cluster A wants it to carry w·x, cluster B v·x, w ⊥ v),
``polytask group --groups 2`` returns the two clusters, and a task's affinity with an
exact duplicate of itself is the largest off-diagonal entry of its row. The lookahead
leaves training untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from polytask.analysis.affinity import AffinityRecorder
from polytask.cli import app

TASKS = ["a1", "a1copy", "a2", "b1", "b2", "b3"]
COLUMN = {"a1": "ya1", "a1copy": "ya1", "a2": "ya2", "b1": "yb1", "b2": "yb2", "b3": "yb3"}


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _project(tmp: Path, n: int = 512) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6))
    w = np.array([1.0, 1.0, 0, 0, 0, 0])
    v = np.array([0, 0, 1.0, -1.0, 0, 0])
    columns = {
        "ya1": x @ w + 0.1 * rng.normal(size=n),
        "ya2": 0.8 * (x @ w) + 0.1 * rng.normal(size=n),
        "yb1": x @ v + 0.1 * rng.normal(size=n),
        "yb2": 0.8 * (x @ v) + 0.1 * rng.normal(size=n),
        "yb3": 1.2 * (x @ v) + 0.1 * rng.normal(size=n),
    }
    header = [f"f{i}" for i in range(6)] + list(columns)
    rows = [
        ",".join(f"{v:.5f}" for v in [*x[r], *(c[r] for c in columns.values())]) for r in range(n)
    ]
    (tmp / "data.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n", "utf-8")
    cfg = {
        "name": "clusters",
        "seed": 0,
        "tasks": {t: {"kind": "regression"} for t in TASKS},
        "data": {
            "sources": {
                "synthetic": {
                    "format": "csv",
                    "train": "data.csv",
                    "tasks": COLUMN,
                    "options": {"feature_columns": [f"f{i}" for i in range(6)]},
                }
            },
            "val_fraction": 0.1,
            "test_fraction": 0.1,
        },
        "model": {"encoder": {"type": "mlp", "hidden": [1], "activation": "tanh"}},  # bottleneck
        "balancing": {"method": "mean"},
        "trainer": {
            "epochs": 8,
            "batch_size": 32,
            "lr": 0.05,
            "optimizer": "sgd",
            "threads": 1,
            "progress": False,
        },
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg), "utf-8")
    return tmp / "config.yaml"


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("affinity")
    result = _cli("affinity", _project(tmp), "--out", tmp / "run", "--every", 2)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "task affinity" in result.stdout
    return tmp / "run"


def test_affinity_json_holds_the_matrix(measured):
    data = json.loads((measured / "affinity.json").read_text("utf-8"))
    assert data["tasks"] == TASKS and data["samples"] > 5
    z = np.array(data["matrix"], dtype=float)
    assert z.shape == (6, 6) and np.isfinite(z).all()
    manifest = json.loads((measured / "manifest.json").read_text("utf-8"))
    assert "affinity.json" in manifest["files"]


def test_a_duplicate_task_has_the_largest_affinity_in_its_row(measured):
    z = np.array(json.loads((measured / "affinity.json").read_text("utf-8"))["matrix"])
    i, j = TASKS.index("a1"), TASKS.index("a1copy")
    off = [z[i, k] for k in range(6) if k != i]
    assert z[i, j] == max(off)
    assert z[j, i] == max(z[j, k] for k in range(6) if k != j)


@pytest.mark.parametrize("partition", [False, True])
def test_group_returns_the_two_clusters(measured, partition):
    args = ["group", measured, "--groups", 2, "--json"] + (["--partition"] if partition else [])
    result = _cli(*args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    best = json.loads(result.stdout)[0]
    assert sorted(map(sorted, best["groups"])) == [sorted(TASKS[:3]), sorted(TASKS[3:])]
    text = _cli("group", measured, "--groups", 2)
    assert text.stdout.startswith("1. score ")


def test_group_of_a_run_without_affinity_is_one_line(tmp_path):
    result = _cli("group", tmp_path)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {tmp_path}: holds no")


def test_the_lookahead_restores_the_parameters_exactly():
    torch.manual_seed(0)
    shared = torch.nn.Linear(3, 1)
    heads = {t: torch.nn.Linear(1, 1) for t in ("a", "b")}
    x, y = torch.randn(8, 3), torch.randn(8)

    def losses() -> dict[str, torch.Tensor]:
        h = shared(x)
        return {t: ((head(h).squeeze(1) - y) ** 2).mean() for t, head in heads.items()}

    before = [p.detach().clone() for p in shared.parameters()]
    recorder = AffinityRecorder(["a", "b"], every=1)
    recorder.lr = 0.1
    current = losses()
    recorder.record(current, list(shared.parameters()), losses)
    assert all(torch.equal(p, b) for p, b in zip(shared.parameters(), before))
    # Z[a][a] by hand: one SGD step on the shared layer along a's gradient
    grads = torch.autograd.grad(current["a"], list(shared.parameters()), retain_graph=True)
    with torch.no_grad():
        for p, g in zip(shared.parameters(), grads):
            p.sub_(0.1 * g)
        expected = 1 - float(losses()["a"]) / float(current["a"])
    assert recorder.matrix()[0][0] == pytest.approx(expected, rel=1e-6)


def test_group_train_compares_the_grouping_with_all_in_one(measured, tmp_path):
    out = tmp_path / "grouping"
    result = _cli(
        "group",
        measured,
        "--groups",
        2,
        "--train",
        "--seeds",
        2,
        "--out",
        out,
        "--set",
        "trainer.epochs=4",
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads((out / "grouping.json").read_text("utf-8"))
    assert sorted(map(sorted, data["groups"])) == [sorted(TASKS[:3]), sorted(TASKS[3:])]
    assert data["seeds"] == [0, 1] and len(data["delta_m_per_seed"]["grouped"]) == 2
    # one bottleneck for both clusters cannot serve them: the grouping beats all-in-one
    assert data["delta_m"]["grouped"] > data["delta_m"]["all_in_one"] + 5
    assert (out / "all" / "compare.json").is_file() and (out / "group0" / "compare.json").is_file()
    assert "Δm: grouped" in result.stdout
    # its report: the proposal, every task three ways and both Δm, as in grouping.json
    report = _cli("report", out, "--out", tmp_path / "grouping.html")
    assert report.exit_code == 0, (report.stderr, report.exception)
    page = (tmp_path / "grouping.html").read_text("utf-8")
    cells = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', page))
    for task, values in data["per_task"].items():
        for side in ("stl", "all", "grouped"):
            assert float(cells[f"grouping.per_task.{task}.{side}"]) == values[side]
    assert float(cells["grouping.delta_m.grouped"]) == data["delta_m"]["grouped"]
    assert float(cells["grouping.delta_m.all_in_one"]) == data["delta_m"]["all_in_one"]
    assert float(cells["grouping.headline.0"]) == data["delta_m"]["grouped"]
    assert (tmp_path / "grouping_files" / "d0_grouping.png").read_bytes().startswith(b"\x89PNG")


def test_restrict_config_keeps_only_the_groups_tasks():
    from polytask.runs.grouped import restrict_config

    raw = {
        "name": "x",
        "tasks": {
            "a": {"kind": "classification"},
            "b": {"kind": "tagging"},
            "c": {"kind": "regression"},
        },
        "data": {
            "sources": {
                "s1": {"format": "jsonl", "train": "1.jsonl", "tasks": {"a": "y", "b": "tags"}},
                "s2": {"format": "jsonl", "train": "2.jsonl", "tasks": {"c": "z"}},
            }
        },
        "model": {"encoder": {"type": "cnn"}, "taps": {"a": 2, "b": 1, "c": 2}},
        "balancing": {"method": "fixed", "weights": {"a": 1.0, "b": 0.3, "c": 2.0}},
        "trainer": {"criterion": "c", "baselines": {"c": 1.0}},
    }
    sub = restrict_config(raw, ["a", "b"])
    assert list(sub["tasks"]) == ["a", "b"] and list(sub["data"]["sources"]) == ["s1"]
    assert sub["model"]["taps"] == {"a": 2, "b": 1}
    assert sub["balancing"]["weights"] == {"a": 1.0, "b": 0.3}
    assert "criterion" not in sub["trainer"] and sub["trainer"]["baselines"] == {}
    assert sub["name"] == "x-a+b" and raw["model"]["taps"]["c"] == 2  # the original is kept


def test_affinity_with_a_deep_trunk_trains_as_plain_training(tmp_path):
    """A trunk of two layers saves its weights for the backward pass: the lookahead, which
    moves them in place, runs after that pass, and training is the same as without it."""
    config = _project(tmp_path, n=128)
    cfg = yaml.safe_load(config.read_text("utf-8"))
    cfg["model"]["encoder"]["hidden"] = [4, 3]
    cfg["trainer"]["epochs"] = 1
    config.write_text(yaml.safe_dump(cfg), "utf-8")
    result = _cli("affinity", config, "--out", tmp_path / "aff", "--every", 1)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert _cli("train", config, "--out", tmp_path / "plain").exit_code == 0
    [with_affinity, plain] = [
        load_file(str(tmp_path / run / "best" / "tensors.safetensors")) for run in ("aff", "plain")
    ]
    assert with_affinity.keys() == plain.keys()
    assert all(torch.equal(with_affinity[k], plain[k]) for k in plain)
    data = json.loads((tmp_path / "aff" / "affinity.json").read_text("utf-8"))
    assert data["samples"] > 0
