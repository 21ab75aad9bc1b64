"""``polytask train`` / ``polytask eval`` on one JSONL source that labels two tasks.

Rows are SemEval-2014 laptop reviews: ``tokens``, ``tags`` (aspect terms as B-ASP/I-ASP)
and ``sentiment`` (the polarity of the first positive/negative aspect term). Sentences
without such a term have no sentiment, and every fifth row drops its tags: batches mix
labelled and unlabelled rows, and missing labels must be masked out of the losses.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from shared_data import TEST_XML, TRAIN_XML
from shared_data import laptop_rows as _laptop_rows
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config import read_config
from polytask.config.build import Experiment
from polytask.engine.trainer import Trainer
from polytask.runs import load


def laptop_rows(rel: str, n: int) -> list[dict]:
    """Laptop rows without the raw text; a sentence without polarity has no sentiment key."""
    rows = []
    for row in _laptop_rows(rel, n):
        row = {k: v for k, v in row.items() if k != "text" and v is not None}
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_config(tmp: Path, **trainer) -> Path:
    rows = laptop_rows(TRAIN_XML, 300)
    for i, row in enumerate(rows):
        if i % 5 == 0:
            del row["tags"]
    write_jsonl(tmp / "laptops.jsonl", rows)
    cfg = {
        "name": "laptops",
        "seed": 3,
        "tasks": {"aspects": {"kind": "tagging"}, "sentiment": {"kind": "classification"}},
        "data": {
            "sources": {
                "laptops": {
                    "format": "jsonl",
                    "train": "laptops.jsonl",
                    "limit": 250,
                    "tasks": {"aspects": "tags", "sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "bilstm", "embed_dim": 16, "hidden": 16, "layers": 2}},
        "trainer": {
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.01,
            "threads": 1,
            "progress": False,
            **trainer,
        },
    }
    path = tmp / "laptops.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("laptops")
    config = make_config(tmp)
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp / "run"), "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return tmp, config, tmp / "run", json.loads(result.stdout)


def test_train_writes_the_run_directory(run):
    tmp, config, run_dir, printed = run
    for name in ("config.yaml", "run.json", "vocab.json", "metrics.csv", "results.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "best").is_dir() and any((run_dir / "best").iterdir())
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == yaml.safe_load(
        config.read_text()
    )
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["seed"] == 3
    assert meta["versions"]["torch"] == torch.__version__ and set(meta["versions"]) >= {
        "polytask",
        "python",
    }
    assert meta["labels"] == {
        "aspects": ["O", "B-ASP", "I-ASP"],
        "sentiment": ["negative", "positive"],
    }
    vocab = json.loads((run_dir / "vocab.json").read_text())
    assert vocab["tokens"] and vocab["chars"] is None
    results = json.loads((run_dir / "results.json").read_text())
    assert printed == results["test"]
    assert set(results["val"]) == set(results["test"]) == {"aspects", "sentiment"}
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["epoch"]) for r in rows} == {0, 1}
    assert max(int(r["step"]) for r in rows) == results["steps"]


def test_mixed_source_trains_both_tasks_with_masked_labels(run):
    tmp, config, run_dir, _ = run
    results = json.loads((run_dir / "results.json").read_text())
    # one source: an epoch is one pass, each batch serves both tasks (when it holds a label of each)
    cfg, _ = read_config(config)
    exp = Experiment(cfg, tmp)
    n_train = len(exp.sources["laptops"].train)
    assert results["steps"] == 2 * -(-n_train // 16)
    assert 0 < results["task_steps"]["sentiment"] <= results["steps"]
    assert 0 < results["task_steps"]["aspects"] <= results["steps"]


def test_missing_labels_are_masked_out_of_the_loss(run):
    """The loss of a batch with unlabelled rows equals the loss of its labelled rows alone."""
    tmp, config, run_dir, _ = run
    cfg, _ = read_config(config)
    exp = Experiment(cfg, tmp)
    model = exp.build_model()
    model.eval()
    trainer = Trainer(model, exp.tasks, exp.build_method(), exp.trainer_config())
    collate = exp.collator()
    train = exp.sources["laptops"].train
    both = [e for e in train if e.targets.get("aspects") and e.targets.get("sentiment")][:3]
    no_sent = [e for e in train if e.targets.get("aspects") and e.targets.get("sentiment") is None][
        :2
    ]
    no_tags = [
        e for e in train if e.targets.get("aspects") is None and e.targets.get("sentiment") is None
    ][:2]
    assert len(both) == 3 and len(no_sent) == 2 and len(no_tags) == 2
    with torch.no_grad():
        mixed = trainer.compute_losses(collate(both + no_sent + no_tags, "laptops"))
        sent = trainer.compute_losses(collate(both, "laptops"))
        tags = trainer.compute_losses(collate(both + no_sent, "laptops"))
        only_unlabelled = trainer.compute_losses(collate(no_sent, "laptops"))
    assert set(mixed) == {"aspects", "sentiment"}
    assert mixed["sentiment"].item() == pytest.approx(sent["sentiment"].item(), rel=1e-5)
    assert mixed["aspects"].item() == pytest.approx(tags["aspects"].item(), rel=1e-5)
    assert set(only_unlabelled) == {"aspects"}  # no sentiment label in the batch: no sentiment loss


def test_eval_json_reproduces_the_test_metrics(run):
    _, _, run_dir, printed = run
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    [line] = result.stdout.splitlines()
    metrics = json.loads(line)
    assert metrics == printed
    assert all(0.0 <= v <= 1.0 for ms in metrics.values() for v in ms.values())


def _accuracy(run_dir: Path, rows: list[dict]) -> tuple[float, float]:
    """Sentiment accuracy and tag accuracy of the run's own predictions, counted here."""
    preds = load(run_dir).predict([r["tokens"] for r in rows])
    sent = [
        (p["sentiment"]["label"], r["sentiment"]) for p, r in zip(preds, rows) if "sentiment" in r
    ]
    tags = [(a, b) for p, r in zip(preds, rows) for a, b in zip(p["aspects"]["tags"], r["tags"])]
    return sum(a == b for a, b in sent) / len(sent), sum(a == b for a, b in tags) / len(tags)


