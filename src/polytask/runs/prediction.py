"""A trained run read back from its directory: ``load(RUN_DIR).predict(...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..config.build import Experiment
from ..config.errors import ConfigError
from ..config.load import validate
from ..config.schema import Config
from ..data.base import Example
from ..data.formats import FORMATS, Molecules
from ..data.molecules import Fingerprints
from ..data.tokenizers import TOKENIZERS, choose, tokenize_with
from ..engine import checkpoint as ckpt
from ..engine.checkpoint import CheckpointError
from ..engine.trainer import resolve_device
from ..evaluation.evaluate import evaluate, predict
from .directory import ENCODER, read_run

__all__ = ["LoadedRun", "load"]


class LoadedRun:
    """A trained run: model, tasks and vocabularies, ready to predict (see :func:`load`)."""

    def __init__(self, run_dir: str | Path, device: str | torch.device = "auto") -> None:
        self.run_dir = Path(run_dir)
        files = read_run(self.run_dir)  # every file checked against the run's manifest
        self.raw = files.config
        self.cfg = validate(self.raw)
        self.vocab = files.vocab
        self.base_dir = base_dir_of(self.run_dir, files.meta)
        encoder = self.run_dir / ENCODER
        if encoder.is_dir():  # a transformer run carries its encoder's config and tokenizer
            options = {**self.cfg.model.encoder.model_dump(), "path": str(encoder.resolve())}
            self.cfg.model.encoder = type(self.cfg.model.encoder).model_validate(
                {**options, "pretrained": False}
            )
        self.experiment = Experiment(
            self.cfg,
            self.base_dir,
            vocab=self.vocab,
            labels=files.meta["labels"],
            load_data=False,
        )
        self.tasks = self.experiment.tasks
        for t, labels in files.manifest["labels"].items():
            kind = self.tasks[t].kind if t in self.tasks else None
            if kind is None or list(getattr(kind, "labels", labels)) != list(labels):
                raise CheckpointError(
                    str(self.run_dir / "config.yaml"),
                    f"task {t!r} does not have the labels the run was trained with ({labels})",
                    "restore the run's config.yaml, or train the run again",
                )
        self.model = self.experiment.build_model()
        tensors, _ = ckpt.load_checkpoint(self.run_dir / "best")
        ckpt.restore_model(self.model, tensors, where=str(self.run_dir / "best"))
        self.device = resolve_device(str(device))
        self.model.to(self.device).eval()
        self.collate = self.experiment.collator(whole=True)  # never drops a token
        #: how each source split raw text in training (empty for runs trained before
        #: tokenizers were recorded) and what raw text gets here (None: sources differed)
        self.tokenizers: dict[str, str | None] = dict(files.meta.get("tokenizers") or {})
        self.tokenizer = choose(self.tokenizers, self.cfg.data.tokenizer)
        #: the ``format: molecules`` sources (empty: raw strings are text) by name: their
        #: SMILES column and fingerprint settings, read from the run's config
        self.molecule_sources: dict[str, tuple[str, Fingerprints]] = molecule_sources(self.cfg)
        #: the SMILES column of the run's molecules sources (``None`` for other runs): the
        #: column (CSV) or field (JSONL) ``predict`` reads from an input file
        self.smiles_column = next((c for c, _ in self.molecule_sources.values()), None)

    @property
    def molecules(self) -> bool:
        """Whether the run was trained on ``format: molecules``: a raw string is a SMILES."""
        return bool(self.molecule_sources)

    def fingerprints(self) -> Fingerprints:
        """How a raw SMILES becomes features: as every molecules source of the run did in
        training; a :class:`ConfigError` when the sources used different settings."""
        (first, (_, fp)), *rest = self.molecule_sources.items()
        for name, (_, other) in rest:
            for option in ("radius", "n_bits", "counts"):
                if getattr(other, option) != getattr(fp, option):
                    raise ConfigError(
                        f"data.sources.{name}.options.{option}",
                        f"the run's molecules sources fingerprint SMILES differently ({first}: "
                        f"{getattr(fp, option)}, {name}: {getattr(other, option)})",
                        "give Examples with their features, or train every molecules source "
                        "with the same radius, n_bits and counts",
                    )
        return fp

    def _smiles_examples(self, items: Sequence[tuple[int, str]]) -> list[Example]:
        """Examples of raw SMILES (``(position, SMILES)``), featurised as in training."""
        if not items:
            return []
        fingerprints = self.fingerprints()
        smiles = [s.strip() for _, s in items]
        features, invalid = fingerprints(smiles)
        if invalid:
            j = invalid[0]
            more = f" ({len(invalid) - 1} more after it)" if len(invalid) > 1 else ""
            raise ConfigError(
                f"input {items[j][0] + 1}",
                f"SMILES {items[j][1]!r} cannot be parsed by RDKit{more}",
                "correct it, or leave it out",
            )
        return [Example(inputs={"features": f, "smiles": s}) for f, s in zip(features, smiles)]

    def to_examples(
        self,
        inputs: Iterable[str | Sequence[str] | Mapping[str, Any] | Example],
        tokenizer: str | None = None,
    ) -> list[Example]:
        """Examples of ``inputs``: raw text is split as the run's sources split it in
        training (or by ``tokenizer``, a name of :data:`~polytask.data.tokenizers.TOKENIZERS`);
        token lists and examples are taken as they are; a mapping column -> value is a raw
        row of a ``format: tabular`` run, transformed by the run's fitted preprocessor; for a
        run trained on ``format: molecules`` a string is a SMILES, fingerprinted as the
        run's sources were (:meth:`fingerprints`; one RDKit cannot parse is an error naming
        the input)."""
        name = tokenizer or self.tokenizer
        prep = self.experiment.tabular
        out: list[Example | None] = []
        smiles: list[tuple[int, str]] = []  # raw SMILES of a molecules run: featurised at once
        for i, x in enumerate(inputs):
            if isinstance(x, Example):
                out.append(x)
            elif self.molecules and isinstance(x, str):
                if not x.strip():
                    raise ConfigError(f"input {i + 1}", "an empty SMILES", "give a molecule")
                smiles.append((i, x))
                out.append(None)
            elif self.molecules:
                raise ConfigError(
                    f"input {i + 1}",
                    f"a {type(x).__name__}, but the run was trained on format molecules",
                    "give SMILES strings (or Examples with their features)",
                )
            elif isinstance(x, Mapping):
                if prep is None:
                    raise ConfigError(
                        f"input {i + 1}",
                        "a mapping of columns, but the run was not trained on format tabular",
                        "give text or token lists",
                    )
                absent = [c for c in prep.numeric + prep.categorical if c not in x]
                if absent:
                    raise ConfigError(
                        f"input {i + 1}",
                        f"the row has no column(s) {', '.join(absent)}",
                        "give every feature column the run was trained with (a missing value "
                        'as null or "?")',
                    )
                out.append(Example(inputs={"row": dict(x)}))
            elif isinstance(x, str):
                if name is None:
                    used = ", ".join(f"{s}: {t}" for s, t in sorted(self.tokenizers.items()))
                    raise ConfigError(
                        "--tokenizer",
                        f"the run's sources split raw text differently ({used})",
                        f"choose one ({', '.join(TOKENIZERS)}), or give token lists "
                        '(JSONL {"tokens": [...]})',
                    )
                out.append(Example(inputs={"tokens": tokenize_with(name, x)}))
            else:
                out.append(Example(inputs={"tokens": list(x)}))
        for (i, _), ex in zip(smiles, self._smiles_examples(smiles)):
            out[i] = ex
        return [ex for ex in out if ex is not None]

    def predict(
        self,
        inputs: Iterable[str | Sequence[str] | Mapping[str, Any] | Example],
        batch_size: int = 64,
        tokenizer: str | None = None,
    ) -> list[dict[str, Any]]:
        """One dict per input: ``{task: formatted prediction}`` from one forward pass per batch
        (raw text split as in training, see :meth:`to_examples`)."""
        examples = self.to_examples(inputs, tokenizer)
        preds = predict(
            self.model,
            self.tasks,
            examples,
            self.collate,
            batch_size=batch_size,
            device=self.device,
        )
        joiner = "" if (tokenizer or self.tokenizer) == "chars" else " "
        results = []
        for i, ex in enumerate(examples):
            row: dict[str, Any] = {}
            for t, task in self.tasks.items():
                formatted = task.kind.format_prediction(preds[t][i])
                tokens = ex.inputs.get("tokens")
                if tokens is not None and "spans" in formatted:
                    for span in formatted["spans"]:
                        span["text"] = joiner.join(tokens[span["start"] : span["end"]])
                row[t] = formatted
            results.append(row)
        return results

    def evaluate(self, sources: Mapping[str, Sequence[Example]]) -> dict[str, dict[str, float]]:
        return evaluate(self.model, self.tasks, sources, self.collate, device=self.device)


def molecule_sources(cfg: Config) -> dict[str, tuple[str, Fingerprints]]:
    """The ``format: molecules`` sources of ``cfg``: their SMILES column and fingerprints."""
    return {
        name: (str(src.options.get("smiles", "smiles")), Fingerprints.from_options(src.options))
        for name, src in cfg.data.sources.items()
        if issubclass(FORMATS.resolve(src.format), Molecules)
    }


def base_dir_of(run_dir: Path, meta: Mapping[str, Any]) -> Path:
    """The config's folder when the run was trained: seen from the run when that folder is
    there (run and data moved together), else as recorded."""
    relative = meta.get("base_dir_from_run")
    if relative is not None and (run_dir / relative).is_dir():
        return Path(run_dir / str(relative)).resolve()
    return Path(meta["base_dir"])


def load(run_dir: str | Path, device: str | torch.device = "auto") -> LoadedRun:
    """``polytask.load(RUN_DIR)``: the trained model with its vocabularies and ``predict()``,
    on ``device`` ("auto": CUDA when available, else the CPU; "cpu", "cuda", "cuda:N")."""
    return LoadedRun(run_dir, device=device)
