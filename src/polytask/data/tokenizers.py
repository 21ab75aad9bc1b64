"""How raw text becomes tokens, by name, so that prediction splits text as training did.

==============  ==============================================================
name            tokens of ``"Great screen, awful battery!"``
==============  ==============================================================
``whitespace``  ``Great | screen, | awful | battery!`` (``str.split``)
``words``       ``Great | screen | , | awful | battery | !`` (``\\w+|[^\\w\\s]``,
                SemEval-2014's reader)
``chars``       every non-space character (Chinese text)
==============  ==============================================================

Each data format says which of these it applied to raw text (:attr:`Reader.tokenizer`),
``pretokenized`` when its files held tokens already. A run records the tokenizer of each
source, and ``predict`` applies the same one to raw text (:func:`choose`).
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

from ..config.errors import ConfigError

__all__ = ["PRETOKENIZED", "TOKENIZERS", "choose", "tokenize_with"]

_WORDS = re.compile(r"\w+|[^\w\s]")
BOM = "\ufeff"

#: the tokenizers by name
TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": lambda text: text.replace(BOM, "").split(),
    "words": lambda text: _WORDS.findall(text.replace(BOM, "")),
    "chars": lambda text: [c for c in text.replace(BOM, "") if not c.isspace()],
}
#: what a source whose files held tokens (CoNLL, JSONL ``tokens`` lists) records
PRETOKENIZED = "pretokenized"


def tokenize_with(name: str, text: str) -> list[str]:
    """``text`` split by tokenizer ``name``."""
    if name not in TOKENIZERS:
        raise ConfigError(
            "--tokenizer", f"unknown tokenizer {name!r}", f"use one of {', '.join(TOKENIZERS)}"
        )
    return TOKENIZERS[name](text)


def choose(recorded: Mapping[str, str | None], default: str) -> str | None:
    """The tokenizer raw text gets at prediction: the one every source used; ``default``
    (the config's ``data.tokenizer``) when every source held tokens already or the run
    recorded nothing (runs trained before tokenizers were recorded); ``None`` when sources
    used different ones (raw text then needs an explicit choice)."""
    used = {name for name in recorded.values() if name and name != PRETOKENIZED}
    if not used:
        return default
    if len(used) == 1:
        return used.pop()
    return None
