"""A config is code only where the user says so (issue 13, point 2).

- every import path a config names resolves only to its kind (checked before anything is
  called): ``os:system`` in any field is one line and exit 2, and ``os.system`` never runs;
- ``--no-imports`` (every command that reads a config) refuses each import path before
  importing it: a module whose import writes a marker file is never imported;
- the run name is a plain name (no separators, ``..``, absolute paths);
- a transformer folder holding only ``pytorch_model.bin`` is refused before ``torch.load``.

Every CLI case asserts exit code 2 and the field the one-line error names.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from polytask import balancing
from polytask.cli import app
from polytask.errors import OptionError
from polytask.registry import imports_allowed, no_imports

ROWS = [
    {"tokens": ["good", "battery"], "label": "pos"},
    {"tokens": ["dim", "screen"], "label": "neg"},
] * 6


def _config(tmp_path: Path, **changes: Any) -> Path:
    """A tiny one-task JSONL config (``changes``: dotted keys set to values)."""
    (tmp_path / "rows.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8"
    )
    cfg: dict[str, Any] = {
        "name": "trust",
        "tasks": {"t": {"kind": "classification"}},
        "data": {
            "sources": {
                "rows": {"format": "jsonl", "train": "rows.jsonl", "tasks": {"t": "label"}}
            },
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 4, "channels": [4]}},
        "trainer": {"epochs": 1, "batch_size": 4, "threads": 1, "progress": False},
    }
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _fails(args: list[str], field: str) -> str:
    """The CLI exits 2 with one line ``error: <field>: ...``; returns that line."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.output.startswith(f"error: {field}: "), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    return result.output


#: every config field that names a pluggable piece (value ``{}`` = the import path)
FIELDS = {
    "tasks.t.kind": {},
    "data.sources.rows.format": {},
    "model.encoder.type": {},
    "model.sharing": {},
    "model.task_layers.t.type": {"model.sharing": "hierarchical"},
    "model.heads.t.type": {},
    "balancing.method": {"balancing.command": "touch {marker}"},
    "sampler.type": {},
}


@pytest.fixture
def system_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``os.system`` replaced by a spy that records its calls."""
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a))
    return calls


# ------------------------------------------------------------------ only the expected kind
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_function_named_in_any_field_is_refused_uncalled(
    field: str, tmp_path: Path, system_calls: list[Any]
) -> None:
    marker = tmp_path / "ran"
    extra = {k: v.format(marker=marker) for k, v in FIELDS[field].items()}
    config = _config(tmp_path, **{field: "os:system"}, **extra)
    line = _fails(["train", str(config), "--out", str(tmp_path / "run")], field)
    assert "'os:system' is not" in line
    assert system_calls == [] and not marker.exists() and not (tmp_path / "run").exists()


def test_balancing_make_checks_the_kind_before_calling(system_calls: list[Any]) -> None:
    with pytest.raises(OptionError) as err:
        balancing.make("os:system", command="echo hacked")
    assert err.value.option == "method"
    assert system_calls == []


# ------------------------------------------------------------------ --no-imports
def _marker_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on ``sys.path`` whose import writes a marker file and that defines a valid
    balancing method ``Trusted``; returns its name and the marker."""
    name = f"trust_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "from polytask.balancing import Mean\n\n\n"
        "class Trusted(Mean):\n    '''A plain mean.'''\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name, marker


@pytest.mark.parametrize("field", list(FIELDS))
def test_no_imports_refuses_every_field_before_importing(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, marker = _marker_module(tmp_path, monkeypatch)
    extra = {k: v for k, v in FIELDS[field].items() if k == "model.sharing"}
    config = _config(tmp_path, **{field: f"{module}:Trusted"}, **extra)
    line = _fails(["train", str(config), "--out", str(tmp_path / "run"), "--no-imports"], field)
    assert "refused by --no-imports" in line
    assert not marker.exists() and module not in sys.modules
    assert imports_allowed()  # the switch is the command's only


@pytest.mark.parametrize("command", ["compare", "sweep", "sweep --methods"])
def test_no_imports_on_compare_and_sweep(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, marker = _marker_module(tmp_path, monkeypatch)
    path = f"{module}:Trusted"
    config = _config(tmp_path, **({} if "--methods" in command else {"balancing.method": path}))
    args = [command.split()[0], str(config), "--out", str(tmp_path / "out"), "--no-imports"]
    args += ["--methods", path] if "--methods" in command else []
    args += ["--grid", "balancing.weights.t=0.5,1"] if command == "sweep" else []
    _fails(args, "--methods" if "--methods" in command else "balancing.method")
    assert not marker.exists() and module not in sys.modules


def test_no_imports_on_eval_and_predict_of_a_run_naming_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, marker = _marker_module(tmp_path, monkeypatch)
    config = _config(tmp_path, **{"balancing.method": f"{module}:Trusted"})
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(run_dir), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert marker.exists()  # trusted: the module was imported
    marker.unlink()
    del sys.modules[module]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("good screen\n", encoding="utf-8")
    _fails(["eval", str(run_dir), "--no-imports"], "balancing.method")
    _fails(["predict", str(run_dir), str(inputs), "--no-imports"], "balancing.method")
    assert not marker.exists() and module not in sys.modules


def test_no_imports_keeps_registered_names_and_is_scoped() -> None:
    with no_imports():
        assert not imports_allowed()
        assert balancing.METHODS.resolve("mean") is balancing.Mean
        with pytest.raises(OptionError) as err:
            balancing.METHODS.resolve("polytask.balancing.fixed:Mean")
        assert err.value.option == "method" and "--no-imports" in err.value.problem
    assert imports_allowed()
    with no_imports(False):
        assert imports_allowed()


# ------------------------------------------------------------------ run names
@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "a/b", "a\\b", "..", "."])
def test_the_run_name_is_a_plain_name(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = _config(tmp_path, name=name)
    _fails(["train", str(config)], "name")
    _fails(["train", str(_config(tmp_path)), "--set", f"name={name}"], "name")
    assert list(work.iterdir()) == [] and not (tmp_path / "escape").exists()


# ------------------------------------------------------------------ safetensors only
def test_a_pickled_transformer_folder_is_refused_before_torch_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    try:
        from polytask.nn import minilm_path

        source = Path(minilm_path())
    except ImportError as err:
        pytest.skip(f"needs the bundled MiniLM: {err}")
    folder = tmp_path / "pickled"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    loads: list[Any] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    config = _config(tmp_path, **{"model.encoder": {"type": "transformer", "path": str(folder)}})
    line = _fails(["train", str(config), "--out", str(tmp_path / "run")], "model.encoder.path")
    assert "pytorch_model.bin" in line and "safetensors" in line
    assert loads == []
