"""Stacked bidirectional LSTM encoder with optional character features.

Word representations follow Lample et al. (2016), "Neural Architectures for Named Entity
Recognition": a word embedding concatenated with the final states of a character-level
BiLSTM run over the word's characters. Each layer is its own single-layer bidirectional
``nn.LSTM`` so that every depth's output is available (Søgaard & Goldberg, 2016, supervise
low-level tasks at lower layers).
"""

from __future__ import annotations

from typing import Mapping, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from polytask.data.vocab import UNK_ID
from polytask.errors import OptionError
from polytask.nn.base import Encoder, EncoderState
from polytask.nn.mlp import check_dropout, check_positive


def exporting() -> bool:
    """Whether the module runs under a graph exporter (``torch.export`` or the TorchScript
    tracer, as :mod:`polytask.export` uses them), which cannot trace packed sequences or
    data-dependent checks: the encoder then takes equivalent dense paths (:func:`run_dense`)."""
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


def _right_padded_lengths(mask: Tensor) -> Tensor:
    """Lengths (B,) of a right-padded (B, T) mask; ``ValueError`` if a row has holes (not
    checked while exporting: a graph takes the lengths as they are)."""
    lengths = mask.sum(dim=1)
    if exporting():
        return lengths
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions.unsqueeze(0) < lengths.unsqueeze(1)):
        raise ValueError(
            "BiLSTM expects right-padded sequences (real tokens first, then padding_idx)"
        )
    return lengths


