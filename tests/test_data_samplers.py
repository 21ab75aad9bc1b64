"""Task samplers: the probability rules, their limits, and empirical frequencies."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from polytask.data import (
    SAMPLERS,
    AnnealedSampler,
    ProportionalSampler,
    TemperatureSampler,
    UniformSampler,
    make_sampler,
)
from polytask.errors import OptionError

SIZES = {"big": 9000, "mid": 900, "small": 100}


def _close(p: dict[str, float], q: dict[str, float], tol: float = 1e-9) -> bool:
    return p.keys() == q.keys() and all(abs(p[k] - q[k]) < tol for k in p)


def test_proportional():
    p = ProportionalSampler(SIZES).probabilities(0, 1)
    assert _close(p, {"big": 0.9, "mid": 0.09, "small": 0.01})


def test_temperature_rule_and_limits():
    p = TemperatureSampler(T=2.0, sizes=SIZES).probabilities()
    z = sum(math.sqrt(n) for n in SIZES.values())
    assert _close(p, {k: math.sqrt(n) / z for k, n in SIZES.items()})
    assert _close(
        TemperatureSampler(1.0, SIZES).probabilities(), ProportionalSampler(SIZES).probabilities()
    )
    far = TemperatureSampler(1e6, SIZES).probabilities()
    assert all(abs(v - 1 / 3) < 1e-4 for v in far.values())
    assert _close(TemperatureSampler(math.inf, SIZES).probabilities(), {k: 1 / 3 for k in SIZES})


def test_round_robin_exact_cycle():
    s = UniformSampler(SIZES)
    assert s.draw(0, 7, 100, seed=123) == ["big", "mid", "small"] * 2 + ["big"]
    assert s.draw(4, 3, 100, seed=0) == ["mid", "small", "big"]  # continues the global cycle
    assert _close(s.probabilities(), {k: 1 / 3 for k in SIZES})


def test_annealed_schedule():
    s = AnnealedSampler(sizes=SIZES)
    assert s.is_time_dependent
    assert _close(s.probabilities(0, 101), ProportionalSampler(SIZES).probabilities())
    assert _close(s.probabilities(100, 101), {k: 1 / 3 for k in SIZES})
    # halfway: alpha = 0.5, i.e. temperature 2
    assert _close(s.probabilities(50, 101), TemperatureSampler(2.0, SIZES).probabilities())
    small = [s.probabilities(t, 101)["small"] for t in range(0, 101, 10)]
    assert small == sorted(small)  # the small source gains weight monotonically


def test_annealed_matches_stickland_murray_at_epoch_starts():
    E = 5
    s = AnnealedSampler(T_end=5.0, sizes=SIZES)
    for e in range(1, E + 1):
        alpha = 1 - 0.8 * (e - 1) / (E - 1)
        assert s.alpha(e - 1, E) == pytest.approx(alpha)


@pytest.mark.parametrize(
    "sampler",
    [ProportionalSampler(), TemperatureSampler(T=3.0), AnnealedSampler()],
    ids=["proportional", "temperature", "annealed"],
)
def test_draw_frequencies_match_probabilities(sampler):
    s = sampler.bind(SIZES)
    n = 20_000
    draws = s.draw(0, n, n, seed=7)
    freq = Counter(draws)
    # the expected frequency is the mean probability over the steps drawn
    expected = {k: 0.0 for k in SIZES}
    for t in range(0, n, 100):
        for k, v in s.probabilities(t, n).items():
            expected[k] += v / (n / 100)
    for k in SIZES:
        assert abs(freq[k] / n - expected[k]) < 0.02, (k, freq[k] / n, expected[k])


def test_draw_is_deterministic_per_seed():
    s = TemperatureSampler(2.0).bind(SIZES)
    assert s.draw(0, 500, 500, seed=1) == s.draw(0, 500, 500, seed=1)
    assert s.draw(0, 500, 500, seed=1) != s.draw(0, 500, 500, seed=2)


def test_registry_and_errors():
    assert set(SAMPLERS) >= {"proportional", "temperature", "uniform", "annealed"}
    s = make_sampler("temperature", T=4.0)
    assert isinstance(s, TemperatureSampler) and s.T == 4.0 and s.sizes is None
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("nope")
    with pytest.raises(OptionError, match="unknown option of sampler 'proportional'") as info:
        make_sampler("proportional", T=2)
    assert info.value.option == "T"
    with pytest.raises(ValueError, match="bind"):
        TemperatureSampler().probabilities()
    with pytest.raises(ValueError, match="'e' has size 0"):
        ProportionalSampler({"a": 1, "e": 0})
    with pytest.raises(OptionError, match="must be > 0") as info:
        TemperatureSampler(T=0)
    assert info.value.option == "T"
