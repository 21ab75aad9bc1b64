"""CoNLL-2003-style files through a config: POS, chunk and NER columns read into three tasks
(``token_classification``, IOB1 chunk and NER ``tagging``), labels inferred over every split
(a label seen only in val is kept and noted once), the hint when configured labels miss one,
the real ``conll2003`` files, and a tiny hierarchical model through ``polytask compare`` and
``predict``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config import Experiment, build, validate
from polytask.runs import load
from tests.shared_data import require_data

# (token, POS, chunk IOB1, NER IOB1): four sentence templates; the val file adds one whose
# POS 'RP' and chunk 'PRT' never occur in training
TEMPLATES = [
    "EU NNP I-NP I-ORG|rejects VBZ I-VP O|German JJ I-NP I-MISC|call NN I-NP O|. . O O",
    "Peter NNP I-NP I-PER|Blackburn NNP I-NP I-PER|visits VBZ I-VP O|Brussels NNP I-NP I-LOC",
    "The DT I-NP O|commission NN I-NP O|said VBD I-VP O|it PRP I-NP O|. . O O",
    "Germany NNP I-NP I-LOC|imports VBZ I-VP O|British JJ I-NP I-MISC|lamb NN I-NP O",
]
VAL_ONLY = "He PRP I-NP O|gave VBD I-VP O|up RP I-PRT O|. . O O"


def _write(path: Path, sentences: list[str]) -> Path:
    lines = ["-DOCSTART- -X- O O", ""]
    for s in sentences:
        lines += s.split("|") + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _config(tmp: Path, n_train: int = 24, **tasks: Any) -> dict[str, Any]:
    train = _write(tmp / "train.conll", [TEMPLATES[i % 4] for i in range(n_train)])
    val = _write(tmp / "val.conll", [TEMPLATES[0], VAL_ONLY, VAL_ONLY, TEMPLATES[1]])
    return {
        "name": "conll-tiny",
        "seed": 0,
        "tasks": {
            "pos": {"kind": "token_classification", **tasks.get("pos", {})},
            # token accuracy: an untrained tagger's span F1 is 0, and Δm divides by it
            "chunk": {"kind": "tagging", "primary_metric": "token_accuracy"},
            "ner": {"kind": "tagging", "crf": True, "primary_metric": "token_accuracy"},
        },
        "data": {
            "sources": {
                "conll": {
                    "format": "conll",
                    "train": str(train),
                    "val": str(val),
                    "test": str(val),
                    "tasks": {"pos": 1, "chunk": 2, "ner": 3},
                    "options": {"scheme_in": "IOB1"},
                }
            },
            "vocab": {"chars": True},
        },
        "model": {
            "encoder": {
                "type": "bilstm",
                "embed_dim": 8,
                "hidden": 8,
                "layers": 3,
                "char_dim": 4,
                "char_hidden": 4,
            },
            "sharing": "hierarchical",
            "taps": {"pos": 1, "chunk": 2, "ner": 3},
        },
        "trainer": {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False},
    }


def test_three_columns_three_tasks_and_labels_over_every_split(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(build, "_NOTED", set())  # notes are given once per process
    caplog.set_level(logging.WARNING, logger="polytask")
    exp = Experiment(validate(_config(tmp_path)), tmp_path)
    train = exp.sources["conll"].train
    assert len(train) == 24 and len(exp.sources["conll"].val) == 4
    first = next(ex for ex in train if ex.inputs["tokens"][0] == "EU")
    assert first.targets == {
        "pos": ["NNP", "VBZ", "JJ", "NN", "."],
        "chunk": ["B-NP", "B-VP", "B-NP", "I-NP", "O"],  # IOB1 -> IOB2
        "ner": ["B-ORG", "O", "B-MISC", "O", "O"],
    }
    labels = exp.labels_json()  # what a run records in run.json
    assert labels["pos"] == [".", "DT", "JJ", "NN", "NNP", "PRP", "RP", "VBD", "VBZ"]
    assert labels["chunk"] == ["O", "B-NP", "B-PRT", "B-VP", "I-NP"]  # 'PRT' from val only
    assert labels["ner"][0] == "O" and "B-LOC" in labels["ner"]
    assert {t: exp.tasks[t].kind.kind for t in exp.tasks} == {
        "pos": "token_classification",
        "chunk": "tagging",
        "ner": "tagging",
    }
    # one note per task with labels only in val/test: the count, occurrences and an example
    assert exp.label_notes == [
        "tasks.pos.labels: 1 label(s) occur only in val/test, not in training, and are kept "
        "in the inferred label set: 'RP' (4x, first in conll val, example val.conll:9)",
        "tasks.chunk.labels: 1 label(s) occur only in val/test, not in training, and are kept "
        "in the inferred label set: 'B-PRT' (4x, first in conll val, example val.conll:9)",
    ]
    notes = [r.getMessage() for r in caplog.records if "note:" in r.getMessage()]
    assert len(notes) == 2
    Experiment(validate(_config(tmp_path)), tmp_path)  # compare builds one per seed: no repeat
    assert len([r for r in caplog.records if "note:" in r.getMessage()]) == 2


def _train_error(config: dict[str, Any], tmp: Path) -> str:
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp / "run")])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    return line


def test_given_labels_that_miss_a_val_label_name_it_and_the_right_fix(tmp_path):
    pos = {"labels": [".", "DT", "JJ", "NN", "NNP", "PRP", "VBD", "VBZ"]}
    line = _train_error(_config(tmp_path, pos=pos), tmp_path)
    assert line == (
        "error: tasks.pos.labels: source 'conll' (val, example val.conll:9) does not match: "
        "unknown label 'RP': the label set is ['.', 'DT', 'JJ', 'NN', 'NNP', 'PRP', 'VBD', "
        "'VBZ']; fix: add the label to tasks.pos.labels, or remove tasks.pos.labels to infer "
        "them from every split of the data"
    )


def test_pos_as_span_tagging_points_to_token_classification(tmp_path):
    config = _config(tmp_path)
    config["tasks"]["pos"]["kind"] = "tagging"
    line = _train_error(config, tmp_path)
    assert line.startswith("error: tasks.pos.labels: ")
    assert "use kind: token_classification for labels without spans" in line


def test_tiny_hierarchical_compare_and_predict(tmp_path):
    config = _config(tmp_path, n_train=40)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app, ["compare", str(path), "--seeds", "1", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    printed = json.loads(result.stdout.splitlines()[-1])
    for side in ("stl", "mtl"):
        assert set(printed[side]) == {"pos", "chunk", "ner"}
        assert set(printed[side]["pos"]) == {"token_accuracy", "macro_f1"}
        assert all(0.0 <= v <= 1.0 for v in printed[side]["pos"].values())
    summary = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert summary["primary"] == {t: "token_accuracy" for t in ("pos", "chunk", "ner")}
    run_dir = out / "seed0" / "mtl"
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert "RP" in meta["labels"]["pos"]  # the inferred set, val labels included, is recorded
    run = load(run_dir)
    [pred] = run.predict(["He gave up ."])
    assert len(pred["pos"]["labels"]) == 4 and set(pred["pos"]) == {"labels"}
    assert all(label in meta["labels"]["pos"] for label in pred["pos"]["labels"])
    assert "spans" in pred["ner"]
    run.tasks["pos"].kind.probabilities = True  # type: ignore[attr-defined]
    [pred] = run.predict(["He gave up ."])
    assert len(pred["pos"]["probabilities"]) == 4
    for token in pred["pos"]["probabilities"]:
        assert set(token) == set(meta["labels"]["pos"])
        assert sum(token.values()) == pytest.approx(1.0, abs=1e-5)


def test_real_conll2003_dev_three_tasks(tmp_path):
    testa = require_data("conll2003/eng.testa")
    config = _config(tmp_path)
    src = config["data"]["sources"]["conll"]
    src.update(train=str(testa), val=None, test=None)
    config["data"].update(val_fraction=0.1, test_fraction=0.1)
    exp = Experiment(validate(config), tmp_path)
    splits = exp.sources["conll"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 3250
    labels = exp.labels_json()
    assert labels["ner"] == [
        "O",
        "B-LOC",
        "B-MISC",
        "B-ORG",
        "B-PER",
        "I-LOC",
        "I-MISC",
        "I-ORG",
        "I-PER",
    ]
    assert {"NNP", "VBZ", "DT", "CD"} <= set(labels["pos"]) and "O" not in labels["pos"]
    assert {"B-NP", "I-NP", "B-VP", "B-PP"} <= set(labels["chunk"])
    tokens = sum(
        len(ex.inputs["tokens"]) for s in ("train", "val", "test") for ex in getattr(splits, s)
    )
    assert tokens == 51362
