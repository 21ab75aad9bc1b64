"""One tokenizer from training to prediction (issue 15, point 4): a run records how each
source split raw text, and ``predict`` / ``load().predict()`` split raw text the same way;
sources that split differently make raw text an explicit choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from shared_data import TRAIN_XML, require_data
from typer.testing import CliRunner

from polytask.cli import app
from polytask.data.semeval import parse_semeval2014, tokenize_with_offsets
from polytask.data.tokenizers import choose, tokenize_with
from polytask.runs import load

SENTENCE = "Great screen, awful battery!"
ROWS = [
    {"text": "the screen is good", "label": "pos"},
    {"text": "bad battery life", "label": "neg"},
] * 10


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _config(tmp: Path, sources: dict, tasks: dict) -> Path:
    cfg = {
        "name": "tok",
        "seed": 0,
        "tasks": tasks,
        "data": {"sources": sources, "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
        "trainer": {"epochs": 1, "max_steps": 2, "batch_size": 8, "threads": 1, "progress": False},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), "utf-8")
    return path


def _train(config: Path, out: Path) -> Path:
    result = _cli("train", config, "--out", out)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return out


def _semeval_source(limit: int = 40) -> dict:
    path = require_data(TRAIN_XML)
    return {
        "format": "semeval2014",
        "train": str(path),
        "limit": limit,
        "tasks": {"aspects": "aspects"},
    }


def test_the_tokenizers():
    assert tokenize_with("whitespace", SENTENCE) == ["Great", "screen,", "awful", "battery!"]
    assert tokenize_with("words", SENTENCE) == ["Great", "screen", ",", "awful", "battery", "!"]
    assert tokenize_with("chars", "好 用") == ["好", "用"]
    assert choose({"a": "words", "b": "pretokenized"}, "whitespace") == "words"
    assert choose({"a": "pretokenized"}, "whitespace") == "whitespace"
    assert choose({}, "chars") == "chars"  # a run trained before tokenizers were recorded
    assert choose({"a": "words", "b": "whitespace"}, "whitespace") is None


def test_words_is_the_semeval_readers_tokenizer():
    sentences, _ = parse_semeval2014(require_data(TRAIN_XML))
    for s in sentences[:200]:
        plain = [t for t, _, _ in tokenize_with_offsets(s.text)]
        assert tokenize_with("words", s.text) == plain


def test_predict_splits_raw_text_as_the_semeval_source_did(tmp_path):
    tasks = {"aspects": {"kind": "tagging", "labels": ["O", "B-ASP", "I-ASP"]}}
    run = _train(_config(tmp_path, {"laptops": _semeval_source()}, tasks), tmp_path / "run")
    assert json.loads((run / "run.json").read_text("utf-8"))["tokenizers"] == {"laptops": "words"}
    (tmp_path / "in.txt").write_text(SENTENCE + "\n", "utf-8")
    result = _cli("predict", run, tmp_path / "in.txt")
    assert result.exit_code == 0, result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(row["aspects"]["tags"]) == 6  # "screen" and "," apart, as in training
    loaded = load(run, device="cpu")
    assert loaded.to_examples([SENTENCE])[0].inputs["tokens"] == tokenize_with("words", SENTENCE)


def test_sources_split_differently_make_raw_text_a_choice(tmp_path):
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), "utf-8")
    sources = {
        "laptops": _semeval_source(),
        "reviews": {"format": "jsonl", "train": "reviews.jsonl", "tasks": {"sentiment": "label"}},
    }
    tasks = {
        "aspects": {"kind": "tagging", "labels": ["O", "B-ASP", "I-ASP"]},
        "sentiment": {"kind": "classification", "labels": ["pos", "neg"]},
    }
    run = _train(_config(tmp_path, sources, tasks), tmp_path / "run")
    recorded = json.loads((run / "run.json").read_text("utf-8"))["tokenizers"]
    assert recorded == {"laptops": "words", "reviews": "whitespace"}
    (tmp_path / "in.txt").write_text(SENTENCE + "\n", "utf-8")
    refused = _cli("predict", run, tmp_path / "in.txt")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: --tokenizer: the run's sources split raw text")
    chosen = _cli("predict", run, tmp_path / "in.txt", "--tokenizer", "words")
    assert chosen.exit_code == 0, chosen.stderr
    assert len(json.loads(chosen.stdout)["aspects"]["tags"]) == 6
    (tmp_path / "in.jsonl").write_text(json.dumps({"tokens": ["great", "screen"]}) + "\n", "utf-8")
    assert _cli("predict", run, tmp_path / "in.jsonl").exit_code == 0  # tokens need no choice
    bad = _cli("predict", run, tmp_path / "in.txt", "--tokenizer", "spaces")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --tokenizer: unknown tokenizer")


@pytest.mark.parametrize("lines, expected", [(True, "pretokenized"), (False, "whitespace")])
def test_a_jsonl_source_of_token_lists_is_pretokenized(tmp_path, lines, expected):
    rows = [
        {
            ("tokens" if lines else "text"): (r["text"].split() if lines else r["text"]),
            "label": r["label"],
        }
        for r in ROWS
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    sources = {"r": {"format": "jsonl", "train": "r.jsonl", "tasks": {"sentiment": "label"}}}
    tasks = {"sentiment": {"kind": "classification", "labels": ["pos", "neg"]}}
    run = _train(_config(tmp_path, sources, tasks), tmp_path / "run")
    assert json.loads((run / "run.json").read_text("utf-8"))["tokenizers"] == {"r": expected}
