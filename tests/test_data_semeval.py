"""SemEval-2014 Task 4 reader (``polytask.data.semeval``), its ``semeval2014`` config
format, and the other data paths of the product-review example (JSONL with partial labels,
CoNLL-2003 train with IOB1 -> IOB2).
"""

from __future__ import annotations

import json
import logging
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from shared_data import TEST_XML, TRAIN_XML, require_data

from polytask.config import ConfigError, read_config
from polytask.config.build import Experiment
from polytask.data import parse_semeval2014, read_conll, read_jsonl, read_semeval2014
from polytask.data.semeval import ABSA_TYPES, sentence_polarity, tokenize_with_offsets
from polytask.tasks.schemes import spans
from polytask.tasks.tagging import Tagging

ABSA_LABELS = ["O", "B-POS", "I-POS", "B-NEG", "I-NEG", "B-NEU", "I-NEU"]


def _sentence(sid: str, text: str, *aspects: tuple[str, str]) -> str:
    """One ``<sentence>``; aspects ``(term, polarity)`` located at the term's first occurrence."""
    terms = ""
    for term, polarity in aspects:
        start = text.index(term)
        terms += (
            f'<aspectTerm term="{term}" polarity="{polarity}" from="{start}" '
            f'to="{start + len(term)}"/>'
        )
    block = f"<aspectTerms>{terms}</aspectTerms>" if aspects else ""
    return f'<sentence id="{sid}"><text>{text}</text>{block}</sentence>'


def _xml(tmp_path: Path, *sentences: str, name: str = "s.xml") -> Path:
    path = tmp_path / name
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<sentences>'
        + "".join(sentences)
        + "</sentences>\n",
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------- the real files


@pytest.mark.parametrize(
    "rel, n_sent, n_asp, pols, splits",
    [
        (
            TRAIN_XML,
            3045,
            2358,
            {"positive": 987, "negative": 866, "neutral": 460, "conflict": 45},
            1,
        ),
        (TEST_XML, 800, 654, {"positive": 341, "negative": 128, "neutral": 169, "conflict": 16}, 1),
    ],
)
def test_counts_equal_the_published_ones(rel, n_sent, n_asp, pols, splits):
    path = require_data(rel)
    sentences, stats = parse_semeval2014(path)
    assert (stats.sentences, stats.aspects, dict(stats.polarities)) == (n_sent, n_asp, pols)
    assert stats.split_boundaries == splits  # "freesecuritysoftware" (train), "manyLegacy" (test)
    assert stats.trimmed == (1 if rel == TRAIN_XML else 0)  # "uninstall\xa0" (train)
    exs = read_semeval2014(path)
    xml_ids = [s.get("id") for s in ET.parse(path).getroot().iter("sentence")]
    assert [e.id for e in exs] == xml_ids == [s.id for s in sentences]
    assert sum(t.startswith("B-") for e in exs for t in e.targets["aspects"]) == n_asp
    assert (
        sum(t.startswith("B-") for e in exs for t in e.targets["absa"]) == n_asp - pols["conflict"]
    )
    no_aspects = sum(not s.aspects for s in sentences)
    assert (
        sum(e.targets["sentiment"] is None for e in exs) == no_aspects > 0
    )  # kept, sentiment masked


@pytest.mark.parametrize("rel", [TRAIN_XML, TEST_XML])
def test_span_bio_span_round_trip_on_every_sentence(rel):
    """XML char spans -> BIO tags -> token spans -> char spans (tokens' offsets) == the XML's
    from/to (trimmed of whitespace, the one documented repair of a span)."""
    path = require_data(rel)
    sentences, _ = parse_semeval2014(path)
    by_id = {s.id: s for s in sentences}
    for node in ET.parse(path).getroot().iter("sentence"):
        s = by_id[node.get("id")]
        text = node.findtext("text")
        assert all(text[a:b] == tok for tok, (a, b) in zip(s.tokens, s.offsets, strict=True))
        assert "".join(s.tokens) == "".join(
            text.split()
        )  # every non-space character, once, in order
        expected = []
        for a in node.iter("aspectTerm"):
            start, end, term = int(a.get("from")), int(a.get("to")), a.get("term")
            assert text[start:end] == term
            start += len(term) - len(term.lstrip())
            end -= len(term) - len(term.rstrip())
            expected.append((start, end, a.get("polarity")))
        fields = s.fields()
        recovered = sorted(
            (s.offsets[i][0], s.offsets[j - 1][1]) for _, i, j in spans(fields["aspects"])
        )
        assert recovered == sorted((a, b) for a, b, _ in expected), s.id
        absa = sorted(
            (s.offsets[i][0], s.offsets[j - 1][1], typ) for typ, i, j in spans(fields["absa"])
        )
        assert absa == sorted((a, b, ABSA_TYPES[p]) for a, b, p in expected if p != "conflict"), (
            s.id
        )


