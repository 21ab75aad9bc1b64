"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a directory holding ``tensors.safetensors`` (model weights under
``model.``, optimiser state under ``optim.``, balancer tensors under ``balancer.``, RNG
states under ``rng.``) and ``state.json`` (step, epoch, scheduler, optimiser structure,
sampler position, best score, history, and the SHA-256 of ``tensors.safetensors``, checked
by every read: corrupted bytes are an error, never a silently wrong model). Every file is
written to a temporary name, fsynced and renamed; the directory itself is written beside
the target and swapped in with renames, so a kill at any point leaves either the old or the
new checkpoint, never a torn one. Files are created 0644 and directories 0755 (before the umask).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import OptionError

TENSORS = "tensors.safetensors"
STATE = "state.json"


class CheckpointError(OptionError):
    """A checkpoint is missing, corrupt or does not fit the model; ``option`` is its path."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FILE_MODE, DIR_MODE = 0o644, 0o755


def umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def set_mode(path: str | Path, directory: bool = False) -> None:
    """0644 for a file, 0755 for a directory, before the umask (``mkstemp``/``mkdtemp`` give
    0600/0700)."""
    os.chmod(path, (DIR_MODE if directory else FILE_MODE) & ~umask())


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new directory ``parent/<prefix>XXXX.tmp``, mode 0755 before the umask."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp"))
    set_mode(tmp, directory=True)
    return tmp


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via temp file + fsync + rename (mode 0644 before the umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        set_mode(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _split_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, slots in state["state"].items():
        meta["state"][str(idx)] = {}
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                meta["state"][str(idx)][key] = {"tensor": True}
            else:
                meta["state"][str(idx)][key] = {"value": value}
    return tensors, meta


def _join_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, slots in meta["state"].items():
        state[int(idx)] = {
            k: tensors[f"optim.{idx}.{k}"] if v.get("tensor") else v["value"]
            for k, v in slots.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda{i}"] = s
    return out


def split_tensors(obj: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """Replace every tensor inside nested dicts/lists by ``{"tensor": key}``; return the
    JSON-able structure and ``{key: tensor}`` for the safetensors file."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if torch.is_tensor(node):
            tensors[path] = node.detach().cpu().contiguous()
            return {"tensor": path}
        if isinstance(node, Mapping):
            return {str(k): walk(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        return node

    return walk(obj, prefix), tensors


def join_tensors(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, Mapping):
        if set(obj) == {"tensor"} and isinstance(obj["tensor"], str) and obj["tensor"] in tensors:
            return tensors[obj["tensor"]]
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint directory atomically (see module docstring)."""
    directory = Path(directory)
    directory.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    recover(directory)  # after a kill between the renames, ".name.old" is the only copy: keep it
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"format": "polytask-checkpoint/1", "state": dict(state or {})}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    tensors.update(_rng_tensors())
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    tmp = make_temp_dir(directory.parent, f".{directory.name}.")
    try:
        save_file(tensors, str(tmp / TENSORS))
        set_mode(tmp / TENSORS)
        with open(tmp / TENSORS, "rb+") as f:
            os.fsync(f.fileno())
        meta["sha256"] = {TENSORS: sha256_file(tmp / TENSORS)}
        atomic_write_text(tmp / STATE, json.dumps(meta, indent=1, default=_json_default))
        _fsync_dir(tmp)
        old = directory.with_name(f".{directory.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        _fsync_dir(directory.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def recover(directory: Path) -> None:
    """Finish a swap interrupted between its two renames (``.name.old`` left, no ``name``)."""
    directory = Path(directory)
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and old.exists():
        os.replace(old, directory)


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, meta)``; a missing or corrupt checkpoint raises :class:`CheckpointError`."""
    directory = Path(directory)
    recover(directory)
    if not (directory / TENSORS).is_file() or not (directory / STATE).is_file():
        raise CheckpointError(
            str(directory),
            f"not a polytask checkpoint (needs {TENSORS} and {STATE})",
            "point to a run's checkpoint directory",
        )
    meta = _read_state(directory)
    digests = meta.get("sha256")
    recorded = digests.get(TENSORS) if isinstance(digests, dict) else None
    if recorded is not None and sha256_file(directory / TENSORS) != recorded:
        raise CheckpointError(
            str(directory / TENSORS),
            "corrupt checkpoint: its SHA-256 differs from the one recorded when it was saved",
            "restore the file from a backup, or resume from an earlier checkpoint or retrain",
        )
    try:
        tensors = load_file(str(directory / TENSORS))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            str(directory / TENSORS),
            f"corrupt checkpoint ({err})",
            "delete it and resume from an earlier checkpoint or retrain",
        ) from None
    return tensors, meta


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / STATE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            str(directory / STATE),
            f"corrupt checkpoint state ({err})",
            "delete it and resume from an earlier checkpoint or retrain",
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != "polytask-checkpoint/1":
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(
            str(directory / STATE),
            f"unknown checkpoint format {found!r}",
            "read it with the polytask version that wrote it",
        )
    return meta


def restore_model(
    model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str = ""
) -> None:
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            where,
            f"checkpoint does not fit the model ({first})",
            "use the config the checkpoint was trained with",
        ) from None


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    if "optimizer" in meta:
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))


def restore_rng(tensors: Mapping[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        # by device number (rng.cuda10 after rng.cuda9), for the devices this process has
        saved = {
            int(k[len("rng.cuda") :]): v for k, v in tensors.items() if k.startswith("rng.cuda")
        }
        for i in range(min(torch.cuda.device_count(), len(saved))):
            if i in saved:
                torch.cuda.set_rng_state(saved[i], i)
