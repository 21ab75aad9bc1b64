"""Functional linear-chain CRF (Lafferty, McCallum & Pereira, 2001).

For emissions ``e`` (T, C), transitions ``A`` (C, C), start scores ``s`` and end scores
``f`` (C,), a tag sequence ``y_1..y_n`` (``n`` = number of unmasked tokens) scores

    score(y) = s[y_1] + e_1[y_1] + Σ_{t=2..n} (A[y_{t-1}, y_t] + e_t[y_t]) + f[y_n],

and ``log p(y) = score(y) − log Z`` with ``log Z = logsumexp_y score(y)``, computed by the
forward algorithm in log space (Rabiner, 1989):

    α_1 = s + e_1,   α_t[j] = logsumexp_i (α_{t-1}[i] + A[i, j]) + e_t[j],
    log Z = logsumexp_j (α_n[j] + f[j]).

:func:`viterbi_decode` replaces logsumexp by max and backtracks the argmax.

Masks are ``(B, T)`` bool and must be *prefixes*: True for the first ``n_b`` tokens of
sequence ``b`` and False after. A sequence with ``n_b = 0`` has log-likelihood 0 (the
empty sequence is certain) and decodes to ``[]``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor


def _full_precision(*tensors: Tensor) -> tuple[AbstractContextManager[Any], list[Tensor]]:
    """Autocast off, and the float tensors in float32 at least (float64 stays): the
    forward algorithm's sums of exponentials lose too much in bf16/fp16."""
    device = tensors[0].device.type
    off: AbstractContextManager[Any] = (
        torch.autocast(device, enabled=False)
        if torch.amp.is_autocast_available(device)
        else nullcontext()
    )
    out = [
        t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t
        for t in tensors
    ]
    return off, out


def check_prefix_mask(mask: Tensor) -> None:
    """Raise ``ValueError`` unless every row of ``mask`` is True…True then False…False."""
    if mask.dim() != 2:
        raise ValueError(f"CRF mask must be (B, T), got shape {tuple(mask.shape)}")
    mask = mask.bool()
    holes = mask[:, 1:] & ~mask[:, :-1]
    if bool(holes.any()):
        row = int(holes.any(dim=1).nonzero()[0])
        raise ValueError(
            f"CRF mask of sequence {row} is not a prefix (True then False): a CRF scores "
            "whole label sequences, so label all tokens of a sequence or none of them, "
            "and put padding at the end"
        )


def _check_shapes(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> None:
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be (B, T, C), got shape {tuple(emissions.shape)}")
    b, t, c = emissions.shape
    if tuple(mask.shape) != (b, t):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match emissions (B, T) = {(b, t)}"
        )
    if tuple(transitions.shape) != (c, c):
        raise ValueError(f"transitions must be (C, C) = {(c, c)}, got {tuple(transitions.shape)}")
    if tuple(start.shape) != (c,) or tuple(end.shape) != (c,):
        raise ValueError(
            f"start and end must be (C,) = {(c,)}, got {tuple(start.shape)}, {tuple(end.shape)}"
        )
    check_prefix_mask(mask)


def crf_log_partition(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """``log Z`` per sequence, (B,), by the forward algorithm (0 for empty sequences); in
    float32 at least, under autocast too."""
    _check_shapes(emissions, mask, transitions, start, end)
    off, (emissions, transitions, start, end) = _full_precision(emissions, transitions, start, end)
    with off:
        return _log_partition(emissions, mask.bool(), transitions, start, end)


def _log_partition(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    if emissions.shape[1] == 0:
        return emissions.new_zeros(emissions.shape[0])
    alpha = start + emissions[:, 0]  # (B, C)
    for t in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t : t + 1], step, alpha)
    log_z = torch.logsumexp(alpha + end, dim=1)
    return torch.where(mask[:, 0], log_z, torch.zeros_like(log_z))


def crf_score(
    emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """``score(y)`` of the given tag sequences, (B,); tags under ``mask = False`` are ignored
    (float32 at least, as :func:`crf_log_partition`)."""
    _check_shapes(emissions, mask, transitions, start, end)
    off, (emissions, transitions, start, end) = _full_precision(emissions, transitions, start, end)
    with off:
        return _score(emissions, tags, mask, transitions, start, end)


def _score(
    emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    if tuple(tags.shape) != tuple(mask.shape):
        raise ValueError(f"tags shape {tuple(tags.shape)} does not match mask {tuple(mask.shape)}")
    mask = mask.bool()
    b, t, c = emissions.shape
    if t == 0:
        return emissions.new_zeros(b)
    tags = tags.long().masked_fill(~mask, 0)
    if bool(((tags < 0) | (tags >= c)).any()):
        raise ValueError(f"tags must lie in [0, {c}) on unmasked tokens")
    m = mask.to(emissions.dtype)
    emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
    trans = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
    lengths = mask.sum(dim=1)
    last = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    score = (
        (emit * m).sum(1) + (trans * m[:, 1:]).sum(1) + (start[tags[:, 0]] + end[last]) * m[:, 0]
    )
    return score


def crf_log_likelihood(
    emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """``log p(tags | emissions) = score(tags) − log Z``, (B,); the CRF loss is its negative."""
    return crf_score(emissions, tags, mask, transitions, start, end) - crf_log_partition(
        emissions, mask, transitions, start, end
    )


def viterbi_decode(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> list[list[int]]:
    """The highest-scoring tag sequence of each example, ``len = mask[b].sum()``."""
    _check_shapes(emissions, mask, transitions, start, end)
    mask = mask.bool()
    b, t, _ = emissions.shape
    if t == 0:
        return [[] for _ in range(b)]
    with torch.no_grad():
        score = start + emissions[:, 0]
        history = []
        for i in range(1, t):
            best, idx = (score.unsqueeze(2) + transitions).max(dim=1)  # over previous tag
            history.append(idx)
            score = torch.where(mask[:, i : i + 1], best + emissions[:, i], score)
        last = (score + end).argmax(dim=1)
        lengths = mask.sum(dim=1).tolist()
        hist = torch.stack(history, dim=1).tolist() if history else []
    paths: list[list[int]] = []
    for row, n in enumerate(lengths):
        if n == 0:
            paths.append([])
            continue
        path = [int(last[row])]
        for i in range(n - 1, 0, -1):
            path.append(hist[row][i - 1][path[-1]])
        path.reverse()
        paths.append(path)
    return paths