def test_absa_f1_is_the_tagging_f1_on_the_absa_field():
    """seqeval strict micro-F1 of the ``absa`` tags == span+polarity exact match counted by hand,
    on the gold test file against perturbed predictions (dropped, retyped, widened, extra spans)."""
    sentences, _ = parse_semeval2014(require_data(TEST_XML))
    rng = random.Random(0)
    gold, pred = set(), set()
    targets, predictions = [], []
    for s in sentences:
        n = len(s.tokens)
        taken = {i for a in s.aspects for i in range(a.first, a.stop)}
        mine: list[tuple[int, int, str]] = []
        for a in s.aspects:
            if a.polarity != "conflict":
                gold.add((s.id, a.first, a.stop, ABSA_TYPES[a.polarity]))
            action = rng.choice(["keep", "keep", "drop", "retype", "widen"])
            typ = ABSA_TYPES.get(
                a.polarity, "POS"
            )  # a conflict aspect predicted POS: a false positive
            if action == "drop":
                continue
            if action == "retype":
                typ = rng.choice(sorted(set(ABSA_TYPES.values()) - {typ}))
            stop = a.stop
            if action == "widen" and stop < n and stop not in taken:
                taken.add(stop)
                stop += 1
            mine.append((a.first, stop, typ))
        free = [i for i in range(n) if i not in taken]
        if free and rng.random() < 0.2:
            i = rng.choice(free)
            mine.append((i, i + 1, "NEG"))
        tags = ["O"] * n
        for first, stop, typ in mine:
            pred.add((s.id, first, stop, typ))
            tags[first:stop] = [f"B-{typ}"] + [f"I-{typ}"] * (stop - first - 1)
        predictions.append(tags)
        targets.append(s.fields()["absa"])
    tp = len(gold & pred)
    precision, recall = tp / len(pred), tp / len(gold)
    f1 = 2 * precision * recall / (precision + recall)
    assert 0.3 < f1 < 0.9 and len(gold) == 654 - 16
    metrics = Tagging(ABSA_LABELS).metrics(predictions, targets)
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1"] == pytest.approx(f1)


def test_absa_f1_hand_count(tmp_path):
    path = _xml(
        tmp_path,
        _sentence(
            "1",
            "Great battery life but bad screen.",
            ("battery life", "positive"),
            ("screen", "negative"),
        ),
        _sentence("2", "The price is high but worth it.", ("price", "conflict")),
    )
    a, b = read_semeval2014(path, {"absa": "absa"})
    assert a.targets["absa"] == ["O", "B-POS", "I-POS", "O", "O", "B-NEG", "O"]
    assert b.targets["absa"] == ["O"] * 8  # the conflict aspect is outside ABSA
    pred_a = ["O", "B-POS", "I-POS", "O", "O", "B-POS", "O"]  # 1 right, 1 retyped
    pred_b = ["O", "B-NEU", "O", "O", "O", "O", "O", "O"]  # a span on the conflict aspect
    m = Tagging(ABSA_LABELS).metrics([pred_a, pred_b], [a.targets["absa"], b.targets["absa"]])
    # tp 1, fp 2, fn 1: P 1/3, R 1/2, F1 0.4
    assert (m["precision"], m["recall"], m["f1"]) == (
        pytest.approx(1 / 3),
        pytest.approx(0.5),
        pytest.approx(0.4),
    )


# ------------------------------------------------------------------------ the rules