def test_eval_on_other_jsonl_and_conll_files(run):
    tmp, _, run_dir, _ = run
    rows = laptop_rows(TEST_XML, 60)
    jsonl = write_jsonl(tmp / "gold.jsonl", rows)
    conll = tmp / "gold.conll"
    conll.write_text(
        "".join("".join(f"{t} {g}\n" for t, g in zip(r["tokens"], r["tags"])) + "\n" for r in rows),
        encoding="utf-8",
    )
    sent_acc, tag_acc = _accuracy(run_dir, rows)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "eval",
            str(run_dir),
            "--test",
            f"sentiment={jsonl}",
            "--test",
            f"aspects={jsonl}",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"sentiment", "aspects"}
    assert metrics["sentiment"]["accuracy"] == pytest.approx(sent_acc)
    assert metrics["aspects"]["token_accuracy"] == pytest.approx(tag_acc)
    assert all(0.0 <= v <= 1.0 for ms in metrics.values() for v in ms.values())
    result = runner.invoke(
        app, ["eval", str(run_dir), "--test", f"aspects={conll}", "--format", "conll", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"aspects": metrics["aspects"]}


def test_eval_label_unknown_to_the_run(run):
    tmp, _, run_dir, _ = run
    bad = write_jsonl(
        tmp / "neutral.jsonl",
        [
            {"tokens": ["Nice", "screen"], "sentiment": "positive"},
            {"tokens": ["It", "is", "a", "laptop"], "sentiment": "neutral"},
        ],
    )
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--test", f"sentiment={bad}", "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {bad}: example neutral.jsonl:2: unknown label 'neutral': the label set is "
        "['negative', 'positive']; "
        "fix: the run's label set is fixed"
    ]


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--test", "polarity=x.jsonl"],
            "--test polarity: undefined task; fix: use one of ['aspects', 'sentiment']",
        ),
        (
            ["--test", "sentiment.jsonl"],
            "--test sentiment.jsonl: not of the form TASK=PATH; "
            "fix: write e.g. --test aspects=test.jsonl",
        ),
    ],
)
def test_eval_bad_test_option(run, args, expected):
    result = CliRunner().invoke(app, ["eval", str(run[2]), *args, "--json"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {expected}"]


def test_eval_of_a_directory_that_is_no_run(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--json"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {tmp_path}: not a polytask run directory (no config.yaml/run.json); "
        "fix: give the --out directory of `polytask train`"
    ]
