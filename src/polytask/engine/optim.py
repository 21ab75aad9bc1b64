"""Optimisers, learning-rate schedules and parameter groups."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import OptionError


@dataclass
class ParamGroupRule:
    """Parameters whose name matches ``match`` (fnmatch, e.g. ``encoder.embed*``) get ``lr``
    or are frozen (``requires_grad = False``). The first matching rule wins."""

    match: str
    lr: float | None = None
    freeze: bool = False
    weight_decay: float | None = None


def build_param_groups(
    model: nn.Module,
    rules: Sequence[ParamGroupRule],
    lr: float,
    weight_decay: float,
    extra: Iterable[nn.Parameter] = (),
) -> list[dict[str, Any]]:
    """Split the model's parameters by ``rules``; frozen parameters are left out."""
    for rule in rules:
        if not any(fnmatch.fnmatch(n, rule.match) for n, _ in model.named_parameters()):
            example = next(iter(dict(model.named_parameters())), "")
            raise OptionError(
                "param_groups",
                f"pattern {rule.match!r} matches no parameter",
                f"parameter names look like {example!r}",
            )
    groups: dict[int, dict[str, Any]] = {}
    default: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        rule_idx = next((i for i, r in enumerate(rules) if fnmatch.fnmatch(name, r.match)), None)
        if rule_idx is None:
            if p.requires_grad:
                default.append(p)
            continue
        rule = rules[rule_idx]
        if rule.freeze:
            p.requires_grad_(False)
            continue
        g = groups.setdefault(
            rule_idx,
            {
                "params": [],
                "lr": rule.lr if rule.lr is not None else lr,
                "weight_decay": rule.weight_decay
                if rule.weight_decay is not None
                else weight_decay,
            },
        )
        g["params"].append(p)
    out = [{"params": default, "lr": lr, "weight_decay": weight_decay}] if default else []
    out += [groups[i] for i in sorted(groups)]
    extra = [p for p in extra]
    if extra:
        out.append({"params": extra, "lr": lr, "weight_decay": 0.0})
    return out


def build_optimizer(
    name: str, groups: list[dict[str, Any]], lr: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise OptionError("optimizer", f"unknown optimizer {name!r}", "use adamw, adam or sgd")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear warm-up from 0 over ``warmup`` steps, then ``constant`` (1), ``linear``
    (decay to 0 at ``total``) or ``cosine`` (half cosine to 0 at ``total``).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise OptionError(
        "scheduler", f"unknown schedule {schedule!r}", "use constant, linear or cosine"
    )


class Schedule:
    """Sets each group's lr to ``base_lr × lr_factor(step)``; its state is just the step."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total: int, warmup: int, schedule: str
    ) -> None:
        lr_factor(0, total, warmup, schedule)  # validate the name early
        self.optimizer, self.total, self.warmup, self.schedule = optimizer, total, warmup, schedule
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        f = lr_factor(self.step_count, self.total, self.warmup, self.schedule)
        for g, base in zip(self.optimizer.param_groups, self.base):
            g["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "base": self.base}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_count, self.base = int(state["step"]), list(state["base"])
        self._apply()
