"""Vocabularies: token (or character) <-> integer id.

Id 0 is ``"<pad>"`` and id 1 is ``"<unk>"``, as the ``"tokens"`` input kind of
:mod:`polytask.nn.base` expects. The ordering is deterministic: by frequency
(descending), ties broken by the token's string order, so the same data always gives
the same ids.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["PAD", "UNK", "PAD_ID", "UNK_ID", "Vocab"]

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class Vocab:
    """A token vocabulary; ``Vocab(["a", "b"])`` gives ``<pad>`` 0, ``<unk>`` 1, a 2, b 3."""

    def __init__(self, tokens: Iterable[str] = (), lowercase: bool = False) -> None:
        self.lowercase = bool(lowercase)
        self.itos: list[str] = [PAD, UNK]
        self.stoi: dict[str, int] = {PAD: PAD_ID, UNK: UNK_ID}
        for tok in tokens:
            tok = tok.lower() if self.lowercase else tok
            if tok not in self.stoi:
                self.stoi[tok] = len(self.itos)
                self.itos.append(tok)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = False,
    ) -> Vocab:
        """Count tokens and keep those seen ``min_freq`` times or more.

        ``max_size`` caps the number of ids *including* ``<pad>`` and ``<unk>``.
        Order: frequency descending, then token.
        """
        if min_freq < 1:
            raise ValueError(f"Vocab.build: min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"Vocab.build: max_size must be >= 2 (pad and unk), got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise ValueError(
                    "Vocab.build: got a string where a list of tokens was expected; "
                    "pass e.g. [example.inputs['tokens'] for example in examples]"
                )
            counts.update(t.lower() if lowercase else t for t in tokens)
        for special in (PAD, UNK):
            counts.pop(special, None)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            ranked = ranked[: max_size - 2]
        return cls(ranked, lowercase=lowercase)

    @classmethod
    def build_chars(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = False,
    ) -> Vocab:
        """A character vocabulary, built like :meth:`build` from the tokens' characters."""
        return cls.build(
            (list(tok) for tokens in token_lists for tok in tokens),
            min_freq=min_freq,
            max_size=max_size,
            lowercase=lowercase,
        )

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        return (token.lower() if self.lowercase else token) in self.stoi

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and other.itos == self.itos
            and other.lowercase == self.lowercase
        )

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, lowercase={self.lowercase})"

    def index(self, token: str) -> int:
        """Id of ``token``; ``UNK_ID`` when unknown."""
        return self.stoi.get(token.lower() if self.lowercase else token, UNK_ID)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (unknown -> 1)."""
        return [self.index(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``."""
        return [self.itos[i] for i in ids]

    # ------------------------------------------------------------ serialisation

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"itos": [...], "lowercase": bool}``."""
        return {"itos": list(self.itos), "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Vocab:
        """Inverse of :meth:`to_json`."""
        itos = data.get("itos")
        if not isinstance(itos, list) or itos[:2] != [PAD, UNK]:
            raise ValueError(
                "Vocab.from_json: expected {'itos': ['<pad>', '<unk>', ...], 'lowercase': bool} "
                "as written by Vocab.to_json"
            )
        if len(set(itos)) != len(itos):
            raise ValueError("Vocab.from_json: 'itos' has duplicate tokens")
        return cls(itos[2:], lowercase=bool(data.get("lowercase", False)))