def test_sentence_polarity_rules(tmp_path):
    cases = {
        "pos": [("screen", "positive"), ("keys", "positive")],
        "neg": [("screen", "negative")],
        "neu": [("screen", "neutral"), ("keys", "neutral")],
        "pos+neg": [("screen", "positive"), ("keys", "negative")],
        "conflict": [("screen", "conflict")],
        "conflict+pos": [("screen", "conflict"), ("keys", "positive")],
        "neu+pos": [("screen", "neutral"), ("keys", "positive")],
        "neu+neg": [("screen", "negative"), ("keys", "neutral")],
        "none": [],
    }
    expected = {
        "pos": "positive",
        "neg": "negative",
        "neu": "neutral",
        "pos+neg": "mixed",
        "conflict": "mixed",
        "conflict+pos": "mixed",
        "neu+pos": "positive",
        "neu+neg": "negative",
        "none": None,
    }
    path = _xml(tmp_path, *(_sentence(k, "The screen and the keys.", *v) for k, v in cases.items()))
    exs = read_semeval2014(path, {"sentiment": "sentiment", "aspects": "aspects"})
    assert {e.id: e.targets["sentiment"] for e in exs} == expected
    none = exs[-1]
    assert (
        none.id == "none" and none.targets["aspects"] == ["O"] * 6
    )  # kept: it still trains aspects
    conflict = next(e for e in exs if e.id == "conflict")
    assert conflict.targets["aspects"] == [
        "O",
        "B-ASP",
        "O",
        "O",
        "O",
        "O",
    ]  # conflict terms are aspects
    assert sentence_polarity([]) is None and sentence_polarity(["neutral", "conflict"]) == "mixed"


def test_tokens_fields_and_default_targets(tmp_path):
    path = _xml(
        tmp_path,
        _sentence("7:1", "The battery-life isn't great, sadly.", ("battery-life", "negative")),
    )
    (ex,) = read_semeval2014(path)
    assert ex.id == "7:1"
    assert ex.inputs == {
        "tokens": ["The", "battery", "-", "life", "isn", "'", "t", "great", ",", "sadly", "."]
    }
    assert ex.targets == {
        "aspects": ["O", "B-ASP", "I-ASP", "I-ASP"] + ["O"] * 7,
        "sentiment": "negative",
        "absa": ["O", "B-NEG", "I-NEG", "I-NEG"] + ["O"] * 7,
    }
    assert tokenize_with_offsets("ab,cd", cuts=[1]) == [
        ("a", 0, 1),
        ("b", 1, 2),
        (",", 2, 3),
        ("cd", 3, 5),
    ]


def test_boundary_inside_a_token_splits_it_and_is_counted(tmp_path, caplog):
    path = _xml(
        tmp_path,
        _sentence(
            "9",
            "It has freesecuritysoftware and manyLegacy apps.",
            ("securitysoftware", "positive"),
            ("Legacy apps", "neutral"),
        ),
        _sentence("10", "Works fine.", ("Works", "positive")),
    )
    (s, _), stats = parse_semeval2014(path)
    assert s.tokens == [
        "It",
        "has",
        "free",
        "securitysoftware",
        "and",
        "many",
        "Legacy",
        "apps",
        ".",
    ]
    assert stats.split_boundaries == 2 and stats.trimmed == 0
    with caplog.at_level(logging.INFO, logger="polytask.data.semeval"):
        ex = read_semeval2014(path, {"aspects": "aspects"})[0]
    assert ex.targets["aspects"] == ["O", "O", "O", "B-ASP", "O", "O", "B-ASP", "I-ASP", "O"]
    assert "2 aspect boundaries inside a token" in caplog.text


def test_whitespace_around_a_term_is_trimmed_and_counted(tmp_path):
    path = _xml(
        tmp_path,
        '<sentence id="3"><text>I uninstall\u00a0it.</text><aspectTerms>'
        '<aspectTerm term="uninstall\u00a0" polarity="negative" from="2" to="12"/>'
        "</aspectTerms></sentence>",
    )
    (s,), stats = parse_semeval2014(path)
    assert stats.trimmed == 1 and (s.aspects[0].start, s.aspects[0].end) == (2, 11)
    assert s.fields()["aspects"] == ["O", "B-ASP", "O", "O"]


# ----------------------------------------------------------------------- the errors


