"""MultiTaskLoader: epoch definition, determinism, resumption, step counts."""

from __future__ import annotations

from collections import Counter

import pytest

from polytask.data import (
    Batch,
    Example,
    MultiTaskLoader,
    ProportionalSampler,
    TemperatureSampler,
    UniformSampler,
    sequential_batches,
)


def _source(name: str, n: int) -> list[Example]:
    return [Example({"tokens": [f"{name}{i}"]}, {name: "x"}, id=f"{name}{i}") for i in range(n)]


def _collate(examples: list[Example], source: str) -> Batch:
    return Batch(
        inputs={}, targets={}, source=source, size=len(examples), ids=[e.id for e in examples]
    )


SOURCES = {"a": _source("a", 25), "b": _source("b", 7), "c": _source("c", 3)}


def _loader(**kw) -> MultiTaskLoader:
    opts = dict(
        sources=SOURCES, collate=_collate, batch_size=4, sampler=ProportionalSampler(), seed=0
    )
    opts.update(kw)
    return MultiTaskLoader(**opts)


def test_default_epoch_length():
    assert len(_loader()) == 7 + 2 + 1


def test_single_source_epoch_is_one_pass():
    loader = MultiTaskLoader(
        {"all": SOURCES["a"]}, _collate, batch_size=4, sampler=ProportionalSampler(), seed=3
    )
    steps = list(loader.iterate(0))
    assert all(list(step) == ["all"] for step in steps)  # one source per step
    batches = [step["all"] for step in steps]
    ids = [i for b in batches for i in b.ids]
    assert len(loader) == 7 and len(ids) == 25 and len(set(ids)) == 25
    assert [b.size for b in batches] == [4, 4, 4, 4, 4, 4, 1]
    assert ids != sorted(ids, key=lambda x: int(x[1:]))  # shuffled


def test_plan_is_deterministic_and_seed_dependent():
    a, b = _loader(), _loader()
    assert a.plan(0) == b.plan(0)
    assert a.plan(0) != a.plan(1)
    assert a.plan(0) != _loader(seed=1).plan(0)


def test_iterate_from_start_step_is_the_tail():
    loader = _loader(steps_per_epoch=40)
    full = [[(b.source, b.ids) for b in step.values()] for step in loader.iterate(2)]
    fresh = _loader(steps_per_epoch=40)  # a new process resuming at (epoch 2, step 13)
    tail = [[(b.source, b.ids) for b in step.values()] for step in fresh.iterate(2, start_step=13)]
    assert tail == full[13:] and len(full) == 40


def test_iterate_skips_without_collating():
    calls = []

    def counting(examples, source):
        calls.append(source)
        return _collate(examples, source)

    loader = _loader(collate=counting)
    list(loader.iterate(0, start_step=8))
    assert len(calls) == len(loader) - 8


def test_streams_cycle_with_fresh_permutations_without_straddling():
    loader = _loader(steps_per_epoch=200)
    for src, examples in SOURCES.items():
        n = len(examples)
        batches = [step[src] for step in loader.plan(0) if src in step]
        assert all(1 <= len(b) <= 4 for b in batches)
        # consecutive batches fill whole permutations exactly: no batch straddles two
        cycles, current = [], []
        for b in batches:
            current.extend(b)
            assert len(current) <= n
            if len(current) == n:
                cycles.append(current)
                current = []
        assert len(cycles) >= 2 and all(sorted(c) == list(range(n)) for c in cycles)
    a_cycles = [step["a"] for step in loader.plan(0) if "a" in step]
    first = [i for b in a_cycles[:7] for i in b]
    second = [i for b in a_cycles[7:14] for i in b]
    assert first != second  # each cycle is a fresh permutation


def test_shuffle_false_uses_file_order():
    loader = MultiTaskLoader(
        {"c": SOURCES["c"]},
        _collate,
        batch_size=2,
        sampler=ProportionalSampler(),
        seed=0,
        shuffle=False,
        steps_per_epoch=4,
    )
    assert loader.plan(0) == [{"c": [0, 1]}, {"c": [2]}, {"c": [0, 1]}, {"c": [2]}]


def test_proportional_frequencies_in_the_plan():
    loader = _loader(steps_per_epoch=20_000)
    freq = Counter(src for step in loader.plan(0) for src in step)
    for src, p in {"a": 25 / 35, "b": 7 / 35, "c": 3 / 35}.items():
        assert abs(freq[src] / 20_000 - p) < 0.02


def test_round_robin_plan_and_task_steps():
    loader = _loader(sampler=UniformSampler(), steps_per_epoch=8)
    assert [list(step) for step in loader.plan(0)] == [[s] for s in "abcabcab"]
    assert [list(step) for step in loader.plan(1)][:2] == [["c"], ["a"]]  # the cycle continues
    tasks = {"a": ["t1", "t2"], "b": "t2", "c": "t3"}
    assert loader.task_steps(tasks, 16) == {"t1": 6, "t2": 11, "t3": 5}
    # a budget that ends inside an epoch counts only the planned steps: abcabcab | ca
    assert loader.task_steps(tasks, 10) == {"t1": 4, "t2": 7, "t3": 3}
    assert loader.task_steps(tasks, 0) == {"t1": 0, "t2": 0, "t3": 0}
    with pytest.raises(ValueError, match="no tasks given"):
        loader.task_steps({"a": "t1"}, 8)


def test_annealed_needs_total_epochs_and_sampler_is_bound():
    from polytask.data import AnnealedSampler

    with pytest.raises(ValueError, match="total_epochs"):
        _loader(sampler=AnnealedSampler())
    loader = _loader(sampler=AnnealedSampler(), total_epochs=3)
    assert loader.total_steps == 3 * len(loader)
    assert loader.sampler.sizes == {"a": 25, "b": 7, "c": 3}
    assert _loader(sampler="temperature").sampler.sizes is not None
    with pytest.raises(ValueError, match="bound to sizes"):
        _loader(sampler=TemperatureSampler(sizes={"a": 1}))


def test_bad_sources():
    with pytest.raises(ValueError, match="'b' has no examples"):
        MultiTaskLoader({"a": SOURCES["a"], "b": []}, _collate, 4, ProportionalSampler(), 0)


def test_sequential_batches():
    out = list(sequential_batches(SOURCES["a"][:5], _collate, 2, source="a"))
    assert [b.ids for b in out] == [["a0", "a1"], ["a2", "a3"], ["a4"]]
