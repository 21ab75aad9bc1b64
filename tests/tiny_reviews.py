"""A tiny review project for command-line tests: four labelled sentences (aspect tags and a
sentiment label), a config over them with a small CNN, and the CLI helpers the tests share
(run a command in process; check the one-line error of a refused one)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from polytask.cli import app

TAGS = ["O", "B-ASP", "I-ASP"]
ROWS: list[dict[str, Any]] = [
    {"tokens": ["the", "screen", "is", "good"], "tags": ["O", "B-ASP", "O", "O"], "label": "pos"},
    {"tokens": ["bad", "battery", "life"], "tags": ["O", "B-ASP", "I-ASP"], "label": "neg"},
    {"tokens": ["fast", "and", "light"], "tags": ["O", "O", "O"], "label": "pos"},
    {"tokens": ["the", "keyboard", "broke"], "tags": ["O", "B-ASP", "O"], "label": "neg"},
] * 6
CONFIG: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "tasks": {
        "aspects": {"kind": "tagging", "labels": TAGS},
        "sentiment": {"kind": "classification"},
    },
    "data": {
        "sources": {
            "reviews": {
                "format": "jsonl",
                "train": "train.jsonl",
                "tasks": {"aspects": "tags", "sentiment": "label"},
            }
        }
    },
    "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
    "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.02, "threads": 1, "progress": False},
}


def write_project(
    folder: Path,
    rows: list[dict[str, Any]] = ROWS,
    *,
    trainer: dict[str, Any] | None = None,
    **top: Any,
) -> Path:
    """``folder/train.jsonl`` of ``rows`` and ``folder/config.yaml`` (CONFIG with ``top``-level
    keys replaced and ``trainer`` options added); returns the config's path."""
    (folder / "train.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8"
    )
    cfg = copy.deepcopy(CONFIG)
    cfg.update(copy.deepcopy(top))
    cfg["trainer"].update(trainer or {})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
    return path


def cli(*args: object) -> Any:
    """``polytask ARGS`` in process (arguments turned to strings)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result: Any, field: str) -> str:
    """The refused command's one line ``error: FIELD: ...`` (exit 2); returns the rest."""
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {field}: "), line
    return line.removeprefix(f"error: {field}: ")
