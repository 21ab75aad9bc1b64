"""Every data kind from a YAML config: ``format: tabular`` on a slice of the real UCI Adult
files (examples/census.yaml), on a file with targets of every task kind, and its errors;
``format: molecules`` on a slice of Tox21 (examples/tox21.yaml)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from statistics import fmean

import pytest
import yaml
from shared_data import require_data
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.build import Experiment
from polytask.config.errors import ConfigError
from polytask.config.load import validate
from polytask.data.tabular import OOV_INDEX, read_table_rows
from polytask.runs import load

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = {"epochs": 1, "batch_size": 64, "eval_batch_size": 256, "threads": 1}


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _census(tmp: Path, n_train: int = 400, n_test: int = 150) -> dict:
    """examples/census.yaml on the first rows of adult.data / adult.test; one test row has a
    native-country (``Atlantis``) and an age (``999``) that training never sees."""
    data = require_data("uci-adult/adult.data").read_text().splitlines()[:n_train]
    test = require_data("uci-adult/adult.test").read_text().splitlines()[: n_test + 1]
    cells = test[1].split(", ")
    cells[0], cells[13] = "999", "Atlantis"
    test[1] = ", ".join(cells)
    (tmp / "adult.data").write_text("\n".join(data) + "\n")
    (tmp / "adult.test").write_text("\n".join(test) + "\n")
    raw = yaml.safe_load((EXAMPLES / "census.yaml").read_text())
    src = raw["data"]["sources"]["adult"]
    src["train"], src["test"] = "adult.data", "adult.test"
    raw["trainer"].update(FAST)
    return raw


def _write(tmp: Path, raw: dict) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_census_preprocessor_is_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    exp = Experiment(validate(_census(tmp_path)), tmp_path)
    splits = exp.sources["adult"]
    prep = exp.tabular
    assert prep is not None
    train_ages = [float(ex.inputs["row"]["age"]) for ex in splits.train]
    assert prep.mean["age"] == pytest.approx(fmean(train_ages))
    every_age = train_ages + [float(ex.inputs["row"]["age"]) for ex in splits.val + splits.test]
    assert prep.mean["age"] != pytest.approx(fmean(every_age))  # 999 is in the test split only
    assert "Atlantis" not in prep.categories["native-country"]
    odd = next(ex for ex in splits.test if ex.inputs["row"]["native-country"] == "Atlantis")
    assert prep.transform(odd.inputs["row"])["categorical"][-1] == OOV_INDEX
    # missing targets masked, labels from {column, positive}
    assert {ex.targets["income"] for ex in splits.test} == {0, 1}  # ">50K." counts as 1
    # 6 numeric + 6 categorical columns reach the model: the encoder embeds the categories
    batch = exp.collator()(splits.train[:8])
    assert batch.inputs["x"].shape == (8, 12)
    encoder = exp.build_encoder()
    assert encoder.numeric == 6 and encoder.cardinalities == prep.cardinalities
    assert all(k > 0 for k in prep.cardinalities)


def test_census_trains_and_predicts_raw_rows_as_in_training(tmp_path: Path) -> None:
    raw = _census(tmp_path)
    config, run_dir = _write(tmp_path, raw), tmp_path / "run"
    trained = _cli("train", config, "--out", run_dir, "--json")
    assert trained.exit_code == 0, trained.output
    test_metrics = json.loads(trained.output.strip().splitlines()[-1])
    saved = json.loads((run_dir / "vocab.json").read_text())["tabular"]
    exp = Experiment(validate(raw), tmp_path)
    assert saved == exp.tabular.state()  # the fitted state travels with the run

    run = load(run_dir, device="cpu")
    # the same inputs as in training: the run's collator on raw rows == training's collator
    examples = exp.sources["adult"].test
    x_train = exp.collator(whole=True)(examples).inputs["x"]
    x_run = run.collate(run.to_examples([ex.inputs["row"] for ex in examples])).inputs["x"]
    assert x_run.tolist() == x_train.tolist()
    # predict on raw rows (strings or numbers, extra columns ignored) == on the examples
    names, rows = read_table_rows(
        tmp_path / "adult.test",
        columns=raw["data"]["sources"]["adult"]["options"]["columns"],
        comment="|",
    )
    from_rows = run.predict([r for _, r in rows])
    assert from_rows == run.predict(examples)
    # polytask eval reproduces the test metrics of training
    evaluated = _cli("eval", run_dir, "--json", "--device", "cpu")
    assert evaluated.exit_code == 0, evaluated.output
    evaluated_metrics = json.loads(evaluated.output)
    for task, metrics in test_metrics.items():
        assert evaluated_metrics[task] == pytest.approx(metrics)
    # polytask predict reads JSONL rows of column -> value
    first = dict(rows[0][1], age=int(rows[0][1]["age"]))
    (tmp_path / "rows.jsonl").write_text(json.dumps(first) + "\n")
    out = _cli("predict", run_dir, tmp_path / "rows.jsonl", "--device", "cpu")
    assert out.exit_code == 0, out.output
    line = json.loads(out.output)
    assert line["input"] == first
    assert line["income"]["probabilities"] == pytest.approx(from_rows[0]["income"]["probabilities"])
    (tmp_path / "bad.jsonl").write_text('{"age": 30}\n')
    bad = _cli("predict", run_dir, tmp_path / "bad.jsonl", "--device", "cpu")
    assert bad.exit_code != 0 and "input 1: the row has no column(s) fnlwgt" in bad.output


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s["options"]["numeric"].__setitem__(0, "agee"), "options.numeric"),
        (lambda s: s["options"]["categorical"].append("colour"), "options.categorical"),
        (lambda s: s["tasks"]["income"].__setitem__("column", "salary"), "tasks.income"),
        (lambda s: s["options"].__setitem__("numerics", ["age"]), "options.numerics"),
        (lambda s: s["tasks"].__setitem__("income", 3), "tasks.income"),
    ],
)
def test_census_bad_columns_are_one_line_errors(tmp_path: Path, edit, field: str) -> None:
    raw = _census(tmp_path, 50, 20)
    edit(raw["data"]["sources"]["adult"])
    with pytest.raises(ConfigError) as err:
        Experiment(validate(raw), tmp_path)
    message = str(err.value)
    assert message.startswith(f"data.sources.adult.{field}:") and "\n" not in message


def test_tabular_targets_of_every_kind_with_missing_values_masked(tmp_path: Path) -> None:
    lines = ["x,colour,kind,score,a,b"]
    for i in range(60):
        kind = "" if i % 7 == 0 else ("big" if i % 2 else "small")
        score = "" if i % 5 == 0 else f"{i / 10:.1f}"
        a = "" if i % 3 == 0 else str(i % 2)
        lines.append(f"{i},{['red', 'green', '?'][i % 3]},{kind},{score},{a},{(i // 2) % 2}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    raw = {
        "name": "kinds",
        "seed": 0,
        "tasks": {
            "kind": {"kind": "classification"},
            "score": {"kind": "regression"},
            "flags": {"kind": "multilabel", "labels": ["a", "b"]},
        },
        "data": {
            "sources": {
                "t": {
                    "format": "tabular",
                    "train": "t.csv",
                    "tasks": {"kind": "kind", "score": "score", "flags": ["a", "b"]},
                    "options": {"numeric": ["x"], "categorical": ["colour"]},
                }
            }
        },
        "model": {"encoder": {"type": "tabular", "hidden": [8]}},
        "trainer": dict(FAST),
    }
    exp = Experiment(validate(copy.deepcopy(raw)), tmp_path)
    examples = [ex for s in ("train", "val", "test") for ex in getattr(exp.sources["t"], s)]
    assert sorted(exp.tasks["kind"].kind.labels) == ["big", "small"]
    assert sum(ex.targets["kind"] is None for ex in examples) == 9  # i % 7 == 0
    assert sum(ex.targets["score"] is None for ex in examples) == 12
    assert sum(ex.targets["flags"][0] is None for ex in examples) == 20
    assert exp.tabular.categories["colour"] == ["green", "red"]  # "?" is missing: OOV
    trained = _cli("train", _write(tmp_path, raw), "--out", tmp_path / "run", "--json")
    assert trained.exit_code == 0, trained.output
    predicted = load(tmp_path / "run", device="cpu").predict([{"x": 3, "colour": "red"}])
    assert set(predicted[0]) == {"kind", "score", "flags"}


def test_tabular_needs_the_tabular_encoder(tmp_path: Path) -> None:
    raw = _census(tmp_path, 50, 20)
    raw["model"]["encoder"] = {"type": "mlp", "hidden": [8]}
    with pytest.raises(ConfigError, match=r"^model\.encoder\.type: format tabular"):
        Experiment(validate(raw), tmp_path)


def _tox21(tmp: Path, n: int = 300) -> dict:
    lines = require_data("tox21/tox21.csv").read_text().splitlines()[: n + 1]
    lines.insert(5, "0,,,,,,,,,,,,BAD1,not-a-smiles")
    (tmp / "tox21.csv").write_text("\n".join(lines) + "\n")
    raw = yaml.safe_load((EXAMPLES / "tox21.yaml").read_text())
    raw["data"]["sources"]["tox21"]["train"] = "tox21.csv"
    raw["data"]["sources"]["tox21"]["options"]["n_bits"] = 256
    raw["model"]["encoder"]["hidden"] = [16]
    raw["trainer"].update(FAST)
    return raw


def test_tox21_fingerprints_splits_and_training(tmp_path: Path) -> None:
    pytest.importorskip("rdkit")
    from polytask.data.molecules import ecfp, scaffold_split
    from polytask.data.splits import split

    raw = _tox21(tmp_path)
    exp = Experiment(validate(copy.deepcopy(raw)), tmp_path)
    s = exp.sources["tox21"]
    everything = s.train + s.val + s.test
    ids = [line.split(",")[12] for line in (tmp_path / "tox21.csv").read_text().splitlines()[1:]]
    order = {mol: i for i, mol in enumerate(ids)}
    assert len(everything) == 300 and "BAD1" not in {ex.id for ex in everything}
    assert len(exp.tasks) == 12
    first = next(ex for ex in everything if ex.id == "TOX3021")
    assert (
        first.inputs["features"].tolist() == ecfp([first.inputs["smiles"]], 2, 256)[0][0].tolist()
    )
    assert first.targets["NR-AR"] == 0 and first.targets["NR-ER"] is None  # missing: masked
    # random: one 80/10/10 draw by the seed over the file's valid molecules, as load_tox21
    in_file = sorted(everything, key=lambda ex: order[ex.id])
    parts = split(in_file, (0.8, 0.1, 0.1), seed=0)
    assert [[ex.id for ex in p] for p in parts] == [
        [ex.id for ex in p] for p in (s.train, s.val, s.test)
    ]
    # scaffold: MoleculeNet's deterministic scaffold split
    raw["data"]["sources"]["tox21"]["options"]["split"] = "scaffold"
    scaf = Experiment(validate(copy.deepcopy(raw)), tmp_path).sources["tox21"]
    positions = scaffold_split([ex.inputs["smiles"] for ex in in_file], (0.8, 0.1, 0.1))
    assert [[in_file[j].id for j in p] for p in positions] == [
        [ex.id for ex in p] for p in (scaf.train, scaf.val, scaf.test)
    ]
    # training from the config
    trained = _cli("train", _write(tmp_path, raw), "--out", tmp_path / "run", "--json")
    assert trained.exit_code == 0, trained.output
    assert len(json.loads(trained.output.strip().splitlines()[-1])) == 12


def test_tox21_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    raw = _tox21(tmp_path, 20)
    raw["data"]["sources"]["tox21"]["options"]["smiles"] = "SMILES"
    with pytest.raises(ConfigError, match=r"^data\.sources\.tox21\.options\.smiles: column"):
        Experiment(validate(copy.deepcopy(raw)), tmp_path)
    raw["data"]["sources"]["tox21"]["options"]["split"] = "cluster"
    with pytest.raises(ConfigError, match=r"^data\.sources\.tox21\.options\.split: unknown"):
        Experiment(validate(raw), tmp_path)