def run_packed(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``lstm`` (batch_first) over the first ``lengths[b]`` steps of each row of ``x``.

    Returns ``(outputs (B, T, H*dirs), h_n (layers*dirs, B, H))``. Rows of length 0 are
    run over one (padding) step and their outputs are zeroed; callers mask them anyway.
    """
    cpu_fp16 = (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.float16
    )
    if cpu_fp16:  # the CPU has no float16 LSTM kernel: this one runs in float32
        with torch.autocast("cpu", enabled=False):
            return run_packed(lstm, x.float(), lengths)
    if exporting():
        return run_dense(lstm, x, lengths)
    packed = pack_padded_sequence(
        x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    out, (h_n, _) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h_n


def run_dense(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`run_packed` of a one-layer bidirectional ``lstm`` with dense operations only
    (what ONNX export traces; same results up to rounding).

    The forward direction reads each padded row as it is (its padding comes after the real
    steps); the backward direction reads each row reversed within its length, and its
    outputs are put back in place by the same permutation. Outputs beyond a row's length are
    zero, and a row of length 0 is run over one (padding) step, as in :func:`run_packed`.
    """
    if lstm.num_layers != 1 or not lstm.bidirectional or not lstm.batch_first or not lstm.bias:
        raise ValueError("run_dense runs a one-layer bidirectional batch_first LSTM with biases")
    batch, steps, width = x.shape
    hidden = lstm.hidden_size
    n = lengths.clamp(min=1).unsqueeze(1)  # (B, 1)
    position = torch.arange(steps, device=x.device).unsqueeze(0)  # (1, T)
    inside = position < n
    flip = torch.where(inside, n - 1 - position, position)  # an involution on each row
    zeros = x.new_zeros(1, batch, hidden)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    forward = [getattr(lstm, name) for name in names]
    backward = [getattr(lstm, f"{name}_reverse") for name in names]
    # torch._VF.lstm is what nn.LSTM.forward calls: (input, (h0, c0), weights, has_biases,
    # num_layers, dropout, train, bidirectional, batch_first)
    out_f = torch._VF.lstm(x, (zeros, zeros), forward, True, 1, 0.0, False, False, True)[0]
    reversed_x = x.gather(1, flip.unsqueeze(-1).expand(-1, -1, width))
    out_r = torch._VF.lstm(reversed_x, (zeros, zeros), backward, True, 1, 0.0, False, False, True)
    out_b = out_r[0].gather(1, flip.unsqueeze(-1).expand(-1, -1, hidden))
    out = torch.where(inside.unsqueeze(-1), torch.cat([out_f, out_b], dim=-1), 0.0)
    last = out_f.gather(1, (n - 1).unsqueeze(-1).expand(-1, 1, hidden)).squeeze(1)
    return out, torch.stack([last, out_b[:, 0]])


class CharBiLSTM(nn.Module):
    """Character BiLSTM word features (Lample et al., 2016).

    For a word with characters ``c_1..c_n``, returns ``[→h_n ; ←h_1]``: the last forward
    and last backward states, (2 * hidden,). Character id 0 is padding; a word without
    characters (a padding token) gets the zero vector.
    """

    def __init__(self, char_vocab_size: int, char_dim: int = 30, hidden: int = 25) -> None:
        super().__init__()
        check_positive(char_vocab_size, "char_vocab_size")
        check_positive(char_dim, "char_dim")
        check_positive(hidden, "char_hidden")
        self.output_dim = 2 * hidden
        self.embedding = nn.Embedding(char_vocab_size, char_dim, padding_idx=0)
        self.lstm = nn.LSTM(char_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, chars: Tensor) -> Tensor:
        """``chars`` (B, T, C) long -> (B, T, 2 * hidden)."""
        if chars.dim() != 3:
            raise ValueError(f"inputs['chars'] must be (B, T, C); got {tuple(chars.shape)}")
        batch, steps, width = chars.shape
        flat = chars.reshape(batch * steps, width)
        char_mask = flat != 0
        out = flat.new_zeros((batch * steps, self.output_dim), dtype=self.embedding.weight.dtype)
        if exporting():  # a graph runs every word (no data-dependent selection)
            lengths = _right_padded_lengths(char_mask)
            _, h_n = run_packed(self.lstm, self.embedding(flat), lengths)
            states = torch.cat([h_n[0], h_n[1]], dim=-1).to(out.dtype)
            out = torch.where(char_mask.any(dim=1, keepdim=True), states, out)
            return out.reshape(batch, steps, self.output_dim)
        words = char_mask.any(dim=1).nonzero(as_tuple=True)[0]
        if words.numel() == 0:
            return out.reshape(batch, steps, self.output_dim)
        selected = flat[words]
        lengths = _right_padded_lengths(char_mask[words])
        _, h_n = run_packed(self.lstm, self.embedding(selected), lengths)
        # under autocast the LSTM's states are half precision: the features keep the
        # embeddings' dtype, which the word embeddings they are concatenated with share
        out = out.index_copy(0, words, torch.cat([h_n[0], h_n[1]], dim=-1).to(out.dtype))
        return out.reshape(batch, steps, self.output_dim)


class BiLSTM(Encoder):
    """Stack of bidirectional LSTM layers over word (and optionally character) embeddings.

    ``x_t = [E w_t ; char(w_t)]``; layer ``d`` computes ``h^d_t = [→LSTM_d ; ←LSTM_d]``
    over ``dropout(h^{d-1})`` with ``h^0 = x``, using packed sequences so that padding
    never enters the recurrence: outputs at real positions are identical whatever the
    batch's padding, and padding positions are zero. Reads ``inputs["tokens"]`` (B, T) long
    (``padding_idx`` = padding, right-padded) and, when ``char_vocab_size`` is set,
    ``inputs["chars"]`` (B, T, C) long (0 = padding). Each layer's output is
    (B, T, 2 * hidden).

    ``word_dropout`` p (training only): each real token's word id is replaced by
    ``unk_idx`` with probability p before the embedding lookup, so the model learns an
    ``<unk>`` vector from words it knows and leans on the character features for words it
    has not seen (Lample et al., 2016, "Neural Architectures for Named Entity
    Recognition", §4.2, who replace singletons with p = 0.5). Characters are not dropped.
    """

    input_kind = "tokens"
    is_sequence = True

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 100,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
        char_vocab_size: int | None = None,
        char_dim: int = 30,
        char_hidden: int = 25,
        padding_idx: int = 0,
        word_dropout: float = 0.0,
        unk_idx: int = UNK_ID,
    ) -> None:
        super().__init__()
        check_positive(vocab_size, "vocab_size")
        check_positive(embed_dim, "embed_dim")
        check_positive(hidden, "hidden")
        check_positive(layers, "layers")
        check_dropout(dropout)
        check_dropout(word_dropout, "word_dropout")
        for name, idx in (("padding_idx", padding_idx), ("unk_idx", unk_idx)):
            if not 0 <= idx < vocab_size:
                raise OptionError(
                    name,
                    f"{idx} is outside [0, vocab_size={vocab_size})",
                    "give an index of the vocabulary",
                )
        self.padding_idx = padding_idx
        self.word_dropout = word_dropout
        self.unk_idx = unk_idx
        self.layer_dims = [2 * hidden] * layers
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.chars: CharBiLSTM | None = None
        input_dim = embed_dim
        if char_vocab_size is not None:
            self.chars = CharBiLSTM(char_vocab_size, char_dim, char_hidden)
            input_dim += self.chars.output_dim
        self.dropout = nn.Dropout(dropout)
        widths = [input_dim] + self.layer_dims[:-1]
        self.lstms = nn.ModuleList(
            nn.LSTM(w, hidden, batch_first=True, bidirectional=True) for w in widths
        )

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """``[E w_t ; char(w_t)]`` (word dropout applied when training), the token mask, and
        the sequence lengths as context."""
        if "tokens" not in inputs:
            raise KeyError(f"BiLSTM reads inputs['tokens'] (B, T); got keys {sorted(inputs)}")
        tokens = inputs["tokens"]
        mask = tokens != self.padding_idx
        lengths = _right_padded_lengths(mask)
        if self.training and self.word_dropout > 0:
            drop = mask & (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout)
            tokens = tokens.masked_fill(drop, self.unk_idx)
        h = self.embedding(tokens)
        if self.chars is not None:
            if "chars" not in inputs:
                raise KeyError(
                    "BiLSTM was built with char_vocab_size, so it reads inputs['chars'] "
                    "(B, T, C); build it with char_vocab_size=None to use words only"
                )
            chars = inputs["chars"]
            if chars.shape[:2] != tokens.shape:
                raise ValueError(
                    f"inputs['chars'] {tuple(chars.shape)} must start with the tokens' shape "
                    f"{tuple(tokens.shape)}"
                )
            h = torch.cat([h, self.chars(chars)], dim=-1)
        return EncoderState(h, mask=mask, context=lengths)

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """BiLSTM ``i`` over ``dropout(h)`` (packed by the lengths), padding positions zeroed."""
        assert state.mask is not None
        lstm = cast(nn.LSTM, self.lstms[i])  # __init__ fills lstms with nn.LSTM only
        out, _ = run_packed(lstm, self.dropout(state.h), state.context)
        return state.with_h(torch.where(state.mask.unsqueeze(-1), out, 0.0))
