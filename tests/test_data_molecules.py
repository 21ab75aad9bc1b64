"""Molecules: ECFP bits, invalid SMILES reported, Bemis–Murcko scaffold split, Tox21 loader."""

from __future__ import annotations

import pytest

pytest.importorskip("rdkit", reason="needs the chem extra: pip install 'polytask[chem]'")

import numpy as np  # noqa: E402
from shared_data import require_data  # noqa: E402

from polytask.data.molecules import (  # noqa: E402
    TOX21_TASKS,
    InvalidSmilesError,
    ecfp,
    load_tox21,
    murcko_scaffold,
    scaffold_split,
)


def test_ecfp_bits_and_invalid_smiles() -> None:
    fps, invalid = ecfp(["c1ccccc1", "CCO", "not a smiles", "c1ccccc1"], radius=2, n_bits=2048)
    assert fps.shape == (4, 2048) and fps.dtype == np.uint8
    assert invalid == [2] and fps[2].sum() == 0
    assert np.array_equal(fps[0], fps[3])
    assert fps[0].sum() == 3  # benzene: one atom environment per radius (0, 1, 2)
    assert 0 < fps[1].sum() <= 9
    small, _ = ecfp(["CCO"], radius=1, n_bits=64)
    assert small.shape == (1, 64)
    counted, _ = ecfp(["c1ccccc1", "CCO"], counts=True)
    assert counted.dtype == np.uint8 and counted[0].sum() == 18  # 6 atoms x radius 0, 1, 2
    assert np.array_equal(counted > 0, fps[[0, 1]] > 0)


def test_murcko_scaffold() -> None:
    assert murcko_scaffold("CC(=O)Oc1ccccc1C(=O)O") == "c1ccccc1"  # aspirin
    assert murcko_scaffold("CCO") == ""
    assert murcko_scaffold("c1ccc(Cc2ccncc2)cc1") == "c1ccc(Cc2ccncc2)cc1"
    with pytest.raises(InvalidSmilesError, match="1 SMILES"):
        murcko_scaffold("C1CC")


def test_scaffold_split_keeps_scaffolds_together_largest_first() -> None:
    benzenes = ["Cc1ccccc1", "CCc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "Clc1ccccc1", "Brc1ccccc1"]
    pyridines = ["Cc1ccncc1", "Oc1ccncc1"]
    acyclic = ["CCO", "CCCC"]
    other = ["C1CCCCC1O", "c1ccc2ccccc2c1"]
    smiles = [*other, *pyridines, *benzenes, *acyclic]
    train, val, test = scaffold_split(smiles, (0.6, 0.2, 0.2))
    assert sorted(train + val + test) == list(range(len(smiles)))
    groups = {}
    for i, s in enumerate(smiles):
        groups.setdefault(murcko_scaffold(s), set()).add(i)
    for g in groups.values():  # no scaffold is split between parts
        assert sum(bool(g & set(part)) for part in (train, val, test)) == 1
    # cut-offs 0.6 * 12 = 7.2 and 0.8 * 12 = 9.6; groups largest first, ties: the group whose
    # first molecule comes later goes first (as in DeepChem): benzenes (6) -> train; acyclic (2,
    # first at 10) -> val; pyridines (2, first at 2) -> test; naphthalene (1, at 1) still fits
    # in train (7 <= 7.2); cyclohexanol (1, at 0) -> test
    assert {smiles[i] for i in train} == {*benzenes, "c1ccc2ccccc2c1"}
    assert {smiles[i] for i in val} == set(acyclic)
    assert {smiles[i] for i in test} == {*pyridines, "C1CCCCC1O"}
    assert scaffold_split(smiles, (0.6, 0.2, 0.2)) == (train, val, test)  # deterministic
    with pytest.raises(InvalidSmilesError):
        scaffold_split(["CCO", "xx"])
    with pytest.raises(ValueError, match="fractions"):
        scaffold_split(["CCO"], (0.5, 0.5))


@pytest.fixture(scope="module")
def tox21_head(tmp_path_factory: pytest.TempPathFactory):
    path = require_data("tox21/tox21.csv")
    lines = path.read_text(encoding="utf-8").splitlines()[:201]
    out = tmp_path_factory.mktemp("tox21")
    (out / "tox21.csv").write_text(
        "\n".join(lines + ["0,,,,,,,,,,,1,TOXBAD,C1CC"]) + "\n", encoding="utf-8"
    )
    return out


def test_tox21_loader_random_and_scaffold(tox21_head) -> None:
    data = load_tox21(tox21_head, split_by="random", seed=1, n_bits=256)
    assert data.tasks == TOX21_TASKS and len(TOX21_TASKS) == 12
    assert data.invalid == [(200, "C1CC")]
    assert (len(data.train), len(data.val), len(data.test)) == (160, 20, 20)
    ex = data.train[0]
    assert ex.inputs["features"].shape == (256,) and set(ex.targets) == set(TOX21_TASKS)
    labels = [v for e in data.train + data.val + data.test for v in e.targets.values()]
    assert None in labels and set(labels) == {0, 1, None}
    again = load_tox21(tox21_head, split_by="random", seed=1, n_bits=256)
    assert [e.id for e in again.test] == [e.id for e in data.test]
    assert [e.id for e in load_tox21(tox21_head, seed=2, n_bits=256).test] != [
        e.id for e in data.test
    ]
    scaf = load_tox21(tox21_head, split_by="scaffold", n_bits=256)
    assert len(scaf.train) + len(scaf.val) + len(scaf.test) == 200 and len(scaf.train) <= 160
    with pytest.raises(InvalidSmilesError, match="C1CC"):
        load_tox21(tox21_head, on_invalid="raise", n_bits=256)
    with pytest.raises(ValueError, match="split_by"):
        load_tox21(tox21_head, split_by="time")


def test_tox21_tasks_mask_missing_labels() -> None:
    from polytask.data import Collator, Example
    from polytask.data.molecules import tox21_tasks

    tasks = tox21_tasks()
    assert list(tasks) == list(TOX21_TASKS) and tasks["SR-p53"].primary_metric == "roc_auc"
    collate = Collator(tasks, input_kind="features")
    batch = collate(
        [Example({"features": np.ones(4, dtype=np.uint8)}, {"NR-AR": 1, "SR-p53": None})]
    )
    assert batch.targets["NR-AR"][1].tolist() == [[True]] and batch.targets["SR-p53"][
        1
    ].tolist() == [[False]]
    assert "SR-p53" not in batch.tasks
