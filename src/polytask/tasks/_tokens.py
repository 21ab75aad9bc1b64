"""Loss and decoding shared by the token-level kinds (:class:`~polytask.tasks.Tagging`,
:class:`~polytask.tasks.TokenClassification`): a softmax over each token's scores, or a
linear-chain CRF over the whole sequence (:mod:`polytask.tasks.linear_chain`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.tasks._common import require_labelled
from polytask.tasks.base import TagScores
from polytask.tasks.linear_chain import check_prefix_mask, crf_log_likelihood, viterbi_decode


def emissions_of(output: Tensor | TagScores) -> Tensor:
    return output.emissions if isinstance(output, TagScores) else output


def check_token_output(
    output: Tensor | TagScores, mask: Tensor, crf: bool, size: int, name: str
) -> Tensor:
    """The (B, T, C) emissions of ``output``, after checking that it is what the kind
    expects: :class:`TagScores` iff ``crf``, and ``C = size``."""
    if crf and not isinstance(output, TagScores):
        raise ValueError(f"{name}(crf=True) needs TagScores from a CRF head, got a plain tensor")
    if not crf and isinstance(output, TagScores):
        raise ValueError(f"{name}(crf=False) got TagScores; set crf=True to train a CRF")
    emissions = emissions_of(output)
    expected = (*mask.shape, size)
    if tuple(emissions.shape) != expected:
        raise ValueError(
            f"{name}: scores have shape {tuple(emissions.shape)}, expected (B, T, C) = {expected}"
        )
    return emissions


def token_loss(
    output: Tensor | TagScores, target: Tensor, mask: Tensor, crf: bool, size: int, name: str
) -> Tensor:
    """Softmax: mean cross-entropy over the labelled tokens. CRF: mean negative
    log-likelihood over the sequences with a labelled token (prefix masks only)."""
    mask = require_labelled(mask, name)
    emissions = check_token_output(output, mask, crf, size, name)
    target = torch.as_tensor(target, device=emissions.device).long()
    if isinstance(output, TagScores):
        rows = mask.any(dim=1)
        check_prefix_mask(mask)
        ll = crf_log_likelihood(
            emissions[rows], target[rows], mask[rows], output.transitions, output.start, output.end
        )
        return -ll.mean()
    return F.cross_entropy(emissions[mask], target[mask])


def token_loss_count(output: Tensor | TagScores, mask: Tensor) -> Tensor:
    """What :func:`token_loss` averages over: labelled tokens (softmax), or sequences with
    a labelled token (CRF)."""
    mask = torch.as_tensor(mask).bool()
    if isinstance(output, TagScores):
        return mask.any(dim=1).sum()
    return mask.sum()


def full_mask(emissions: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
    return torch.as_tensor(mask, device=emissions.device).bool()


def token_decode(output: Tensor | TagScores, mask: Tensor | None = None) -> list[list[int]]:
    """Indices of the tokens under ``mask`` (all tokens if ``None``): argmax or Viterbi."""
    emissions = emissions_of(output).detach()
    mask = full_mask(emissions, mask)
    if isinstance(output, TagScores):
        return viterbi_decode(
            emissions,
            mask,
            output.transitions.detach(),
            output.start.detach(),
            output.end.detach(),
        )
    best = emissions.argmax(dim=-1)
    return [row[m].tolist() for row, m in zip(best, mask)]
