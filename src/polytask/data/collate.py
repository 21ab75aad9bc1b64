"""Collation: a list of :class:`Example` -> one padded :class:`Batch`.

Inputs, by ``input_kind`` (see :mod:`polytask.nn.base`):

- ``"tokens"``: ``tokens`` (B, T) long from ``vocab`` (0 = padding, 1 = unknown), with
  T the longest sequence of the batch (at least 1, so an empty input is one padding
  position); with ``char_vocab`` also ``chars`` (B, T, C) long (0 = padding).
- ``"features"``: ``x`` (B, F) float from each example's ``inputs["features"]``, a list
  or a 1-D array / tensor (arrays are stacked without a Python round trip).
- ``"tabular"``: ``x`` (B, F + C) float: ``inputs["features"]`` (F numbers; may be absent)
  followed by ``inputs["categorical"]`` (C category indices, 0 = unknown), as
  :class:`polytask.nn.TabularMLP` reads them; strings are mapped to indices beforehand by
  :class:`polytask.data.TabularPreprocessor`.
- ``"image"``: ``image`` (B, C, H, W) float32 from each example's ``inputs["image"]``, a
  tensor (or array) of shape (C, H, W) or (H, W) (one channel); ``uint8`` pixels are
  scaled to [0, 1] (divided by 255), other dtypes are only cast.
- ``"subwords"``: whatever ``tokenizer.encode(list_of_word_lists)`` returns.

Targets: every task of ``tasks`` appears in :attr:`Batch.targets` as ``(value, mask)``,
with an all-False mask when no example of the batch labels it. Each raw label goes
through the kind's ``encode_target(raw) -> (value, mask)``. For token-level kinds
(``kind.is_token_level``) the per-token values are padded to T and the mask is False on
padding (and on tokens cut by ``max_length``); a missing tag list is all-False without
calling the kind.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from polytask.data.base import Batch, Example
from polytask.data.vocab import PAD_ID, Vocab

__all__ = ["Collator", "INPUT_KINDS"]

INPUT_KINDS = ("tokens", "features", "subwords", "tabular", "image")


class _KindLike(Protocol):
    @property
    def is_token_level(self) -> bool: ...

    def encode_target(self, raw: Any) -> tuple[Any, Any]: ...


def _as_kind(task: str, obj: Any) -> Any:
    """Accept a TaskKind or a Task (whose ``.kind`` is the TaskKind)."""
    if hasattr(obj, "encode_target"):
        return obj
    inner = getattr(obj, "kind", None)
    if hasattr(inner, "encode_target"):
        return inner
    raise ValueError(f"Collator: task {task!r} is {obj!r}; give a TaskKind (or a Task)")


def _float_rows(rows: list[Any], what: str) -> Tensor:
    """(B, F) float32 from per-example lists or 1-D arrays / tensors of one length."""
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(f"Collator: {what} of different lengths {sorted(widths)} in one batch")
    if all(hasattr(r, "shape") for r in rows):
        return torch.stack([torch.as_tensor(r) for r in rows]).to(torch.float32)
    return torch.tensor([list(r) for r in rows], dtype=torch.float32)


def _to_tensor(values: list[Any], task: str) -> Tensor:
    """Stack per-example encoded values (scalars or equal-length lists)."""
    template = next((v for v in values if v is not None), None)
    if template is None:
        return torch.zeros(len(values), dtype=torch.long)
    if isinstance(template, Tensor):
        filled = [v if v is not None else torch.zeros_like(template) for v in values]
        shapes = {tuple(v.shape) for v in filled}
        if len(shapes) > 1:
            raise ValueError(f"Collator: task {task!r}: encoded targets differ in shape {shapes}")
        return torch.stack(filled)
    zero: Any = [0] * len(template) if isinstance(template, (list, tuple)) else 0
    filled = [v if v is not None else zero for v in values]
    lengths = {len(v) for v in filled if isinstance(v, (list, tuple))}
    if len(lengths) > 1:
        raise ValueError(
            f"Collator: task {task!r}: encoded targets have different lengths {sorted(lengths)}; "
            "every example must give the same number of labels (use None for missing ones)"
        )
    return torch.tensor(filled)


def _to_mask(masks: list[Any], shape: torch.Size) -> Tensor:
    """Stack per-example masks, broadcasting a scalar mask over a list-valued target."""
    rows = []
    for m in masks:
        t = torch.as_tensor(m, dtype=torch.bool)
        rows.append(t.expand(shape[1:]) if t.dim() == 0 else t)
    return torch.stack(rows) if rows else torch.zeros(shape, dtype=torch.bool)


class Collator:
    """Turn examples into a :class:`Batch`; call as ``collator(examples, source)``.

    ``max_length`` cuts longer inputs (and their tags); :attr:`n_truncated` counts the
    examples cut so far, by ``max_length`` or by a tokenizer that cuts what exceeds its
    positions (one with ``fits(words)``, e.g. :class:`polytask.nn.SubwordTokenizer`);
    :meth:`truncation` counts the examples a collator would cut without collating them.
    ``max_chars`` caps the characters per token in ``chars``. Without ``max_length`` (and
    with a windowed tokenizer) no token is dropped: that is the collator of evaluation and
    prediction.
    """

    def __init__(
        self,
        tasks: Mapping[str, Any] | Sequence[Any],
        input_kind: str = "tokens",
        vocab: Vocab | None = None,
        char_vocab: Vocab | None = None,
        tokenizer: Any = None,
        max_length: int | None = None,
        max_chars: int | None = None,
        tabular: Any = None,
    ) -> None:
        if not isinstance(tasks, Mapping):
            tasks = {t.name: t for t in tasks}
        self.tasks: dict[str, _KindLike] = {name: _as_kind(name, t) for name, t in tasks.items()}
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"Collator: input_kind {input_kind!r}: use one of {INPUT_KINDS}")
        if input_kind == "tokens" and vocab is None:
            raise ValueError("Collator: input_kind='tokens' needs vocab= (Vocab.build(...))")
        if input_kind == "subwords" and tokenizer is None:
            raise ValueError("Collator: input_kind='subwords' needs tokenizer=")
        if max_length is not None and max_length < 1:
            raise ValueError(f"Collator: max_length must be >= 1, got {max_length}")
        self.input_kind = input_kind
        self.vocab = vocab
        self.char_vocab = char_vocab
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_chars = max_chars
        #: a fitted TabularPreprocessor: turns raw ``inputs["row"]`` (format tabular) into
        #: ``features`` + ``categorical`` for input_kind "tabular"
        self.tabular = tabular
        #: number of examples cut at ``max_length`` so far
        self.n_truncated = 0

    # ------------------------------------------------------------------ inputs

    def _words(self, examples: Sequence[Example]) -> list[list[str]]:
        words = []
        for ex in examples:
            toks = ex.inputs.get("tokens")
            if toks is None or isinstance(toks, str):
                raise ValueError(
                    f"Collator: example {ex.id!r} has no inputs['tokens'] list; "
                    f"input_kind={self.input_kind!r} needs tokenised text"
                )
            if self.max_length is not None and len(toks) > self.max_length:
                self.n_truncated += 1
                toks = toks[: self.max_length]
            elif self._tokenizer_cuts(toks):
                self.n_truncated += 1
            words.append(list(toks))
        return words

    def _tokenizer_cuts(self, words: Sequence[str]) -> bool:
        """Whether the tokenizer cuts ``words`` (those beyond its positions are dropped)."""
        if self.input_kind != "subwords" or getattr(self.tokenizer, "windows", False):
            return False
        fits = getattr(self.tokenizer, "fits", None)
        return fits is not None and not fits(words)

    def truncation(self, examples: Iterable[Example]) -> tuple[int, int]:
        """``(longer, beyond)``: how many of ``examples`` this collator cuts, without collating
        them or counting them in :attr:`n_truncated`: ``longer`` have more than
        ``max_length`` tokens; ``beyond`` fit ``max_length`` (or have no limit) but exceed
        the tokenizer's positions. Inputs without a token list are not counted."""
        longer = beyond = 0
        if self.input_kind not in ("tokens", "subwords"):
            return longer, beyond
        for ex in examples:
            toks = ex.inputs.get("tokens")
            if toks is None or isinstance(toks, str):
                continue
            if self.max_length is not None and len(toks) > self.max_length:
                longer += 1
            elif self._tokenizer_cuts([str(t) for t in toks]):
                beyond += 1
        return longer, beyond

    def _token_inputs(self, words: list[list[str]]) -> dict[str, Tensor]:
        assert self.vocab is not None
        T = max([1] + [len(w) for w in words])
        tokens = torch.full((len(words), T), PAD_ID, dtype=torch.long)
        for b, w in enumerate(words):
            if w:
                tokens[b, : len(w)] = torch.tensor(self.vocab.encode(w), dtype=torch.long)
        inputs = {"tokens": tokens}
        if self.char_vocab is not None:
            cap = self.max_chars
            C = max([1] + [min(len(t), cap) if cap else len(t) for w in words for t in w])
            chars = torch.full((len(words), T, C), PAD_ID, dtype=torch.long)
            for b, w in enumerate(words):
                for i, tok in enumerate(w):
                    ids = self.char_vocab.encode(list(tok[:C]))
                    if ids:
                        chars[b, i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            inputs["chars"] = chars
        return inputs

    def _feature_inputs(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        rows = []
        for ex in examples:
            f = ex.inputs.get("features")
            if f is None:
                raise ValueError(
                    f"Collator: example {ex.id!r} has no inputs['features']; "
                    "input_kind='features' needs numeric features"
                )
            rows.append(f)
        return {"x": _float_rows(rows, "feature vectors")}

    def _tabular_inputs(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        rows = []
        for ex in examples:
            inputs = ex.inputs
            if "row" in inputs and "features" not in inputs and "categorical" not in inputs:
                if self.tabular is None:
                    raise ValueError(
                        f"Collator: example {ex.id!r} has a raw inputs['row']; give the "
                        "collator tabular= (a fitted polytask.data.TabularPreprocessor)"
                    )
                inputs = self.tabular.transform(inputs["row"])
            values = list(inputs.get("features", ()))
            codes = list(inputs.get("categorical", ()))
            if not values and not codes:
                raise ValueError(
                    f"Collator: example {ex.id!r} has neither inputs['features'] nor "
                    "inputs['categorical']; input_kind='tabular' needs at least one"
                )
            for c in codes:
                if isinstance(c, bool) or not isinstance(c, Integral):
                    raise ValueError(
                        f"Collator: example {ex.id!r}: categorical value {c!r} is not a category "
                        "index; map categories to indices first "
                        "(polytask.data.TabularPreprocessor, "
                        "0 = unknown)"
                    )
            rows.append(values + codes)
        return {"x": _float_rows(rows, "tabular rows")}

    def _image_inputs(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        images = []
        for ex in examples:
            img = ex.inputs.get("image")
            if img is None:
                raise ValueError(
                    f"Collator: example {ex.id!r} has no inputs['image']; "
                    "input_kind='image' needs a (C, H, W) or (H, W) image"
                )
            img = torch.as_tensor(img)
            if img.dim() == 2:
                img = img.unsqueeze(0)
            if img.dim() != 3:
                raise ValueError(
                    f"Collator: example {ex.id!r}: image of shape {tuple(img.shape)}; "
                    "give (C, H, W) or (H, W)"
                )
            images.append(
                img.to(torch.float32) / 255.0 if img.dtype == torch.uint8 else img.to(torch.float32)
            )
        shapes = {tuple(i.shape) for i in images}
        if len(shapes) > 1:
            raise ValueError(f"Collator: images of different shapes {sorted(shapes)} in one batch")
        return {"image": torch.stack(images)}

    # ----------------------------------------------------------------- targets

    def _token_target(
        self, kind: _KindLike, task: str, examples: Sequence[Example], lengths: list[int], T: int
    ) -> tuple[Tensor, Tensor]:
        value = torch.zeros(len(examples), T, dtype=torch.long)
        mask = torch.zeros(len(examples), T, dtype=torch.bool)
        for b, ex in enumerate(examples):
            raw = ex.targets.get(task)
            if raw is None:
                continue
            n_tokens = len(ex.inputs.get("tokens") or [])
            if len(raw) != n_tokens:
                raise ValueError(
                    f"example {ex.id!r}: task {task!r} has {len(raw)} tags for {n_tokens} "
                    "tokens; give exactly one tag per token"
                )
            v, m = kind.encode_target(raw)
            v = torch.as_tensor(v, dtype=torch.long).reshape(-1)
            m = torch.as_tensor(m, dtype=torch.bool)
            m = m.expand(v.shape) if m.dim() == 0 else m.reshape(-1)
            n = min(lengths[b], T, v.numel())
            value[b, :n] = v[:n]
            mask[b, :n] = m[:n]
        return value, mask

    def _targets(
        self, examples: Sequence[Example], lengths: list[int] | None, T: int
    ) -> dict[str, tuple[Tensor, Tensor]]:
        targets: dict[str, tuple[Tensor, Tensor]] = {}
        for task, kind in self.tasks.items():
            if getattr(kind, "is_token_level", False):
                if lengths is None:
                    raise ValueError(
                        f"Collator: task {task!r} is token-level but input_kind="
                        f"{self.input_kind!r} has no tokens"
                    )
                targets[task] = self._token_target(kind, task, examples, lengths, T)
                continue
            encoded = [kind.encode_target(ex.targets.get(task)) for ex in examples]
            value = _to_tensor([v for v, _ in encoded], task)
            mask = _to_mask([m for _, m in encoded], value.shape)
            if mask.shape != value.shape:
                raise ValueError(
                    f"Collator: task {task!r}: mask shape {tuple(mask.shape)} differs from "
                    f"target shape {tuple(value.shape)}"
                )
            targets[task] = (value, mask)
        return targets

    # -------------------------------------------------------------------- call

    def __call__(self, examples: Sequence[Example], source: str = "") -> Batch:
        if not examples:
            raise ValueError("Collator: cannot collate an empty list of examples")
        lengths: list[int] | None = None
        T = 0
        if self.input_kind == "features":
            inputs = self._feature_inputs(examples)
        elif self.input_kind == "tabular":
            inputs = self._tabular_inputs(examples)
        elif self.input_kind == "image":
            inputs = self._image_inputs(examples)
        else:
            words = self._words(examples)
            lengths = [len(w) for w in words]
            if self.input_kind == "tokens":
                inputs = self._token_inputs(words)
                T = inputs["tokens"].shape[1]
            else:
                inputs = dict(self.tokenizer.encode(words))
                wm = inputs.get("word_mask")
                T = int(wm.shape[1]) if wm is not None else max([1] + lengths)
        return Batch(
            inputs=inputs,
            targets=self._targets(examples, lengths, T),
            source=source,
            size=len(examples),
            ids=[ex.id for ex in examples],
        )
