"""Molecules: ECFP fingerprints, Bemis–Murcko scaffold splits, and Tox21.

Needs RDKit (``pip install polytask[chem]``); it is imported only when a function here
needs it.

* :func:`ecfp`: Morgan / ECFP fingerprints (Rogers & Hahn 2010), radius 2 (ECFP4) and
  2048 bits by default, as ``uint8`` arrays; SMILES that RDKit cannot parse are reported
  (their positions), never silently dropped.
* :class:`Fingerprints`: the features ``format: molecules`` gives a SMILES (its ``radius``,
  ``n_bits`` and ``counts`` options), in training and at prediction alike.
* :func:`scaffold_split`: the deterministic scaffold split of MoleculeNet (Wu et al. 2018)
  as DeepChem's ``ScaffoldSplitter`` makes it: molecules are grouped by their Bemis–Murcko
  scaffold (Bemis & Murcko 1996; generic SMILES without chirality); groups are sorted
  largest first (ties: the group whose first molecule comes later in the file first, as
  DeepChem's sort does) and put in train while it stays within ``fractions[0] · n``, then in
  validation while train + validation stay within ``(fractions[0] + fractions[1]) · n``, and
  the rest in test. Big scaffolds end up in train and test holds rare scaffolds: a harder,
  out-of-distribution test than a random split.
* :func:`load_tox21`: the 12 Tox21 assays (MoleculeNet's 7,831 molecules, 17% of labels
  missing) as examples with ``features`` (the fingerprint) and one target per assay
  (0 / 1 / None), split at random 80/10/10 by seed or by scaffold.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polytask.data.base import Example
from polytask.data.readers import PathLike, data_root, resolve_data_path
from polytask.data.splits import split
from polytask.errors import DataError, OptionError

__all__ = [
    "TOX21_TASKS",
    "Fingerprints",
    "MoleculeData",
    "InvalidSmilesError",
    "ecfp",
    "load_tox21",
    "murcko_scaffold",
    "require_rdkit",
    "scaffold_split",
    "tox21_tasks",
]

TOX21_TASKS = (
    "NR-AR",
    "NR-AR-LBD",
    "NR-AhR",
    "NR-Aromatase",
    "NR-ER",
    "NR-ER-LBD",
    "NR-PPAR-gamma",
    "SR-ARE",
    "SR-ATAD5",
    "SR-HSE",
    "SR-MMP",
    "SR-p53",
)
SPLITS = ("random", "scaffold")


class InvalidSmilesError(DataError):
    """SMILES that RDKit cannot parse, with their positions."""

    def __init__(self, invalid: Sequence[tuple[int, str]]) -> None:
        self.invalid = list(invalid)
        shown = ", ".join(f"#{i} {s!r}" for i, s in self.invalid[:5])
        more = f" and {len(self.invalid) - 5} more" if len(self.invalid) > 5 else ""
        super().__init__(
            "smiles",
            f"{len(self.invalid)} SMILES could not be parsed by RDKit: {shown}{more}",
            "correct them, or pass on_invalid='skip' to leave them out (they are counted)",
        )


def require_rdkit() -> ModuleType:
    """``rdkit.Chem``, or an ImportError that names the extra to install."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover - exercised only without rdkit
        raise ImportError(
            "polytask.data.molecules needs RDKit; fix: pip install 'polytask[chem]' "
            f"(or pip install rdkit) ({err})"
        ) from None
    # parse failures are reported by us, once, not per atom; rdkit-stubs omit RDLogger's
    # re-export of rdBase.DisableLog
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    return Chem


def _mols(smiles: Sequence[str]) -> tuple[list[Any], list[tuple[int, str]]]:
    Chem = require_rdkit()
    mols, invalid = [], []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
        mols.append(mol)
        if mol is None:
            invalid.append((i, s))
    return mols, invalid


