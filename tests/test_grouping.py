"""Task grouping from an affinity matrix (issue 14, point 3; Fifty et al. 2021, TAG): the
search returns the best-scoring groups (checked against brute force), finds two clusters of
mutually helpful tasks that conflict across clusters, and serves each task by its best
group."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from polytask.analysis import group_score, propose_groups


def _clusters(sizes: list[int], inside: float = 0.3, across: float = -0.2, noise: float = 0.02):
    k = sum(sizes)
    z = np.full((k, k), across)
    start = 0
    for n in sizes:
        z[start : start + n, start : start + n] = inside
        start += n
    z += np.random.default_rng(0).normal(0, noise, (k, k))
    return z, [f"t{i}" for i in range(k)]


def test_the_score_is_the_mean_affinity_onto_each_task_in_its_best_group():
    z = np.array([[0.0, 0.5, -1.0], [0.1, 0.0, 0.2], [0.4, 0.3, 0.0]])
    # group {0, 1}: task 1 gets Z[0][1] = 0.5, task 0 gets Z[1][0] = 0.1; task 2 alone: 0
    assert group_score(z, [[0, 1], [2]]) == pytest.approx(0.6)
    # {0, 1, 2}: task 2 gets (Z[0][2] + Z[1][2]) / 2 = -0.4, so its singleton serves it better
    assert group_score(z, [[0, 1, 2], [2]]) == pytest.approx((0.1 + 0.4) / 2 + (0.5 + 0.3) / 2)


@pytest.mark.parametrize("partition", [False, True])
def test_two_clusters_are_found(partition):
    z, tasks = _clusters([3, 3])
    [best, *_] = propose_groups(z, tasks, 2, partition=partition)
    assert sorted(best.groups) == [("t0", "t1", "t2"), ("t3", "t4", "t5")]
    assert best.serves["t0"] == best.serves["t2"] != best.serves["t4"]


def test_beyond_the_exhaustive_size_the_beam_finds_the_clusters():
    z, tasks = _clusters([5, 5])
    for partition in (False, True):
        [best, *_] = propose_groups(z, tasks, 2, partition=partition)
        assert sorted(best.groups) == [tuple(tasks[:5]), tuple(tasks[5:])]


@pytest.mark.parametrize("n_groups", [1, 2, 3])
def test_the_exhaustive_search_equals_brute_force(n_groups):
    z = np.random.default_rng(n_groups).normal(0, 1, (5, 5))
    subsets = [c for r in range(1, 6) for c in itertools.combinations(range(5), r)]
    brute = max(
        group_score(z, list(groups)) for groups in itertools.combinations(subsets, n_groups)
    )
    found = propose_groups(z, [str(i) for i in range(5)], n_groups, top=3)
    assert found[0].score == pytest.approx(brute)
    assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)
    partitions = propose_groups(z, [str(i) for i in range(5)], n_groups, partition=True)
    best = partitions[0]
    assert sorted(t for g in best.groups for t in g) == [str(i) for i in range(5)]  # disjoint


def test_bad_arguments():
    z, tasks = _clusters([2, 2])
    with pytest.raises(ValueError, match="expected"):
        propose_groups(z[:3], tasks, 2)
    with pytest.raises(ValueError, match="n_groups"):
        propose_groups(z, tasks, 5)
