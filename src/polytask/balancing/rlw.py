"""RLW: random loss weights drawn afresh at every step (Lin et al., TMLR 2022)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ._options import is_integer, require
from ._state import check_state_keys, weighted_sum
from .base import LossWeighting


class RandomLossWeighting(LossWeighting):
    r"""Random Loss Weighting (Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022), with the normal
    distribution and softmax normalisation the paper uses by default:

    .. math::

        ε \sim \mathcal N(0, I_K), \qquad λ = \operatorname{softmax}(ε), \qquad
        L = \sum_i λ_i L_i,

    drawn anew at every call of :meth:`combine` for the K tasks present; the weights are
    positive and sum to 1.

    Reproducibility: with ``seed`` (or a ``generator``) the draws come from a generator the
    method owns, whose state :meth:`state_dict` saves; with neither they come from torch's
    global generator, which ``torch.manual_seed`` (the Trainer seeds it) fixes and the
    Trainer's checkpoints restore.
    """

    name = "rlw"

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        require(
            seed is None or generator is None,
            "seed",
            "give either a seed or a generator, not both",
            "drop one",
        )
        require(
            seed is None or (is_integer(seed) and seed >= 0),
            "seed",
            f"{seed!r} must be a non-negative integer",
            "use e.g. seed: 0",
        )
        require(
            generator is None or isinstance(generator, torch.Generator),
            "generator",
            f"{type(generator).__name__} is not a torch.Generator",
            "pass torch.Generator().manual_seed(n) or use the seed option",
        )
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.last_weights: Tensor | None = None

    def draw(self, k: int) -> Tensor:
        """K weights (float64): softmax of K standard normal draws."""
        eps = torch.randn(
            k,
            generator=self.generator,
            dtype=torch.float64,
            device=self.generator.device if self.generator is not None else "cpu",
        )
        return torch.softmax(eps, dim=0)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        if not losses:
            raise ValueError("no task losses to combine: the batch has no labels for any task")
        lam = self.draw(len(losses))
        self.last_weights = lam
        return weighted_sum(losses, lam)

    def state_dict(self) -> dict[str, Any]:
        if self.generator is None:
            return {}
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_keys(self.name, state, {"generator"})
        if "generator" not in state:
            return
        saved = state["generator"]
        saved = saved if torch.is_tensor(saved) else torch.tensor(saved, dtype=torch.uint8)
        if self.generator is None:
            self.generator = torch.Generator()
        self.generator.set_state(saved.to(torch.uint8).cpu())
