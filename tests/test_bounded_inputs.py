"""Bounded inputs (issue 13, point 3) and NaN outputs refused (point 4).

Training cuts inputs at ``data.max_length`` (default 512, ``null`` disables it) with one
warning naming how many examples were cut; ``eval`` and ``predict`` never drop a token (a
transformer reads long inputs in overlapping windows); outputs holding NaN are a one-line
error naming the task, exit 2.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.build import Experiment
from polytask.config.load import validate
from polytask.data.base import Example
from polytask.data.collate import Collator
from polytask.evaluation.evaluate import NonFiniteOutputError, check_finite, predict
from polytask.nn.heads import ClassifierHead, heads_for
from polytask.sharing.hierarchical import HardSharing
from polytask.tasks import Task, make_kind

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TAGS = ["O", "B-ASP", "I-ASP"]
LONG = 700  # tokens of a long input: more than the default limit of 512
CUT_WARNING = "data.max_length = 512"


def _sentence(rng: random.Random, n: int) -> dict:
    """``x`` is always an aspect (B-ASP), every other token is outside: easy to learn."""
    tokens = [rng.choice(["x", "y", "z", "w"]) for _ in range(n)]
    return {
        "tokens": tokens,
        "tags": ["B-ASP" if t == "x" else "O" for t in tokens],
        "sentiment": "pos" if "x" in tokens else "neg",
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _config(tmp: Path, **data: object) -> Path:
    cfg = {
        "name": "bounded",
        "seed": 3,
        "tasks": {
            "aspects": {"kind": "tagging", "labels": TAGS},
            "sentiment": {"kind": "classification", "labels": ["neg", "pos"]},
        },
        "data": {
            "sources": {
                "s": {
                    "format": "jsonl",
                    "train": "train.jsonl",
                    "val": "val.jsonl",
                    "test": "test.jsonl",
                    "tasks": {"aspects": "tags", "sentiment": "sentiment"},
                }
            },
            **data,
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
        "trainer": {"epochs": 4, "batch_size": 8, "lr": 0.05, "threads": 1, "progress": False},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _data(tmp: Path) -> None:
    rng = random.Random(0)
    train = [_sentence(rng, rng.randint(3, 8)) for _ in range(60)]
    train += [_sentence(rng, 600), _sentence(rng, 513), _sentence(rng, 900)]  # three cut
    train.append(_sentence(rng, 512))  # exactly the limit: kept whole
    _write(tmp / "train.jsonl", train)
    _write(tmp / "val.jsonl", [_sentence(rng, 5) for _ in range(8)])
    _write(tmp / "test.jsonl", [_sentence(rng, 6) for _ in range(6)] + [_sentence(rng, LONG)])


def _train(tmp: Path, config: Path, out: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn run trained with the default limit, and the warnings its training gave."""
    tmp = tmp_path_factory.mktemp("bounded")
    _data(tmp)
    config = _config(tmp)
    handler = _Records()
    logger = logging.getLogger("polytask")
    logger.addHandler(handler)
    try:
        _train(tmp, config, tmp / "run")
    finally:
        logger.removeHandler(handler)
    return tmp, config, tmp / "run", handler.messages


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# --------------------------------------------------------------------------- training


def test_training_cuts_at_512_by_default_with_one_warning(trained) -> None:
    tmp, config, _, messages = trained
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert "max_length" not in raw["data"]
    cfg = validate(raw)
    assert cfg.data.max_length == 512
    cut = [m for m in messages if "max_length" in m]
    assert len(cut) == 1, messages  # once per run, not once per epoch or batch
    assert cut[0].startswith("3 of 64 training examples are longer than data.max_length = 512")
    assert "data.max_length: null" in cut[0]
    # what training reads: the long inputs cut to 512 tokens (tags with them)
    exp = Experiment(cfg, tmp)
    train = exp.train_sources()["s"]
    batch = exp.collator()(train[-4:], "s")
    assert batch.inputs["tokens"].shape == (4, 512)
    assert batch.targets["aspects"][1].sum(dim=1).tolist() == [512] * 4


