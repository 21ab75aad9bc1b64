"""Masked pooling: exact values, and padded features never influence the result."""

from __future__ import annotations

import math

import pytest
import torch

from polytask.errors import OptionError
from polytask.nn import AttentionPooling, pool

FEATURES = torch.tensor(
    [
        [[1.0, -2.0], [3.0, 4.0], [0.0, 0.0]],
        [[-1.0, 5.0], [0.0, 0.0], [0.0, 0.0]],
    ]
)
MASK = torch.tensor([[True, True, False], [True, False, False]])


def _poisoned(features: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    return torch.where(mask.unsqueeze(-1), features, torch.full_like(features, value))


def _fixed_attention() -> AttentionPooling:
    """W = I, b = 0, v = [1, 0]: s_t = tanh(h_t[0])."""
    attn = AttentionPooling(2)
    with torch.no_grad():
        attn.proj.weight.copy_(torch.eye(2))
        attn.proj.bias.zero_()
        attn.context.weight.copy_(torch.tensor([[1.0, 0.0]]))
    return attn


def test_mean_and_max_values() -> None:
    mean = torch.tensor([[2.0, 1.0], [-1.0, 5.0]])
    torch.testing.assert_close(pool(FEATURES, MASK, "mean"), mean)
    torch.testing.assert_close(pool(FEATURES, MASK, "max"), torch.tensor([[3.0, 4.0], [-1.0, 5.0]]))


def test_attention_values() -> None:
    attn = _fixed_attention()
    s = torch.tanh(torch.tensor([1.0, 3.0]))
    alpha = torch.softmax(s, dim=0)
    expected0 = alpha[0] * FEATURES[0, 0] + alpha[1] * FEATURES[0, 1]
    out = pool(FEATURES, MASK, "attention", attn)
    torch.testing.assert_close(out[0], expected0)
    torch.testing.assert_close(out[1], FEATURES[1, 0])  # one real token: weight 1
    weights = attn.weights(FEATURES, MASK)
    torch.testing.assert_close(weights[0], torch.stack([alpha[0], alpha[1], torch.tensor(0.0)]))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("how", ["mean", "max", "attention"])
@pytest.mark.parametrize("value", [1e30, -1e30, math.inf, -math.inf, math.nan])
def test_padding_never_influences_the_result(how: str, value: float) -> None:
    torch.manual_seed(0)
    attn = AttentionPooling(4)
    features = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    clean = pool(features, mask, how, attn)
    dirty = pool(_poisoned(features, mask, value), mask, how, attn)
    torch.testing.assert_close(dirty, clean)
    # and a shorter tensor without the padding gives the same pooled vector
    torch.testing.assert_close(pool(features[1:2, :1], None, how, attn), clean[1:2])


@pytest.mark.parametrize("how", ["mean", "max", "attention"])
def test_empty_sequence_pools_to_zero_with_finite_gradients(how: str) -> None:
    attn = AttentionPooling(2)
    features = torch.randn(2, 3, 2, requires_grad=True)
    mask = torch.tensor([[False] * 3, [True, True, False]])
    out = pool(features, mask, how, attn)
    assert torch.all(out[0] == 0)
    out.sum().backward()
    assert torch.isfinite(features.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in attn.parameters())


def test_no_mask_means_every_token_is_real() -> None:
    features = torch.randn(2, 4, 3)
    torch.testing.assert_close(pool(features, None, "mean"), features.mean(dim=1))
    torch.testing.assert_close(pool(features, None, "max"), features.amax(dim=1))


def test_errors() -> None:
    with pytest.raises(OptionError) as err:
        pool(FEATURES, MASK, "sum")
    assert err.value.option == "how"
    with pytest.raises(OptionError) as err:
        pool(FEATURES, MASK, "attention")
    assert err.value.option == "attention_module"
    with pytest.raises(ValueError, match="mask"):
        pool(FEATURES, MASK[:, :2], "mean")
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        pool(FEATURES[:, 0], None, "mean")
    with pytest.raises(OptionError) as err:
        AttentionPooling(4, attention_dim=0)
    assert err.value.option == "attention_dim"
