import random

import pytest
from seqeval.scheme import IOB2, IOBES, Entities

from polytask.errors import OptionError
from polytask.tasks.schemes import (
    bio_to_bioes,
    bioes_to_bio,
    iob1_to_iob2,
    normalize_scheme,
    parse_tag,
    spans,
)


def test_iob1_to_iob2_opens_entities_with_b():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-LOC"]
    assert iob1_to_iob2(iob1) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-LOC"]


def test_bio_to_bioes_and_back():
    bio = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    bioes = ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "O", "S-ORG"]
    assert bio_to_bioes(bio) == bioes
    assert bioes_to_bio(bioes) == bio


def test_bio_to_bioes_rejects_iob1_continuation():
    with pytest.raises(ValueError, match="iob1_to_iob2"):
        bio_to_bioes(["O", "I-PER"])
    with pytest.raises(ValueError, match="position 1"):
        bio_to_bioes(["B-LOC", "I-PER"])


def test_parse_tag_validates_against_scheme():
    assert parse_tag("B-ASP-POS", "BIO") == ("B", "ASP-POS")
    assert parse_tag("O", "BIO") == ("O", None)
    assert parse_tag("S-X", "BIOES") == ("S", "X")
    for bad in ["E-X", "S-X", "B-", "BX", "X", "o", ""]:
        with pytest.raises(ValueError, match="not valid in the BIO scheme"):
            parse_tag(bad, "BIO")
    with pytest.raises(OptionError) as err:
        normalize_scheme("BILOU")
    assert err.value.option == "scheme" and "'BIO' or 'BIOES'" in err.value.fix
    assert normalize_scheme("iob2") == "BIO" and normalize_scheme("iobes") == "BIOES"


def test_spans_hand_cases():
    assert spans(["B-PER", "I-PER", "O", "B-LOC"], "BIO") == [("PER", 0, 2), ("LOC", 3, 4)]
    # strict: an I- without its B- is no entity; a type change ends the entity
    assert spans(["I-PER", "B-LOC", "I-PER", "O"], "BIO") == [("LOC", 1, 2)]
    assert spans(["S-X", "B-Y", "I-Y", "E-Y", "B-Z", "O", "B-W", "E-W"], "BIOES") == [
        ("X", 0, 1),
        ("Y", 1, 4),
        ("W", 6, 8),
    ]
    assert spans([], "BIO") == []


def _random_tags(rng, prefixes, n):
    return [rng.choice(["O"] + [f"{p}-{t}" for p in prefixes for t in "AB"]) for _ in range(n)]


@pytest.mark.parametrize(
    "scheme,prefixes,seqeval_scheme", [("BIO", "BI", IOB2), ("BIOES", "BIES", IOBES)]
)
def test_spans_equal_seqeval_strict_entities(scheme, prefixes, seqeval_scheme):
    rng = random.Random(0)
    for _ in range(400):
        tags = _random_tags(rng, prefixes, rng.randint(1, 9))
        expected = sorted(
            (e.tag, e.start, e.end) for e in Entities([tags], seqeval_scheme).entities[0]
        )
        assert sorted(spans(tags, scheme)) == expected, tags


def test_conversions_preserve_spans():
    rng = random.Random(1)
    for _ in range(300):
        bio = iob1_to_iob2(_random_tags(rng, "BI", rng.randint(1, 9)))
        bioes = bio_to_bioes(bio)
        assert spans(bioes, "BIOES") == spans(bio, "BIO")
        assert bioes_to_bio(bioes) == bio
        # every BIO tag belongs to a span once IOB1 is converted
        covered = sum(e - s for _, s, e in spans(bio, "BIO"))
        assert covered == sum(t != "O" for t in bio)
