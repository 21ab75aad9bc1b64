"""Which tasks to train together, from a task-affinity matrix (Fifty et al., "Efficiently
Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021 — TAG).

``Z[i][j]`` is the affinity of task ``i`` onto task ``j``: how much a step along task ``i``'s
gradient lowers task ``j``'s loss (:mod:`polytask.analysis.affinity`). A *group* is a set of
tasks trained as one network; the score of task ``j`` in group ``g`` is the mean affinity
onto ``j`` from the other members,

    s(j, g) = (1 / (|g| − 1)) Σ_{i ∈ g, i ≠ j} Z[i][j]      (0 for a task alone),

and a proposal of ``G`` groups serves every task by the group where its score is highest:

    score(groups) = Σ_j max_{g ∋ j} s(j, g).

As in TAG, groups may overlap (a task trains in several networks and is served by its best
one); ``partition=True`` asks for disjoint groups covering every task. The search is
exhaustive up to :data:`EXHAUSTIVE` tasks and a beam search beyond; each proposal carries
its score, so the user sees how close the runners-up are.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

__all__ = ["EXHAUSTIVE", "Grouping", "group_score", "propose_groups"]

#: up to this many tasks every choice of groups is scored; beyond, a beam search
EXHAUSTIVE = 8
#: ... as long as there are at most this many choices of overlapping groups
MAX_COMBINATIONS = 5_000_000


@dataclass(frozen=True)
class Grouping:
    """``groups`` (each a tuple of task names), the task -> group index serving it, and the
    total score."""

    groups: tuple[tuple[str, ...], ...]
    serves: dict[str, int]
    score: float


def _member_scores(z: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """s(j, g) for every task j (−inf where j is not in g)."""
    k = z.shape[0]
    out = np.full(k, -np.inf)
    for j in members:
        others = [i for i in members if i != j]
        out[j] = float(np.mean(z[others, j])) if others else 0.0
    return out


def group_score(z: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """The total score of ``groups`` (task indices); −inf when a task is in none."""
    best = np.max(np.stack([_member_scores(z, g) for g in groups]), axis=0)
    return float(best.sum())


def _subsets(k: int) -> list[tuple[int, ...]]:
    return [c for r in range(1, k + 1) for c in itertools.combinations(range(k), r)]


def _partitions(items: list[int], blocks: int) -> Iterator[list[list[int]]]:
    """Every partition of ``items`` into exactly ``blocks`` non-empty blocks."""
    if blocks == 1:
        yield [items]
        return
    if len(items) < blocks:
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest, blocks - 1):  # first alone
        yield [[first], *part]
    for part in _partitions(rest, blocks):  # first joins a block
        for b in range(len(part)):
            yield [*part[:b], [first, *part[b]], *part[b + 1 :]]


def _result(tasks: Sequence[str], z: np.ndarray, groups: Sequence[Sequence[int]]) -> Grouping:
    scores = np.stack([_member_scores(z, g) for g in groups])
    serves = {tasks[j]: int(np.argmax(scores[:, j])) for j in range(len(tasks))}
    return Grouping(
        tuple(tuple(tasks[i] for i in g) for g in groups), serves, float(scores.max(0).sum())
    )


def propose_groups(
    affinity: Sequence[Sequence[float]] | np.ndarray,
    tasks: Sequence[str],
    n_groups: int,
    *,
    partition: bool = False,
    top: int = 3,
    beam: int = 64,
) -> list[Grouping]:
    """The ``top`` best choices of ``n_groups`` groups for ``affinity`` (K × K, row i: the
    affinity of task i onto each task), best first."""
    z = np.asarray(affinity, dtype=float)
    k = len(tasks)
    if z.shape != (k, k):
        raise ValueError(f"affinity is {z.shape}, expected ({k}, {k}) for tasks {list(tasks)}")
    if not 1 <= n_groups <= k:
        raise ValueError(f"n_groups must be in [1, {k}], got {n_groups}")
    found: list[tuple[float, tuple[tuple[int, ...], ...]]] = []
    if partition:
        if k <= EXHAUSTIVE:
            candidates: Iterator[list[list[int]]] = _partitions(list(range(k)), n_groups)
        else:
            candidates = iter(_beam(z, n_groups, beam, disjoint=True))
        for groups in candidates:
            found.append((group_score(z, groups), tuple(tuple(sorted(g)) for g in groups)))
    elif k <= EXHAUSTIVE and _count(2**k - 1, n_groups) <= MAX_COMBINATIONS:
        found = _exhaustive(z, n_groups, top)
    else:  # the best disjoint groups, then tasks added to (or dropped from) groups
        for groups in _beam(z, n_groups, beam, disjoint=True)[:top]:
            improved = _climb(z, [list(g) for g in groups])
            found.append((group_score(z, improved), tuple(tuple(sorted(g)) for g in improved)))
    unique: dict[tuple[tuple[int, ...], ...], float] = {}
    for total, chosen in sorted(found, key=lambda f: (-f[0], f[1])):
        unique.setdefault(tuple(sorted(chosen)), total)
    best = sorted(unique.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [_result(tasks, z, chosen) for chosen, _ in best]


def _count(n: int, r: int) -> int:
    from math import comb

    return comb(n, r)


def _exhaustive(
    z: np.ndarray, n_groups: int, top: int
) -> list[tuple[float, tuple[tuple[int, ...], ...]]]:
    """Every choice of ``n_groups`` distinct subsets, the last two vectorised."""
    k = z.shape[0]
    subsets = _subsets(k)
    table = np.stack([_member_scores(z, s) for s in subsets])  # (S, k), -inf: not a member
    n = len(subsets)
    found: list[tuple[float, tuple[tuple[int, ...], ...]]] = []
    if n_groups == 1:
        totals = table.sum(axis=1)
        for i in np.argsort(-totals)[:top]:
            if np.isfinite(totals[i]):
                found.append((float(totals[i]), (subsets[i],)))
        return found
    first, second = np.triu_indices(n, k=1)
    pairs = np.maximum(table[first], table[second])  # (P, k)
    for head in itertools.combinations(range(n), n_groups - 2):
        rest = pairs if not head else np.maximum(pairs, table[list(head)].max(axis=0))
        keep = first > (head[-1] if head else -1)  # subsets in increasing order: no repeats
        totals = np.where(keep, rest.sum(axis=1), -np.inf)
        for i in np.argpartition(-totals, min(top, len(totals) - 1))[:top]:
            if np.isfinite(totals[i]):
                chosen = (*head, int(first[i]), int(second[i]))
                found.append((float(totals[i]), tuple(subsets[c] for c in chosen)))
        if len(found) > 50 * top:
            found.sort(key=lambda f: -f[0])
            del found[top:]
    return found


def _climb(z: np.ndarray, groups: list[list[int]]) -> list[list[int]]:
    """Add a task to a group, or drop it from one (never its last), while the score rises."""
    best = group_score(z, groups)
    improved = True
    while improved:
        improved = False
        for g, task in itertools.product(range(len(groups)), range(z.shape[0])):
            trial = [list(x) for x in groups]
            if task in trial[g]:
                trial[g].remove(task)
                if not trial[g] or not any(task in x for x in trial):
                    continue
            else:
                trial[g].append(task)
            score = group_score(z, trial)
            if score > best + 1e-12:
                groups, best, improved = trial, score, True
    return groups


def _beam(z: np.ndarray, n_groups: int, width: int, *, disjoint: bool) -> list[list[list[int]]]:
    """Greedy beam search beyond :data:`EXHAUSTIVE` tasks: grow ``n_groups`` groups one
    task at a time, keeping the ``width`` best partial assignments; every task ends in at
    least one group (with overlap allowed, a task may also join a second group)."""
    k = z.shape[0]
    states: list[list[list[int]]] = [[[] for _ in range(n_groups)]]
    for task in range(k):
        grown: list[tuple[float, list[list[int]]]] = []
        for state in states:
            options = [[g] for g in range(n_groups)]
            if not disjoint:
                options += [list(p) for p in itertools.combinations(range(n_groups), 2)]
            for chosen in options:
                new = [list(g) + ([task] if i in chosen else []) for i, g in enumerate(state)]
                placed = [g for g in new if g]
                seen = sorted({t for g in placed for t in g})
                sub = z[np.ix_(seen, seen)]
                index = {t: n for n, t in enumerate(seen)}
                grown.append((group_score(sub, [[index[t] for t in g] for g in placed]), new))
        grown.sort(key=lambda item: -item[0])
        states = [state for _, state in grown[:width]]
    return [s for s in states if all(s)]
