"""The plugin demonstration: a user's balancing method, architecture, data format and task
kind, each one module in ``tests/plugins/``, named in a config only by import path and
trained by ``polytask train``, then evaluated by ``polytask eval`` (which resolves them again).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.runs import load

TESTS = Path(__file__).resolve().parent

NOUNS = {"tech": ["screen", "battery", "keyboard"], "food": ["pasta", "soup", "bread"]}
ADJECTIVES = {"yes": ["good", "great", "fine"], "no": ["bad", "awful", "slow"]}


def bar_lines(n: int) -> str:
    """``liked | topic | text`` lines (``BarLines``); every seventh row misses its ``liked``."""
    lines = []
    for i in range(n):
        topic, liked = ("tech", "food")[i % 2], ("yes", "no")[(i // 2) % 2]
        noun, adjective = NOUNS[topic][i % 3], ADJECTIVES[liked][(i // 4) % 3]
        lines.append(f"{'-' if i % 7 == 0 else liked} | {topic} | The {noun} is {adjective}")
    return "\n".join(lines) + "\n"


def plugin_config(tmp: Path) -> Path:
    (tmp / "lines.txt").write_text(bar_lines(60), encoding="utf-8")
    cfg = {
        "name": "plugins",
        "seed": 0,
        "tasks": {"liked": {"kind": "plugins.yes_no:YesNo"}, "topic": {"kind": "classification"}},
        "data": {
            "sources": {
                "lines": {
                    "format": "plugins.bar_format:BarLines",
                    "train": "lines.txt",
                    "tasks": {"liked": 0, "topic": 1},
                    "options": {"lowercase": True},
                }
            }
        },
        "model": {
            "encoder": {"type": "bilstm", "embed_dim": 8, "hidden": 8, "layers": 1},
            "sharing": "plugins.gated:Gated",
        },
        "balancing": {"method": "plugins.inverse_loss:InverseLoss"},
        "trainer": {"epochs": 2, "batch_size": 8, "lr": 0.01, "threads": 1, "progress": False},
    }
    path = tmp / "plugins.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture
def plugins_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tests/`` on ``sys.path`` (pytest puts it there too) so ``plugins.*`` imports."""
    monkeypatch.syspath_prepend(str(TESTS))


def test_plugins_named_by_import_path_train_and_evaluate(
    tmp_path: Path, plugins_importable: None
) -> None:
    from plugins import inverse_loss
    from plugins.gated import Gated

    inverse_loss.BUILT.clear()
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(plugin_config(tmp_path)), "--out", str(run_dir), "--json"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))

    # the task kind: its own metric is what the run reports for its task
    assert set(results["test"]["liked"]) == {"agreement"}
    assert 0.0 <= results["test"]["liked"]["agreement"] <= 1.0
    assert "accuracy" in results["test"]["topic"]
    # the method: every step's update came from its weights λ_i = 1 / L_i
    [method] = inverse_loss.BUILT
    assert len(method.history) == results["steps"] > 0
    assert all(w > 0 and math.isfinite(w) for step in method.history for w in step.values())
    assert {t for step in method.history for t in step} == {"liked", "topic"}
    # the architecture: the run holds a Gated model whose own parameters (the gates) trained
    run = load(run_dir)
    assert isinstance(run.model, Gated)
    assert all(gate.abs().max() > 0 for gate in run.model.gates.values())
    # the data format: `polytask eval` reads the test split again through it
    evaluated = CliRunner().invoke(app, ["eval", str(run_dir), "--json"])
    assert evaluated.exit_code == 0, (evaluated.stdout, evaluated.stderr, evaluated.exception)
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == set(results["test"])
    for task, values in metrics.items():
        assert values == pytest.approx(results["test"][task])


def test_the_plugin_format_checks_its_own_field_mapping(
    tmp_path: Path, plugins_importable: None
) -> None:
    config = plugin_config(tmp_path)
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["data"]["sources"]["lines"]["tasks"]["topic"] = "topic"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: data.sources.lines.tasks.topic: a bar-lines source "
        "names columns by index, got 'topic'; fix: "
    )
