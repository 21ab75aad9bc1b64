"""Regression: masked mean squared or absolute error."""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch import Tensor

from polytask.errors import OptionError
from polytask.tasks._common import check_shape, nan, require_labelled
from polytask.tasks.base import TaskKind

_LOSSES = ("mse", "l1")
_METRICS = ("mae", "rmse", "r2")


class Regression(TaskKind):
    """``D`` real targets: ``Regression()``, ``Regression(dim=2, names=["x", "y"])``.

    With the labelled entries ``M = {(b, d) : mask_{b,d}}`` the loss is

        mse: (1/|M|) Σ_{(b,d)∈M} (ŷ_{bd} − y_{bd})²      l1: (1/|M|) Σ_{(b,d)∈M} |ŷ_{bd} − y_{bd}|.

    Raw targets: a number (``D = 1``), a list of ``D`` numbers/None, or ``None``.

    Metrics ``mae``, ``rmse`` and ``r2`` (scikit-learn), each computed per dimension on its
    labelled entries and averaged over the dimensions (``r2`` over those with at least two
    labelled, non-constant targets; ``nan`` if none). With ``names`` and ``D > 1`` the
    per-dimension values are reported too, as ``"<metric>_<name>"``.
    Lower is better for ``mae`` and ``rmse``.
    """

    kind = "regression"
    default_primary = "rmse"

    def __init__(self, dim: int = 1, loss: str = "mse", names: Sequence[str] | None = None) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise OptionError(
                "dim", f"Regression dim must be a positive integer, got {dim!r}", "e.g. dim: 1"
            )
        if loss not in _LOSSES:
            raise OptionError(
                "loss", f"Regression loss {loss!r} is unknown", f"use one of {list(_LOSSES)}"
            )
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != dim or len(set(names)) != dim:
                raise OptionError(
                    "names",
                    f"Regression names {names} are not {dim} distinct names",
                    "give one distinct name per dimension",
                )
        self.dim = dim
        self.loss_name = loss
        self.names = names

    def __repr__(self) -> str:
        return f"Regression(dim={self.dim}, loss={self.loss_name!r}, names={self.names!r})"

    @property
    def output_size(self) -> int:
        return self.dim

    def metric_names(self) -> list[str]:
        names = list(_METRICS)
        if self.names is not None and self.dim > 1:
            names += [f"{m}_{n}" for n in self.names for m in _METRICS]
        return names

    def higher_is_better(self, metric: str) -> bool:
        """False for errors (``mae``, ``rmse``, ``mse``, ``loss`` and their per-dim forms)."""
        return metric.split("_", 1)[0] not in {"mae", "rmse", "mse", "loss"}

    def _values(self, raw: Any) -> list[float | None]:
        if raw is None:
            return [None] * self.dim
        if isinstance(raw, (numbers.Real, str)):
            if self.dim != 1:
                raise ValueError(
                    f"regression target {raw!r}: expected a list of {self.dim} numbers"
                )
            raw = [raw]
        elif not isinstance(raw, Sequence):
            raise ValueError(
                f"regression target {raw!r}: expected a number or a list of {self.dim} numbers"
            )
        if len(raw) != self.dim:
            raise ValueError(
                f"regression target {list(raw)!r} has {len(raw)} values, expected {self.dim}"
            )
        return [_number(v) for v in raw]

    def encode_target(self, raw: Any) -> tuple[list[float], list[bool]]:
        values = self._values(raw)
        return [0.0 if v is None else v for v in values], [v is not None for v in values]

    def loss(self, output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        mask = require_labelled(mask, "Regression")
        if output.dim() == 1 and self.dim == 1:
            output = output.unsqueeze(1)
        check_shape("output", output, tuple(mask.shape), "Regression")
        target = torch.as_tensor(target, device=output.device, dtype=output.dtype)
        diff = output[mask] - target[mask]
        return (diff**2).mean() if self.loss_name == "mse" else diff.abs().mean()

    def decode(self, output: Tensor, mask: Tensor | None = None) -> list[Any]:
        """The predicted value: a float when ``D = 1``, else a list of ``D`` floats."""
        values = output.detach().float().reshape(output.shape[0], -1).tolist()
        return [v[0] for v in values] if self.dim == 1 else values

    def metrics(self, predictions: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        pred = np.full((len(targets), self.dim), np.nan)
        true = np.full((len(targets), self.dim), np.nan)
        for i, (p, t) in enumerate(zip(predictions, targets)):
            p = [p] if isinstance(p, numbers.Real) else list(p)
            if len(p) != self.dim:
                raise ValueError(f"prediction {i} has {len(p)} values, expected {self.dim}")
            pred[i] = p
            true[i] = [np.nan if v is None else v for v in self._values(t)]
        per_dim: dict[str, list[float]] = {m: [] for m in _METRICS}
        for d in range(self.dim):
            keep = ~np.isnan(true[:, d])
            y, yhat = true[keep, d], pred[keep, d]
            has = len(y) > 0
            per_dim["mae"].append(float(mean_absolute_error(y, yhat)) if has else nan())
            per_dim["rmse"].append(math.sqrt(mean_squared_error(y, yhat)) if has else nan())
            r2_ok = len(y) >= 2 and np.ptp(y) > 0
            per_dim["r2"].append(float(r2_score(y, yhat)) if r2_ok else nan())
        out = {m: _nanmean(v) for m, v in per_dim.items()}
        if self.names is not None and self.dim > 1:
            for d, name in enumerate(self.names):
                out.update({f"{m}_{name}": per_dim[m][d] for m in _METRICS})
        return out

    def format_prediction(self, prediction: Any) -> dict[str, Any]:
        if self.dim == 1:
            value = prediction if isinstance(prediction, numbers.Real) else list(prediction)[0]
            return {"value": float(value)}
        values = [float(v) for v in prediction]
        out: dict[str, Any] = {"value": values}
        if self.names is not None:
            out["values"] = dict(zip(self.names, values))
        return out


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"regression target value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"regression target value {value!r} is not finite")
    return number


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else nan()
