"""Fuzzing the command line (issue 13): a mutated known-good config — a misspelt key, a value
of the wrong type, a value out of range — exits 2 naming the mutated key; arbitrary YAML
documents and JSONL lines exit 0 or 2 with one ``error:`` line, never a traceback.

Examples are bounded and derandomised (``derandomize=True``), so every run of the suite tries
the same inputs and a failure replays.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from polytask.cli import app

ROWS = [
    {"tokens": ["the", "screen", "is", "good"], "tags": ["O", "B-ASP", "O", "O"], "label": "pos"},
    {"tokens": ["bad", "battery", "life"], "tags": ["O", "B-ASP", "I-ASP"], "label": "neg"},
] * 8
GOOD: dict[str, Any] = {
    "name": "fuzz",
    "seed": 1,
    "tasks": {
        "aspects": {"kind": "tagging", "labels": ["O", "B-ASP", "I-ASP"]},
        "sentiment": {"kind": "classification"},
    },
    "data": {
        "max_length": 64,
        "val_fraction": 0.2,
        "sources": {
            "reviews": {
                "format": "jsonl",
                "train": "train.jsonl",
                "tasks": {"aspects": "tags", "sentiment": "label"},
            }
        },
    },
    "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8], "dropout": 0.1}},
    "balancing": {"method": "cagrad", "c": 0.4},
    "sampler": {"type": "temperature", "T": 2.0},
    "trainer": {
        "epochs": 1,
        "max_steps": 2,
        "batch_size": 8,
        "lr": 0.01,
        "threads": 1,
        "progress": False,
    },
}
#: leaf -> (kind, out-of-range values); every key here is the config's own, not a user's name
LEAVES: dict[str, tuple[str, list[Any]]] = {
    "seed": ("int", [-1, 2**70]),
    "tasks.aspects.kind": ("name", []),
    "tasks.aspects.labels": ("labels", [[], ["O"]]),
    "data.max_length": ("int", [0, -5]),
    "data.val_fraction": ("float", [-0.1, 1.5]),
    "data.sources.reviews.format": ("name", []),
    "data.sources.reviews.train": ("path", []),
    "model.encoder.type": ("name", []),
    "model.encoder.embed_dim": ("int", [0, -8]),
    "model.encoder.channels": ("ints", [[], [0], [-4]]),
    "model.encoder.dropout": ("float", [-0.5, 1.0, 3.0]),
    "balancing.method": ("name", []),
    "balancing.c": ("float", [-1.0]),
    "sampler.type": ("name", []),
    "sampler.T": ("float", [0.0, -2.0]),
    "trainer.epochs": ("int", [0, -1]),
    "trainer.max_steps": ("int", [0, -3]),
    "trainer.batch_size": ("int", [0, -8]),
    "trainer.lr": ("float", [-0.01]),
    "trainer.threads": ("int", [0, -2]),
    "trainer.progress": ("bool", []),
}
WRONG_TYPE: dict[str, list[Any]] = {
    "int": ["three", [3], {"n": 3}, 2.5, True],
    "float": ["fast", [0.1], {"v": 1}, True],
    "bool": ["maybe", [True], 2],
    "name": [5, ["cnn"], {"type": "cnn"}],
    "path": [5, ["train.jsonl"], {"file": "x"}],
    "labels": ["O B-ASP", 3, {"O": 1}],
    "ints": ["8", 8, [8.5], ["a"], {"c": 8}],
}

runner = CliRunner()
FUZZ = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), "utf-8")
    return tmp


@pytest.fixture(scope="module")
def finished(folder) -> Path:
    config = _write(folder, GOOD, "good.yaml")
    result = runner.invoke(app, ["train", str(config), "--out", str(folder / "run")])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return folder / "run"


def _write(folder: Path, cfg: Any, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), "utf-8")
    return path


def _set(cfg: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value


def _rename(cfg: dict[str, Any], path: str, new: str) -> None:
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[new] = node.pop(last)


def _one_error_line(result) -> str:
    """Exit 0, or exit 2 with exactly one ``error: ...; fix: ...`` line: never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    if result.exit_code == 0:
        return ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "; fix: " in line, line
    return line.removeprefix("error: ")


