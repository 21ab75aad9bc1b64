"""``predict`` on raw SMILES for a run trained on ``format: molecules`` (issue 15: a run
directory holds everything it needs to predict): a SMILES is fingerprinted as the reader did
in training (the run's own radius, n_bits, counts and SMILES column), from the library, the
CLI (.txt, .csv, .jsonl) and ``polytask serve``; a moved run needs nothing else; a SMILES
RDKit cannot parse is a one-line error naming the input and the SMILES."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rdkit", reason="needs the chem extra: pip install 'polytask[chem]'")

import yaml  # noqa: E402
from shared_data import require_data  # noqa: E402
from tiny_reviews import cli, one_error  # noqa: E402

from polytask.config.build import Experiment  # noqa: E402
from polytask.config.errors import ConfigError  # noqa: E402
from polytask.config.load import validate  # noqa: E402
from polytask.data.molecules import Fingerprints  # noqa: E402
from polytask.runs import load  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# not the defaults (radius 2, 2048 bits, bits): predicting with the defaults would differ
OPTIONS = {"smiles": "SMILES", "radius": 1, "n_bits": 128, "counts": True}
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC"]


def _config(project: Path, n: int = 160) -> dict[str, Any]:
    """examples/tox21.yaml on the first ``n`` molecules, the SMILES column renamed."""
    lines = require_data("tox21/tox21.csv").read_text().splitlines()[: n + 1]
    lines[0] = lines[0].replace(",smiles", ",SMILES")
    (project / "tox21.csv").write_text("\n".join(lines) + "\n")
    raw = yaml.safe_load((EXAMPLES / "tox21.yaml").read_text())
    source = raw["data"]["sources"]["tox21"]
    source["train"] = "tox21.csv"
    source["options"].update(OPTIONS)
    raw["model"]["encoder"]["hidden"] = [16]
    raw["trainer"].update({"epochs": 1, "batch_size": 64, "eval_batch_size": 256, "threads": 1})
    return raw


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict[str, Any]]:
    project = tmp_path_factory.mktemp("molecules") / "project"
    project.mkdir()
    raw = _config(project)
    (project / "tox21.yaml").write_text(yaml.safe_dump(raw))
    result = cli("train", project / "tox21.yaml", "--out", project / "run", "--device", "cpu")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return project, project / "run", raw


@pytest.fixture(scope="module")
def run(trained) -> Any:
    return load(trained[1], device="cpu")


def _strip_inputs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "input"} for r in rows]


def test_raw_smiles_predict_as_the_readers_examples(trained, run) -> None:
    project, _, raw = trained
    assert run.molecules and run.smiles_column == "SMILES"
    assert run.fingerprints() == Fingerprints(radius=1, n_bits=128, counts=True)
    source = Experiment(validate(copy.deepcopy(raw)), project).sources["tox21"]
    examples = (source.train + source.val + source.test)[:40]
    from_reader = run.predict(examples)
    from_smiles = run.predict([ex.inputs["smiles"] for ex in examples])
    assert from_smiles == from_reader  # the same features, so the same probabilities
    assert set(from_smiles[0]) == set(raw["tasks"])
    built = run.to_examples([examples[0].inputs["smiles"]])[0]
    assert built.inputs["features"].tolist() == examples[0].inputs["features"].tolist()


def test_a_moved_run_predicts_the_same(trained, run, tmp_path) -> None:
    project, run_dir, _ = trained
    before = run.predict(SMILES)
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, moved)
    hidden = project.with_name("project-hidden")
    project.rename(hidden)  # neither the config's folder nor the data file is there
    try:
        assert load(moved, device="cpu").predict(SMILES) == before
    finally:
        hidden.rename(project)


def test_bad_smiles_and_inputs_are_one_line_errors(run) -> None:
    with pytest.raises(ConfigError, match=r"^input 3: SMILES 'C1CC' cannot be parsed by RDKit"):
        run.predict(["CCO", "c1ccccc1", "C1CC", "not-a-smiles"])
    with pytest.raises(ConfigError, match=r"^input 2: an empty SMILES"):
        run.predict(["CCO", "  "])
    with pytest.raises(ConfigError, match=r"^input 1: a list, but the run was trained on format"):
        run.predict([["C", "C", "O"]])


def test_sources_with_different_fingerprints_refuse_raw_smiles(trained, run) -> None:
    other = load(trained[1], device="cpu")
    other.molecule_sources["more"] = ("smiles", Fingerprints(radius=2, n_bits=128, counts=True))
    with pytest.raises(ConfigError, match=r"^data\.sources\.more\.options\.radius: .*\(tox21: 1"):
        other.predict(["CCO"])
    assert other.predict(run.to_examples(["CCO"])) == run.predict(["CCO"])  # features: fine


def test_cli_predict_txt_csv_and_jsonl(trained, run, tmp_path) -> None:
    _, run_dir, _ = trained
    expected = run.predict(SMILES)
    (tmp_path / "in.txt").write_text("\n".join(SMILES) + "\n\n")
    with open(tmp_path / "in.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "SMILES"])
        w.writerows([i, s] for i, s in enumerate(SMILES))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"SMILES": s}) + "\n" for s in SMILES))
    for name in ("in.txt", "in.csv", "in.jsonl"):
        result = cli("predict", run_dir, tmp_path / name, "--device", "cpu")
        assert result.exit_code == 0, (name, result.stderr, result.exception)
        out = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["input"] for r in out] == SMILES  # the SMILES echoed, as text inputs are
        assert _strip_inputs(out) == json.loads(json.dumps(expected))
    (tmp_path / "bad.txt").write_text("CCO\nC1CC\n")
    problem = one_error(cli("predict", run_dir, tmp_path / "bad.txt", "--device", "cpu"), "input 2")
    assert problem.startswith("SMILES 'C1CC' cannot be parsed by RDKit")
    (tmp_path / "other.csv").write_text("smiles\nCCO\n")
    one_error(
        cli("predict", run_dir, tmp_path / "other.csv", "--device", "cpu"),
        str(tmp_path / "other.csv"),
    )


def test_serve_accepts_smiles_and_rejects_a_bad_one(run) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from polytask.serve import create_app

    with TestClient(create_app(run)) as client:
        answer = client.post("/predict", json={"inputs": SMILES})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["tasks"] == list(run.tasks)
        assert body["predictions"] == json.loads(json.dumps(run.predict(SMILES)))
        bad = client.post("/predict", json={"inputs": ["CCO", "C1CC"]})
        assert bad.status_code == 422, bad.text
        error = bad.json()["error"]
        assert error["field"] == "inputs.1" and "'C1CC'" in error["problem"]
        tokens = client.post("/predict", json={"inputs": [["C", "C", "O"]]})
        assert tokens.status_code == 422 and tokens.json()["error"]["field"] == "inputs.0"
        assert client.get("/health").json()["status"] == "ok"  # still serving
