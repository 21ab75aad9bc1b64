"""More sources from a YAML config: Parquet files for ``format: tabular`` (the ``parquet``
extra: pyarrow) on a slice of the real UCI Adult file, and Hugging Face data sets saved with
``save_to_disk`` (``format: hf_disk``, the ``hf`` extra: datasets) on SemEval-2014 laptop
sentences; each one-line error when the extra is missing."""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from shared_data import laptop_rows, require_data
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.build import Experiment
from polytask.config.errors import ConfigError
from polytask.config.load import validate
from polytask.data import formats
from polytask.data.adult import ADULT_COLUMNS
from polytask.data.readers import read_jsonl
from polytask.data.tabular import read_table_rows

COLUMNS = list(ADULT_COLUMNS)
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = ["workclass", "education", "occupation", "race", "sex", "native-country"]
FAST = {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "threads": 1, "max_steps": 2}
TRAIN_XML = "semeval14-laptops/Laptop_Train_v2.xml"


def _adult_slice(tmp: Path, n: int = 300) -> Path:
    lines = require_data("uci-adult/adult.data").read_text().splitlines()[:n]
    path = tmp / "adult.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _tabular(tmp: Path, train: str, columns: list[str] | None) -> dict:
    options: dict[str, Any] = {"numeric": NUMERIC, "categorical": CATEGORICAL}
    if columns:
        options["columns"] = columns
    return {
        "name": "adult",
        "seed": 0,
        "tasks": {"income": {"kind": "multilabel", "labels": [">50K"]}},
        "data": {
            "sources": {
                "adult": {
                    "format": "tabular",
                    "train": train,
                    "tasks": {"income": {"column": "income", "positive": ">50K"}},
                    "options": options,
                }
            }
        },
        "model": {"encoder": {"type": "tabular", "hidden": [8]}},
        "trainer": dict(FAST),
    }


def _strip_name(ident: str) -> str:
    return ident.split(":", 1)[1]


