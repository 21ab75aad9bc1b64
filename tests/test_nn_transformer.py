"""Transformer encoder on the bundled MiniLM: word alignment and word-level hidden states."""

from __future__ import annotations

import os

import pytest
import torch

from polytask.errors import OptionError
from polytask.nn import SubwordTokenizer, Transformer, minilm_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCE = ["Unbelievably", ",", "tokenization", "works", "\u200b", "fine"]


@pytest.fixture(scope="module")
def path() -> str:
    try:
        import transformers  # noqa: F401

        return minilm_path()
    except ImportError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"needs polytask[transformers]: {error}")


@pytest.fixture(scope="module")
def encoder(path: str) -> Transformer:
    return Transformer(path).eval()


@pytest.fixture(scope="module")
def tokenizer(encoder: Transformer) -> SubwordTokenizer:
    return encoder.tokenizer()


def test_minilm_path_is_a_model_folder(path: str) -> None:
    assert os.path.isfile(os.path.join(path, "config.json"))


def test_first_subtoken_alignment(tokenizer: SubwordTokenizer) -> None:
    hf = tokenizer.tokenizer
    enc = tokenizer.encode([SENTENCE])
    ids = enc["input_ids"][0].tolist()
    index = enc["word_index"][0].tolist()
    assert enc["word_mask"].tolist() == [[True] * len(SENTENCE)]
    assert ids[0] == hf.cls_token_id and ids[-1] == hf.sep_token_id
    pieces = [hf.tokenize(w) for w in SENTENCE]
    assert len(pieces[0]) > 1 and len(pieces[2]) > 1  # multi-sub-token words
    assert pieces[4] == []  # a word with no sub-token ...
    assert hf.convert_ids_to_tokens(ids[index[4]]) == hf.unk_token  # ... becomes [UNK]
    expected, position = [], 1
    for word_pieces in pieces:
        expected.append(position)
        position += max(1, len(word_pieces))
    assert index == expected
    for word, i in zip(SENTENCE, index):
        if word != "\u200b":
            assert hf.convert_ids_to_tokens(ids[i]) == hf.tokenize(word)[0]
    assert len(ids) == position + 1


def test_padding_and_truncation(path: str, tokenizer: SubwordTokenizer) -> None:
    enc = tokenizer.encode([["a", "b"], SENTENCE, []])
    assert enc["word_index"].shape == (3, len(SENTENCE))
    assert enc["word_mask"].sum(dim=1).tolist() == [2, len(SENTENCE), 0]
    assert enc["attention_mask"].sum(dim=1).tolist()[::2] == [4, 2]
    padding = enc["input_ids"][enc["attention_mask"] == 0]
    assert torch.all(padding == tokenizer.tokenizer.pad_token_id)
    short = SubwordTokenizer(path, max_length=6)  # [CLS] + 4 pieces + [SEP]
    cut = short.encode([["go", "Unbelievably", "now"]])  # go | un ##bel ##ie ##va ##bly | now
    assert cut["input_ids"].shape == (1, 6)
    assert cut["input_ids"][0, -1].item() == short.tokenizer.sep_token_id
    assert cut["word_mask"].tolist() == [[True, True, False]]  # "now" lost its first piece


def test_outputs_are_word_level_hidden_states(
    encoder: Transformer, tokenizer: SubwordTokenizer
) -> None:
    enc = tokenizer.encode([SENTENCE, ["Hello", "world"]])
    with torch.no_grad():
        out = encoder(enc)
        reference = encoder.model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            output_hidden_states=True,
        ).hidden_states
    assert encoder.input_kind == "subwords" and encoder.layer_dims == [384] * 6
    assert len(out.layers) == 6 and out.last.shape == (2, len(SENTENCE), 384)
    assert torch.equal(out.mask, enc["word_mask"])
    for d in (1, 6):
        for w, i in enumerate(enc["word_index"][0].tolist()):
            torch.testing.assert_close(out.layers[d - 1][0, w], reference[d][0, i])
    assert torch.all(out.last[1, 2:] == 0)  # positions without a word


def test_real_words_do_not_depend_on_batch_padding(
    encoder: Transformer, tokenizer: SubwordTokenizer
) -> None:
    with torch.no_grad():
        alone = encoder(tokenizer.encode([["Hello", "world"]]))
        batched = encoder(tokenizer.encode([["Hello", "world"], SENTENCE]))
    torch.testing.assert_close(batched.last[0, :2], alone.last[0], atol=1e-5, rtol=1e-5)


def test_layer_choice_and_freezing(path: str) -> None:
    frozen = Transformer(path, layers=[0, 3], freeze=True, max_length=32)
    assert frozen.layer_dims == [384, 384]
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert frozen.training and not frozen.model.training  # dropout stays off
    out = frozen(frozen.tokenizer().encode([["a", "test"]]))
    assert len(out.layers) == 2 and out.last.grad_fn is None


def test_gradients_reach_an_unfrozen_model(
    encoder: Transformer, tokenizer: SubwordTokenizer
) -> None:
    out = encoder(tokenizer.encode([["fine", "tuning"]]))
    out.last.sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    encoder.zero_grad(set_to_none=True)


def test_bad_arguments(path: str, tmp_path) -> None:
    for build, option in [
        (lambda: Transformer(path, layers=[7]), "layers"),
        (lambda: Transformer(path, max_length=1000), "max_length"),
        (lambda: SubwordTokenizer(path, max_length=2), "max_length"),
        (lambda: Transformer(str(tmp_path)), "path"),
    ]:
        with pytest.raises(OptionError) as err:
            build()
        assert err.value.option == option
    with pytest.raises(ValueError, match="word lists"):
        SubwordTokenizer(path).encode(["not", "nested"])
