"""Small helpers shared by the task kinds."""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

from polytask.errors import OptionError


def check_labels(labels: Sequence[str], kind: str, minimum: int = 1) -> list[str]:
    """Validate a label set: strings, unique, at least ``minimum`` of them; an
    :class:`~polytask.errors.OptionError` naming ``labels`` otherwise."""
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise OptionError(
            "labels",
            f"{kind} labels must be a list of strings, got {labels!r}",
            "e.g. labels: [neg, pos]",
        )
    labels = list(labels)
    if len(labels) < minimum:
        raise OptionError(
            "labels",
            f"{kind} needs at least {minimum} label(s), got {labels!r}",
            f"give at least {minimum} label(s)",
        )
    for label in labels:
        if not isinstance(label, str) or not label:
            raise OptionError(
                "labels",
                f"{kind} label {label!r} is not a non-empty string",
                "write each label as a non-empty string",
            )
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise OptionError("labels", f"{kind} labels repeat {dupes}", "list each label once")
    return labels


def require_labelled(mask: Tensor, kind: str) -> Tensor:
    """Return ``mask`` as bool; raise when it selects nothing (the loss would be 0/0)."""
    mask = torch.as_tensor(mask).bool()
    if not bool(mask.any()):
        raise ValueError(
            f"{kind}.loss: the mask selects no labelled entry; skip tasks without labels "
            "in a batch (mask.any() is False)"
        )
    return mask


def check_shape(name: str, tensor: Tensor, shape: tuple[int, ...], kind: str) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{kind}: {name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")


def as_binary(value: Any, where: str) -> float | None:
    """0/1/True/False/None -> 0.0/1.0/None; anything else raises ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and float(value) in (0.0, 1.0):
        return float(value)
    raise ValueError(f"{where}: value {value!r} must be 0, 1 or None (missing)")


def nan() -> float:
    return float("nan")
