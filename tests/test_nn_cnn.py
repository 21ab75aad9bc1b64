"""CNN encoder: exact convolution values, zeroed padding, invariance to extra padding."""

from __future__ import annotations

import pytest
import torch

from polytask.errors import OptionError
from polytask.nn import CNN


def _fixed_cnn() -> CNN:
    """Embedding e(i) = i (1-D), one conv channel with taps [1, 10, 100] (left, centre, right)."""
    cnn = CNN(vocab_size=4, embed_dim=1, channels=[1], kernel_size=3)
    with torch.no_grad():
        cnn.embedding.weight.copy_(torch.arange(4, dtype=torch.float).unsqueeze(1))
        cnn.convs[0].weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
        cnn.convs[0].bias.zero_()
    return cnn


def test_values_on_fixed_weights() -> None:
    out = _fixed_cnn()({"tokens": torch.tensor([[1, 2, 3, 0]])})
    # h_t = x_{t-1} + 10 x_t + 100 x_{t+1} with x = [1, 2, 3] and zero beyond the sequence;
    # the padding position would get 3 from its left neighbour but is zeroed.
    expected = torch.tensor([[[210.0], [321.0], [32.0], [0.0]]])
    torch.testing.assert_close(out.last, expected)
    assert out.mask.tolist() == [[True, True, True, False]]


def test_relu_and_bias() -> None:
    cnn = _fixed_cnn()
    with torch.no_grad():
        cnn.convs[0].weight.neg_()
        cnn.convs[0].bias.fill_(250.0)
    out = cnn({"tokens": torch.tensor([[1, 2, 3]])})
    # 250 - [210, 321, 32] -> relu -> [40, 0, 218]
    torch.testing.assert_close(out.last, torch.tensor([[[40.0], [0.0], [218.0]]]))


def test_shapes_and_contract() -> None:
    cnn = CNN(vocab_size=30, embed_dim=8, channels=[6, 5], kernel_size=5)
    tokens = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 0, 0, 0]])
    out = cnn({"tokens": tokens})
    assert cnn.input_kind == "tokens" and cnn.is_sequence and cnn.layer_dims == [6, 5]
    assert [tuple(h.shape) for h in out.layers] == [(2, 5, 6), (2, 5, 5)]
    assert torch.equal(out.mask, tokens != 0)
    for h in out.layers:
        assert torch.all(h[~out.mask] == 0)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_real_positions_ignore_padding_and_batch_mates(kernel_size: int) -> None:
    torch.manual_seed(0)
    cnn = CNN(vocab_size=20, embed_dim=6, channels=[5, 4, 3], kernel_size=kernel_size).eval()
    with torch.no_grad():  # make every bias positive so padding would leak if not zeroed
        for conv in cnn.convs:
            conv.bias.uniform_(0.5, 1.0)
    alone = cnn({"tokens": torch.tensor([[3, 9, 4]])})
    batch = torch.tensor([[3, 9, 4, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11]])
    padded = cnn({"tokens": batch})
    for d in range(3):
        torch.testing.assert_close(padded.layers[d][0, :3], alone.layers[d][0], atol=1e-6, rtol=0)
        assert torch.all(padded.layers[d][0, 3:] == 0)


def test_gradients_reach_embeddings_but_not_padding_row() -> None:
    cnn = CNN(vocab_size=10, embed_dim=4, channels=[3])
    cnn({"tokens": torch.tensor([[1, 2, 0]])}).last.sum().backward()
    grad = cnn.embedding.weight.grad
    assert torch.all(grad[0] == 0) and grad[1:3].abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"embed_dim": -2}, "embed_dim"),
        ({"channels": []}, "channels"),
        ({"channels": [4, 0]}, "channels[1]"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"dropout": -0.1}, "dropout"),
        ({"padding_idx": 10}, "padding_idx"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    args = {"vocab_size": 10, "embed_dim": 4, "channels": [3]} | kwargs
    with pytest.raises(OptionError) as err:
        CNN(**args)
    assert err.value.option == name


def test_missing_tokens() -> None:
    with pytest.raises(KeyError, match="tokens"):
        CNN(10, 4, [3])({"x": torch.zeros(1, 4)})
