"""``polytask init`` proposes a config from data files that ``train`` accepts as is, and
``polytask validate`` checks a config and its data without training (issue 15, point 3)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.propose import propose

WORDS = ["the", "screen", "is", "good", "bad", "battery", "life", "fast", "keyboard", "broke"]


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _reviews(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        tokens = rng.sample(WORDS, 5)
        tags = ["B-ASP" if t in ("screen", "battery", "keyboard") else "O" for t in tokens]
        rows.append(
            {
                "id": i,
                "tokens": tokens,
                "aspects": tags,
                "pos": [t.upper()[:2] for t in tokens],  # not BIO: a label per token
                "sentiment": rng.choice(["pos", "neg", "neutral"]),
                "stars": round(rng.uniform(1, 5), 3),
                "flags": [rng.randint(0, 1), rng.randint(0, 1)],
                "note": None,
            }
        )
    return rows


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _conll(path: Path, n: int) -> Path:
    sentence = [("Anna", "I-PER"), ("met", "O"), ("Bob", "I-PER"), ("in", "O"), ("Rome", "I-LOC")]
    path.write_text(
        "-DOCSTART- O\n\n"
        + "".join("".join(f"{w} NN {t}\n" for w, t in sentence) + "\n" for _ in range(n)),
        "utf-8",
    )
    return path


def test_kinds_are_read_off_the_values(tmp_path):
    proposal = propose([_jsonl(tmp_path / "reviews.jsonl", _reviews(60))])
    kinds = {name: task.kind for name, task in proposal.tasks.items()}
    assert kinds == {
        "aspects": "tagging",
        "pos": "token_classification",
        "sentiment": "classification",
        "stars": "regression",
        "flags": "multilabel",
    }  # id (all distinct) and note (always null) are left out
    assert proposal.tasks["aspects"].labels == ["O", "B-ASP", "I-ASP"]
    assert set(proposal.tasks["sentiment"].labels or []) == {"pos", "neg", "neutral"}
    notes = " ".join(proposal.sources[0].notes)
    assert "id" in notes and "note" in notes


def test_a_conll_file_in_iob1_and_split_files_become_one_source(tmp_path):
    train, test = _conll(tmp_path / "news.train.conll", 30), _conll(tmp_path / "news.test.conll", 5)
    proposal = propose([train, test])
    [source] = proposal.sources
    assert source.files == {"train": train, "test": test}
    assert source.options == {"scheme_in": "IOB1"} and source.tasks == {"ner": 2}
    assert proposal.tasks["ner"].labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_cjk_text_is_read_a_character_at_a_time(tmp_path):
    rows = "text,label\n" + "".join(
        f"{t},{lab}\n" for t, lab in [("这个手机很好用", "pos"), ("质量太差了", "neg")] * 20
    )
    (tmp_path / "zh.csv").write_text(rows, "utf-8")
    [source] = propose([tmp_path / "zh.csv"]).sources
    assert source.chars and source.options["text_column"] == "text"


def test_init_writes_a_config_that_validates_and_trains(tmp_path):
    _jsonl(tmp_path / "reviews_train.jsonl", _reviews(48))
    _jsonl(tmp_path / "reviews_test.jsonl", _reviews(12, seed=1))
    _conll(tmp_path / "news.conll", 24)
    config = tmp_path / "config.yaml"
    result = _cli(
        "init",
        tmp_path / "reviews_train.jsonl",
        tmp_path / "reviews_test.jsonl",
        tmp_path / "news.conll",
        "--out",
        config,
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    cfg = yaml.safe_load(config.read_text("utf-8"))
    assert cfg["sampler"]["type"] == "joint" and set(cfg["data"]["sources"]) == {"reviews", "news"}
    assert cfg["data"]["sources"]["reviews"]["test"] == "reviews_test.jsonl"  # relative to it
    checked = _cli("validate", config, "--json")
    assert checked.exit_code == 0, (checked.stderr, checked.exception)
    summary = json.loads(checked.stdout)
    reviews = summary["sources"]["reviews"]
    assert reviews["test"]["examples"] == 12
    assert reviews["train"]["examples"] + reviews["val"]["examples"] == 48
    assert summary["tasks"]["sentiment"]["splits"]["test"]["labelled"] == 12
    assert summary["tasks"]["ner"]["label_counts"]["B-PER"] == 2 * 24  # IOB1 read as IOB2
    assert summary["model"]["parameters"] > 0 and not (tmp_path / "runs").exists()
    trained = _cli(
        "train",
        config,
        "--out",
        tmp_path / "run",
        "--set",
        "trainer.epochs=1",
        "--set",
        "trainer.max_steps=3",
        "--set",
        "trainer.progress=false",
    )
    assert trained.exit_code == 0, (trained.stderr, trained.exception)
    # the text summary says it is ready
    assert "ready to train" in _cli("validate", config).stdout


def test_validate_reports_missing_labels(tmp_path):
    rows = _reviews(40)
    for r in rows[::4]:
        r["sentiment"] = None
    _jsonl(tmp_path / "r.jsonl", rows)
    config = tmp_path / "c.yaml"
    assert _cli("init", tmp_path / "r.jsonl", "--out", config).exit_code == 0
    summary = json.loads(_cli("validate", config, "--json").stdout)
    shares = summary["tasks"]["sentiment"]["splits"]
    labelled = sum(s["labelled"] for s in shares.values())
    assert labelled == 30 and sum(s["examples"] for s in shares.values()) == 40


@pytest.mark.parametrize(
    "setup, field",
    [
        (lambda p: (p / "x.parquet").write_bytes(b"PAR1"), "x.parquet"),
        (lambda p: (p / "n.csv").write_text("a\n1\n2\n", "utf-8"), "n.csv"),  # no feature
        (lambda p: (p / "c.yaml").write_text("x", "utf-8"), "--out"),
    ],
)
def test_init_errors_are_one_line(tmp_path, monkeypatch, setup, field):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    data = next((f.name for f in tmp_path.iterdir() if f.suffix != ".yaml"), None)
    _jsonl(tmp_path / "ok.jsonl", _reviews(12))
    args = ["init", data or "ok.jsonl", "--out", "c.yaml"]
    result = _cli(*args)
    assert result.exit_code == 2, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {field}")


def test_validate_of_a_bad_config_is_one_line(tmp_path):
    _jsonl(tmp_path / "r.jsonl", _reviews(20))
    config = tmp_path / "c.yaml"
    assert _cli("init", tmp_path / "r.jsonl", "--out", config).exit_code == 0
    result = _cli("validate", config, "--set", "tasks.sentiment.labels=[pos]")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: tasks.sentiment.labels")


def test_version_names_polytask_and_torch():
    import torch

    import polytask

    result = _cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"polytask {polytask.__version__} (torch {torch.__version__})"


def test_python_m_polytask_is_the_command_line():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "polytask", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("polytask ")
