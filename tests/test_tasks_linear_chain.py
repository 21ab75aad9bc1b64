import itertools

import pytest
import torch

from polytask.tasks.linear_chain import (
    crf_log_likelihood,
    crf_log_partition,
    crf_score,
    viterbi_decode,
)


def _brute_score(e, tags, trans, start, end):
    s = start[tags[0]] + e[0, tags[0]] + end[tags[-1]]
    for t in range(1, len(tags)):
        s = s + trans[tags[t - 1], tags[t]] + e[t, tags[t]]
    return s


def _random_case(b, t, c, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, t, c, generator=g, dtype=dtype)
    trans = torch.randn(c, c, generator=g, dtype=dtype)
    start = torch.randn(c, generator=g, dtype=dtype)
    end = torch.randn(c, generator=g, dtype=dtype)
    lengths = torch.randint(0, t + 1, (b,), generator=g)
    lengths[0] = t  # always one full-length sequence
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.randint(0, c, (b, t), generator=g)
    return e, tags, mask, trans, start, end


@pytest.mark.parametrize("t,c", [(1, 2), (2, 3), (3, 2), (4, 3), (5, 2)])
def test_against_brute_force(t, c):
    for seed in range(4):
        e, tags, mask, trans, start, end = _random_case(5, t, c, seed=100 * t + 10 * c + seed)
        paths = viterbi_decode(e, mask, trans, start, end)
        log_z = crf_log_partition(e, mask, trans, start, end)
        ll = crf_log_likelihood(e, tags, mask, trans, start, end)
        for b in range(e.shape[0]):
            n = int(mask[b].sum())
            if n == 0:
                assert paths[b] == [] and log_z[b] == 0 and ll[b] == 0
                continue
            seqs = list(itertools.product(range(c), repeat=n))
            scores = torch.stack([_brute_score(e[b], s, trans, start, end) for s in seqs])
            assert paths[b] == list(seqs[int(scores.argmax())])
            torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0))
            gold = _brute_score(e[b], tags[b, :n].tolist(), trans, start, end)
            torch.testing.assert_close(ll[b], gold - torch.logsumexp(scores, 0))


def test_probabilities_sum_to_one_and_padding_is_ignored():
    e, _, mask, trans, start, end = _random_case(1, 3, 3, seed=7)
    mask[0, 2] = False
    total = sum(
        crf_log_likelihood(e, torch.tensor([[a, b, 0]]), mask, trans, start, end).exp()
        for a in range(3)
        for b in range(3)
    )
    torch.testing.assert_close(total, torch.tensor([1.0], dtype=torch.float64))
    # emissions and tags past the mask do not matter
    e2 = e.clone()
    e2[0, 2] += 50.0
    tags = torch.tensor([[1, 2, 0]])
    tags2 = torch.tensor([[1, 2, 2]])
    torch.testing.assert_close(
        crf_log_likelihood(e2, tags2, mask, trans, start, end),
        crf_log_likelihood(e, tags, mask, trans, start, end),
    )


def test_nll_gradcheck():
    e, tags, mask, trans, start, end = _random_case(3, 4, 3, seed=3)
    params = [x.clone().requires_grad_() for x in (e, trans, start, end)]

    def nll(e, trans, start, end):
        return -crf_log_likelihood(e, tags, mask, trans, start, end).sum()

    assert torch.autograd.gradcheck(nll, params)


def test_gradient_of_nll_is_expected_minus_observed_counts():
    # d(-log p)/d start[j] = P(y_1 = j) − [y_1 = j]; the marginals sum to 1 so the
    # gradient w.r.t. start sums to 0 for each sequence.
    e, tags, mask, trans, start, end = _random_case(1, 3, 4, seed=11)
    start = start.clone().requires_grad_()
    (-crf_log_likelihood(e, tags, mask, trans, start, end).sum()).backward()
    torch.testing.assert_close(start.grad.sum(), torch.tensor(0.0, dtype=torch.float64))
    assert start.grad[tags[0, 0]] < 0


def test_non_prefix_mask_is_rejected():
    e, tags, mask, trans, start, end = _random_case(2, 3, 2, seed=0)
    bad = torch.tensor([[True, True, True], [True, False, True]])
    with pytest.raises(ValueError, match="sequence 1 is not a prefix"):
        crf_log_likelihood(e, tags, bad, trans, start, end)
    with pytest.raises(ValueError, match="not a prefix"):
        viterbi_decode(e, bad, trans, start, end)


def test_shape_errors():
    e, tags, mask, trans, start, end = _random_case(2, 3, 2, seed=0)
    with pytest.raises(ValueError, match="transitions"):
        crf_score(e, tags, mask, trans[:1], start, end)
    with pytest.raises(ValueError, match="mask shape"):
        viterbi_decode(e, mask[:, :2], trans, start, end)
