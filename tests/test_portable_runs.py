"""Portable runs (issue 15, point 5): a run directory holds everything it needs to predict —
for a transformer, its encoder's config and tokenizer files (``RUN/encoder/``, listed in
the manifest; the fine-tuned weights are in ``best/``) — and predicts the same after being
moved; ``eval`` on its own test split finds the data where the config says, seen from the
run, and otherwise names the missing file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.runs import load

ROWS = [
    {"tokens": ["the", "screen", "is", "good"], "tags": ["O", "B-ASP", "O", "O"], "label": "pos"},
    {"tokens": ["bad", "battery", "life"], "tags": ["O", "B-ASP", "I-ASP"], "label": "neg"},
] * 10
INPUTS = [["the", "battery", "is", "good"], ["bad", "screen"]]


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _project(root: Path, encoder: dict, **trainer: object) -> Path:
    """``root/data/train.jsonl`` and ``root/config.yaml``; returns the config."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), "utf-8")
    cfg = {
        "name": "portable",
        "seed": 0,
        "tasks": {
            "aspects": {"kind": "tagging", "labels": ["O", "B-ASP", "I-ASP"]},
            "sentiment": {"kind": "classification", "labels": ["pos", "neg"]},
        },
        "data": {
            "sources": {
                "reviews": {
                    "format": "jsonl",
                    "train": "data/train.jsonl",
                    "tasks": {"aspects": "tags", "sentiment": "label"},
                }
            }
        },
        "model": {"encoder": encoder},
        "trainer": {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False, **trainer},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg), "utf-8")
    return root / "config.yaml"


def _train(config: Path, out: Path) -> Path:
    result = _cli("train", config, "--out", out)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return out


def test_a_moved_project_predicts_and_evaluates_the_same(tmp_path):
    config = _project(tmp_path / "a", {"type": "cnn", "embed_dim": 8, "channels": [8]})
    run = _train(config, tmp_path / "a" / "runs" / "r")
    before = load(run, device="cpu").predict(INPUTS)
    scores = _cli("eval", run, "--json")
    assert scores.exit_code == 0, scores.stderr
    shutil.move(tmp_path / "a", tmp_path / "b")  # the project, data and run together
    moved = tmp_path / "b" / "runs" / "r"
    assert load(moved, device="cpu").predict(INPUTS) == before
    again = _cli("eval", moved, "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(scores.stdout)
    # the run alone, elsewhere: it still predicts; its own test split names the missing file
    shutil.move(moved, tmp_path / "alone")
    assert load(tmp_path / "alone", device="cpu").predict(INPUTS) == before
    missing = _cli("eval", tmp_path / "alone")
    assert missing.exit_code == 2
    assert "train.jsonl" in missing.stderr and missing.stderr.startswith("error: ")


@pytest.fixture(scope="module")
def minilm():
    transformers = pytest.importorskip("transformers")
    assert transformers
    from polytask.nn.transformer import minilm_path

    return minilm_path()


def test_a_transformer_run_carries_its_encoder_files(minilm, tmp_path, monkeypatch):
    encoder = {"type": "transformer", "path": "minilm", "layers": [1], "max_length": 32}
    config = _project(tmp_path / "p", encoder, max_steps=2, lr=0.0001)
    run = _train(config, tmp_path / "run")
    copied = sorted(p.name for p in (run / "encoder").iterdir())
    assert "config.json" in copied and any(
        n.startswith("tokenizer") or n == "vocab.txt" for n in copied
    )
    assert not any(n.endswith((".safetensors", ".bin")) for n in copied)  # weights: in best/
    manifest = json.loads((run / "manifest.json").read_text("utf-8"))
    assert {f"encoder/{n}" for n in copied} <= set(manifest["files"])
    before = load(run, device="cpu").predict(INPUTS)
    shutil.move(run, tmp_path / "moved")

    def gone() -> str:
        raise AssertionError("the original encoder folder was read")

    monkeypatch.setattr("polytask.nn.transformer.minilm_path", gone)
    after = load(tmp_path / "moved", device="cpu").predict(INPUTS)
    assert after == before
    # an edited encoder file is caught like any other file of the run
    path = tmp_path / "moved" / "encoder" / "config.json"
    path.write_text(path.read_text("utf-8").replace("}", ', "x": 1}', 1), "utf-8")
    result = _cli("predict", tmp_path / "moved", tmp_path / "p" / "data" / "train.jsonl")
    assert result.exit_code == 2 and "encoder/config.json" in result.stderr
