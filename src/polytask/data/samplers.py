"""Task samplers: which source (data set) the next training batch comes from.

A *source* is a data set labelling one or more tasks. A sampler is configured with its
hyper-parameters (``TemperatureSampler(T=2.0)``) and bound to the source sizes
``n_i`` (``sampler.bind({"a": 1000, "b": 50})``, which :class:`MultiTaskLoader` does);
then ``probabilities(step, total_steps)`` gives ``{source: p_i}``. ``draw`` turns the
probabilities into a sequence of sources, deterministically for a given seed.

=====================  ================================================================
sampler                rule
=====================  ================================================================
ProportionalSampler    p_i ∝ n_i
TemperatureSampler     p_i ∝ n_i^(1/T)  (T = 1 proportional, T -> ∞ uniform)
UniformSampler         round-robin: the sources in turn, one batch each (p_i = 1/K)
JointSampler           every source in every step, the batch split across them
AnnealedSampler        p_i ∝ n_i^α(t), α moving linearly from 1/T_start to 1/T_end
                       over training (see :class:`AnnealedSampler`)
=====================  ================================================================
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import math
import operator
from typing import Any, Mapping

import torch

from polytask.errors import OptionError
from polytask.options import check_options
from polytask.registry import Registry

__all__ = [
    "AnnealedSampler",
    "JointSampler",
    "ProportionalSampler",
    "SAMPLERS",
    "TaskSampler",
    "TemperatureSampler",
    "UniformSampler",
    "make_sampler",
    "stable_seed",
]


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` that is the same on every run and machine
    (unlike Python's ``hash``, which is salted per process for strings)."""
    text = "\x1f".join(repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") & (2**63 - 1)


class TaskSampler:
    """Base class: bound to source sizes, gives per-step source probabilities."""

    #: name in :data:`SAMPLERS`
    name: str = ""
    #: True when probabilities change during training (needs ``total_steps``)
    is_time_dependent: bool = False

    def __init__(self, sizes: Mapping[str, int] | None = None) -> None:
        self.sizes: dict[str, int] | None = None
        if sizes is not None:
            self._set_sizes(sizes)

    def _set_sizes(self, sizes: Mapping[str, int]) -> None:
        if not sizes:
            raise ValueError(f"{type(self).__name__}: needs at least one source")
        clean: dict[str, int] = {}
        for src, n in sizes.items():
            try:
                clean[src] = operator.index(n)
            except TypeError:
                clean[src] = 0
            if clean[src] <= 0:
                raise ValueError(
                    f"{type(self).__name__}: source {src!r} has size {n!r}; every source "
                    "needs at least one example (drop empty sources)"
                )
        self.sizes = clean

    def bind(self, sizes: Mapping[str, int]) -> TaskSampler:
        """A copy of this sampler bound to ``sizes`` (source -> number of examples)."""
        other = copy.copy(self)
        other._set_sizes(sizes)
        return other

    @property
    def sources(self) -> list[str]:
        return list(self._require_sizes())

    def _require_sizes(self) -> dict[str, int]:
        if self.sizes is None:
            raise ValueError(
                f"{type(self).__name__}: no source sizes; call .bind({{source: n_examples}}) first"
            )
        return self.sizes

    def _power(self, alpha: float) -> dict[str, float]:
        """p_i ∝ n_i^alpha (alpha = 0: uniform), computed in log space for stability."""
        sizes = self._require_sizes()
        logs = {s: alpha * math.log(n) for s, n in sizes.items()}
        top = max(logs.values())
        w = {s: math.exp(v - top) for s, v in logs.items()}
        z = sum(w.values())
        return {s: v / z for s, v in w.items()}

    def probabilities(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        """``{source: p}`` at training step ``step`` of ``total_steps`` (sums to 1)."""
        raise NotImplementedError

    def draw(self, start_step: int, n_steps: int, total_steps: int, seed: int) -> list[str]:
        """Sources of the steps ``start_step .. start_step + n_steps - 1``.

        Step ``start_step + i`` uses the ``i``-th uniform number of a generator seeded with
        ``seed`` and picks the source whose cumulative-probability interval holds it (in
        the sources' order), so the result is a pure function of the arguments.
        """
        sources = self.sources
        if n_steps <= 0:
            return []
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(n_steps, generator=g, dtype=torch.float64).tolist()
        cached: list[float] | None = None
        out: list[str] = []
        for i, x in enumerate(u):
            if cached is None or self.is_time_dependent:
                p = self.probabilities(start_step + i, total_steps)
                cum, acc = [], 0.0
                for s in sources:
                    acc += p[s]
                    cum.append(acc)
                cached = cum
            k = min(bisect.bisect_right(cached, x * cached[-1]), len(sources) - 1)
            out.append(sources[k])
        return out

    def step_shares(self, batch_size: int) -> dict[str, int] | None:
        """Per-source batch sizes of a *joint* step (every source in every step), or ``None``
        (the default): each step takes one source, chosen by :meth:`draw`, and a batch of
        ``batch_size`` from it."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._hparams()})"

    def _hparams(self) -> str:
        return ""


class ProportionalSampler(TaskSampler):
    """p_i = n_i / Σ_j n_j: every example is equally likely to be seen."""

    name = "proportional"

    def probabilities(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        return self._power(1.0)


class TemperatureSampler(TaskSampler):
    """p_i ∝ n_i^(1/T) (Arivazhagan et al. 2019): T = 1 is proportional, T -> ∞ uniform."""

    name = "temperature"

    def __init__(self, T: float = 2.0, sizes: Mapping[str, int] | None = None) -> None:
        if not T > 0:
            raise OptionError("T", f"must be > 0, got {T}", "give a temperature T > 0")
        self.T = float(T)
        super().__init__(sizes)

    def probabilities(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        return self._power(0.0 if math.isinf(self.T) else 1.0 / self.T)

    def _hparams(self) -> str:
        return f"T={self.T}"


class UniformSampler(TaskSampler):
    """Round-robin: step s takes source ``sources[s mod K]`` (in the sources' order).

    The cycle runs on the *global* step, so it continues across epochs. Over any K
    consecutive steps every source gives exactly one batch (p_i = 1/K).
    """

    name = "uniform"

    def probabilities(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        return self._power(0.0)

    def draw(self, start_step: int, n_steps: int, total_steps: int, seed: int) -> list[str]:
        sources = self.sources
        return [sources[(start_step + i) % len(sources)] for i in range(max(0, n_steps))]


class AnnealedSampler(TaskSampler):
    """Annealed sampling: from proportional towards uniform as training proceeds.

    With progress ``f = step / (total_steps - 1)`` in [0, 1] (0 when ``total_steps <= 1``)
    the exponent is ``α(f) = (1 - f) / T_start + f / T_end`` and ``p_i ∝ n_i^α``. The
    defaults (``T_start = 1``, ``T_end = ∞``) go from proportional (α = 1) at the first
    step to uniform (α = 0) at the last.

    Stickland & Murray (2019, "BERT and PALs", annealed sampling) use
    ``α = 1 - 0.8 (e - 1) / (E - 1)`` at epoch e of E, i.e. this rule with ``T_end = 5``
    evaluated at epoch starts; ``AnnealedSampler(T_end=5.0)`` follows it step by step.
    """

    name = "annealed"
    is_time_dependent = True

    def __init__(
        self,
        T_start: float = 1.0,
        T_end: float = math.inf,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        for name, value in (("T_start", T_start), ("T_end", T_end)):
            if not value > 0:
                raise OptionError(name, f"must be > 0, got {value}", f"give {name} > 0")
        self.T_start = float(T_start)
        self.T_end = float(T_end)
        super().__init__(sizes)

    def alpha(self, step: int, total_steps: int) -> float:
        """The exponent α at ``step`` of ``total_steps``."""
        f = 0.0 if total_steps <= 1 else min(max(step / (total_steps - 1), 0.0), 1.0)
        a0 = 0.0 if math.isinf(self.T_start) else 1.0 / self.T_start
        a1 = 0.0 if math.isinf(self.T_end) else 1.0 / self.T_end
        return (1.0 - f) * a0 + f * a1

    def probabilities(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        return self._power(self.alpha(step, total_steps))

    def _hparams(self) -> str:
        return f"T_start={self.T_start}, T_end={self.T_end}"


SPLITS = ("equal", "proportional")


class JointSampler(TaskSampler):
    """Every source in every step (LibMTL's "multi_input" mode): a step's plan holds one
    batch of each source, so a step carries the losses of every task, whatever data set
    labels it — what gradient methods and adaptive weightings need to have something to
    balance when each task has its own data set.

    The step's total ``batch_size`` B is split across the sources (``split``):

    * ``"equal"`` (default): ``B_s = ⌊B / S⌋``, the remainder going one each to the first
      sources;
    * ``"proportional"``: ``B_s ∝ n_s`` by largest remainders;
    * ``batch_sizes={source: B_s}``: given per source (their sum is the step's size).

    Every source gets at least one example per step. An epoch is ``max_s ⌈n_s / B_s⌉`` steps
    (one pass over the source that needs the most steps in its share); the other sources go
    on through fresh permutations (see :class:`~polytask.data.loader.MultiTaskLoader`).
    """

    name = "joint"

    def __init__(
        self,
        split: str = "equal",
        batch_sizes: Mapping[str, int] | None = None,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise OptionError(
                "split",
                f"unknown split {split!r}",
                f"use one of {list(SPLITS)}, or give batch_sizes per source",
            )
        for src, b in (batch_sizes or {}).items():
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise OptionError(
                    f"batch_sizes.{src}",
                    f"{b!r} is not a whole number ≥ 1",
                    "give each source's examples per step",
                )
        self.split = split
        self.batch_sizes = dict(batch_sizes) if batch_sizes else None
        super().__init__(sizes)

    def _set_sizes(self, sizes: Mapping[str, int]) -> None:
        super()._set_sizes(sizes)
        if self.batch_sizes is not None and set(self.batch_sizes) != set(sizes):
            missing = sorted(set(sizes) - set(self.batch_sizes))
            extra = sorted(set(self.batch_sizes) - set(sizes))
            raise OptionError(
                "batch_sizes",
                f"does not name the sources: missing {missing}, unknown {extra}",
                f"give one size for each of {sorted(sizes)}",
            )

    def probabilities(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        """Every source takes part in every step: 1 each (not a distribution to draw from)."""
        return {s: 1.0 for s in self.sources}

    def draw(self, start_step: int, n_steps: int, total_steps: int, seed: int) -> list[str]:
        raise TypeError("JointSampler puts every source in every step; use step_shares()")

    def step_shares(self, batch_size: int) -> dict[str, int]:
        sizes = self._require_sizes()
        if self.batch_sizes is not None:
            return {s: self.batch_sizes[s] for s in sizes}
        k = len(sizes)
        if batch_size < k:
            raise OptionError(
                "batch_size",
                f"{batch_size} examples per step cannot give each of the {k} sources one",
                f"use a batch size of at least {k}",
            )
        if self.split == "equal":
            base, extra = divmod(batch_size, k)
            return {s: base + (i < extra) for i, s in enumerate(sizes)}
        # proportional: one each, the rest by largest remainders of (B - k) n_s / N
        total, rest = sum(sizes.values()), batch_size - k
        exact = {s: rest * n / total for s, n in sizes.items()}
        shares = {s: 1 + math.floor(x) for s, x in exact.items()}
        left = batch_size - sum(shares.values())
        for s in sorted(sizes, key=lambda s: (-(exact[s] - math.floor(exact[s])), s))[:left]:
            shares[s] += 1
        return shares

    def _hparams(self) -> str:
        return f"batch_sizes={self.batch_sizes}" if self.batch_sizes else f"split={self.split!r}"


#: the samplers: a name or ``package.module:Class`` -> a :class:`TaskSampler` subclass
SAMPLERS: Registry[type[TaskSampler]] = Registry(
    "sampler",
    base=TaskSampler,
    expects="a subclass of polytask.data.TaskSampler",
    builtins={
        "proportional": ProportionalSampler,
        "temperature": TemperatureSampler,
        "uniform": UniformSampler,
        "round_robin": UniformSampler,
        "annealed": AnnealedSampler,
        "joint": JointSampler,
    },
)


def make_sampler(name: str, sizes: Mapping[str, int] | None = None, **opts: Any) -> TaskSampler:
    """``make_sampler("temperature", T=2.0)``: a name or import path (checked by :data:`SAMPLERS`);
    unknown names and bad options raise ``ValueError`` (an unknown name: an ``OptionError``)."""
    cls = SAMPLERS.resolve(name)
    check_options(cls, opts, supplied=["sizes"], owner=f"sampler {name!r}")
    try:
        return cls(sizes=sizes, **opts)
    except TypeError as e:
        raise ValueError(f"sampler {name!r}: bad options {opts} ({e})") from None
