"""Tagging schemes: validation, conversion and span extraction.

A tag is ``"O"`` (outside) or ``"<P>-<TYPE>"`` with a one-letter prefix ``P`` and a
non-empty entity type (which may itself contain ``-``):

========  ===================  ===============================================
scheme    prefixes             an entity is (strict reading)
========  ===================  ===============================================
BIO       B, I                 ``B-X (I-X)*``             (IOB2, Tjong Kim Sang
                                                            & Veenstra 1999)
BIOES     B, I, E, S           ``S-X`` or ``B-X (I-X)* E-X``  (IOBES, Ratinov
                                                            & Roth 2009)
IOB1      B, I                 ``I-X`` opens an entity; ``B-X`` only separates
                                two adjacent entities of the same type
========  ===================  ===============================================

:func:`spans` reads tags *strictly*, exactly like seqeval's ``mode="strict"``: tags that
do not form a well-formed entity (``I-X`` after ``O``, ``B-X`` without ``E-X`` in BIOES,
...) yield no span. Convert IOB1 data with :func:`iob1_to_iob2` first.
"""

from __future__ import annotations

from typing import Sequence

from polytask.errors import OptionError

#: the outside tag: a token in no entity (also what a token the model never saw is taken to be)
OUTSIDE = "O"

#: canonical scheme name -> allowed prefixes
SCHEMES: dict[str, frozenset[str]] = {
    "BIO": frozenset("BI"),
    "BIOES": frozenset("BIES"),
}
_ALIASES = {"BIO": "BIO", "IOB2": "BIO", "BIOES": "BIOES", "IOBES": "BIOES"}

Span = tuple[str, int, int]


def normalize_scheme(scheme: str) -> str:
    """``"bio"``/``"IOB2"`` -> ``"BIO"``; ``"bioes"``/``"IOBES"`` -> ``"BIOES"``."""
    name = _ALIASES.get(str(scheme).upper())
    if name is None:
        raise OptionError(
            "scheme", f"{scheme!r} is not a supported tagging scheme", "use 'BIO' or 'BIOES'"
        )
    return name


def parse_tag(tag: str, scheme: str = "BIOES") -> tuple[str, str | None]:
    """Split a tag into ``(prefix, type)``; ``"O"`` -> ``("O", None)``.

    Raises ``ValueError`` naming the tag when it is not valid in ``scheme``.
    """
    scheme = normalize_scheme(scheme)
    if tag == OUTSIDE:
        return OUTSIDE, None
    allowed = SCHEMES[scheme]
    if (
        not isinstance(tag, str)
        or len(tag) < 3
        or tag[1] != "-"
        or tag[0] not in allowed
        or not tag[2:].strip()
    ):
        forms = ", ".join(f"'{p}-TYPE'" for p in sorted(allowed, key="BIES".index))
        raise ValueError(f"tag {tag!r} is not valid in the {scheme} scheme: use 'O', {forms}")
    return tag[0], tag[2:]


def validate_tags(tags: Sequence[str], scheme: str) -> None:
    """Raise ``ValueError`` naming the first tag that is not valid in ``scheme``."""
    for tag in tags:
        parse_tag(tag, scheme)


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2 (BIO): an ``I-X`` that opens an entity becomes ``B-X``.

    An ``I-X`` opens an entity when it comes first, after ``O``, or after a tag of
    another type; ``B-X`` (which IOB1 uses only between two adjacent ``X`` entities)
    stays.
    """
    out: list[str] = []
    prev_type: str | None = None
    for tag in tags:
        prefix, typ = parse_tag(tag, "BIO")
        if prefix == "I" and typ != prev_type:
            out.append(f"B-{typ}")
        else:
            out.append(tag)
        prev_type = typ
    return out


def repair_bio(tags: Sequence[str | None]) -> tuple[list[str | None], int]:
    """BIO tags with every ``I-X`` that does not continue an ``X`` entity (first, after ``O``
    or after another type) read as ``B-X`` — the lenient reading of conlleval — and the
    number of tags so repaired. ``None`` (an unlabelled token) is kept, and an ``I-X`` after
    it is left alone (what came before is unknown)."""
    out: list[str | None] = []
    repaired = 0
    prev: str | None = OUTSIDE  # the type of the previous tag ("O" before the first)
    for tag in tags:
        if tag is None:
            out.append(None)
            prev = None
            continue
        prefix, typ = parse_tag(tag, "BIO")
        if prefix == "I" and prev is not None and prev != typ:
            out.append(f"B-{typ}")
            repaired += 1
        else:
            out.append(tag)
        prev = typ if typ is not None else OUTSIDE
    return out, repaired


def bio_to_bioes(tags: Sequence[str]) -> list[str]:
    """BIO (IOB2) -> BIOES: single-token entities become ``S-X``, last tokens ``E-X``.

    Raises ``ValueError`` on an ``I-X`` that does not continue an ``X`` entity (the data
    is probably IOB1: convert it with :func:`iob1_to_iob2` first).
    """
    parsed = [parse_tag(t, "BIO") for t in tags]
    out: list[str] = []
    for i, (prefix, typ) in enumerate(parsed):
        if prefix == "O":
            out.append("O")
            continue
        if prefix == "I" and (i == 0 or parsed[i - 1][1] != typ or parsed[i - 1][0] == "O"):
            raise ValueError(
                f"tag {tags[i]!r} at position {i} does not continue a {typ!r} entity; "
                "if the data is IOB1, convert it with iob1_to_iob2 first"
            )
        continues = i + 1 < len(parsed) and parsed[i + 1] == ("I", typ)
        if prefix == "B":
            out.append(f"B-{typ}" if continues else f"S-{typ}")
        else:
            out.append(f"I-{typ}" if continues else f"E-{typ}")
    return out


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """BIOES -> BIO: ``S-X`` -> ``B-X``, ``E-X`` -> ``I-X`` (``B``, ``I``, ``O`` stay)."""
    out = []
    for tag in tags:
        prefix, typ = parse_tag(tag, "BIOES")
        out.append(tag if prefix in "BIO" else f"{'B' if prefix == 'S' else 'I'}-{typ}")
    return out


def spans(tags: Sequence[str], scheme: str = "BIO") -> list[Span]:
    """Entities as ``(type, start, end)`` token indices, ``end`` exclusive, in order.

    Strict reading (see the module docstring): ill-formed fragments yield no span.
    """
    scheme = normalize_scheme(scheme)
    parsed = [parse_tag(t, scheme) for t in tags]
    found: list[Span] = []
    i, n = 0, len(parsed)
    while i < n:
        prefix, typ = parsed[i]
        if scheme == "BIOES" and prefix == "S":
            found.append((typ, i, i + 1))  # type: ignore[arg-type]
            i += 1
            continue
        if prefix != "B":
            i += 1
            continue
        j = i + 1
        while j < n and parsed[j] == ("I", typ):
            j += 1
        if scheme == "BIO":
            found.append((typ, i, j))  # type: ignore[arg-type]
            i = j
        elif j < n and parsed[j] == ("E", typ):
            found.append((typ, i, j + 1))  # type: ignore[arg-type]
            i = j + 1
        else:
            i = j
    return found
