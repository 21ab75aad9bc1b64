"""``polytask init`` on tabular CSVs (``format: tabular``, the task columns from ``--targets``
or the last column) and SMILES CSVs (``format: molecules``) writes configs that train
(issue 15, point 3)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from shared_data import require_data
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.propose import propose
from polytask.data.adult import ADULT_COLUMNS
from polytask.data.molecules import TOX21_TASKS

ADULT = list(ADULT_COLUMNS)
TOX21 = list(TOX21_TASKS)
QUICK = ["trainer.epochs=1", "trainer.max_steps=2", "trainer.progress=false"]


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _train(config: Path, out: Path) -> None:
    sets = [a for s in QUICK for a in ("--set", s)]
    result = _cli("train", config, "--out", out, *sets)
    assert result.exit_code == 0, (result.stderr, result.exception)


def _head(src: Path, dst: Path, n: int, header: str | None = None) -> Path:
    with open(src, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(n), f)]
    dst.write_text((header + "\n" if header else "") + "".join(lines), "utf-8")
    return dst


def _chem() -> None:
    pytest.importorskip("rdkit", reason="needs the chem extra: pip install 'polytask[chem]'")


def test_a_tox21_slice_becomes_molecules_with_the_twelve_assays(tmp_path):
    _chem()
    data = _head(require_data("tox21/tox21.csv"), tmp_path / "tox.csv", 300)
    config = tmp_path / "tox.yaml"
    result = _cli("init", data, "--out", config)
    assert result.exit_code == 0, (result.stderr, result.exception)
    cfg = yaml.safe_load(config.read_text("utf-8"))
    assert list(cfg["tasks"]) == TOX21
    assert all(t == {"kind": "multilabel", "labels": [n]} for n, t in cfg["tasks"].items())
    source = cfg["data"]["sources"]["tox"]
    assert source["format"] == "molecules" and source["tasks"] == {n: n for n in TOX21}
    assert source["options"] == {
        "smiles": "smiles",
        "id_column": "mol_id",
        "radius": 2,
        "n_bits": 2048,
        "split": "random",
    }
    assert cfg["model"]["encoder"]["type"] == "mlp"
    assert "mol_id: left out (an id column)" in config.read_text("utf-8")
    _train(config, tmp_path / "run")


def _census(tmp_path: Path, n: int = 200) -> Path:
    src = require_data("uci-adult/adult.data")
    return _head(src, tmp_path / "census.csv", n, header=",".join(ADULT))


def test_a_tabular_csv_with_targets_trains(tmp_path):
    data = _census(tmp_path)
    config = tmp_path / "census.yaml"
    result = _cli("init", data, "--out", config, "--targets", "income", "--targets", "sex")
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "took column" not in result.stderr
    cfg = yaml.safe_load(config.read_text("utf-8"))
    assert cfg["tasks"]["income"] == {"kind": "multilabel", "labels": [">50K"]}
    source = cfg["data"]["sources"]["census"]
    assert source["format"] == "tabular"
    assert source["tasks"]["income"] == {"column": "income", "positive": ">50K"}
    options = source["options"]
    assert options["numeric"] == [
        "age",
        "fnlwgt",
        "education-num",
        "capital-gain",
        "capital-loss",
        "hours-per-week",
    ]
    assert "workclass" in options["categorical"] and "sex" not in options["categorical"]
    assert "columns" not in options  # the file has a header row
    assert cfg["model"]["encoder"]["type"] == "tabular"
    _train(config, tmp_path / "run")


def test_without_targets_the_last_column_is_the_task_and_init_says_so(tmp_path):
    data = _census(tmp_path, 120)
    config = tmp_path / "c.yaml"
    result = _cli("init", data, "--out", config)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "took column income as the task; name others with --targets" in result.stderr
    text = config.read_text("utf-8")
    assert "# the task is the last column, income" in text
    assert list(yaml.safe_load(text)["tasks"]) == ["income"]
    # --targets as one comma-separated list; a regression and a classification target
    comma = _cli("init", data, "--out", tmp_path / "d.yaml", "--targets", "age,race")
    assert comma.exit_code == 0, comma.stderr
    assert list(yaml.safe_load((tmp_path / "d.yaml").read_text("utf-8"))["tasks"]) == [
        "age",
        "race",
    ]
    kinds = {n: t.kind for n, t in propose([data], targets=["age", "race"]).tasks.items()}
    assert kinds == {"age": "regression", "race": "classification"}


def test_a_header_less_uci_file_gets_column_names(tmp_path):
    data = _head(require_data("uci-adult/adult.data"), tmp_path / "adult.data", 150)
    config = tmp_path / "a.yaml"
    result = _cli("init", data, "--out", config)
    assert result.exit_code == 0, (result.stderr, result.exception)
    text = config.read_text("utf-8")
    assert "no header row" in text
    source = yaml.safe_load(text)["data"]["sources"]["adult"]
    assert source["options"]["columns"] == [f"column_{i}" for i in range(1, 16)]
    assert source["tasks"] == {"column_15": {"column": "column_15", "positive": ">50K"}}
    assert "column_1" in source["options"]["numeric"]
    _train(config, tmp_path / "run")


def test_smiles_are_found_without_the_column_named_smiles(tmp_path):
    _chem()
    with open(require_data("tox21/tox21.csv"), encoding="utf-8") as f:
        rows = [r for _, r in zip(range(80), csv.DictReader(f))]
    data = tmp_path / "assay.csv"
    with open(data, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["compound", "structure", "active", "logp", "family"])
        for i, r in enumerate(rows):
            family = ["acid", "base", "salt"][i % 3]
            out.writerow([r["mol_id"], r["smiles"], r["SR-ARE"], f"{i * 0.37 % 5:.3f}", family])
    proposal = propose([data])
    [source] = proposal.sources
    assert source.format == "molecules" and source.options["smiles"] == "structure"
    assert source.options["id_column"] == "compound"
    kinds = {n: t.kind for n, t in proposal.tasks.items()}
    assert kinds == {"active": "multilabel", "logp": "regression", "family": "classification"}
    # the molecules reader gives the cells: the regression task parses them
    config = tmp_path / "assay.yaml"
    assert _cli("init", data, "--out", config).exit_code == 0
    _train(config, tmp_path / "run")
    # only the named columns with --targets
    assert list(propose([data], targets=["logp"]).tasks) == ["logp"]


def test_ids_and_text_columns_are_not_smiles(tmp_path):
    data = tmp_path / "t.csv"
    data.write_text(
        "code,size,label\n" + "".join(f"TOX{3000 + i},{'SML'[i % 3]},{i % 2}\n" for i in range(40)),
        "utf-8",
    )
    [source] = propose([data]).sources
    assert source.format == "tabular" and source.options["categorical"] == ["size"]
    assert "code: left out (every value distinct (an id or free text))" in source.notes


@pytest.mark.parametrize(
    "args, field",
    [
        (["--targets", "nope"], "--targets"),
        (["--targets", "k"], "--targets"),  # one value: no task
    ],
)
def test_bad_targets_are_one_line(tmp_path, args, field):
    data = tmp_path / "t.csv"
    data.write_text("id,x,k,y\n" + "".join(f"{i},{i % 7},1,{i % 2}\n" for i in range(30)), "utf-8")
    result = _cli("init", data, "--out", tmp_path / "c.yaml", *args)
    assert result.exit_code == 2, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {field}")


def test_targets_restrict_a_text_file_and_conll_refuses_them(tmp_path):
    texts = ["good screen and fast", "bad battery life here", "the keyboard broke today"]
    data = tmp_path / "r.csv"
    data.write_text(
        "text,sentiment,topic\n"
        + "".join(
            f"{texts[i % 3]} {i},{['pos', 'neg'][i % 2]},{'abc'[i % 3]}\n" for i in range(30)
        ),
        "utf-8",
    )
    assert list(propose([data]).tasks) == ["sentiment", "topic"]
    assert list(propose([data], targets=["topic"]).tasks) == ["topic"]
    conll = tmp_path / "x.conll"
    conll.write_text("Anna B-PER\nmet O\n\nBob B-PER\nran O\n", "utf-8")
    result = _cli("init", conll, "--out", tmp_path / "c.yaml", "--targets", "ner")
    assert result.exit_code == 2 and "CoNLL" in result.stderr