def test_null_disables_the_cut(tmp_path: Path) -> None:
    _data(tmp_path)
    config = _config(tmp_path, max_length=None)
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert raw["data"]["max_length"] is None
    exp = Experiment(validate(raw), tmp_path)
    collate = exp.collator()
    assert collate.max_length is None
    assert collate.truncation(exp.train_sources()["s"]) == (0, 0)
    assert collate(exp.train_sources()["s"][-4:], "s").inputs["tokens"].shape[1] == 900
    # and a run trains without the warning
    text = yaml.safe_load(config.read_text(encoding="utf-8"))
    text["trainer"]["epochs"] = 1
    config.write_text(yaml.safe_dump(text), encoding="utf-8")
    handler = _Records()
    logging.getLogger("polytask").addHandler(handler)
    try:
        _train(tmp_path, config, tmp_path / "run")
    finally:
        logging.getLogger("polytask").removeHandler(handler)
    assert [m for m in handler.messages if "max_length" in m] == []


def test_a_smaller_limit_counts_its_own_cuts(tmp_path: Path) -> None:
    _data(tmp_path)
    exp = Experiment(
        validate(yaml.safe_load(_config(tmp_path, max_length=7).read_text())), tmp_path
    )
    train = exp.train_sources()["s"]
    expected = sum(len(ex.inputs["tokens"]) > 7 for ex in train)
    collate = exp.collator()
    assert 4 <= expected < len(train)
    assert collate.truncation(train) == (expected, 0)
    collate(train, "s")
    assert collate.n_truncated == expected


# ------------------------------------------------------------------ eval and predict


def test_predict_keeps_every_token_of_a_long_input(trained) -> None:
    tmp, _, run, _ = trained
    rng = random.Random(7)
    tokens = [rng.choice(["y", "z", "w"]) for _ in range(LONG)]
    for i in (3, 520, 600, 650, 698):  # aspects before and beyond the training limit
        tokens[i] = "x"
    (tmp / "long.txt").write_text(" ".join(tokens) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(run), str(tmp / "long.txt")])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    [row] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    tags = row["aspects"]["tags"]
    assert len(tags) == LONG
    # tokens beyond 512 are read by the model (a cut input would leave them "O")
    assert [i for i, t in enumerate(tags) if t == "B-ASP"] == [3, 520, 600, 650, 698]


def test_eval_reads_whole_inputs_as_training_reported(trained) -> None:
    tmp, _, run, _ = trained
    from polytask import load

    loaded = load(run)
    assert loaded.collate.max_length is None
    long = Example(inputs={"tokens": ["x"] * LONG}, targets={"aspects": ["B-ASP"] * LONG})
    batch = loaded.collate([long], "")
    assert batch.inputs["tokens"].shape == (1, LONG)
    assert batch.targets["aspects"][1].sum().item() == LONG
    result = CliRunner().invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == results["test"]  # the test split holds a long input
    assert results["test"]["aspects"]["f1"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- transformer


@pytest.fixture(scope="module")
def minilm():
    try:
        import transformers  # noqa: F401

        from polytask.nn.transformer import minilm_path

        return minilm_path()
    except ImportError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"needs polytask[transformers]: {error}")


@pytest.fixture(scope="module")
def small_transformer(minilm):
    """MiniLM with 16 positions (14 for words) and two untrained heads."""
    from polytask.nn.transformer import SubwordTokenizer, Transformer

    torch.manual_seed(0)
    encoder = Transformer(minilm, max_length=16, layers=[2])
    tasks = {
        "aspects": Task("aspects", make_kind("tagging", labels=TAGS)),
        "sentiment": Task("sentiment", make_kind("classification", labels=["neg", "pos"])),
    }
    model = HardSharing(encoder, heads_for(list(tasks.values()), dim=384, pooling="mean")).eval()
    return model, tasks, SubwordTokenizer(minilm, max_length=16)


WORDS = (
    "the screen is unbelievably bright but the keyboard feels cheap and the battery "
    "lasts barely three hours although tokenization works fine on everything else"
).split()