@pytest.mark.parametrize(
    "sentence, message",
    [
        (
            (
                '<sentence id="s1"><text>The screen size</text><aspectTerms>'
                '<aspectTerm term="screen size" polarity="positive" from="4" to="15"/>'
                '<aspectTerm term="size" polarity="positive" from="11" '
                'to="15"/></aspectTerms></sentence>'
            ),
            r"sentence 's1': aspects 'screen size' and 'size' overlap",
        ),
        (
            (
                '<sentence id="s2"><text>The screen</text><aspectTerms>'
                '<aspectTerm term="screen" polarity="great" from="4" '
                'to="10"/></aspectTerms></sentence>'
            ),
            r"sentence 's2': aspect 'screen' has unknown polarity 'great'",
        ),
        (
            (
                '<sentence id="s3"><text>The screen</text><aspectTerms>'
                '<aspectTerm term="screen" polarity="positive" from="3" '
                'to="9"/></aspectTerms></sentence>'
            ),
            r"sentence 's3': aspect 'screen' does not match the text at from=3 to=9 \(' scree'\)",
        ),
        (
            (
                '<sentence id="s4"><text>The screen</text><aspectTerms>'
                '<aspectTerm term="screen" polarity="positive" from="4" '
                'to="99"/></aspectTerms></sentence>'
            ),
            r"sentence 's4': aspect 'screen' does not match the text",
        ),
        (
            (
                '<sentence id="s5"><text>The screen</text><aspectTerms>'
                '<aspectTerm term="screen" polarity="positive" from="four" '
                'to="10"/></aspectTerms></sentence>'
            ),
            r"sentence 's5': aspect 'screen' has offsets from='four'",
        ),
        ('<sentence id="s6"><aspectTerms/></sentence>', r"sentence 's6': no <text> element"),
        (
            (
                '<sentence id="s7"><text>A  b</text><aspectTerms>'
                '<aspectTerm term=" " polarity="positive" from="1" '
                'to="2"/></aspectTerms></sentence>'
            ),
            r"sentence 's7': aspect ' ' holds no token",
        ),
        (
            (
                '<sentence id="s8"><text>The screen</text><aspectTerms>'
                '<aspectTerm term="screen" from="4" to="10"/></aspectTerms></sentence>'
            ),
            r"sentence 's8': <aspectTerm> has no 'polarity' attribute",
        ),
        (
            '<sentence id="s9"><text>x</text></sentence><sentence '
            'id="s9"><text>y</text></sentence>',
            r"sentence 's9' appears twice",
        ),
    ],
)
def test_errors_name_the_file_and_the_sentence(tmp_path, sentence, message):
    path = _xml(tmp_path, sentence, name="bad.xml")
    with pytest.raises(ValueError, match=r"bad\.xml: " + message):
        read_semeval2014(path)


