"""CRF parameters and IOB2 constraints (the CRF algorithms live in polytask.tasks)."""

from __future__ import annotations

import itertools

import pytest
import torch

from polytask.errors import OptionError
from polytask.nn import CRF, bio_allowed, is_bio
from polytask.tasks.base import TagScores

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _path_score(scores: TagScores, path: tuple[int, ...]) -> float:
    """s(y) = start[y_1] + Σ_t E[t, y_t] + Σ_{t>1} A[y_{t-1}, y_t] + end[y_T]."""
    e = scores.emissions[0]
    total = scores.start[path[0]] + scores.end[path[-1]]
    total = total + sum(e[t, y] for t, y in enumerate(path))
    total = total + sum(scores.transitions[a, b] for a, b in zip(path[:-1], path[1:]))
    return float(total.detach())


def test_parameters_shapes_and_initialisation() -> None:
    crf = CRF(4)
    assert crf.transitions.shape == (4, 4) and crf.start.shape == (4,) and crf.end.shape == (4,)
    for p in (crf.transitions, crf.start, crf.end):
        assert p.requires_grad and p.abs().max() <= 0.1


def test_forward_returns_tag_scores_with_learned_parameters() -> None:
    crf = CRF(3)
    emissions = torch.randn(2, 4, 3)
    scores = crf(emissions)
    assert isinstance(scores, TagScores)
    assert scores.emissions is emissions
    torch.testing.assert_close(scores.transitions, crf.transitions)
    torch.testing.assert_close(scores.start, crf.start)
    torch.testing.assert_close(scores.end, crf.end)
    (scores.transitions.sum() + scores.start.sum() + scores.end.sum()).backward()
    assert all(p.grad is not None for p in crf.parameters())


def test_bio_allowed_matrix() -> None:
    allowed, first = bio_allowed(LABELS)
    #                   O  B-P I-P B-L I-L   (column = next tag)
    expected = torch.tensor(
        [
            [1, 1, 0, 1, 0],  # O     -> I-X forbidden
            [1, 1, 1, 1, 0],  # B-PER -> I-LOC forbidden
            [1, 1, 1, 1, 0],  # I-PER -> I-LOC forbidden
            [1, 1, 0, 1, 1],  # B-LOC -> I-PER forbidden
            [1, 1, 0, 1, 1],  # I-LOC -> I-PER forbidden
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    assert first.tolist() == [True, True, False, True, False]


def test_constrain_bio_is_a_fixed_mask_on_top_of_learned_scores() -> None:
    crf = CRF(5).constrain_bio(LABELS)
    scores = crf(torch.zeros(1, 2, 5))
    allowed, first = bio_allowed(LABELS)
    torch.testing.assert_close(scores.transitions[allowed], crf.transitions[allowed])
    torch.testing.assert_close(scores.transitions[~allowed], crf.transitions[~allowed] - 1e4)
    torch.testing.assert_close(scores.start[~first], crf.start[~first] - 1e4)
    torch.testing.assert_close(scores.end, crf.end)
    # the mask is not learned, but it is saved with the model
    assert {n for n, _ in crf.named_parameters()} == {"transitions", "start", "end"}
    fresh = CRF(5)
    fresh.load_state_dict(crf.state_dict())
    torch.testing.assert_close(fresh(torch.zeros(1, 2, 5)).transitions, scores.transitions)


def test_best_path_never_breaks_bio_even_against_emissions() -> None:
    torch.manual_seed(0)
    crf = CRF(5).constrain_bio(LABELS)
    emissions = torch.full((1, 3, 5), -5.0)
    emissions[0, :, 2] = 20.0  # emissions scream I-PER at every position
    scores = crf(emissions)
    best = max(itertools.product(range(5), repeat=3), key=lambda p: _path_score(scores, p))
    assert best == (1, 2, 2)  # B-PER I-PER I-PER: the legal path closest to the emissions
    unconstrained = CRF(5)(emissions)
    paths = itertools.product(range(5), repeat=3)
    best_free = max(paths, key=lambda p: _path_score(unconstrained, p))
    assert best_free == (2, 2, 2)


def test_is_bio() -> None:
    assert is_bio(LABELS)
    assert is_bio(["B-X", "I-X", "O"])
    assert not is_bio(["NN", "VB", "DT"])
    assert not is_bio(["O", "PER", "B-LOC"])
    assert not is_bio([])


def test_errors() -> None:
    with pytest.raises(OptionError) as err:
        CRF(0)
    assert err.value.option == "num_tags"
    with pytest.raises(OptionError, match="3 labels") as err:
        CRF(5).constrain_bio(["O", "B-X", "I-X"])
    assert err.value.option == "labels"
    with pytest.raises(ValueError, match=r"\(B, T, 5\)"):
        CRF(5)(torch.zeros(2, 3, 4))
