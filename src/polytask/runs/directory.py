"""The run directory contract: written only after validation, verified by every reader, never
replaced by accident.

``manifest.json`` records what a run is: the digest of its config, its label sets and the
SHA-256 of each of its files (``config.yaml``, ``run.json``, ``vocab.json`` — the vocabulary's
digest —, ``results.json`` and the weights files ``best/`` and ``checkpoints/last/``; the
weights once the run is complete, and each checkpoint also records its own in its
``state.json``). :func:`read_run` (``eval``, ``predict``, ``load``) and a resume check every
file against it and name the first that differs.

One process writes a run at a time: :func:`open_run` holds an ``flock`` on ``RUN/.lock``
(which holds the writer's PID) and decides where training goes — into the run itself (a new
run, or ``--resume``), or, for ``--overwrite``, into a staging directory beside it that is
swapped in atomically once the new run is complete, so that the old run stays whole until
then. A run that exists is refused unless ``--resume`` or ``--overwrite`` says what to do
with it. Leftovers of a killed writer (temporary files, staging directories) are removed at
the next start.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from ..config.errors import ConfigError
from ..config.yaml_text import parse_yaml
from ..engine import checkpoint as ckpt
from ..engine.checkpoint import CheckpointError
from ..engine.logs import json_text, write_json

__all__ = [
    "LISTED",
    "MANIFEST",
    "RunFiles",
    "Target",
    "config_digest",
    "config_text",
    "open_run",
    "read_run",
    "write_manifest",
]

MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = "polytask-run/1"
CONFIG, RUN, VOCAB, RESULTS = "config.yaml", "run.json", "vocab.json", "results.json"
#: the task-affinity matrix of a run trained by ``polytask affinity``
AFFINITY = "affinity.json"
#: the files of a run the manifest lists when they exist (paths relative to the run)
LISTED = (
    CONFIG,
    RUN,
    VOCAB,
    RESULTS,
    AFFINITY,
    f"best/{ckpt.TENSORS}",
    f"checkpoints/last/{ckpt.TENSORS}",
)
#: the folder of a transformer encoder's config and tokenizer files, copied into the run so
#: that it predicts without the folder it was trained from (every file listed)
ENCODER = "encoder"
_RESTORE = "restore the file as training wrote it, or train the run again (train --overwrite)"


def _plain(raw: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(raw), default=str))


def config_text(raw: Mapping[str, Any]) -> str:
    """The ``config.yaml`` a run keeps of its (resolved) config."""
    return yaml.safe_dump(_plain(raw), sort_keys=False, allow_unicode=True)


def config_digest(raw: Mapping[str, Any]) -> str:
    """SHA-256 of the config's content (key order and formatting aside)."""
    text = json.dumps(_plain(raw), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(
    run: Path, raw: Mapping[str, Any], labels: Mapping[str, list[str]], *, complete: bool
) -> None:
    """``RUN/manifest.json`` over the listed files that exist; ``complete`` once the run ended."""
    files = {name: ckpt.sha256_file(run / name) for name in LISTED if (run / name).is_file()}
    encoder = run / ENCODER
    if encoder.is_dir():
        files.update(
            {
                p.relative_to(run).as_posix(): ckpt.sha256_file(p)
                for p in sorted(encoder.rglob("*"))
                if p.is_file()
            }
        )
    if not complete:  # weights change at every checkpoint: each records its own digest
        files = {k: v for k, v in files.items() if not k.endswith(ckpt.TENSORS)}
    write_json(
        run / MANIFEST,
        {
            "format": FORMAT,
            "config_digest": config_digest(raw),
            "labels": dict(labels),
            "complete": complete,
            "files": files,
        },
    )


# ---------------------------------------------------------------------------------- reading
@dataclass
class RunFiles:
    """A run's files, read and verified against its manifest."""

    config: dict[str, Any]
    meta: dict[str, Any]
    vocab: dict[str, Any]
    manifest: dict[str, Any]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(str(path), "missing", _RESTORE) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(str(path), f"not valid JSON ({err})", _RESTORE) from None


def read_manifest(run: Path) -> dict[str, Any]:
    path = run / MANIFEST
    if not path.is_file():
        raise CheckpointError(
            str(path),
            "missing: the run's files cannot be verified (a run of an older polytask, or the "
            "file was deleted)",
            "train the run again (train --overwrite)",
        )
    manifest = _load_json(path)
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
        or not isinstance(manifest.get("labels"), dict)
    ):
        raise CheckpointError(
            str(path),
            f"not a {FORMAT} manifest",
            "read the run with the polytask version that wrote it, or train it again",
        )
    return manifest


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(str(path), f"not valid YAML ({line}{problem})", _RESTORE) from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), f"not UTF-8 text ({err.reason})", _RESTORE) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "not a mapping of config sections", _RESTORE)
    return raw