def test_malformed_xml_names_the_file(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text('<sentences><sentence id="1"><text>x</sentence>', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.xml: not well-formed XML"):
        read_semeval2014(path)


def test_unknown_field_is_an_error(tmp_path):
    path = _xml(tmp_path, _sentence("1", "ok"))
    with pytest.raises(
        ValueError, match=r"task 'sentiment' maps to 'polarity'.*aspects, sentiment, absa"
    ):
        read_semeval2014(path, {"sentiment": "polarity"})


# ------------------------------------------------------------------------- config


def _config(tmp_path: Path, tasks: dict, **source) -> Path:
    kinds = {"aspects": "tagging", "sentiment": "classification", "absa": "tagging"}
    cfg = {
        "name": "semeval",
        "seed": 1,
        "tasks": {t: {"kind": kinds[t]} for t in tasks},
        "data": {
            "val_fraction": 0.25,
            "sources": {"laptops": {"format": "semeval2014", "tasks": tasks, **source}},
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
        "trainer": {"epochs": 1, "batch_size": 4, "threads": 1, "progress": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _review_files(tmp_path: Path) -> None:
    texts = [
        ("Great screen.", [("screen", "positive")]),
        ("Bad keys and good screen.", [("keys", "negative"), ("screen", "positive")]),
        ("I bought it.", []),
        ("The fan noise is loud.", [("fan noise", "negative")]),
    ]
    _xml(
        tmp_path,
        *(_sentence(f"tr{i}:{j}", t, *a) for i in range(3) for j, (t, a) in enumerate(texts)),
        name="train.xml",
    )
    _xml(tmp_path, *(_sentence(f"te{j}", t, *a) for j, (t, a) in enumerate(texts)), name="test.xml")


def test_config_source_reads_semeval_and_carves_validation_from_train(tmp_path):
    _review_files(tmp_path)
    cfg, _ = read_config(
        _config(
            tmp_path,
            {"aspects": "aspects", "sentiment": "sentiment"},
            train="train.xml",
            test="test.xml",
        )
    )
    exp = Experiment(cfg, tmp_path)
    splits = exp.sources["laptops"]
    assert [e.id for e in splits.test] == ["te0", "te1", "te2", "te3"]  # the test file, whole
    train_ids, val_ids = {e.id for e in splits.train}, {e.id for e in splits.val}
    assert len(val_ids) == 3 and not train_ids & val_ids
    assert train_ids | val_ids == {f"tr{i}:{j}" for i in range(3) for j in range(4)}
    assert set(splits.test[2].targets) == {"aspects", "sentiment"}
    assert splits.test[2].targets == {"aspects": ["O", "O", "O", "O"], "sentiment": None}
    assert splits.test[1].targets["sentiment"] == "mixed"
    assert exp.tasks["aspects"].kind.labels == ["O", "B-ASP", "I-ASP"]


def test_config_unknown_field_names_the_task(tmp_path):
    _review_files(tmp_path)
    cfg, _ = read_config(
        _config(tmp_path, {"aspects": "aspects", "sentiment": "polarity"}, train="train.xml")
    )
    with pytest.raises(ConfigError) as err:
        Experiment(cfg, tmp_path)
    assert err.value.where == "data.sources.laptops.tasks.sentiment"
    assert (
        "'polarity'" in err.value.problem and err.value.fix == "use one of aspects, sentiment, absa"
    )


def test_config_bad_xml_names_the_file(tmp_path):
    (tmp_path / "train.xml").write_text("<sentences><sentence>", encoding="utf-8")
    cfg, _ = read_config(_config(tmp_path, {"aspects": "aspects"}, train="train.xml"))
    with pytest.raises(ConfigError, match=r"train\.xml: .*not well-formed XML"):
        Experiment(cfg, tmp_path)


def test_config_on_the_real_files(tmp_path):
    train, test = require_data(TRAIN_XML), require_data(TEST_XML)
    cfg, _ = read_config(
        _config(
            tmp_path,
            {"aspects": "aspects", "sentiment": "sentiment", "absa": "absa"},
            train=str(train),
            test=str(test),
        )
    )
    exp = Experiment(cfg, tmp_path)
    splits = exp.sources["laptops"]
    assert len(splits.test) == 800 and len(splits.train) + len(splits.val) == 3045
    assert exp.tasks["sentiment"].kind.labels == ["mixed", "negative", "neutral", "positive"]
    assert set(exp.tasks["absa"].kind.labels) == set(ABSA_LABELS)


# ----------------------------------------------- the other data paths of the example


def test_jsonl_tokens_tags_sentiment_with_either_label_missing(tmp_path):
    rows = [
        {"tokens": ["Nice", "screen"], "tags": ["O", "B-ASP"], "sentiment": "pos"},
        {"tokens": ["Nice", "screen"], "tags": ["O", "B-ASP"]},
        {"tokens": ["Too", "slow"], "sentiment": "neg"},
        {"tokens": ["Fine"], "tags": None, "sentiment": None},
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    exs = read_jsonl(path, targets={"aspects": "tags", "sentiment": "sentiment"})
    assert [e.targets for e in exs] == [
        {"aspects": ["O", "B-ASP"], "sentiment": "pos"},
        {"aspects": ["O", "B-ASP"], "sentiment": None},
        {"aspects": None, "sentiment": "neg"},
        {"aspects": None, "sentiment": None},
    ]


def test_conll2003_train_real_iob1_to_iob2():
    path = require_data("conll2003/eng.train")
    exs = read_conll(path, targets={"ner": 3}, scheme_in="IOB1")
    assert len(exs) == 14041
    assert sum(len(e.inputs["tokens"]) for e in exs) == 203621
    entities = 0
    for e in exs:
        tags = e.targets["ner"]
        for i, t in enumerate(tags):
            if t.startswith("I-"):
                prev = tags[i - 1] if i else "O"
                assert prev != "O" and prev[2:] == t[2:], (e.id, tags)
        entities += len(spans(tags))
    assert entities == 23499  # README: the spans of the IOB1 file
