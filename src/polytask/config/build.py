"""Turn a validated :class:`~polytask.config.schema.Config` into working objects."""

from __future__ import annotations

import inspect
import logging
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

from .. import balancing
from ..data.base import Example
from ..data.collate import Collator
from ..data.vocab import Vocab
from ..engine.optim import ParamGroupRule
from ..engine.trainer import TrainerConfig
from ..errors import OptionError
from ..options import check_options
from ..sharing.base import MultiTaskModel
from ..tasks import Task, make_kind
from ..tasks.schemes import OUTSIDE
from .errors import ConfigError
from .names import HEADS, check_registry_names
from .names import resolve as _resolve
from .schema import Config
from .sources import Splits, load_source

INFERABLE = ("classification", "tagging", "token_classification")
SPLITS = ("train", "val", "test")

log = logging.getLogger("polytask.config")
_NOTED: set[str] = set()  # notes already given in this process (compare builds a run per seed)


def _construct(cls: Any, options: Mapping[str, Any], where: str) -> Any:
    try:
        check_options(cls, options)
    except OptionError as err:  # the misspelt key itself, with the nearest known name
        raise ConfigError.from_option(err, where) from None
    try:
        return cls(**options)
    except OptionError as err:  # raised with the option's own name: located under ``where``
        raise ConfigError.from_option(err, where) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(where, str(err), "correct the option") from None


def infer_labels(kind: str, values: Sequence[Any]) -> list[str]:
    """Label set from the data: sorted class names, sorted token labels, or tags with the
    outside tag ``O`` first."""
    if kind == "classification":
        return sorted({str(v) for v in values if v is not None})
    tags = {str(t) for seq in values if seq is not None for t in seq if t is not None}
    if kind == "token_classification":
        return sorted(tags)
    return [OUTSIDE] + sorted(tags - {OUTSIDE})


def _labels_of(kind: str, raw: Any) -> list[str]:
    """The labels one example gives a task (one, or one per token)."""
    if raw is None:
        return []
    if kind == "classification":
        return [str(raw)]
    return [str(t) for t in raw if t is not None]


def note(message: str) -> None:
    """Log ``message`` as a note (a warning-level record, so it shows without logging set up),
    once per process."""
    if message not in _NOTED:
        _NOTED.add(message)
        log.warning("polytask: note: %s", message)


