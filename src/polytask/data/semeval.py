"""SemEval-2014 Task 4 (aspect-based sentiment, Pontiki et al. 2014) XML -> ``list[Example]``.

The files (``Laptop_Train_v2.xml``, ``Laptops_Test_Gold.xml``, and the restaurant files of
the same task) hold ``<sentence id><text/><aspectTerms><aspectTerm term polarity from
to/>...</aspectTerms></sentence>``; ``from``/``to`` are character offsets into the text,
``polarity`` is ``positive``, ``negative``, ``neutral`` or ``conflict``.

**Tokens.** The text is cut into word tokens by :data:`TOKEN_PATTERN` (``\\w+|[^\\w\\s]``:
runs of letters/digits/underscore, and every other non-space character on its own, so
``"great,"`` -> ``great`` ``,``). Each token keeps its character offsets. Two repairs make
every aspect term cover whole tokens; both are counted in :class:`SemEvalStats` and logged:

- an aspect boundary inside a token (``"freesecuritysoftware"`` holding the term
  ``"securitysoftware"``) splits the token there (``free`` ``securitysoftware``);
- whitespace at either end of a term (``"uninstall\\xa0"``) is trimmed from its span.

After the repairs, the characters from the first to the last token of an aspect are
exactly its (trimmed) ``from``/``to`` span.

**Fields** (``targets`` maps task -> field):

- ``aspects``: BIO tags ``B-ASP``/``I-ASP``/``O`` of every aspect term (conflict ones too);
- ``sentiment``: the sentence polarity (:func:`sentence_polarity`): ``positive``,
  ``negative``, ``neutral`` or ``mixed``; ``None`` (a missing label, not a dropped
  example) for a sentence without aspect terms;
- ``absa``: the unified tags ``B-POS``/``I-POS``/``B-NEG``/``I-NEG``/``B-NEU``/``I-NEU``/``O``
  (Li et al. 2019, "A unified model for opinion target extraction and target sentiment
  prediction"). **Conflict aspects are tagged** ``O``, as in the laptop14 data those
  authors released (E2E-TBSA), so they are outside the ABSA evaluation: predicting a
  polarity span there is a false positive, as it is in the literature's scores. Every
  token is labelled, so every sentence counts in the entity metrics.

ABSA-F1 (span and polarity exact match, micro-averaged) is the ``f1`` of a ``tagging``
task on the ``absa`` field: seqeval's strict mode counts an entity only when its type (the
polarity) and both boundaries match, and every aspect starts with ``B-``, so adjacent
aspects never merge.

Bad input raises ``ValueError`` naming the file and, where there is one, the sentence id.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from polytask.data.base import Example
from polytask.data.readers import _open_text

__all__ = [
    "ABSA_TYPES",
    "FIELDS",
    "POLARITIES",
    "TOKEN_PATTERN",
    "SemEvalAspect",
    "SemEvalSentence",
    "SemEvalStats",
    "parse_semeval2014",
    "read_semeval2014",
    "sentence_polarity",
    "tokenize_with_offsets",
]

log = logging.getLogger(__name__)

#: word tokens: a run of word characters, or one other non-space character
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
#: the aspect polarities of the annotation
POLARITIES = ("positive", "negative", "neutral", "conflict")
#: the fields a task can be mapped to
FIELDS = ("aspects", "sentiment", "absa")
#: aspect polarity -> entity type of the ``absa`` tags (conflict aspects are ``O``)
ABSA_TYPES = {"positive": "POS", "negative": "NEG", "neutral": "NEU"}


@dataclass(frozen=True)
class SemEvalAspect:
    """One aspect term: its polarity, character span (after trimming) and token span.

    ``start``/``end`` and ``first``/``stop`` are end-exclusive.
    """

    term: str
    polarity: str
    start: int
    end: int
    first: int
    stop: int


@dataclass
class SemEvalSentence:
    """A parsed sentence: tokens with character ``offsets`` and aspects in file order."""

    id: str
    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    aspects: list[SemEvalAspect]

    def fields(self) -> dict[str, Any]:
        """``{"aspects": BIO, "sentiment": polarity or None, "absa": unified tags}``."""
        n = len(self.tokens)
        asp, absa = ["O"] * n, ["O"] * n
        for a in self.aspects:
            for i in range(a.first, a.stop):
                prefix = "B" if i == a.first else "I"
                asp[i] = f"{prefix}-ASP"
                if a.polarity in ABSA_TYPES:
                    absa[i] = f"{prefix}-{ABSA_TYPES[a.polarity]}"
        return {
            "aspects": asp,
            "sentiment": sentence_polarity(a.polarity for a in self.aspects),
            "absa": absa,
        }


@dataclass
class SemEvalStats:
    """What a file held and what was repaired (module docstring)."""

    sentences: int = 0
    aspects: int = 0
    #: aspect boundaries that fell inside a token (the token was split there)
    split_boundaries: int = 0
    #: aspect terms with whitespace at an end (trimmed from the span)
    trimmed: int = 0
    polarities: Counter[str] = field(default_factory=Counter)


def sentence_polarity(polarities: Iterable[str]) -> str | None:
    """The sentence label from its aspects' polarities.

    No aspects -> ``None``; a ``conflict`` aspect, or positive and negative ones together
    -> ``mixed``; otherwise the one polarity among positive/negative present; ``neutral``
    only when all aspects are neutral (so neutral + positive -> ``positive``).
    """
    present = set(polarities)
    if not present:
        return None
    if "conflict" in present or {"positive", "negative"} <= present:
        return "mixed"
    for p in ("positive", "negative"):
        if p in present:
            return p
    return "neutral"


def tokenize_with_offsets(text: str, cuts: Iterable[int] = ()) -> list[tuple[str, int, int]]:
    """``(token, start, end)`` by :data:`TOKEN_PATTERN`, tokens also split at each offset in
    ``cuts``."""
    inner = sorted(set(cuts))
    out: list[tuple[str, int, int]] = []
    for m in TOKEN_PATTERN.finditer(text):
        s, e = m.span()
        for c in (c for c in inner if s < c < e):
            out.append((text[s:c], s, c))
            s = c
        out.append((text[s:e], s, e))
    return out


def _attr(node: ET.Element, name: str, where: str) -> str:
    value = node.get(name)
    if value is None:
        raise ValueError(f"{where}: <{node.tag}> has no {name!r} attribute")
    return value


def _parse_sentence(node: ET.Element, where_file: str, stats: SemEvalStats) -> SemEvalSentence:
    sid = _attr(node, "id", f"{where_file}: a sentence")
    where = f"{where_file}: sentence {sid!r}"
    text = node.findtext("text")
    if text is None:
        raise ValueError(f"{where}: no <text> element")
    spans: list[tuple[str, str, int, int]] = []
    for a in node.iter("aspectTerm"):
        term, polarity = _attr(a, "term", where), _attr(a, "polarity", where)
        raw = (_attr(a, "from", where), _attr(a, "to", where))
        if not all(r.strip().isdigit() for r in raw):
            raise ValueError(
                f"{where}: aspect {term!r} has offsets from={raw[0]!r} to={raw[1]!r}; "
                "give non-negative integers"
            )
        start, end = int(raw[0]), int(raw[1])
        if polarity not in POLARITIES:
            raise ValueError(
                f"{where}: aspect {term!r} has unknown polarity {polarity!r}; "
                f"use one of {', '.join(POLARITIES)}"
            )
        if not 0 <= start < end <= len(text) or text[start:end] != term:
            raise ValueError(
                f"{where}: aspect {term!r} does not match the text at from={start} to={end} "
                f"({text[max(start, 0) : max(end, 0)]!r}); correct the offsets"
            )
        stripped = term.strip()
        if not stripped or not TOKEN_PATTERN.search(stripped):
            raise ValueError(f"{where}: aspect {term!r} holds no token; remove it")
        if stripped != term:
            stats.trimmed += 1
            start += len(term) - len(term.lstrip())
            end -= len(term) - len(term.rstrip())
        spans.append((term, polarity, start, end))
    ordered = sorted(spans, key=lambda s: s[2])
    for (t1, _, _, e1), (t2, _, s2, _) in itertools.pairwise(ordered):
        if s2 < e1:
            raise ValueError(
                f"{where}: aspects {t1!r} and {t2!r} overlap; aspect spans must be disjoint"
            )
    bounds = {b for _, _, s, e in spans for b in (s, e)}
    plain = tokenize_with_offsets(text)
    stats.split_boundaries += sum(1 for b in bounds for _, s, e in plain if s < b < e)
    toks = tokenize_with_offsets(text, bounds)
    starts = {s: i for i, (_, s, _) in enumerate(toks)}
    ends = {e: i for i, (_, _, e) in enumerate(toks)}
    aspects = []
    for term, polarity, start, end in spans:
        # after the splits and the trimming both ends of a span are token boundaries
        if start not in starts or end not in ends:
            raise ValueError(
                f"{where}: aspect {term!r} at from={start} to={end} does not start and end "
                "on a token; correct the offsets"
            )
        aspects.append(SemEvalAspect(term, polarity, start, end, starts[start], ends[end] + 1))
        stats.polarities[polarity] += 1
    stats.sentences += 1
    stats.aspects += len(aspects)
    return SemEvalSentence(
        sid, text, [t for t, _, _ in toks], [(s, e) for _, s, e in toks], aspects
    )


def parse_semeval2014(
    path: str | os.PathLike[str],
) -> tuple[list[SemEvalSentence], SemEvalStats]:
    """Every ``<sentence>`` of the file, in file order, and the counts of what was repaired."""
    p, handle = _open_text(path)
    with handle:
        try:
            root = ET.parse(handle).getroot()
        except ET.ParseError as err:
            raise ValueError(f"{p}: not well-formed XML ({err}); repair the file") from None
    stats = SemEvalStats()
    sentences = [_parse_sentence(s, str(p), stats) for s in root.iter("sentence")]
    seen: set[str] = set()
    for s in sentences:
        if s.id in seen:
            raise ValueError(f"{p}: sentence {s.id!r} appears twice; sentence ids must be unique")
        seen.add(s.id)
    return sentences, stats


def _check_targets(targets: Mapping[str, Any]) -> dict[str, str]:
    for task, name in targets.items():
        if name not in FIELDS:
            raise ValueError(
                f"read_semeval2014: task {task!r} maps to {name!r}, which is no field; "
                f"use one of {', '.join(FIELDS)}"
            )
    return dict(targets)


def read_semeval2014(
    path: str | os.PathLike[str], targets: Mapping[str, str] | None = None
) -> list[Example]:
    """Read a SemEval-2014 Task 4 XML file (module docstring).

    ``targets`` maps task -> field (``aspects``, ``sentiment``, ``absa``); ``None`` takes
    every field under its own name. Examples have ``inputs={"tokens": [...]}`` and the
    sentence id as id. The counts of :class:`SemEvalStats` are logged at INFO level.
    """
    mapping = _check_targets(targets if targets is not None else {f: f for f in FIELDS})
    sentences, stats = parse_semeval2014(path)
    log.info(
        "%s: %d sentences, %d aspect terms %s; %d aspect boundaries inside a token (split), "
        "%d terms trimmed",
        os.fspath(path),
        stats.sentences,
        stats.aspects,
        dict(stats.polarities),
        stats.split_boundaries,
        stats.trimmed,
    )
    out = []
    for s in sentences:
        values = s.fields()
        out.append(
            Example({"tokens": list(s.tokens)}, {t: values[f] for t, f in mapping.items()}, id=s.id)
        )
    return out
