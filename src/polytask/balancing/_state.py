"""State that balancing methods own and checkpoints save: the state-keys check, seeded
random draws, Adam on one scalar per task, and learned per-task scalars."""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from ._options import finite, is_integer, require

__all__ = [
    "weighted_sum",
    "host_values_on",
    "check_state_keys",
    "Seeded",
    "random_orders",
    "TaskAdam",
    "LearnedTaskScalars",
    "LearnedLogScales",
]


def check_state_keys(owner: str, state: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse a saved state with keys ``owner`` (a method's name) does not know: a state
    saved by another method, or by another version of this one."""
    unknown = sorted(set(state) - set(known))
    if unknown:
        raise OptionError(
            "state",
            f"balancing method {owner!r}: unknown state keys {unknown}",
            f"load a state saved by {owner!r} (known keys: {sorted(set(known))})",
        )


class Seeded:
    """Mixin for randomised methods: draws come from ``generator`` (or one made from
    ``seed``), else from torch's global generator (reproducible under ``torch.manual_seed``).

    An owned generator's state is part of :meth:`random_state`, so a checkpoint restores
    the exact sequence of draws.
    """

    generator: torch.Generator | None

    def _init_generator(self, seed: int | None, generator: torch.Generator | None) -> None:
        require(
            seed is None or generator is None,
            "seed",
            "give a seed or a generator, not both",
            "drop one of them",
        )
        require(
            seed is None or is_integer(seed),
            "seed",
            f"{seed!r} is not an integer",
            "give an integer seed or none",
        )
        require(
            generator is None or isinstance(generator, torch.Generator),
            "generator",
            f"{generator!r} is not a torch.Generator",
            "pass torch.Generator().manual_seed(n) or use the seed option",
        )
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else generator

    def random_state(self) -> dict[str, Any]:
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_random_state(self, state: Mapping[str, Any]) -> None:
        if "generator" in state:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator"])


def random_orders(k: int, generator: torch.Generator | None = None) -> np.ndarray:
    """(K, K) integer array whose row i is a uniformly random order of the K tasks.

    Each task i visits the others in the order of row i and skips itself when met, which
    is a uniform order of the K − 1 others. One draw of K² uniforms per call.
    """
    keys = torch.rand(k, k, generator=generator, dtype=torch.float64)
    return keys.argsort(dim=1).numpy()


class TaskAdam:
    """Adam (Kingma & Ba, ICLR 2015) on one scalar per task, with L2 weight decay added to the
    gradient as ``torch.optim.Adam(weight_decay=...)`` does.

    Moments and step counts are kept per task name, so a task missing from a step keeps its
    state untouched; everything is a Python float (float64), hence JSON-able. Used for
    FAMO's logits and GradNorm's weights, which the methods update themselves.
    """

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m: dict[str, float] = {}
        self.v: dict[str, float] = {}
        self.t: dict[str, int] = {}

    def step(self, values: Mapping[str, float], grads: Mapping[str, float]) -> dict[str, float]:
        """New values of the tasks in ``grads`` (``values`` must hold them)."""
        b1, b2 = self.betas
        out = {}
        for task, g in grads.items():
            x = values[task]
            g = g + self.weight_decay * x
            t = self.t.get(task, 0) + 1
            m = b1 * self.m.get(task, 0.0) + (1 - b1) * g
            v = b2 * self.v.get(task, 0.0) + (1 - b2) * g * g
            self.m[task], self.v[task], self.t[task] = m, v, t
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            out[task] = x - self.lr * m_hat / (math.sqrt(v_hat) + self.eps)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"m": dict(self.m), "v": dict(self.v), "t": dict(self.t)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.m = {k: float(x) for k, x in state.get("m", {}).items()}
        self.v = {k: float(x) for k, x in state.get("v", {}).items()}
        self.t = {k: int(x) for k, x in state.get("t", {}).items()}


class LearnedTaskScalars:
    """One learnable scalar per task (``nn.Parameter`` of shape ()), keyed by task name.

    Shared by the methods that learn a per-task scale (uncertainty weighting's log σ²,
    IMTL-L's and IMTL's s). :meth:`bind` creates one parameter per task; before any
    ``bind`` a task is created on first use (so a third party can call the method
    directly), after it an unknown task is an error. ``parameters()`` before ``bind``
    is an error: an optimiser built from it would silently miss the scalars.
    """

    def __init__(self, owner: str, init: float) -> None:
        self.owner = owner
        self.init = init
        self.values: dict[str, torch.nn.Parameter] = {}
        self.bound = False

    def bind(self, tasks: Sequence[str]) -> None:
        self.values = {
            t: self.values[t] if t in self.values else torch.nn.Parameter(torch.tensor(self.init))
            for t in tasks
        }
        self.bound = True

    def parameters(self) -> list[torch.nn.Parameter]:
        if not self.bound:
            raise OptionError(
                self.owner,
                "parameters() before bind()",
                "call method.bind(task names) first (the Trainer does), then build "
                "the optimiser with method.parameters()",
            )
        return list(self.values.values())

    def get(self, task: str) -> torch.nn.Parameter:
        if task not in self.values:
            if self.bound:
                raise OptionError(
                    self.owner,
                    f"task {task!r} was not bound (bound: {list(self.values)})",
                    "bind every task name the losses use",
                )
            self.values[task] = torch.nn.Parameter(torch.tensor(self.init))
        return self.values[task]

    def state_dict(self) -> dict[str, float]:
        return {t: float(p.detach()) for t, p in self.values.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for t, v in state.items():
            value = float(v.item() if torch.is_tensor(v) else v)
            if t in self.values:
                with torch.no_grad():  # in place: an optimiser holding the parameter keeps it
                    self.values[t].fill_(value)
            elif self.bound:
                raise OptionError(
                    "state",
                    f"{self.owner}: the saved state has task {t!r}, not "
                    f"among the bound tasks {list(self.values)}",
                    "resume with the task set the run was saved with",
                )
            else:
                self.values[t] = torch.nn.Parameter(torch.tensor(value))


class LearnedLogScales:
    """The learned log-scales s_i of IMTL-L, shared with the IMTL hybrid: created at
    ``bind``, optimised with the model (``parameters()``), saved in ``state_dict``."""

    name: str

    def __init__(self, init_scale: float = 0.0) -> None:
        init = finite("init_scale", init_scale, "give the initial log-scale s as a number, e.g. 0")
        self.scales = LearnedTaskScalars(self.name, init)

    def bind(self, tasks: Sequence[str]) -> None:
        super().bind(tasks)  # type: ignore[misc]
        self.scales.bind(tasks)

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.scales.parameters()

    def loss_scales(self) -> dict[str, float]:
        """Current e^{s_i} per task."""
        return {t: math.exp(v) for t, v in self.scales.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scales.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"scale"})
        self.scales.load_state_dict(state.get("scale", {}))


def weighted_sum(losses: Mapping[str, Tensor], weights: Sequence[float] | Tensor) -> Tensor:
    """``Σ_i λ_i L_i`` as one product of the stacked losses with the weights (in the losses'
    dtype and on their device, :func:`host_values_on`): a few kernels whatever K, where a
    product per task costs K launches and their backward passes on a GPU."""
    stacked = torch.stack(list(losses.values()))
    if not torch.is_tensor(weights) and all(float(w) == 1.0 for w in weights):
        return stacked.sum()  # the plain sum: no product (and no backward node for it)
    return (stacked * host_values_on(weights, stacked)).sum()


@functools.lru_cache(maxsize=256)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def host_values_on(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """Numbers the host computed (a method's weights) as a tensor of ``like``'s dtype on its
    device, without making the host wait for the device.

    A copy from ordinary (pageable) host memory to a GPU is staged by the driver, which may
    wait for the work queued on the stream: every training step would be synchronous. So a
    sequence of floats — weights that repeat from step to step: fixed weights, DWA's
    per-epoch weights, constant factors — is copied once per device and dtype and then
    reused (read only: never modify the result in place); a tensor — fresh values every
    step, RLW's draws — travels through page-locked memory, asynchronously.
    """
    if not torch.is_tensor(values):
        key = tuple(float(v) for v in values)
        if like.device.type == "cpu":
            return torch.tensor(key, dtype=like.dtype)
        return _constant(key, like.device, like.dtype)
    w = values.to(dtype=like.dtype)
    if w.device == like.device:
        return w
    if like.device.type == "cuda" and w.device.type == "cpu":
        w = w.pin_memory()
    return w.to(like.device, non_blocking=True)