class Experiment:
    """Tasks, data splits, vocabularies and factories for models, methods and samplers."""

    def __init__(
        self,
        cfg: Config,
        base_dir: str | Path = ".",
        *,
        vocab: Mapping[str, Any] | None = None,
        labels: Mapping[str, list[str]] | None = None,
        load_data: bool = True,
    ) -> None:
        check_registry_names(cfg)  # every registry name, before any data is read
        self.cfg = cfg
        self.base_dir = Path(base_dir)
        self.seed = cfg.seed
        split_seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.seed
        self.sources: dict[str, Splits] = {}
        if load_data:
            for name, src in cfg.data.sources.items():
                for task in src.tasks:
                    if task not in cfg.tasks:
                        raise ConfigError(
                            f"data.sources.{name}.tasks.{task}",
                            "undefined task",
                            f"define it under tasks: or use one of {sorted(cfg.tasks)}",
                        )
                self.sources[name] = load_source(name, src, cfg.data, self.base_dir, split_seed)
        self.tasks = self._build_tasks(labels or {})
        if load_data:
            self._check_labels()
        self._check_names()
        self.input_kind = self.encoder_class().input_kind
        self.vocab, self.char_vocab, self.tokenizer = self._build_inputs(vocab)
        #: the TabularPreprocessor of format-tabular rows: fitted on the training rows of the
        #: sources, or the run's (``vocab.json["tabular"]``)
        self.tabular = self._build_tabular(vocab)
        #: the width of numeric feature inputs: the data's, or the run's (``vocab.json``), so
        #: that a run of feature vectors is rebuilt without its data
        self.features_dim = self._features_dim(vocab)
        #: (C, H, W) of image inputs: the data's, or the run's (``vocab.json["image_shape"]``);
        #: the image encoder's ``image_size`` / ``in_channels`` default to it
        self.image_shape = self._image_shape(vocab)

    # ------------------------------------------------------------------ tasks
    def _build_tasks(self, known: Mapping[str, list[str]]) -> dict[str, Task]:
        tasks: dict[str, Task] = {}
        #: where each task's label set came from: "config", "run" (a trained run's) or "data"
        self.label_origin: dict[str, str] = {}
        #: notes on inferred label sets (labels seen only in val/test), also logged once
        self.label_notes: list[str] = []
        for name, tc in self.cfg.tasks.items():
            opts = tc.options()
            where = f"tasks.{name}"
            self.label_origin[name] = "config"
            if tc.kind in INFERABLE and "labels" not in opts:
                if name in known:
                    opts["labels"] = known[name]
                    self.label_origin[name] = "run"
                else:
                    opts["labels"] = self._infer_labels(name, tc.kind)
                    self.label_origin[name] = "data"
                    if len(opts["labels"]) < (1 if tc.kind == "classification" else 2):
                        raise ConfigError(
                            f"{where}.labels",
                            "no labels found in the data",
                            "map the task to a labelled field in data.sources.*.tasks",
                        )
            try:
                kind = make_kind(tc.kind, **opts)
            except OptionError as err:  # e.g. labels, scheme: located under tasks.NAME
                raise ConfigError.from_option(err, where) from None
            except TypeError as err:
                raise ConfigError(where, f"bad option ({err})", "remove or correct it") from None
            except ValueError as err:
                raise ConfigError(where, str(err), "correct the task definition") from None
            try:
                tasks[name] = Task(name, kind, primary_metric=tc.primary_metric)
            except OptionError as err:
                raise ConfigError.from_option(err, where) from None
        return tasks

    def _infer_labels(self, task: str, kind: str) -> list[str]:
        """The task's labels over every split of every source that labels it (train, val and
        test, whether read from files or carved by seed); labels absent from training are kept
        and noted once (:attr:`label_notes`): a model cannot learn them, but evaluation must
        not stop on them."""
        values = [
            ex.targets.get(task)
            for s in self.sources.values()
            for split in SPLITS
            for ex in getattr(s, split)
        ]
        labels = infer_labels(kind, values)
        seen_in_train = {
            label
            for s in self.sources.values()
            for ex in s.train
            for label in _labels_of(kind, ex.targets.get(task))
        }
        unseen: dict[str, list[Any]] = {}  # label -> [count, first "split, example id"]
        for sname, splits in self.sources.items():
            for split in SPLITS[1:]:
                for i, ex in enumerate(getattr(splits, split)):
                    for label in _labels_of(kind, ex.targets.get(task)):
                        if label in seen_in_train:
                            continue
                        ident = ex.id if ex.id is not None else f"#{i}"
                        entry = unseen.setdefault(label, [0, f"{sname} {split}, example {ident}"])
                        entry[0] += 1
        if unseen:
            shown = sorted(unseen)[:5]
            more = f" and {len(unseen) - len(shown)} more" if len(unseen) > len(shown) else ""
            message = (
                f"tasks.{task}.labels: {len(unseen)} label(s) occur only in val/test, not in "
                "training, and are kept in the inferred label set: "
                + ", ".join(
                    f"{label!r} ({unseen[label][0]}x, first in {unseen[label][1]})"
                    for label in shown
                )
                + more
            )
            self.label_notes.append(message)
            note(message)
        return labels

    def _check_labels(self) -> None:
        for sname, splits in self.sources.items():
            for split_name in SPLITS:
                for i, ex in enumerate(getattr(splits, split_name)):
                    for t, raw in ex.targets.items():
                        if raw is None or t not in self.tasks:
                            continue
                        try:
                            self.tasks[t].kind.encode_target(raw)
                        except ValueError as err:
                            ident = ex.id if ex.id is not None else f"#{i}"
                            raise ConfigError(
                                f"tasks.{t}.labels",
                                f"source {sname!r} ({split_name}, example {ident}) does not "
                                f"match: {err}",
                                self._label_fix(t),
                            ) from None
        self._repair_bio_tags()

    def _repair_bio_tags(self) -> None:
        """Read every ``I-X`` that does not continue an ``X`` entity as ``B-X`` in the data of
        BIO tagging tasks, count the repairs per task, source and split
        (:attr:`tag_repairs`) and note them once: strict entity metrics would otherwise drop
        those entities from the gold data without a word."""
        from ..tasks.schemes import repair_bio

        #: (task, source, split) -> number of I-X tags read as B-X
        self.tag_repairs: dict[tuple[str, str, str], int] = {}
        bio = [t for t, task in self.tasks.items() if getattr(task.kind, "scheme", None) == "BIO"]
        for sname, splits in self.sources.items():
            for split_name in SPLITS:
                for ex in getattr(splits, split_name):
                    for t in bio:
                        raw = ex.targets.get(t)
                        if raw is None:
                            continue
                        fixed, n = repair_bio(raw)
                        if n:
                            ex.targets[t] = fixed
                            key = (t, sname, split_name)
                            self.tag_repairs[key] = self.tag_repairs.get(key, 0) + n
        for (t, sname, split_name), n in self.tag_repairs.items():
            note(
                f"tasks.{t}: {n} tag(s) I-X in data.sources.{sname} ({split_name}) did not "
                "continue an X entity and were read as B-X (IOB2 repair)"
            )

    def _label_fix(self, task: str) -> str:
        """The hint for data that does not match the task's label set, by where the set came
        from: the config, a trained run, or the data itself (inferred over every split)."""
        origin = self.label_origin.get(task, "config")
        if origin == "config":
            return (
                f"add the label to tasks.{task}.labels, or remove tasks.{task}.labels to infer "
                "them from every split of the data"
            )
        if origin == "run":
            return (
                "the run's labels were fixed when it was trained (run.json); give data with "
                "those labels, or train a new run on this data"
            )
        return f"correct the data of tasks.{task} (its labels were inferred from every split)"

    def _check_names(self) -> None:
        m = self.cfg.model
        for section, names in (
            ("model.taps", m.taps),
            ("model.task_layers", m.task_layers),
            ("model.heads", m.heads),
            ("trainer.baselines", self.cfg.trainer.baselines),
        ):
            for t in names:
                if t not in self.tasks:
                    raise ConfigError(
                        f"{section}.{t}", "undefined task", f"use one of {sorted(self.tasks)}"
                    )
        crit = self.cfg.trainer.criterion
        if crit not in ("mean", "delta_m"):
            task, _, metric = crit.partition(".")
            if task not in self.tasks:
                raise ConfigError(
                    "trainer.criterion",
                    f"{crit!r} names no task",
                    f"use mean, delta_m, or one of {sorted(self.tasks)} (optionally TASK.METRIC)",
                )
            known = self.tasks[task].kind.metric_names()
            if metric and known and metric not in known:
                raise ConfigError(
                    "trainer.criterion",
                    f"task {task!r} has no metric {metric!r}",
                    f"use {task} or one of {[f'{task}.{m}' for m in known]}",
                )
        labelled = {t for s in self.cfg.data.sources.values() for t in s.tasks}
        missing = [t for t in self.tasks if t not in labelled]
        if missing and self.sources:
            raise ConfigError(
                f"tasks.{missing[0]}",
                "no data source labels this task",
                "map it in data.sources.<name>.tasks",
            )

    # ------------------------------------------------------------------ inputs
    def encoder_class(self) -> Any:
        from ..nn import ENCODERS

        return _resolve(ENCODERS, self.cfg.model.encoder.type, "model.encoder.type")

    def _build_inputs(
        self, saved: Mapping[str, Any] | None
    ) -> tuple[Vocab | None, Vocab | None, Any]:
        vc = self.cfg.data.vocab
        vocab = char_vocab = tokenizer = None
        if self.input_kind == "tokens":
            if saved and saved.get("tokens"):
                vocab = Vocab.from_json(saved["tokens"])
                char_vocab = Vocab.from_json(saved["chars"]) if saved.get("chars") else None
            else:
                token_lists = [ex.inputs["tokens"] for s in self.sources.values() for ex in s.train]
                vocab = Vocab.build(
                    token_lists, min_freq=vc.min_freq, max_size=vc.max_size, lowercase=vc.lowercase
                )
                if vc.chars:
                    char_vocab = Vocab.build_chars(token_lists)
        elif self.input_kind == "subwords":
            from ..nn.transformer import SubwordTokenizer

            enc = self.cfg.model.encoder.options()
            tokenizer = SubwordTokenizer(
                self._encoder_path(enc), max_length=enc.get("max_length", 256)
            )
        return vocab, char_vocab, tokenizer

    def _build_tabular(self, saved: Mapping[str, Any] | None) -> Any:
        from ..data.tabular import TabularPreprocessor

        named = {n: s.preprocessor for n, s in self.sources.items() if s.preprocessor is not None}
        if named and self.input_kind != "tabular":
            raise ConfigError(
                "model.encoder.type",
                f"format tabular (data.sources.{next(iter(named))}) needs the tabular encoder",
                "set model.encoder.type: tabular",
            )
        if self.input_kind != "tabular":
            return None
        if saved and saved.get("tabular"):
            return TabularPreprocessor.from_state(saved["tabular"])
        if not named:
            return None  # features / categorical indices given by the data itself
        first, prep = next(iter(named.items()))
        for name, other in named.items():
            if (other.numeric, other.categorical, other.log1p) != (
                prep.numeric,
                prep.categorical,
                prep.log1p,
            ):
                raise ConfigError(
                    f"data.sources.{name}.options",
                    f"its feature columns differ from data.sources.{first}'s",
                    "give every tabular source the same numeric, categorical and log1p columns",
                )
        # training rows only: no statistic of the validation or test rows reaches the inputs
        rows = [ex.inputs["row"] for n in named for ex in self.sources[n].train]
        return prep.fit(rows)

    def _encoder_path(self, enc: Mapping[str, Any]) -> str:
        from ..nn.transformer import minilm_path

        path = enc.get("path", "minilm")
        return minilm_path() if path == "minilm" else str(path)

    def _features_dim(self, saved: Mapping[str, Any] | None) -> int | None:
        if self.input_kind != "features":
            return None
        first = next((ex for s in self.sources.values() for ex in s.train), None)
        if first is not None and "features" in first.inputs:
            return len(first.inputs["features"])
        value = (saved or {}).get("features_dim")
        return int(value) if value is not None else None

    def _image_shape(self, saved: Mapping[str, Any] | None) -> list[int] | None:
        first = next((ex for s in self.sources.values() for ex in s.train), None)
        image = first.inputs.get("image") if first is not None else None
        if image is not None and self.input_kind != "image":
            name = next(
                n for n, s in self.sources.items() if s.train and "image" in s.train[0].inputs
            )
            raise ConfigError(
                "model.encoder.type",
                f"data.sources.{name} gives images, which the {self.cfg.model.encoder.type} "
                "encoder cannot read",
                "set model.encoder.type: lenet",
            )
        if self.input_kind != "image":
            return None
        if image is not None:
            shape = [int(n) for n in getattr(image, "shape", ())]
            return [1, *shape] if len(shape) == 2 else shape
        value = (saved or {}).get("image_shape")
        return [int(n) for n in value] if value is not None else None

    def vocab_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tokens": self.vocab.to_json() if self.vocab else None,
            "chars": self.char_vocab.to_json() if self.char_vocab else None,
        }
        if self.tabular is not None:  # format tabular: the fitted preprocessor
            out["tabular"] = self.tabular.state()
        if self.features_dim is not None:  # feature vectors: their width
            out["features_dim"] = self.features_dim
        if self.image_shape is not None:  # images: (C, H, W)
            out["image_shape"] = self.image_shape
        return out

    def labels_json(self) -> dict[str, list[str]]:
        return {
            t: list(task.kind.labels)
            for t, task in self.tasks.items()
            if hasattr(task.kind, "labels")
        }

    def collator(self, task_names: Sequence[str] | None = None, *, whole: bool = False) -> Collator:
        """The collator of training (inputs cut at ``data.max_length`` and at a transformer's
        positions) or, with ``whole=True``, of evaluation and prediction, which never drops a
        token: no ``data.max_length``, and a transformer reads long inputs in overlapping
        windows (:meth:`polytask.nn.SubwordTokenizer.windowed`)."""
        names = list(task_names) if task_names is not None else list(self.tasks)
        tokenizer = self.tokenizer
        if whole and hasattr(tokenizer, "windowed"):
            tokenizer = tokenizer.windowed()
        return Collator(
            {t: self.tasks[t].kind for t in names},
            input_kind=self.input_kind,
            vocab=self.vocab,
            char_vocab=self.char_vocab,
            tokenizer=tokenizer,
            max_length=None if whole else self.cfg.data.max_length,
            tabular=self.tabular,
        )

    # ------------------------------------------------------------------ model
    def build_encoder(self) -> Any:
        cls = self.encoder_class()
        opts = self.cfg.model.encoder.options()
        if self.input_kind == "tokens":
            vocab = cast(Vocab, self.vocab)  # _build_inputs builds it for token inputs
            opts.setdefault("vocab_size", len(vocab))
            if self.char_vocab is not None:
                opts.setdefault("char_vocab_size", len(self.char_vocab))
        elif self.input_kind == "features":
            if self.features_dim is not None:
                opts.setdefault("input_dim", self.features_dim)
        elif self.input_kind == "subwords":
            opts["path"] = self._encoder_path(opts)
        elif self.input_kind == "tabular" and self.tabular is not None:
            opts.setdefault("numeric", len(self.tabular.numeric))
            opts.setdefault("cardinalities", self.tabular.cardinalities)
        elif self.input_kind == "image" and self.image_shape is not None:
            takes = inspect.signature(cls).parameters
            if "in_channels" in takes:
                opts.setdefault("in_channels", self.image_shape[0])
            if "image_size" in takes:
                opts.setdefault("image_size", self.image_shape[1:])
        return _construct(cls, opts, "model.encoder")

    def build_model(
        self, task_names: Sequence[str] | None = None, seed: int | None = None
    ) -> MultiTaskModel:
        """The configured architecture for ``task_names`` (all tasks by default), wrapped in a
        representation-similarity penalty when ``model.similarity`` is set.

        A single-task baseline is the same architecture restricted to one task: the same
        encoder, the same tap depth and task layers, the same head (a similarity penalty
        needs two tasks and is left out).
        """
        model = self._build_architecture(task_names, seed)
        sim = self.cfg.model.similarity
        if sim is not None and len(model.task_names) > 1:
            from ..sharing.similarity import RepresentationSimilarity

            try:
                model = RepresentationSimilarity(model, weight=sim.weight, measure=sim.measure)
            except OptionError as err:
                raise ConfigError.from_option(err, "model.similarity") from None
        return model

    def _build_architecture(
        self, task_names: Sequence[str] | None = None, seed: int | None = None
    ) -> MultiTaskModel:
        """The configured architecture for ``task_names`` (all tasks by default).

        A single-task baseline is the same architecture restricted to one task: the same
        encoder, the same tap depth and task layers, the same head.
        """
        import torch

        from ..sharing import ARCHITECTURES

        names = list(task_names) if task_names is not None else list(self.tasks)
        torch.manual_seed(self.seed if seed is None else seed)
        m = self.cfg.model
        arch = _resolve(ARCHITECTURES, m.sharing, "model.sharing")
        options: dict[str, Any] = dict(m.sharing_options)
        taps = {t: d for t, d in m.taps.items() if t in names}
        layers = {t: partial(self._build_task_layer, t) for t in names if t in m.task_layers}
        if taps:
            options["taps"] = taps
        if layers:
            options["task_layers"] = layers
        built: list[Any] = []  # the encoders from_parts builds; the first tells whether heads pool

        def encoder() -> Any:
            built.append(self.build_encoder())
            return built[-1]

        def heads(widths: Mapping[str, int]) -> dict[str, Any]:
            return {t: self._build_head(t, widths[t], built[0].is_sequence) for t in names}

        signature = inspect.signature(arch.from_parts)
        if (taps or layers) and "taps" not in signature.parameters:
            raise ConfigError(
                "model.sharing",
                f"{m.sharing!r} takes no taps or task_layers",
                "use sharing: hierarchical for taps or task_layers (the other "
                "architectures take model.sharing_options)",
            )
        try:
            check_options(
                arch.from_parts,
                options,
                supplied=("encoder", "heads", "tasks"),
                owner=getattr(arch, "__name__", str(arch)),
            )
            signature.bind(encoder=encoder, heads=heads, tasks=names, **options)
        except OptionError as err:  # the misspelt option itself, with the nearest known name
            raise ConfigError.from_option(err, "model.sharing_options") from None
        except TypeError as err:
            raise ConfigError(
                "model.sharing_options",
                f"bad option ({err})",
                f"see the options of {getattr(arch, '__name__', arch)}",
            ) from None
        try:
            model: MultiTaskModel = arch.from_parts(
                encoder=encoder, heads=heads, tasks=names, **options
            )
        except OptionError as err:  # located: model.taps.*, model.encoder, model.sharing_options.*
            top = err.option.split(".")[0]
            raise ConfigError.from_option(
                err,
                "model" if top in ("taps", "task_layers", "encoder") else "model.sharing_options",
            ) from None
        model.check_ownership()
        return model

    def _build_task_layer(self, task: str, in_dim: int) -> Any:
        """``model.task_layers.TASK`` over ``in_dim``-wide features (the tapped layer's width)."""
        from ..sharing import TASK_LAYERS

        lc = self.cfg.model.task_layers[task]
        cls = _resolve(TASK_LAYERS, lc.type, f"model.task_layers.{task}.type")
        opts = lc.options()
        opts.setdefault("in_dim", in_dim)
        return _construct(cls, opts, f"model.task_layers.{task}")

    def _build_head(self, task: str, dim: int, sequence: bool) -> Any:
        """The built-in head for the task's kind, or ``model.heads.TASK.type`` (an import path),
        constructed with ``in_dim``, ``out_dim`` (the kind's output size) and its ``options``."""
        from ..nn.heads import head_for

        m = self.cfg.model
        hc = m.heads.get(task)
        kind = self.tasks[task].kind
        where = f"model.heads.{task}"
        if hc is not None and hc.type is not None:
            if ":" not in hc.type:
                raise ConfigError(
                    f"{where}.type",
                    f"{hc.type!r} is not an import path",
                    "write package.module:Class, or leave type out for the built-in head",
                )
            cls = _resolve(HEADS, hc.type, f"{where}.type")
            return _construct(cls, dict(in_dim=dim, out_dim=kind.output_size, **hc.options), where)
        if hc is not None and hc.options:
            raise ConfigError(
                f"{where}.options",
                "options are for a custom head",
                "give type: package.module:Class",
            )
        if hc is not None and hc.crf is not None and hc.crf != kind.crf:
            raise ConfigError(
                f"{where}.crf",
                "disagrees with the task's crf option",
                f"set crf under tasks.{task} only",
            )
        try:
            return head_for(
                self.tasks[task],
                dim,
                pooling=(hc.pooling if hc and hc.pooling else m.pooling),
                dropout=hc.dropout if hc and hc.dropout else m.head_dropout,
                hidden=hc.hidden if hc else None,
                sequence=sequence,
            )
        except OptionError as err:  # ``sequence`` is the encoder's; the rest, the head's options
            if err.option == "sequence":
                raise ConfigError(
                    where, err.problem, "use a sequence encoder for tagging tasks"
                ) from None
            raise ConfigError.from_option(err, where) from None

    # ------------------------------------------------------------------ training
    def build_method(self, task_names: Sequence[str] | None = None) -> balancing.Balancer:
        bc = self.cfg.balancing
        opts = bc.options()
        names = list(task_names) if task_names is not None else list(self.tasks)
        if "weights" in opts and isinstance(opts["weights"], Mapping):
            unknown = [t for t in opts["weights"] if t not in self.tasks]
            if unknown:
                raise ConfigError(
                    f"balancing.weights.{unknown[0]}",
                    "undefined task",
                    f"use one of {sorted(self.tasks)}",
                )
            opts["weights"] = {t: w for t, w in opts["weights"].items() if t in names}
        try:
            method = balancing.make(bc.method, **opts)
            method.bind(names)
        except OptionError as err:  # raised with the option's own name: c -> balancing.c
            raise ConfigError.from_option(err, "balancing") from None
        except ValueError as err:  # a third-party method's plain ValueError
            raise ConfigError.from_message(
                str(err), "balancing", f"use one of {balancing.available()}"
            ) from None
        self.check_level(method)
        return method

    def check_level(self, method: balancing.Balancer) -> None:
        """``balancing.level`` against the method's levels and the architecture's shared
        features (a gradient method at level features on a model without them is an error)."""
        from ..balancing.backward import resolve_level
        from ..sharing import ARCHITECTURES

        try:
            arch = _resolve(ARCHITECTURES, self.cfg.model.sharing, "model.sharing")
        except ConfigError:
            arch = None  # reported by build_model
        try:
            resolve_level(
                method,
                self.cfg.balancing.level,
                has_features=getattr(arch, "provides_shared_features", None),
            )
        except OptionError as err:  # level or method -> balancing.level, balancing.method
            raise ConfigError.from_option(err, "balancing") from None

    def build_sampler(self, sources: Mapping[str, Sequence[Example]]) -> Any:
        from ..data.samplers import SAMPLERS

        sc = self.cfg.sampler
        cls = _resolve(SAMPLERS, sc.type, "sampler.type")
        return _construct(
            cls, dict(sizes={s: len(v) for s, v in sources.items()}, **sc.options()), "sampler"
        )

    def trainer_config(self, **overrides: Any) -> TrainerConfig:
        t = self.cfg.trainer.model_dump()
        t["param_groups"] = [ParamGroupRule(**g) for g in t["param_groups"]]
        t["seed"] = self.seed
        t["level"] = self.cfg.balancing.level
        diag = self.cfg.diagnostics
        t["diagnostics_every"] = diag.every if diag.enabled else 0
        t.update(overrides)
        return TrainerConfig(**t)

    def train_sources(
        self, task_names: Sequence[str] | None = None, split: str = "train"
    ) -> dict[str, list[Example]]:
        """Per-source examples of a split, restricted to sources that label one of
        ``task_names``."""
        names = set(task_names) if task_names is not None else set(self.tasks)
        out = {}
        for s, splits in self.sources.items():
            if names & set(self.cfg.data.sources[s].tasks):
                examples = getattr(splits, split)
                if task_names is not None:
                    examples = [
                        Example(
                            inputs=e.inputs,
                            targets={t: v for t, v in e.targets.items() if t in names},
                            id=e.id,
                        )
                        for e in examples
                    ]
                out[s] = examples
        return out
