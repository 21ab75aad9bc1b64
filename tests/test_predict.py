"""``polytask predict RUN INPUT`` (text, JSONL, CSV) and ``polytask.load(RUN).predict``."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from shared_data import TRAIN_XML, laptop_rows
from typer.testing import CliRunner

import polytask
import polytask.runs.prediction
from polytask.cli import app

TAGS = ["O", "B-ASP", "I-ASP"]


def _rows(n: int) -> list[dict]:
    return laptop_rows(TRAIN_XML, n)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    rows = _rows(200)
    (tmp / "train.jsonl").write_text(
        "".join(
            json.dumps({k: r[k] for k in ("tokens", "tags", "sentiment")}) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    cfg = {
        "name": "predict",
        "tasks": {
            "aspects": {"kind": "tagging", "labels": TAGS},
            "sentiment": {"kind": "classification"},
        },
        "data": {
            "sources": {
                "laptops": {
                    "format": "jsonl",
                    "train": "train.jsonl",
                    "tasks": {"aspects": "tags", "sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 16, "channels": [16]}},
        "trainer": {"epochs": 1, "batch_size": 16, "lr": 0.01, "threads": 1, "progress": False},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(tmp / "config.yaml"), "--out", str(tmp / "run")])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return tmp, tmp / "run", _rows(230)[200:]


def _check_row(row: dict, tokens: list[str]) -> None:
    assert set(row) == {"input", "aspects", "sentiment"}
    sent = row["sentiment"]
    assert set(sent) == {"label", "probabilities"}
    assert set(sent["probabilities"]) == {"negative", "positive"}
    assert sum(sent["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sent["label"] == max(sent["probabilities"], key=sent["probabilities"].get)
    tags = row["aspects"]["tags"]
    assert len(tags) == len(tokens) and set(tags) <= set(TAGS)
    for span in row["aspects"]["spans"]:
        assert set(span) == {"type", "start", "end", "text"}
        assert span["type"] == "ASP" and tags[span["start"]] == "B-ASP"
        assert all(t == "I-ASP" for t in tags[span["start"] + 1 : span["end"]])
        assert span["text"] == " ".join(tokens[span["start"] : span["end"]])


def _same(a, b) -> bool:
    """Equal JSON values, floats to 1e-6 (another batch may round differently)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, abs=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _predict(run_dir, path, *extra) -> list[dict]:
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(path), *extra])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_text_input(run):
    tmp, run_dir, rows = run
    (tmp / "in.txt").write_text(
        "".join(r["text"] + "\n\n" for r in rows), encoding="utf-8"
    )  # blank lines skipped
    out = _predict(run_dir, tmp / "in.txt")
    assert len(out) == len(rows)
    for row, r in zip(out, rows):
        assert row["input"] == r["text"]
        _check_row(row, r["text"].split())
    # the API gives the same predictions from one load
    api = polytask.load(run_dir).predict([r["text"] for r in rows])
    assert _same([{k: v for k, v in row.items() if k != "input"} for row in out], api)


def test_jsonl_and_csv_inputs(run):
    tmp, run_dir, rows = run
    items = [
        {"tokens": r["tokens"]} if i % 2 else {"text": r["text"], "id": i}
        for i, r in enumerate(rows)
    ]
    (tmp / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")
    out = _predict(run_dir, tmp / "in.jsonl", "--output", str(tmp / "out.jsonl"))
    assert out == []  # written to --output instead
    out = [
        json.loads(line) for line in (tmp / "out.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(out) == len(rows)
    for row, r in zip(out, rows):
        _check_row(row, r["tokens"])
    with open(tmp / "in.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "review"])
        w.writerows([i, r["text"]] for i, r in enumerate(rows))
    from_csv = _predict(run_dir, tmp / "in.csv", "--text-field", "review")
    assert [r["input"] for r in from_csv] == [r["text"] for r in rows]
    # same texts, same predictions (a JSONL token list is the whitespace split of its text)
    assert _same(
        [{k: v for k, v in r.items() if k != "input"} for r in from_csv],
        [{k: v for k, v in r.items() if k != "input"} for r in out],
    )


def test_input_errors(run):
    tmp, run_dir, _ = run
    (tmp / "bad.jsonl").write_text('{"tokens": ["a"]}\n{"sentence": "b"}\n', encoding="utf-8")
    (tmp / "bad.csv").write_text("id,text\n1,a\n", encoding="utf-8")
    runner = CliRunner()
    for path, extra, expected in [
        (
            tmp / "bad.jsonl",
            [],
            f"{tmp / 'bad.jsonl'}:2: no 'tokens' or 'text' field; fix: add one or use --text-field",
        ),
        (
            tmp / "bad.csv",
            ["--text-field", "review"],
            f"{tmp / 'bad.csv'}: no column 'review'; fix: use --text-field to name the text column",
        ),
        (tmp / "none.txt", [], f"{tmp / 'none.txt'}: input file not found; fix: check the path"),
    ]:
        result = runner.invoke(app, ["predict", str(run_dir), str(path), *extra])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.splitlines() == [f"error: {expected}"]


def test_span_text_is_cut_from_the_input(run, monkeypatch):
    """Known tags -> typed spans with the words they cover (whitespace tokens joined by one
    space)."""
    _, run_dir, _ = run
    loaded = polytask.load(run_dir)

    def fake_predict(model, tasks, examples, collate, **kw):
        tags = [[0, 1, 2, 0, 1], [1, 0]]  # O B I O B ; B O
        return {"aspects": tags[: len(examples)], "sentiment": [[0.25, 0.75]] * len(examples)}

    monkeypatch.setattr(polytask.runs.prediction, "predict", fake_predict)
    first, second = loaded.predict(["The battery life  is great", ["Screen", "!"]])
    assert first["aspects"] == {
        "tags": ["O", "B-ASP", "I-ASP", "O", "B-ASP"],
        "spans": [
            {"type": "ASP", "start": 1, "end": 3, "text": "battery life"},
            {"type": "ASP", "start": 4, "end": 5, "text": "great"},
        ],
    }
    assert second["aspects"]["spans"] == [{"type": "ASP", "start": 0, "end": 1, "text": "Screen"}]
    assert first["sentiment"] == {
        "label": "positive",
        "probabilities": {"negative": 0.25, "positive": 0.75},
    }
