"""Deterministic train/validation/test splits and subsamples.

Both functions shuffle the indices ``0..n-1`` with ``random.Random(seed)`` (Python's
Mersenne Twister, stable across platforms and Python versions), cut the shuffled order,
and return each part **in the original order** of ``examples``, so that the same
``(examples, seed)`` always gives the same parts and a part reads like its file.
"""

from __future__ import annotations

import math
import random
from typing import Sequence, TypeVar

__all__ = ["split", "subsample"]

T = TypeVar("T")


def _shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def split(
    examples: Sequence[T],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    *,
    val_fraction: float | None = None,
) -> tuple[list[T], ...]:
    """Split ``examples`` into ``len(fractions)`` parts.

    Part k receives the shuffled indices between ``b_{k-1}`` and ``b_k``, where
    ``b_k = floor(n * c_k + 0.5)`` (rounding half up) and ``c_k`` is the cumulative sum of
    ``fractions`` (which must be non-negative and sum to 1); the last part ends at ``n``.
    ``val_fraction=v`` is short for ``fractions=(1 - v, v)`` and returns ``(train, val)``.
    """
    if val_fraction is not None:
        if not 0.0 <= val_fraction <= 1.0:
            raise ValueError(f"split: val_fraction must be in [0, 1], got {val_fraction}")
        fractions = (1.0 - val_fraction, val_fraction)
    fractions = [float(f) for f in fractions]
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split: fractions {fractions} must be non-negative and sum to 1, e.g. (0.8, 0.1, 0.1)"
        )
    n = len(examples)
    order = _shuffled(n, seed)
    parts: list[list[T]] = []
    acc, start = 0.0, 0
    for k, f in enumerate(fractions):
        acc += f
        end = n if k == len(fractions) - 1 else min(n, math.floor(n * acc + 0.5))
        parts.append([examples[i] for i in sorted(order[start:end])])
        start = end
    return tuple(parts)


def subsample(
    examples: Sequence[T],
    n: int | None = None,
    seed: int = 0,
    *,
    fraction: float | None = None,
) -> list[T]:
    """``n`` examples (or ``round(fraction * len)``) drawn without replacement by ``seed``,
    in original order. ``n >= len(examples)`` returns all of them."""
    if (n is None) == (fraction is None):
        raise ValueError("subsample: give exactly one of n= or fraction=")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"subsample: fraction must be in [0, 1], got {fraction}")
        n = math.floor(fraction * len(examples) + 0.5)
    assert n is not None
    if n < 0:
        raise ValueError(f"subsample: n must be >= 0, got {n}")
    if n >= len(examples):
        return list(examples)
    keep = sorted(_shuffled(len(examples), seed)[:n])
    return [examples[i] for i in keep]
