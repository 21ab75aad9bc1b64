"""Data sources named in config: format -> reader (:data:`~polytask.data.formats.FORMATS`),
and train/val/test splits by seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.base import Example
from ..data.formats import FORMATS, Reader
from ..errors import DataError, OptionError
from .errors import ConfigError
from .schema import DataConfig, SourceConfig


@dataclass
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    #: what the format applied to raw text (:attr:`polytask.data.formats.Reader.tokenizer`)
    tokenizer: str | None = None
    #: an unfitted TabularPreprocessor of the source's feature columns (format tabular)
    preprocessor: Any = None


def _path(spec: str, base_dir: Path, where: str) -> Path:
    from ..data.readers import resolve_data_path

    p = resolve_data_path(spec)
    if not p.is_absolute():
        p = base_dir / p
    if not p.exists() and not p.with_name(p.name + ".part-00").exists():  # or in chunks
        raise ConfigError(
            where,
            f"file not found: {p}",
            "check the path (relative paths are relative to the "
            "config file; $DATA/ points to POLYTASK_DATA or ../shared/data)",
        )
    return p


def _reader(src: SourceConfig, char_level: bool, where: str) -> Reader:
    """The source's format resolved through :data:`FORMATS` and built with its field
    mapping and options (each reader checks its own); ``options.char_level`` overrides
    ``data.tokenizer`` for this source."""
    options = dict(src.options)
    char_level = bool(options.pop("char_level", char_level))
    try:
        cls = FORMATS.resolve(src.format)
        return cls(dict(src.tasks), char_level=char_level, **options)
    except OptionError as err:
        raise ConfigError.from_option(err, where) from None
    except TypeError as err:
        raise ConfigError(
            f"{where}.options", f"bad reader option ({err})", "see the reader's options"
        ) from None


def _read_file(reader: Reader, path: Path, where: str, seed: int | None = None) -> Any:
    """``reader.read(path)`` or, with ``seed``, ``reader.read_splits(path, seed)``, its errors
    as one-line :class:`ConfigError`."""
    try:
        return reader.read(path) if seed is None else reader.read_splits(path, seed)
    except OptionError as err:  # a column the file lacks: data.sources.NAME.options.numeric
        raise ConfigError.from_option(err, where) from None
    except DataError as err:  # says where (the file), what and the fix itself
        raise ConfigError(err.option or str(path), err.problem, err.fix) from None
    except ValueError as err:
        raise ConfigError(str(path), str(err), "repair the file or the source's options") from None
    except EOFError as err:  # a truncated .gz
        raise ConfigError(
            str(path), f"the file ends early ({err})", "copy the whole file again"
        ) from None
    except IsADirectoryError:
        raise ConfigError(str(path), "a directory, not a data file", "name a file in it") from None
    except OSError as err:  # not gzip data, unreadable, ...
        reason = err.strerror or str(err) or type(err).__name__
        raise ConfigError(
            str(path), f"cannot read it ({reason})", "check the file and its permissions"
        ) from None


def load_source(
    name: str, src: SourceConfig, data: DataConfig, base_dir: Path, seed: int
) -> Splits:
    """Read one source and split it: missing val/test files are carved from train by seed."""
    from ..data.splits import split, subsample

    where = f"data.sources.{name}"
    reader = _reader(src, data.tokenizer == "chars", where)
    if not reader.reads_files:
        if src.train or src.val or src.test:
            raise ConfigError(
                f"{where}.train", f"format {src.format!r} reads no file", "remove train/val/test"
            )
        train = reader.generate(src.limit, seed)
        val = test = None
    else:
        if not src.train:
            raise ConfigError(
                f"{where}.train", "required for file formats", "give the training file's path"
            )
        train_path = _path(src.train, base_dir, f"{where}.train")
        # a source whose one path holds its own splits (format images, pairs: true)
        own = None if src.val or src.test else _read_file(reader, train_path, where, seed)
        if own is not None:
            train, val, test = own
        else:
            train = _read_file(reader, train_path, where)
            val = (
                _read_file(reader, _path(src.val, base_dir, f"{where}.val"), where)
                if src.val
                else None
            )
            test = (
                _read_file(reader, _path(src.test, base_dir, f"{where}.test"), where)
                if src.test
                else None
            )
        if src.limit:
            train = subsample(train, src.limit, seed=seed)
    test_fraction = src.test_fraction if src.test_fraction is not None else data.test_fraction
    val_fraction = src.val_fraction if src.val_fraction is not None else data.val_fraction
    if val is None and test is None:  # a format with its own split (molecules: scaffold)
        own = reader.split(
            train, (1.0 - val_fraction - test_fraction, val_fraction, test_fraction), seed
        )
        if own is not None:
            train, val, test = own
    if test is None:
        train, test = split(train, (1.0 - test_fraction, test_fraction), seed=seed)
    if val is None:
        train, val = split(train, (1.0 - val_fraction, val_fraction), seed=seed + 1)
    if not train:
        raise ConfigError(
            where, "no training examples left after splitting", "lower the fractions or add data"
        )
    make = getattr(reader, "preprocessor", None)
    return Splits(
        train=list(train),
        val=list(val),
        test=list(test),
        tokenizer=reader.tokenizer,
        preprocessor=make() if callable(make) else None,
    )
