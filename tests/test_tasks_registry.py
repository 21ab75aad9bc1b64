import pytest

from polytask._imports import import_object
from polytask.errors import OptionError
from polytask.tasks import KINDS, Classification, Multilabel, Regression, Tagging, make_kind


def test_make_kind_by_name():
    assert set(KINDS) == {
        "classification",
        "multilabel",
        "regression",
        "tagging",
        "token_classification",
    }
    kind = make_kind("tagging", labels=["O", "B-X", "I-X"], crf=True)
    assert isinstance(kind, Tagging) and kind.crf and kind.kind == "tagging"
    assert isinstance(make_kind("multilabel", labels=["a"]), Multilabel)
    assert make_kind("regression", dim=2).output_size == 2
    for name, cls in KINDS.items():
        assert cls.kind == name


def test_make_kind_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"unknown task kind 'ner'.*'classification'.*'tagging'"):
        make_kind("ner")


def test_make_kind_bad_options():
    with pytest.raises(OptionError, match="did you mean 'labels'") as info:
        make_kind("classification", label=["a", "b"])
    assert info.value.option == "label"


def test_make_kind_import_path():
    kind = make_kind("polytask.tasks.regression:Regression", loss="l1")
    assert isinstance(kind, Regression) and kind.loss_name == "l1"
    with pytest.raises(ValueError, match="not a subclass"):
        make_kind("polytask._imports:import_object")


def test_import_object():
    assert import_object("polytask.tasks:Classification") is Classification
    assert import_object("polytask.tasks:Classification.kind") == "classification"
    with pytest.raises(ValueError, match="'package.module:Name'"):
        import_object("polytask.tasks.Classification")
    with pytest.raises(ValueError, match="cannot import module 'polytask.nope'"):
        import_object("polytask.nope:X")
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        import_object("polytask.tasks:Nope")
