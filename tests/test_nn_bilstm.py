"""BiLSTM encoder: per-layer outputs equal the plain LSTM recurrence, padding never matters."""

from __future__ import annotations

import pytest
import torch

from polytask.errors import OptionError
from polytask.nn import BiLSTM, CharBiLSTM


def _model(**kwargs) -> BiLSTM:
    torch.manual_seed(0)
    args = {"vocab_size": 30, "embed_dim": 6, "hidden": 5, "layers": 3} | kwargs
    return BiLSTM(**args).eval()


def test_contract_and_shapes() -> None:
    model = _model()
    tokens = torch.tensor([[4, 5, 6, 0], [7, 0, 0, 0]])
    out = model({"tokens": tokens})
    assert model.input_kind == "tokens" and model.is_sequence
    assert model.layer_dims == [10, 10, 10] and model.output_dim == 10
    assert [tuple(h.shape) for h in out.layers] == [(2, 4, 10)] * 3
    assert torch.equal(out.mask, tokens != 0)
    for h in out.layers:
        assert torch.all(h[~out.mask] == 0)


def test_layers_equal_unpacked_recurrence_on_one_sequence() -> None:
    """Layer d is LSTM_d run (unpacked) on layer d-1 of the unpadded sentence."""
    model = _model()
    sentence = torch.tensor([[3, 8, 2, 9]])
    batch = torch.tensor([[3, 8, 2, 9, 0, 0], [1, 2, 3, 4, 5, 6]])
    out = model({"tokens": batch})
    h = model.embedding(sentence)
    for d, lstm in enumerate(model.lstms):
        h, _ = lstm(h)
        torch.testing.assert_close(out.layers[d][0, :4], h[0], atol=1e-6, rtol=0)


def test_backward_direction_starts_at_the_last_real_token() -> None:
    """The backward half at the last real token has seen only that token."""
    model = _model(layers=1)
    lstm = model.lstms[0]
    out = model({"tokens": torch.tensor([[3, 8, 0, 0]])}).last
    one, _ = lstm(model.embedding(torch.tensor([[8]])))
    torch.testing.assert_close(out[0, 1, 5:], one[0, 0, 5:], atol=1e-6, rtol=0)


def test_real_positions_identical_with_extra_padding_and_batch_mates() -> None:
    model = _model()
    alone = model({"tokens": torch.tensor([[3, 8, 2]])})
    batch = torch.tensor([[9, 9, 9, 9, 9, 9, 9, 0], [3, 8, 2, 0, 0, 0, 0, 0], [0] * 8])
    padded = model({"tokens": batch})
    for d in range(3):
        torch.testing.assert_close(padded.layers[d][1, :3], alone.layers[d][0], atol=1e-6, rtol=0)
        assert torch.all(padded.layers[d][1, 3:] == 0)
        assert torch.all(padded.layers[d][2] == 0)  # an empty sequence gives zeros


def test_char_features_are_last_states_of_char_bilstm() -> None:
    torch.manual_seed(0)
    chars = CharBiLSTM(char_vocab_size=12, char_dim=4, hidden=3)
    word = torch.tensor([[5, 2, 7]])
    out = chars(torch.tensor([[[5, 2, 7, 0], [0, 0, 0, 0]]]))
    states, _ = chars.lstm(chars.embedding(word))
    expected = torch.cat([states[0, -1, :3], states[0, 0, 3:]])  # [→h_n ; ←h_1]
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=0)
    assert torch.all(out[0, 1] == 0)  # a padding word has no characters


def test_chars_are_concatenated_and_padding_invariant() -> None:
    model = _model(char_vocab_size=15, char_dim=4, char_hidden=3)
    assert model.lstms[0].input_size == 6 + 6
    tokens = torch.tensor([[3, 8]])
    chars = torch.tensor([[[1, 2, 0], [4, 5, 6]]])
    alone = model({"tokens": tokens, "chars": chars})
    big_tokens = torch.tensor([[3, 8, 0, 0], [4, 4, 4, 4]])
    big_chars = torch.zeros(2, 4, 6, dtype=torch.long)
    big_chars[0, :2, :3] = chars[0]
    big_chars[1, :, :5] = torch.tensor([3, 3, 3, 3, 3])
    padded = model({"tokens": big_tokens, "chars": big_chars})
    for d in range(3):
        torch.testing.assert_close(padded.layers[d][0, :2], alone.layers[d][0], atol=1e-6, rtol=0)
    other = model({"tokens": tokens, "chars": torch.tensor([[[1, 3, 0], [4, 5, 6]]])})
    assert not torch.allclose(other.layers[0][0, 0], alone.layers[0][0, 0])  # chars matter


def test_gradients_flow_to_every_layer_and_chars() -> None:
    model = _model(char_vocab_size=15, char_dim=4, char_hidden=3)
    out = model({"tokens": torch.tensor([[3, 8]]), "chars": torch.tensor([[[1, 2], [4, 5]]])})
    out.last.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_left_padding_and_missing_chars_are_errors() -> None:
    with pytest.raises(ValueError, match="right-padded"):
        _model()({"tokens": torch.tensor([[0, 3, 4]])})
    with pytest.raises(KeyError, match="chars"):
        _model(char_vocab_size=5)({"tokens": torch.tensor([[3, 4]])})
    with pytest.raises(ValueError, match="chars"):
        _model(char_vocab_size=5)(
            {"tokens": torch.tensor([[3, 4]]), "chars": torch.ones(1, 3, 2, dtype=torch.long)}
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"hidden": 0}, "hidden"),
        ({"layers": 0}, "layers"),
        ({"dropout": 1.5}, "dropout"),
        ({"char_vocab_size": 0}, "char_vocab_size"),
        ({"char_vocab_size": 5, "char_hidden": 0}, "char_hidden"),
        ({"padding_idx": 30}, "padding_idx"),
        ({"word_dropout": 1.0}, "word_dropout"),
        ({"unk_idx": 30}, "unk_idx"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(OptionError) as err:
        _model(**kwargs)
    assert err.value.option == name


def test_word_dropout_replaces_real_words_by_unk_in_training_only() -> None:
    """p → 1: every real word reads the <unk> embedding (padding stays padding, characters
    are kept); p = 0.5 drops about half of the words; evaluation never drops."""
    torch.manual_seed(0)
    tokens = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    chars = torch.randint(1, 5, (2, 4, 3))
    chars[1, 2:] = 0
    model = _model(char_vocab_size=5, word_dropout=0.999999, dropout=0.0).train()
    dropped = model({"tokens": tokens, "chars": chars}).layers[-1]
    unk = torch.where(tokens != 0, 1, 0)
    reference = model.eval()({"tokens": unk, "chars": chars}).layers[-1]
    torch.testing.assert_close(dropped, reference)
    assert not torch.equal(dropped, model({"tokens": tokens, "chars": chars}).layers[-1])

    half = _model(word_dropout=0.5).train()
    seen = []
    half.embedding.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    many = torch.randint(2, 30, (64, 50))
    half({"tokens": many})
    rate = (seen[0] == 1).float().mean().item()
    assert 0.45 < rate < 0.55
    seen.clear()
    half.eval()({"tokens": many})
    assert torch.equal(seen[0], many)