def _declared_labels(raw: Mapping[str, Any], task: str) -> Any:
    tasks = raw.get("tasks")
    spec = tasks.get(task) if isinstance(tasks, dict) else None
    return spec.get("labels") if isinstance(spec, dict) else None


def _label_difference(
    found: Mapping[str, Any], trained: Mapping[str, list[str]], where: str
) -> str | None:
    for task, labels in trained.items():
        now = found.get(task)
        if now is not None and list(now) != list(labels):
            return f"{where.format(task=task)} is {list(now)} but the run was trained with {labels}"
    return None


def _verify_files(run: Path, files: RunFiles) -> None:
    manifest = files.manifest
    labels = manifest["labels"]
    for name, digest in manifest["files"].items():
        path = run / name
        if not path.is_file():
            raise CheckpointError(str(path), "missing (the manifest lists it)", _RESTORE)
        if name == CONFIG:
            if config_digest(files.config) == manifest.get("config_digest"):
                continue  # the same config, only formatted otherwise
            declared = {t: _declared_labels(files.config, t) for t in labels}
            edited = _label_difference(declared, labels, "tasks.{task}.labels") or (
                "edited after training: its content differs from the config the run was "
                "trained with (manifest.json)"
            )
            raise CheckpointError(str(path), edited, _RESTORE)
        if ckpt.sha256_file(path) == digest:
            continue
        problem: str | None = None
        if name == RUN:
            problem = _label_difference(files.meta.get("labels", {}), labels, "labels.{task}")
        elif name.endswith(ckpt.TENSORS):
            problem = "corrupt: its SHA-256 differs from the one in manifest.json"
        raise CheckpointError(
            str(path),
            problem or "edited after training: its SHA-256 differs from the one in manifest.json",
            _RESTORE,
        )