def test_parquet_gives_the_examples_of_the_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_path = _adult_slice(tmp_path)
    _, rows = read_table_rows(csv_path, columns=COLUMNS)
    cells = [r for _, r in rows]
    # the cells as the CSV gives them (strings), and typed as a user's Parquet file holds them
    pq.write_table(pa.Table.from_pylist(cells), tmp_path / "adult.parquet")
    typed = [{c: (int(v) if c in NUMERIC else v) for c, v in r.items()} for r in cells]
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "typed.parquet")

    def read(train: str, columns: list[str] | None) -> Experiment:
        return Experiment(validate(_tabular(tmp_path, train, columns)), tmp_path)

    from_csv = read("adult.csv", COLUMNS)
    from_parquet = read("adult.parquet", None)
    from_typed = read("typed.parquet", None)
    for name in ("train", "val", "test"):
        a = getattr(from_csv.sources["adult"], name)
        b = getattr(from_parquet.sources["adult"], name)
        assert [_strip_name(ex.id) for ex in a] == [_strip_name(ex.id) for ex in b]
        assert [ex.inputs for ex in a] == [ex.inputs for ex in b]
        assert [ex.targets for ex in a] == [ex.targets for ex in b]
    assert len(from_csv.sources["adult"].train) > 200
    # typed numbers: the same model inputs once standardised, the same targets
    assert from_typed.tabular.state() == from_csv.tabular.state()
    a, t = from_csv.sources["adult"].test, from_typed.sources["adult"].test
    assert [ex.targets for ex in a] == [ex.targets for ex in t]
    x_csv = from_csv.collator(whole=True)(a).inputs["x"]
    x_typed = from_typed.collator(whole=True)(t).inputs["x"]
    assert x_csv.tolist() == x_typed.tolist()
    # and it trains from the config
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_tabular(tmp_path, "adult.parquet", None)))
    trained = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import MODULE`` fail as it does where the package is not installed."""
    real = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in modules:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    for m in list(sys.modules):
        if m.split(".")[0] in modules:
            monkeypatch.delitem(sys.modules, m)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "adult.parquet").write_bytes(b"PAR1")
    _hide(monkeypatch, "pyarrow")
    with pytest.raises(ConfigError) as err:
        Experiment(validate(_tabular(tmp_path, "adult.parquet", None)), tmp_path)
    message = str(err.value)
    assert "reading Parquet needs pyarrow; fix: pip install 'polytask[parquet]'" in message
    assert message.startswith(str(tmp_path / "adult.parquet")) and "\n" not in message


def _laptops(tmp: Path, n: int = 60) -> tuple[Path, list[dict]]:
    """A Dataset of SemEval-2014 laptop sentences saved to disk: tokens, BIO tags as a
    sequence of ClassLabel, the sentiment as a ClassLabel (-1: none), and an id column."""
    datasets = pytest.importorskip("datasets")
    rows = laptop_rows(TRAIN_XML, n)
    tags = ["O", "B-ASP", "I-ASP"]
    polarity = ["negative", "positive"]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=tags)),
            "sentiment": datasets.ClassLabel(names=polarity),
        }
    )
    data = datasets.Dataset.from_dict(
        {
            "id": [f"s{i}" for i in range(len(rows))],
            "tokens": [r["tokens"] for r in rows],
            "tags": [[tags.index(t) for t in r["tags"]] for r in rows],
            "sentiment": [polarity.index(r["sentiment"]) if r["sentiment"] else -1 for r in rows],
        },
        features=features,
    )
    folder = tmp / "laptops"
    data.save_to_disk(str(folder))
    # the same rows as JSONL, to compare with the jsonl reader
    with open(tmp / "laptops.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            row = {"id": f"s{i}", "tokens": r["tokens"], "tags": r["tags"]}
            f.write(json.dumps({**row, "sentiment": r["sentiment"]}) + "\n")
    return folder, rows


def _hf_config(train: str, **options: Any) -> dict:
    return {
        "name": "laptops",
        "seed": 0,
        "tasks": {
            "aspects": {"kind": "tagging"},
            "sentiment": {"kind": "classification"},
        },
        "data": {
            "sources": {
                "laptops": {
                    "format": "hf_disk",
                    "train": train,
                    "tasks": {"aspects": "tags", "sentiment": "sentiment"},
                    "options": options,
                }
            }
        },
        "model": {"encoder": {"type": "bilstm", "embed_dim": 8, "hidden": 8}},
        "trainer": dict(FAST),
    }


def test_hf_disk_reads_a_saved_dataset_as_jsonl_reads_its_rows(tmp_path: Path) -> None:
    folder, rows = _laptops(tmp_path)
    reader = formats.FORMATS.resolve("hf_disk")({"aspects": "tags", "sentiment": "sentiment"})
    got = reader.read(folder)
    want = read_jsonl(
        tmp_path / "laptops.jsonl", targets={"aspects": "tags", "sentiment": "sentiment"}
    )
    assert [ex.id for ex in got] == [ex.id for ex in want] == [f"s{i}" for i in range(60)]
    assert [ex.inputs for ex in got] == [ex.inputs for ex in want]
    assert [ex.targets for ex in got] == [ex.targets for ex in want]  # ClassLabel -> names
    assert any(ex.targets["sentiment"] is None for ex in got)  # -1: missing, masked
    assert reader.tokenizer == "pretokenized"
    exp = Experiment(validate(_hf_config("laptops")), tmp_path)
    assert exp.tasks["aspects"].kind.labels == ["O", "B-ASP", "I-ASP"]
    assert sorted(exp.tasks["sentiment"].kind.labels) == ["negative", "positive"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_hf_config("laptops")))
    trained = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output


def test_hf_disk_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = _laptops(tmp_path, 8)
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.load_from_disk(str(folder))}).save_to_disk(
        str(tmp_path / "dict")
    )
    cases = [
        (_hf_config("laptops", text_feild="tokens"), "data.sources.laptops.options.text_feild:"),
        (_hf_config("dict"), f"{tmp_path / 'dict'}: a DatasetDict (splits train)"),
        (_hf_config("laptops.jsonl"), f"{tmp_path / 'laptops.jsonl'}: not a data set saved"),
    ]
    bad_column = _hf_config("laptops")
    bad_column["data"]["sources"]["laptops"]["tasks"]["sentiment"] = "polarity"
    cases.append((bad_column, "data.sources.laptops.tasks.sentiment: column 'polarity'"))
    for raw, start in cases:
        with pytest.raises(ConfigError) as err:
            Experiment(validate(raw), tmp_path)
        message = str(err.value)
        assert message.startswith(start), message
        assert "\n" not in message
    _hide(monkeypatch, "datasets")
    with pytest.raises(ConfigError) as err:
        Experiment(validate(_hf_config("laptops")), tmp_path)
    message = str(err.value)
    assert message.startswith("data.sources.laptops.format: format hf_disk needs the datasets")
    assert "pip install 'polytask[hf]'" in message and "\n" not in message