def ecfp(
    smiles: Sequence[str], radius: int = 2, n_bits: int = 2048, counts: bool = False
) -> tuple[np.ndarray, list[int]]:
    """``(fingerprints, invalid)``: (N, n_bits) ``uint8`` Morgan bit vectors of radius ``radius``
    (all zero for an invalid SMILES), and the positions of the SMILES RDKit could not parse.

    ``counts=True`` gives the folded count fingerprint instead (how many atom environments
    hash to each position, capped at 255), ``uint8`` as well."""
    if radius < 0 or n_bits < 1:
        raise ValueError(f"ecfp: radius={radius} must be >= 0 and n_bits={n_bits} >= 1")
    require_rdkit()
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    mols, invalid = _mols(smiles)
    out = np.zeros((len(mols), n_bits), dtype=np.uint8)
    for i, mol in enumerate(mols):
        if mol is not None:
            out[i] = (
                np.minimum(gen.GetCountFingerprintAsNumPy(mol), 255)
                if counts
                else gen.GetFingerprintAsNumPy(mol)
            )
    return out, [i for i, _ in invalid]


@dataclass(frozen=True)
class Fingerprints:
    """The features of ``format: molecules``: :func:`ecfp` bits of radius ``radius`` folded to
    ``n_bits`` (``uint8``), or with ``counts`` ``log(1 + count)`` of the count fingerprint
    (``float32``). The reader computes a source's features with it and a trained run its raw
    SMILES, from the same options, so both get the same vectors."""

    radius: int = 2
    n_bits: int = 2048
    counts: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Fingerprints:
        """The settings of a source's ``options`` (defaults where absent)."""
        return cls(
            radius=int(options.get("radius", 2)),
            n_bits=int(options.get("n_bits", 2048)),
            counts=bool(options.get("counts", False)),
        )

    def __call__(self, smiles: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """``(features, invalid)``: one row per SMILES (all zero for one RDKit cannot parse)
        and the positions of those RDKit could not parse."""
        fps, invalid = ecfp(smiles, radius=self.radius, n_bits=self.n_bits, counts=self.counts)
        return (np.log1p(fps.astype(np.float32)) if self.counts else fps), invalid


def murcko_scaffold(smiles: str, include_chirality: bool = False) -> str:
    """The Bemis–Murcko scaffold of ``smiles`` as canonical SMILES ("" for an acyclic molecule)."""
    Chem = require_rdkit()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidSmilesError([(0, smiles)])
    # rdkit-stubs leave MurckoScaffoldSmiles unannotated; it returns the scaffold's SMILES
    scaffold_smiles: Callable[..., str] = MurckoScaffold.MurckoScaffoldSmiles
    return scaffold_smiles(mol=mol, includeChirality=include_chirality)


def scaffold_split(
    smiles: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    include_chirality: bool = False,
) -> tuple[list[int], list[int], list[int]]:
    """Train / validation / test *positions* of a deterministic scaffold split (module docstring).

    Every SMILES must parse (filter invalid ones first, e.g. with :func:`ecfp`'s report)."""
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(
            f"scaffold_split: fractions {fr} must be three non-negative numbers summing to 1"
        )
    groups: dict[str, list[int]] = {}
    bad = []
    for i, s in enumerate(smiles):
        try:
            key = murcko_scaffold(s, include_chirality)
        except InvalidSmilesError:
            bad.append((i, s))
            continue
        groups.setdefault(key, []).append(i)
    if bad:
        raise InvalidSmilesError(bad)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(smiles)
    train_cut, val_cut = fr[0] * n, (fr[0] + fr[1]) * n
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for g in ordered:
        if len(train) + len(g) > train_cut:
            if len(train) + len(val) + len(g) > val_cut:
                test += g
            else:
                val += g
        else:
            train += g
    return sorted(train), sorted(val), sorted(test)


@dataclass
class MoleculeData:
    """Train / validation / test examples, the task names, and what was left out."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    tasks: tuple[str, ...]
    #: ``(row position, SMILES)`` of molecules RDKit could not parse (left out)
    invalid: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return int(len(self.train[0].inputs["features"]))


def tox21_tasks() -> dict[str, Any]:
    """One binary :class:`~polytask.tasks.Multilabel` task per assay (primary metric ROC-AUC)."""
    from polytask.tasks import Multilabel, Task

    return {name: Task(name, Multilabel([name])) for name in TOX21_TASKS}


def read_tox21(path: PathLike) -> list[dict[str, Any]]:
    """Rows of ``tox21.csv`` as ``{"mol_id", "smiles", "labels": {assay: 0/1/None}}``."""
    p = resolve_data_path(path)
    rows = []
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [
            c for c in (*TOX21_TASKS, "smiles", "mol_id") if c not in (reader.fieldnames or [])
        ]
        if missing:
            raise ValueError(
                f"{p}: no column(s) {missing}; expected MoleculeNet's tox21.csv header"
            )
        for lineno, r in enumerate(reader, start=2):
            labels: dict[str, int | None] = {}
            for t in TOX21_TASKS:
                cell = (r[t] or "").strip()
                if cell == "":
                    labels[t] = None
                elif cell in ("0", "1", "0.0", "1.0"):
                    labels[t] = int(float(cell))
                else:
                    raise ValueError(f"{p} line {lineno}: {t} is {cell!r}, expected 0, 1 or empty")
            rows.append({"mol_id": r["mol_id"], "smiles": r["smiles"], "labels": labels})
    return rows


def load_tox21(
    root: PathLike | None = None,
    *,
    split_by: str = "random",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    radius: int = 2,
    n_bits: int = 2048,
    counts: bool = False,
    on_invalid: str = "skip",
) -> MoleculeData:
    """Tox21 with ECFP features (module docstring).

    ``root``: the folder with ``tox21.csv`` (default ``<data_root>/tox21``). ``split_by``:
    ``"random"`` (80/10/10 by ``seed``, :func:`polytask.data.split`) or ``"scaffold"``
    (deterministic; ``seed`` is not used). ``on_invalid``: ``"skip"`` leaves unparsable
    SMILES out and lists them in :attr:`MoleculeData.invalid`; ``"raise"`` raises
    :class:`InvalidSmilesError`. Fingerprints are ``uint8`` arrays (the collator stacks them);
    ``counts=True``: ``log(1 + count)`` of the folded count fingerprint, ``float32``, instead
    of bits.
    """
    if split_by not in SPLITS:
        raise OptionError("split_by", f"unknown split {split_by!r}", f"use one of {list(SPLITS)}")
    if on_invalid not in ("skip", "raise"):
        raise OptionError("on_invalid", f"{on_invalid!r}", "use 'skip' or 'raise'")
    folder = Path(resolve_data_path(root)) if root is not None else data_root() / "tox21"
    path = folder / "tox21.csv"
    if not path.is_file():
        raise DataError(
            str(path),
            "not found",
            "give load_tox21(root=) the folder with tox21.csv (MoleculeNet), or set POLYTASK_DATA",
        )
    rows = read_tox21(path)
    fps, bad = ecfp([r["smiles"] for r in rows], radius=radius, n_bits=n_bits, counts=counts)
    if counts:
        fps = np.log1p(fps.astype(np.float32))
    invalid = [(i, rows[i]["smiles"]) for i in bad]
    if invalid and on_invalid == "raise":
        raise InvalidSmilesError(invalid)
    skipped = set(bad)
    keep = [i for i in range(len(rows)) if i not in skipped]
    examples = [
        Example({"features": fps[i]}, dict(rows[i]["labels"]), id=rows[i]["mol_id"]) for i in keep
    ]
    if split_by == "random":
        train, val, test = split(examples, fractions, seed=seed)
    else:
        parts = scaffold_split([rows[i]["smiles"] for i in keep], fractions)
        train, val, test = ([examples[j] for j in part] for part in parts)
    return MoleculeData(list(train), list(val), list(test), TOX21_TASKS, invalid)
