"""Checkpoints: atomic writes, clear errors on corrupt or mismatched files, no pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors, weights

from polytask.engine import (
    CheckpointError,
    Trainer,
    TrainerConfig,
    load_checkpoint,
    save_checkpoint,
)
from polytask.engine import checkpoint as ckpt


def _model(seed: int = 0, hidden: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)
    )


def _model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def _trained_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).pow(2).sum().backward()
    opt.step()
    return opt


def test_round_trip_of_weights_optimizer_and_state(tmp_path) -> None:
    model = _model()
    opt = _trained_optimizer(model)
    save_checkpoint(
        tmp_path / "last",
        model=model,
        optimizer=opt,
        state={"step": 7, "history": [{"a": 1.5}]},
        extra_tensors={"balancer.w": torch.tensor([1.0, 2.0])},
    )
    tensors, meta = load_checkpoint(tmp_path / "last")
    assert_same_tensors(_model_tensors(tensors), weights(model))
    assert meta["state"] == {"step": 7, "history": [{"a": 1.5}]}
    assert torch.equal(tensors["balancer.w"], torch.tensor([1.0, 2.0]))
    fresh = _model(seed=1)
    ckpt.restore_model(fresh, tensors)
    assert_same_tensors(weights(fresh), weights(model))
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    ckpt.restore_optimizer(opt2, tensors, meta)
    for p, q in zip(model.parameters(), fresh.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt2.state[q][key]), key
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temporary or old copies left


def _save(path: Path, model: torch.nn.Module) -> None:
    save_checkpoint(path, model=model, state={"step": 1})


def test_a_failure_while_writing_tensors_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
) -> None:
    first = _model(seed=0)
    _save(tmp_path / "last", first)
    real_save = ckpt.save_file

    def torn(tensors, filename, *args, **kwargs):
        real_save(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as f:  # half a file, then the "crash"
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", torn)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "last", _model(seed=1))
    tensors, _ = load_checkpoint(tmp_path / "last")
    assert_same_tensors(_model_tensors(tensors), weights(first))
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_a_failure_while_writing_state_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    first = _model(seed=0)
    _save(tmp_path / "last", first)

    def fail(path, text):
        Path(path).write_text(text[: len(text) // 2])
        raise OSError("killed")

    monkeypatch.setattr(ckpt, "atomic_write_text", fail)
    with pytest.raises(OSError):
        _save(tmp_path / "last", _model(seed=1))
    tensors, meta = load_checkpoint(tmp_path / "last")
    assert_same_tensors(_model_tensors(tensors), weights(first))
    assert meta["state"] == {"step": 1}


def _fail_second_rename(monkeypatch) -> None:
    """Let ``last -> .last.old`` happen, fail ``tmp -> last`` (a kill between the two renames)."""
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp") and os.path.isdir(src):
            raise OSError("killed between renames")
        real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)


def test_recover_finishes_an_interrupted_swap(tmp_path, monkeypatch) -> None:
    first = _model(seed=0)
    _save(tmp_path / "last", first)
    with monkeypatch.context() as m:
        _fail_second_rename(m)
        with pytest.raises(OSError):
            _save(tmp_path / "last", _model(seed=1))
    assert not (tmp_path / "last").exists() and (tmp_path / ".last.old").is_dir()
    ckpt.recover(tmp_path / "last")
    assert sorted(os.listdir(tmp_path)) == ["last"]
    tensors, _ = load_checkpoint(tmp_path / "last")
    assert_same_tensors(_model_tensors(tensors), weights(first))
    ckpt.recover(tmp_path / "last")  # nothing to do: a no-op
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_saving_over_an_interrupted_swap_never_loses_the_only_copy(tmp_path, monkeypatch) -> None:
    """State after a kill between the renames: only ``.last.old``. A new save that fails too
    must leave that copy readable."""
    first = _model(seed=0)
    _save(tmp_path / "last", first)
    os.replace(tmp_path / "last", tmp_path / ".last.old")
    with monkeypatch.context() as m:
        _fail_second_rename(m)
        with pytest.raises(OSError):
            _save(tmp_path / "last", _model(seed=1))
    tensors, _ = load_checkpoint(tmp_path / "last")
    assert_same_tensors(_model_tensors(tensors), weights(first))


def test_corrupt_or_missing_files_raise_checkpoint_error_with_the_path(tmp_path) -> None:
    _save(tmp_path / "last", _model())
    tensors_file = tmp_path / "last" / "tensors.safetensors"
    data = tensors_file.read_bytes()
    tensors_file.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=str(tensors_file).replace(".", r"\.") + ".*corrupt"):
        load_checkpoint(tmp_path / "last")
    tensors_file.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "last")

    _save(tmp_path / "b", _model())
    (tmp_path / "b" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"b/state\.json.*corrupt"):
        load_checkpoint(tmp_path / "b")
    (tmp_path / "b" / "state.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nowhere'}.*not a polytask checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_a_checkpoint_that_does_not_fit_the_model(tmp_path) -> None:
    _save(tmp_path / "last", _model(hidden=4))
    tensors, _ = load_checkpoint(tmp_path / "last")
    with pytest.raises(
        CheckpointError, match=f"{tmp_path / 'last'}: checkpoint does not fit the model"
    ):
        ckpt.restore_model(_model(hidden=5), tensors, where=str(tmp_path / "last"))
    bigger = torch.nn.Sequential(*_model(hidden=4), torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="does not fit"):
        ckpt.restore_model(bigger, tensors)


def test_resume_into_another_model_raises_checkpoint_error(zh, make_model, tmp_path) -> None:
    cfg = TrainerConfig(epochs=1, batch_size=16, threads=1)
    Trainer(make_model(), zh.tasks, config=cfg).fit(
        zh.sources(n=16), zh.val_of(), zh.collate, run_dir=tmp_path
    )
    other = make_model(tasks=["sentiment"])
    with pytest.raises(CheckpointError, match="does not fit the model"):
        Trainer(other, {"sentiment": zh.tasks["sentiment"]}, config=cfg).fit(
            zh.sources("reviews", n=16),
            zh.val_of("reviews"),
            zh.collate,
            run_dir=tmp_path,
            resume=True,
        )


def _looks_pickled(data: bytes) -> bool:
    return (
        len(data) > 2 and data[0] == 0x80 and 2 <= data[1] <= 5 and data.rstrip().endswith(b".")
    ) or data.startswith(b"PK\x03\x04")  # torch.save's zip container


def test_a_run_directory_holds_no_pickle(zh, make_model, tmp_path) -> None:
    cfg = TrainerConfig(epochs=2, batch_size=16, threads=1, checkpoint_every=2, log_every=1)
    Trainer(make_model(), zh.tasks, config=cfg).fit(
        zh.sources(n=32), zh.val_of(), zh.collate, run_dir=tmp_path
    )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {
        "best/tensors.safetensors",
        "best/state.json",
        "checkpoints/last/tensors.safetensors",
        "checkpoints/last/state.json",
        "train_log.csv",
        "metrics.csv",
    } <= names
    for p in files:
        assert p.suffix not in {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"}, p
        assert not _looks_pickled(p.read_bytes()), p
        if p.suffix == ".json":
            json.loads(p.read_text())


def test_balancer_tensors_go_to_safetensors_not_json() -> None:
    """A method's state with tensors (DB-MTL's gradient averages) is split out of state.json."""
    from polytask.engine.checkpoint import join_tensors, split_tensors

    state = {
        "ema": {"a": torch.arange(4.0), "b": torch.ones(2, 2)},
        "step": 3,
        "hist": [torch.zeros(1), 1.5],
    }
    structure, tensors = split_tensors(state, "balancer")
    assert set(tensors) == {"balancer.ema.a", "balancer.ema.b", "balancer.hist.0"}
    import json

    json.dumps(structure)  # JSON-able
    back = join_tensors(json.loads(json.dumps(structure)), tensors)
    assert back["step"] == 3 and back["hist"][1] == 1.5
    assert torch.equal(back["ema"]["a"], state["ema"]["a"]) and torch.equal(
        back["hist"][0], state["hist"][0]
    )
