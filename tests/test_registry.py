"""One registry idiom: names, import paths checked before anything is called, ``polytask list``."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from polytask.balancing import METHODS, Balancer, FixedWeights
from polytask.cli import REGISTRIES, app
from polytask.config import ConfigError, Experiment, validate
from polytask.data import FORMATS, SAMPLERS
from polytask.errors import OptionError
from polytask.nn import ENCODERS
from polytask.registry import Registry, describe
from polytask.sharing import ARCHITECTURES, TASK_LAYERS
from polytask.tasks import KINDS

ALL = {
    "methods": METHODS,
    "kinds": KINDS,
    "encoders": ENCODERS,
    "architectures": ARCHITECTURES,
    "task-layers": TASK_LAYERS,
    "samplers": SAMPLERS,
    "formats": FORMATS,
}


class Base:
    """A base class."""


class Child(Base):
    """A child.

    More text.
    """


def test_names_resolve_and_register() -> None:
    reg: Registry[type[Base]] = Registry("thing", base=Base, builtins={"b": Base})
    assert reg.names() == ["b"] and reg.resolve("b") is Base and "b" in reg and len(reg) == 1
    assert reg.resolve("test_registry:Child") is Child and "test_registry:Child" not in reg
    assert reg.register("c", Child) is Child and reg.names() == ["b", "c"]
    reg["d"] = Child
    assert dict(reg) == {"b": Base, "c": Child, "d": Child}
    del reg["d"]
    assert reg.describe("c") == "A child." and describe(object()) != "" and describe(None) == ""


@pytest.mark.parametrize(
    "name, problem",
    [
        ("x", "unknown thing 'x'"),
        ("test_registry:Nope", "cannot import 'test_registry:Nope'"),
        ("polytask.nope:X", "cannot import 'polytask.nope:X'"),
        ("test_registry:ALL", "'test_registry:ALL' is not a subclass of test_registry.Base"),
    ],
)
def test_errors_carry_the_option_and_the_names(name: str, problem: str) -> None:
    reg = Registry("thing", base=Base, builtins={"b": Base, "a": Child}, option="kind")
    with pytest.raises(OptionError) as err:
        reg.resolve(name)
    assert err.value.option == "kind" and err.value.problem.startswith(problem)
    assert "['a', 'b']" in err.value.fix


def test_only_entries_of_the_kind_are_registered() -> None:
    reg: Registry[Any] = Registry("thing", base=Base)
    for name, obj in (("x", int), ("x", Child()), ("a:b", Child), ("", Child)):
        with pytest.raises(OptionError):
            reg.register(name, obj)
    assert reg.names() == []
    with pytest.raises(TypeError, match="exactly one"):
        Registry("thing")
    with pytest.raises(TypeError, match="expects"):
        Registry("thing", check=callable)


def test_a_predicate_where_no_base_class_fits() -> None:
    reg: Registry[Any] = Registry(
        "factory",
        check=lambda f: getattr(f, "is_factory", False),
        expects="a function marked is_factory",
    )

    def make() -> int:
        return 1

    make.is_factory = True  # type: ignore[attr-defined]
    reg.register("make", make)
    with pytest.raises(OptionError, match="is not a function marked is_factory"):
        reg.resolve("os:getcwd")


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``os.system`` and ``builtins.print`` replaced by functions that record their calls."""
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(("system", a)))
    monkeypatch.setattr(builtins, "print", lambda *a, **k: calls.append(("print", a)))
    return calls


@pytest.mark.parametrize("kind", list(ALL))
@pytest.mark.parametrize("path", ["os:system", "builtins:print", "polytask.registry:Registry"])
def test_every_registry_refuses_what_is_not_its_kind_without_calling_it(
    kind: str, path: str, spies: list[Any]
) -> None:
    with pytest.raises(OptionError) as err:
        ALL[kind].resolve(path)
    assert "is not" in err.value.problem and str(ALL[kind].names()) in err.value.fix
    assert spies == []


def test_a_config_naming_a_function_is_refused_before_it_is_called(
    tmp_path: Path, spies: list[Any]
) -> None:
    (tmp_path / "rows.jsonl").write_text('{"tokens": ["a"], "label": "x"}\n' * 4, encoding="utf-8")
    raw: dict[str, Any] = {
        "tasks": {"t": {"kind": "classification", "labels": ["x", "y"]}},
        "data": {
            "sources": {
                "rows": {"format": "jsonl", "train": "rows.jsonl", "tasks": {"t": "label"}}
            },
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        "model": {"encoder": {"type": "bilstm", "embed_dim": 4, "hidden": 4, "layers": 1}},
        "balancing": {"method": "os:system"},
    }
    with pytest.raises(ConfigError) as err:
        Experiment(validate(raw), tmp_path).build_method()
    assert err.value.where == "balancing.method"
    assert err.value.problem == "'os:system' is not a subclass of polytask.balancing.Balancer"
    for key, where in (("sharing", "model.sharing"), ("encoder", "model.encoder.type")):
        bad = {**raw, "balancing": {}, "model": {**raw["model"]}}
        if key == "sharing":
            bad["model"]["sharing"] = "builtins:print"
        else:
            bad["model"]["encoder"] = {"type": "builtins:print"}
        with pytest.raises(ConfigError) as err:
            Experiment(validate(bad), tmp_path).build_model()
        assert err.value.where == where
    bad = {**raw, "data": {"sources": {"rows": {"format": "os:system", "train": "rows.jsonl"}}}}
    with pytest.raises(ConfigError) as err:
        Experiment(validate(bad), tmp_path)
    assert err.value.where == "data.sources.rows.format"
    assert spies == []


def test_registered_methods_are_made_by_name() -> None:
    class Twice(FixedWeights):
        def __init__(self) -> None:
            super().__init__({}, default=2.0)

    METHODS.register("twice_test", Twice)
    try:
        from polytask import balancing

        assert "twice_test" in balancing.available()
        assert isinstance(balancing.make("twice_test"), Twice)
    finally:
        del METHODS["twice_test"]
    assert issubclass(METHODS.resolve("polytask.balancing.fixed:Mean"), Balancer)


@pytest.mark.parametrize("kind", list(ALL))
def test_polytask_list_prints_each_registry(kind: str) -> None:
    assert kind in REGISTRIES
    result = CliRunner().invoke(app, ["list", kind, "--names"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ALL[kind].names()
    result = CliRunner().invoke(app, ["list", kind])
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ALL[kind].names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # a description each


def test_polytask_list_names_the_kinds() -> None:
    result = CliRunner().invoke(app, ["list", "heads"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: KIND: unknown kind 'heads'; fix: use one of methods, kinds, encoders, "
        "architectures, task-layers, samplers, formats"
    )
