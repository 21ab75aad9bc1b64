"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a directory holding ``tensors.safetensors`` (model weights under
``model.``, optimiser state under ``optim.``, balancer tensors under ``balancer.``, RNG
states under ``rng.``) and ``state.json`` (step, epoch, scheduler, optimiser structure,
sampler position, best score, history). Every file is written to a temporary name,
fsynced and renamed; the directory itself is written beside the target and swapped in
with renames, so a kill at any point leaves either the old or the new checkpoint, never a
torn one.
"""

from __future__ import annotations

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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via temp file + fsync + rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover(directory)  # after a kill between the renames, ".name.old" is the only copy: keep it
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"format": "polytask-checkpoint/1", "state": dict(state or {})}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    tensors.update(_rng_tensors())
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        save_file(tensors, str(tmp / TENSORS))
        with open(tmp / TENSORS, "rb+") as f:
            os.fsync(f.fileno())
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
    try:
        tensors = load_file(str(directory / TENSORS))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            str(directory / TENSORS),
            f"corrupt checkpoint ({err})",
            "delete it and resume from an earlier checkpoint or retrain",
        ) from None
    try:
        meta = json.loads((directory / STATE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            str(directory / STATE),
            f"corrupt checkpoint state ({err})",
            "delete it and resume from an earlier checkpoint or retrain",
        ) from None
    if meta.get("format") != "polytask-checkpoint/1":
        raise CheckpointError(
            str(directory / STATE),
            f"unknown checkpoint format {meta.get('format')!r}",
            "read it with the polytask version that wrote it",
        )
    return tensors, meta


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
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
        if states:
            torch.cuda.set_rng_state_all(states)