def read_run(run_dir: Path) -> RunFiles:
    """The config, ``run.json``, vocabularies and manifest of a run, every file checked
    against the manifest; anything that differs is a one-line error naming the file."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file() or not (run / RUN).is_file():
        raise ConfigError(
            str(run),
            "not a polytask run directory (no config.yaml/run.json)",
            "give the --out directory of `polytask train`",
        )
    manifest = read_manifest(run)
    config = _read_config(run / CONFIG)
    meta = _load_json(run / RUN)
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("labels"), dict)
        or not isinstance(meta.get("base_dir"), str)
    ):
        raise CheckpointError(str(run / RUN), "lacks 'labels' or 'base_dir'", _RESTORE)
    vocab = _load_json(run / VOCAB)
    if not isinstance(vocab, dict):
        raise CheckpointError(str(run / VOCAB), "not a mapping of vocabularies", _RESTORE)
    files = RunFiles(config, meta, vocab, manifest)
    _verify_files(run, files)
    return files


# ---------------------------------------------------------------------------------- writing
class _Lock:
    """An exclusive ``flock`` on ``DIR/.lock`` that holds the writer's PID."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self.fd: int | None = None
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(
                    "--out",
                    f"{directory} is being written by another polytask process (PID {holder})",
                    "wait for it to finish, or train into another --out",
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file swapped away while we took it
                self.fd = fd
                return
            os.close(fd)
        raise ConfigError("--out", f"cannot lock {self.path}", "try again")  # pragma: no cover

    def claim(self) -> None:
        """Write our PID into the lock file: done when writing starts, so that a refused
        attempt leaves the run's files as they were."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _is_free(lock: Path) -> bool:
    """Whether nobody holds the lock (a writer that was killed holds none)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.staging-"


def _clean_stale(out: Path) -> None:
    """Leftovers of a killed writer: temporary files and directories, old copies, staging
    directories nobody holds. Call with the run's lock held."""
    for folder in (out, out / "checkpoints"):
        if not folder.is_dir():
            continue
        for name in ("best", "last"):
            ckpt.recover(folder / name)
        for entry in folder.iterdir():
            name = entry.name
            stale_old = name.startswith(".") and name.endswith(".old")
            if stale_old and (folder / name[1:-4]).exists():
                _remove(entry)
            elif name.startswith(".") and name.endswith(".tmp"):
                _remove(entry)
    for entry in out.parent.glob(f"{_staging_prefix(out)}*"):
        if entry.is_dir() and _is_free(entry / LOCK):
            _remove(entry)
    if _old(out).exists() and out.exists():
        _remove(_old(out))


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories: atomically with ``renameat2(RENAME_EXCHANGE)`` where the system
    has it, else with three renames (a kill between them is repaired by :func:`_recover`)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # pragma: no cover
            raise OSError(code, os.strerror(code), str(b))
    old = _old(b)  # pragma: no cover - kernels or file systems without the exchange
    os.replace(b, old)  # pragma: no cover
    os.replace(a, b)  # pragma: no cover
    os.replace(old, a)  # pragma: no cover


def _recover(out: Path) -> None:
    """Finish a swap killed between its renames: ``.out.old`` is then the only copy."""
    if not out.exists() and _old(out).is_dir():
        os.replace(_old(out), out)


def _has_run(out: Path) -> bool:
    return any((out / name).exists() for name in (MANIFEST, CONFIG, RUN))


def _is_empty(out: Path) -> bool:
    return all(
        e.name == LOCK or (e.name.startswith(".") and e.name.endswith(".tmp"))
        for e in out.iterdir()
    )


def _killed_before_a_checkpoint(out: Path) -> bool:
    """A run that was started but stopped before its first checkpoint: no ``checkpoints/``,
    no ``best/`` and no ``results.json`` (a finished run missing its checkpoint is damaged,
    not unfinished, and is refused)."""
    return not any((out / name).exists() for name in ("checkpoints", "best", RESULTS))


def _has_checkpoint(out: Path) -> bool:
    last = out / "checkpoints" / "last"
    ckpt.recover(last)
    return last.is_dir()


def _first_difference(saved: Any, now: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in list(saved) + [k for k in now if k not in saved]:
            found = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if saved == now else (prefix.rstrip(".") or "config", saved, now)


def _check_resumable(
    out: Path,
    raw: Mapping[str, Any],
    labels: Mapping[str, list[str]],
    vocab: Mapping[str, Any],
) -> None:
    files = read_run(out)
    manifest = files.manifest
    if manifest.get("config_digest") != config_digest(raw):
        diff = _first_difference(files.config, _plain(raw))
        key, then, now = diff if diff is not None else ("config", "?", "?")
        raise ConfigError(
            "--resume",
            f"{key} is {now!r} but the run in {out} was started with {then!r}",
            "resume with the same config and --set options, or use a new --out",
        )
    problem = _label_difference(labels, manifest["labels"], "the data's labels of task {task}")
    if problem is not None:
        raise ConfigError("--resume", problem, "resume with the same data, or use a new --out")
    if manifest["files"].get(VOCAB) not in (None, _text_digest(json_text(vocab))):
        raise ConfigError(
            "--resume",
            f"the data gives another vocabulary than the run's {out / VOCAB}",
            "resume with the same data, or use a new --out",
        )


@dataclass
class Target:
    """Where :func:`open_run`'s caller trains: ``directory`` (the run, or a staging
    directory), ``resume`` (continue its ``checkpoints/last``), ``fresh`` (write the run's
    files first), ``restarted`` (a ``--resume`` of a run killed before its first checkpoint,
    started again from step 0)."""

    directory: Path
    resume: bool
    restarted: bool = False

    @property
    def fresh(self) -> bool:
        return not self.resume


def _io_error(out: Path, err: OSError) -> ConfigError:
    reason = err.strerror or str(err) or type(err).__name__
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(out) else ""
    return ConfigError(
        "--out",
        f"cannot write the run directory {out}: {reason}{where}",
        "give a writable directory with free space (a new one, or a run to "
        "--resume/--overwrite); checkpoints already saved are kept",
    )


def _not_a_run(out: Path) -> ConfigError:
    return ConfigError(
        "--out", f"{out} holds files that are not a polytask run", "give a new or empty directory"
    )


@contextmanager
def open_run(
    out: Path,
    raw: Mapping[str, Any],
    labels: Mapping[str, list[str]],
    vocab: Mapping[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> Iterator[Target]:
    """Hold run directory ``out`` for writing and yield where to train (see the module
    docstring). Leaving the block normally commits (an overwrite is swapped in); an error
    keeps the old run as it was and removes a new run that has no checkpoint yet."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            "--out",
            f"{out} is a file, not a directory",
            "give a directory (a new one, or a run to --resume/--overwrite)",
        )
    if out.is_dir() and not _has_run(out) and not _is_empty(out):  # nothing written there
        raise _not_a_run(out)
    created = not out.exists()
    if created and resume and not overwrite:
        _recover(out)
        if not out.exists():
            raise ConfigError(
                "--resume",
                f"{out} holds no run to resume",
                "drop --resume to start a new run there",
            )
        created = False
    try:
        out.mkdir(mode=ckpt.DIR_MODE, parents=True, exist_ok=True)
        lock = _Lock(out)
    except OSError as err:
        raise _io_error(out, err) from None
    staging: Path | None = None
    staging_lock: _Lock | None = None
    try:
        _recover(out)
        _clean_stale(out)
        is_run = _has_run(out)
        if not is_run and not _is_empty(out):
            raise _not_a_run(out)
        if is_run and resume and _has_checkpoint(out):
            _check_resumable(out, raw, labels, vocab)
            lock.claim()
            yield Target(out, resume=True)
            return
        if is_run and resume and not overwrite and _killed_before_a_checkpoint(out):
            # nothing to lose: the run stopped before saving anything, so resuming it is
            # starting it again in place, with the same config
            _check_resumable(out, raw, labels, vocab)
            lock.claim()
            for entry in out.iterdir():
                if entry.name != LOCK:
                    _remove(entry)
            yield Target(out, resume=False, restarted=True)
            return
        if resume and not overwrite:
            raise ConfigError(
                "--resume",
                f"{out} has no checkpoint to resume (checkpoints/last)",
                "start it again with --overwrite, or drop --resume and give a new --out",
            )
        if is_run and not overwrite:
            raise ConfigError(
                "--out",
                f"{out} already holds a run",
                "give --resume to continue it, --overwrite to replace it, or another --out",
            )
        if not is_run:  # new: train in place; a failure before any checkpoint leaves nothing
            lock.claim()
            try:
                yield Target(out, resume=False)
            except BaseException:
                if not _has_checkpoint(out):
                    if created:
                        _remove(out)
                    else:
                        for entry in out.iterdir():
                            if entry.name != LOCK:
                                _remove(entry)
                raise
            return
        staging = ckpt.make_temp_dir(out.parent, _staging_prefix(out))
        staging_lock = _Lock(staging)
        lock.claim()
        staging_lock.claim()
        yield Target(staging, resume=False)
        _exchange(staging, out)  # the staging path now holds the old run
        ckpt._fsync_dir(out.parent)
        _remove(staging)
    except OSError as err:
        raise _io_error(out, err) from None
    finally:
        if staging is not None and staging.exists():
            _remove(staging)
        if staging_lock is not None:
            staging_lock.release()
        lock.release()
