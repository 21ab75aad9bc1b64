"""Bad input gets one line (issue 13, point 4): ``error: <field or file>: <problem>; fix: ...``
and exit code 2, with the right field and, for a misspelt name, the nearest known one; what
used to be accepted silently (a key given twice, a byte-order mark, ``I-X`` after ``O``, a
predict line of the wrong type) is refused, dropped or repaired and counted.

Every case that reads a finished run checks that its files are byte-identical afterwards.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest
import yaml
from tiny_reviews import CONFIG, ROWS, cli, one_error, write_project

from polytask.config import build
from polytask.config.build import Experiment
from polytask.config.errors import ConfigError
from polytask.config.load import read_config, validate
from polytask.data.readers import read_conll, read_jsonl
from polytask.errors import OptionError
from polytask.options import check_options


def _config(tmp: Path, rows: list[dict] = ROWS, **changes: object) -> Path:
    return write_project(tmp, rows, **{"seed": 1, **changes})


_cli, _error = cli, one_error


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    result = _cli("train", _config(tmp), "--out", tmp / "run")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return tmp / "run"


# ----------------------------------------------------------------- misspelt names
@pytest.mark.parametrize(
    "sets, field, nearest",
    [
        (
            ["tasks.aspects={kind: tagging, lables: [O, B-ASP, I-ASP]}"],
            "tasks.aspects.lables",
            "labels",
        ),
        (["balancing={method: cagrad, cc: 0.4}"], "balancing.cc", "c"),
        (["balancing.method=pcgard"], "balancing.method", "pcgrad"),
        (
            ["model.sharing=mmoe", "model.sharing_options={expert: 2}"],
            "model.sharing_options.expert",
            "experts",
        ),
        (["model.encoder.kernel=3"], "model.encoder.kernel", "kernel_size"),
        (["trainer.epoch=2"], "trainer.epoch", "epochs"),
        (["sampler.type=temprature"], "sampler.type", "temperature"),
        (["sampler={type: temperature, t: 2}"], "sampler.t", "T"),
    ],
)
def test_a_misspelt_name_is_reported_at_itself_with_the_nearest_known_one(
    tmp_path, sets, field, nearest
):
    config = _config(tmp_path)
    args = [a for s in sets for a in ("--set", s)]
    problem = _error(_cli("train", config, "--out", tmp_path / "run", *args), field)
    assert f"did you mean {nearest!r}?" in problem
    assert not (tmp_path / "run").exists()


def test_check_options_names_unknown_and_missing_options():
    def head(in_dim: int, out_dim: int, *, dropout: float = 0.1) -> None: ...

    with pytest.raises(OptionError) as err:
        check_options(head, {"in_dim": 1, "out_dim": 2, "dropuot": 0.2})
    assert err.value.option == "dropuot" and "did you mean 'dropout'?" in err.value.fix
    with pytest.raises(OptionError) as err:
        check_options(head, {"in_dim": 1})
    assert err.value.option == "out_dim" and "missing" in err.value.problem
    with pytest.raises(OptionError) as err:
        check_options(head, {"zzz": 1}, supplied=["in_dim", "out_dim"])
    assert err.value.fix == "head takes: dropout"  # nothing near: no guess, the list
    check_options(lambda **kw: None, {"anything": 1})  # **kwargs: the callee checks


# ----------------------------------------------------------------- config files
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    config = _config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("seed: 1\n", "seed: 1\nseed: 2\n"), encoding="utf-8")
    problem = _error(_cli("train", config, "--out", tmp_path / "run"), f"{config}:3")
    assert "'seed' given twice (lines 2 and 3)" in problem
    nested = text.replace("lr: 0.02\n", "lr: 0.02\n  lr: 0.1\n")
    config.write_text(nested, encoding="utf-8")
    line = len(nested[: nested.index("  lr: 0.1")].splitlines()) + 1
    assert "'lr' given twice" in _error(
        _cli("train", config, "--out", tmp_path / "r"), f"{config}:{line}"
    )
    config.write_text(text, encoding="utf-8")
    problem = _error(
        _cli(
            "train",
            config,
            "--out",
            tmp_path / "run",
            "--set",
            "balancing={method: cagrad, c: 1, c: 2}",
        ),
        "--set balancing",
    )
    assert "'c' given twice" in problem and not (tmp_path / "run").exists()


def test_a_byte_order_mark_is_dropped_from_configs_and_data(tmp_path):
    config = _config(tmp_path)
    plain_cfg, plain_raw = read_config(config)
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    cfg, raw = read_config(config)
    assert raw == plain_raw and cfg == plain_cfg
    # data: at the start of a file and inside a CoNLL token (files concatenated)
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "train.jsonl").read_bytes())
    read = read_jsonl(jsonl, targets={"aspects": "tags"})
    assert read[0].inputs["tokens"] == ROWS[0]["tokens"]
    conll = tmp_path / "bom.conll"
    conll.write_text(
        "\ufeffEU B-ORG\nrejects O\n\n\ufeff-DOCSTART- O\n\n\ufeffGerman B-MISC\n", encoding="utf-8"
    )
    sentences = read_conll(conll)
    assert [ex.inputs["tokens"] for ex in sentences] == [["EU", "rejects"], ["German"]]


def test_seed_out_of_range_names_the_seed(tmp_path):
    config = _config(tmp_path)
    _error(_cli("train", config, "--out", tmp_path / "run", "--set", "seed=1e23"), "seed")
    with pytest.raises(ConfigError) as err:
        validate({**CONFIG, "seed": 10**23})
    assert err.value.option == "seed"


# ----------------------------------------------------------------- data files
def test_ill_formed_bio_tags_are_repaired_counted_and_noted(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(build, "_NOTED", set())
    rows = [dict(r) for r in ROWS]
    rows[0] = {**rows[0], "tags": ["I-ASP", "I-ASP", "O", "I-ASP"]}  # two entities open with I
    rows[2] = {**rows[2], "tags": ["O", "O", "I-ASP"]}
    config = _config(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="polytask.config"):
        exp = Experiment(read_config(config)[0], tmp_path)
    assert sum(exp.tag_repairs.values()) == 3  # two in the first row, one in the third
    assert {task for task, _, _ in exp.tag_repairs} == {"aspects"}
    assert "read as B-X (IOB2 repair)" in caplog.text and "tasks.aspects:" in caplog.text
    tags = [ex.targets["aspects"] for s in exp.sources.values() for ex in s.train + s.val + s.test]
    assert ["B-ASP", "I-ASP", "O", "B-ASP"] in tags and ["O", "O", "B-ASP"] in tags
    assert not any(t[0].startswith("I-") or "O I-" in " ".join(t) for t in tags)


@pytest.mark.parametrize("damage", ["truncated_gz", "directory", "not_utf8"])
def test_an_unreadable_data_file_is_one_line_naming_it(tmp_path, damage):
    config = _config(tmp_path)
    data = tmp_path / "train.jsonl"
    if damage == "truncated_gz":
        target = tmp_path / "train.jsonl.gz"
        target.write_bytes(gzip.compress(data.read_bytes())[:40])
    elif damage == "directory":
        target = tmp_path / "folder"
        target.mkdir()
    else:
        target = tmp_path / "latin1.jsonl"
        target.write_bytes(data.read_bytes().replace(b"good", b"g\xf6od"))
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg["data"]["sources"]["reviews"]["train"] = target.name
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    _error(_cli("train", config, "--out", tmp_path / "run"), str(target))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------- predict input
@pytest.mark.parametrize(
    "name, content, line, problem",
    [
        ("a.jsonl", b'{"tokens": "a string"}\n', ":1", "'tokens' is a str, not a list of strings"),
        ("b.jsonl", b'{"text": null}\n', ":1", "'text' is null, not a string"),
        ("c.jsonl", b"[1, 2]\n", ":1", "a JSON list, not an object"),
        ("d.jsonl", b'{"tokens": []}\n', ":1", "'tokens' is empty"),
        ("e.jsonl", b'{"words": ["a"]}\n', ":1", "no 'tokens' or 'text' field"),
        ("f.jsonl", b'{"text": "ok"}\n{"text": 3}\n', ":2", "'text' is 3, not a string"),
        ("g.jsonl", b"\n\n", "", "holds no inputs"),
        ("h.txt", b"", "", "holds no inputs"),
        ("i.csv", b"text\ngood\n\n", "", None),
        ("j.csv", b"text,id\n,1\n", ":2", "column 'text' is empty"),
        ("k.txt", b"g\xf6od\n", "", "not UTF-8 text"),
        (
            "l.jsonl.gz",
            gzip.compress(b'{"text": "good screen"}\n', mtime=0)[:25],
            "",
            "cannot read it",
        ),
    ],
)
def test_bad_predict_input_is_one_line_and_the_run_is_untouched(
    finished, tmp_path, name, content, line, problem
):
    before = snapshot(finished)
    path = tmp_path / name
    path.write_bytes(content)
    result = _cli("predict", finished, path)
    if problem is None:  # a blank line at the end of a CSV is not an input
        assert result.exit_code == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1
    else:
        assert problem in _error(result, f"{path}{line}")
    assert snapshot(finished) == before


def test_predict_reads_a_bom_and_gzip_like_plain_text(finished, tmp_path):
    plain = tmp_path / "in.jsonl"
    plain.write_text('{"text": "good screen"}\n{"tokens": ["bad", "battery"]}\n', "utf-8")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    packed = tmp_path / "in.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    outputs = [_cli("predict", finished, p) for p in (plain, bom, packed)]
    assert all(r.exit_code == 0 for r in outputs), [r.stderr for r in outputs]
    assert outputs[0].stdout == outputs[1].stdout == outputs[2].stdout
    assert len(outputs[0].stdout.splitlines()) == 2