def _field(line: str) -> str:
    return line.split(": ", 1)[0]


def _typo(word: str, how: int, where: int) -> str:
    i = where % len(word)
    if how == 0:
        return word[:i] + word[i + 1 :] if len(word) > 1 else word + "x"  # drop a letter
    if how == 1:
        return word[:i] + "q" + word[i:]  # insert one
    j = min(i + 1, len(word) - 1)  # swap two (or double the last)
    swapped = word[:i] + word[j] + word[i] + word[j + 1 :] if j > i else word + word[-1]
    return swapped if swapped != word else word + "z"


# ------------------------------------------------------------------ mutated configs
@settings(FUZZ, max_examples=80)
@given(
    path=st.sampled_from(sorted(LEAVES)),
    mutation=st.sampled_from(["misspelt", "wrong_type", "out_of_range"]),
    pick=st.integers(min_value=0, max_value=50),
)
def test_a_mutated_config_exits_2_naming_the_mutated_key(folder, path, mutation, pick):
    cfg = copy.deepcopy(GOOD)
    kind, out_of_range = LEAVES[path]
    if mutation == "out_of_range" and not out_of_range:
        mutation = "wrong_type"
    parent, _, key = path.rpartition(".")
    if mutation == "misspelt":
        typo = _typo(key, pick % 3, pick // 3)
        _rename(cfg, path, typo)
        named = {f"{parent}.{typo}".lstrip("."), path}  # the typo, or the key it lacks
    else:
        values = WRONG_TYPE[kind] if mutation == "wrong_type" else out_of_range
        _set(cfg, path, values[pick % len(values)])
        named = {path}
    out = folder / f"run-{mutation}"
    result = runner.invoke(app, ["train", str(_write(folder, cfg)), "--out", str(out)])
    line = _one_error_line(result)
    assert result.exit_code == 2, f"{mutation} {path}: accepted ({_read(folder)})"
    field = _field(line)
    assert field in named or any(field.startswith(n + ".") for n in named), (mutation, path, line)
    assert not out.exists()


def _read(folder: Path) -> str:
    return (folder / "config.yaml").read_text("utf-8")


# ------------------------------------------------------------------ arbitrary documents
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(sorted({*GOOD, "kind", "type", "x"})) | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@FUZZ
@given(doc=documents)
def test_an_arbitrary_yaml_document_exits_0_or_2(folder, doc):
    config = folder / "any.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    _one_error_line(runner.invoke(app, ["train", str(config), "--out", str(folder / "any")]))


@FUZZ
@given(text=st.text(max_size=60))
def test_arbitrary_yaml_text_exits_0_or_2(folder, text):
    config = folder / "text.yaml"
    config.write_text(text, "utf-8")
    _one_error_line(runner.invoke(app, ["train", str(config), "--out", str(folder / "text")]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["tokens", "text", "tags", "label", "id"]) | st.text(max_size=4),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@FUZZ
@given(lines=st.lists(json_values.map(json.dumps) | st.text(max_size=20), min_size=0, max_size=4))
def test_arbitrary_jsonl_lines_to_predict_exit_0_or_2(finished, folder, lines):
    path = folder / "in.jsonl"
    path.write_text("\n".join(line.replace("\n", " ") for line in lines) + "\n", "utf-8")
    _one_error_line(runner.invoke(app, ["predict", str(finished), str(path)]))


@FUZZ
@given(lines=st.lists(json_values.map(json.dumps), min_size=1, max_size=3))
def test_arbitrary_jsonl_training_lines_exit_0_or_2(folder, lines):
    data = folder / "odd.jsonl"
    good = [json.dumps(r) for r in ROWS]
    data.write_text("\n".join(good + lines) + "\n", "utf-8")
    cfg = copy.deepcopy(GOOD)
    cfg["data"]["sources"]["reviews"]["train"] = "odd.jsonl"
    config = _write(folder, cfg, "odd.yaml")
    out = folder / "odd-run"
    _one_error_line(runner.invoke(app, ["train", str(config), "--out", str(out), "--overwrite"]))