def test_transformer_windows_cover_every_word(small_transformer) -> None:
    model, tasks, tokenizer = small_transformer
    windowed = tokenizer.windowed()
    assert not tokenizer.fits(WORDS) and tokenizer.fits(WORDS[:3])
    cut = Collator(tasks, input_kind="subwords", tokenizer=tokenizer)
    whole = Collator(tasks, input_kind="subwords", tokenizer=windowed)
    long = Example(inputs={"tokens": WORDS})
    short = Example(inputs={"tokens": WORDS[:3]})
    assert not cut([long]).inputs["word_mask"].all()  # the cut drops words
    assert cut.n_truncated == 1 and cut.truncation([long, short]) == (0, 1)
    assert whole.truncation([long, short]) == (0, 0)
    preds = predict(model, tasks, [long, short], whole)
    assert [len(p) for p in preds["aspects"]] == [len(WORDS), 3]
    # a short input is one window: the same result as without windows (to float32
    # rounding: in a batch of one the BLAS may sum in another order than in a batch of two)
    alone = predict(model, tasks, [short], cut)
    assert preds["aspects"][1] == alone["aspects"][0]
    assert preds["sentiment"][1] == pytest.approx(alone["sentiment"][0], rel=1e-5, abs=1e-6)


def test_transformer_window_states_are_those_of_each_window(small_transformer) -> None:
    from polytask.nn.transformer import word_windows

    model, _, tokenizer = small_transformer
    encoder = model.encoder
    windowed = tokenizer.windowed()
    sizes = [len(p) for p in tokenizer.pieces(WORDS)]
    spans = word_windows(sizes, tokenizer.budget)
    assert len(spans) > 2
    assert [s[2] for s in spans[1:]] == [s[3] for s in spans[:-1]]  # owned spans partition
    assert spans[0][2] == 0 and spans[-1][3] == len(WORDS)
    with torch.no_grad():
        stitched = encoder(windowed.encode([WORDS, WORDS[:2]]))
        assert stitched.mask.sum(dim=1).tolist() == [len(WORDS), 2]
        for lo, hi, own_lo, own_hi in spans:
            assert sum(min(n, tokenizer.budget) for n in sizes[lo:hi]) <= tokenizer.budget
            window = encoder(tokenizer.encode([WORDS[lo:hi]]))
            torch.testing.assert_close(
                stitched.last[0, own_lo:own_hi],
                window.last[0, own_lo - lo : own_hi - lo],
                atol=1e-5,
                rtol=1e-5,
            )
        assert torch.all(stitched.last[1, 2:] == 0)


def test_experiment_gives_eval_a_windowed_tokenizer(minilm, tmp_path: Path) -> None:
    _write(tmp_path / "train.jsonl", [{"tokens": WORDS, "sentiment": "pos"}] * 4)
    raw = {
        "name": "t",
        "tasks": {"sentiment": {"kind": "classification", "labels": ["neg", "pos"]}},
        "data": {
            "sources": {
                "s": {
                    "format": "jsonl",
                    "train": "train.jsonl",
                    "tasks": {"sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "transformer", "max_length": 16}},
    }
    exp = Experiment(validate(raw), tmp_path)
    train, whole = exp.collator(), exp.collator(whole=True)
    assert train.max_length == 512 and whole.max_length is None
    assert not train.tokenizer.windows and whole.tokenizer.windows
    assert train.truncation(exp.train_sources()["s"])[1] > 0


# ------------------------------------------------------------------------ NaN outputs


def test_nan_outputs_are_refused_naming_the_task(trained, monkeypatch) -> None:
    _, _, run, _ = trained
    real = ClassifierHead.forward

    def poisoned(self, features, mask=None):
        out = real(self, features, mask)
        return torch.full_like(out, float("nan"))

    monkeypatch.setattr(ClassifierHead, "forward", poisoned)
    tmp = run.parent
    (tmp / "in.txt").write_text("x y z\n", encoding="utf-8")
    for args in (["predict", str(run), str(tmp / "in.txt")], ["eval", str(run)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr, result.exception)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: task 'sentiment': "), lines
        assert "NaN" in lines[0] and "; fix: " in lines[0]


def test_nan_on_padding_is_not_an_error() -> None:
    examples = [Example(inputs={"tokens": ["a", "b"]}), Example(inputs={"tokens": ["a"]})]
    mask = torch.tensor([[True, True], [True, False]])
    emissions = torch.zeros(2, 2, 3)
    emissions[1, 1] = float("nan")  # padding of the second input
    check_finite("aspects", emissions, mask, examples)
    emissions[1, 0] = float("inf")
    with pytest.raises(NonFiniteOutputError) as err:
        check_finite("aspects", emissions, mask, examples, offset=10)
    assert err.value.option == "task 'aspects'"
    assert "input number 12" in err.value.problem
