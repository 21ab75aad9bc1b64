"""Run directories with integrity (issue 13, point 1, and the I/O errors of point 4).

A run directory is written only after validation, holds a manifest that every reader checks,
and is never replaced by accident: each case below asserts the exit code, the one-line
error's field, and that the finished run's files are byte-identical afterwards.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from shared_data import TRAIN_XML, laptop_rows
from typer.testing import CliRunner

import polytask
from polytask.cli import app
from polytask.engine import checkpoint as ckpt
from polytask.engine.checkpoint import CheckpointError
from polytask.errors import OptionError, PolytaskError

TAGS = ["O", "B-ASP", "I-ASP"]
CONFIG = {
    "name": "integrity",
    "seed": 1,
    "tasks": {
        "aspects": {"kind": "tagging", "labels": TAGS},
        "sentiment": {"kind": "classification"},
    },
    "data": {
        "sources": {
            "laptops": {
                "format": "jsonl",
                "train": "train.jsonl",
                "tasks": {"aspects": "tags", "sentiment": "sentiment"},
            }
        }
    },
    "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
    "trainer": {"epochs": 2, "batch_size": 16, "lr": 0.01, "threads": 1, "progress": False},
}


def _write_config(tmp: Path, **trainer: object) -> Path:
    cfg = dict(CONFIG, trainer=dict(CONFIG["trainer"], **trainer))
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (config, data, run directory), trained once for the module."""
    tmp = tmp_path_factory.mktemp("integrity")
    rows = laptop_rows(TRAIN_XML, 80)
    (tmp / "train.jsonl").write_text(
        "".join(
            json.dumps({k: r[k] for k in ("tokens", "tags", "sentiment")}) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    config = _write_config(tmp)
    result = _cli("train", str(config), "--out", str(tmp / "run"), "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return tmp, config, tmp / "run"


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _copy(finished, tmp_path: Path) -> Path:
    """A copy of the finished run, config and data under ``tmp_path`` (to damage or reuse)."""
    src, _, run = finished
    shutil.copy(src / "train.jsonl", tmp_path / "train.jsonl")
    shutil.copy(src / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _error(result, field: str) -> str:
    """The one error line, checked to start with ``field``; returns the problem and fix."""
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {field}: "), line
    return line.removeprefix(f"error: {field}: ")


def _error_of(fn) -> PolytaskError:
    with pytest.raises(PolytaskError) as err:
        fn()
    return err.value


# ------------------------------------------------------------------ the contract
def test_a_run_holds_a_manifest_of_its_files(finished):
    _, _, run = finished
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["complete"] is True
    assert manifest["labels"] == json.loads((run / "run.json").read_text())["labels"]
    assert set(manifest["files"]) == {
        "config.yaml",
        "run.json",
        "vocab.json",
        "results.json",
        "best/tensors.safetensors",
        "checkpoints/last/tensors.safetensors",
    }
    for name, digest in manifest["files"].items():
        assert ckpt.sha256_file(run / name) == digest, name


def test_files_are_0644_and_directories_0755(finished):
    _, _, run = finished
    mask = ckpt.umask()
    for path in [run, *run.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644) & ~mask, (path, oct(mode))
    tmp = run.parent / "atomic.txt"
    ckpt.atomic_write_text(tmp, "x")  # mkstemp would give 0600
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o644 & ~mask


# ------------------------------------------------------------------ train into a run
def test_train_into_an_existing_run_refuses(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    problem = _error(_cli("train", str(tmp_path / "config.yaml"), "--out", str(run)), "--out")
    assert "already holds a run" in problem and "--overwrite" in problem
    assert snapshot(run) == before


def test_a_failed_overwrite_leaves_the_run_whole(finished, tmp_path):
    """A typo found while building, and a crash while training into the staging directory:
    the finished run stays byte-identical, and no staging directory is left."""
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    config = str(tmp_path / "config.yaml")
    typo = _cli(
        "train", config, "--out", str(run), "--overwrite", "--set", "model.encoder.chanels=[4]"
    )
    assert typo.exit_code == 2 and typo.stderr.startswith("error: model.encoder")  # its field
    assert snapshot(run) == before

    disk_full = OSError(28, "No space left on device")

    def full(*args, **kwargs):
        raise disk_full

    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setattr(ckpt, "save_file", full)
        result = _cli("train", config, "--out", str(run), "--overwrite")
    assert "No space left on device" in _error(result, "--out")
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "run", "train.jsonl"]


def test_overwrite_replaces_the_run_and_its_logs(finished, tmp_path):
    run = _copy(finished, tmp_path)
    old = snapshot(run)
    result = _cli(
        "train", str(tmp_path / "config.yaml"), "--out", str(run), "--overwrite", "--set", "seed=7"
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 7
    assert snapshot(run)["best/tensors.safetensors"] != old["best/tensors.safetensors"]
    with open(run / "metrics.csv", newline="") as f:  # one run: each epoch's criterion once
        epochs = [r["epoch"] for r in csv.DictReader(f) if r["metric"] == "criterion"]
    assert epochs == ["0", "1"]
    polytask.load(run)  # verified against its new manifest
    assert stat.S_IMODE(run.stat().st_mode) == 0o755 & ~ckpt.umask()  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "run", "train.jsonl"]


def test_a_fresh_fit_into_a_directory_starts_new_logs(zh, make_model, tmp_path):
    """The engine too: ``Trainer.fit(run_dir=...)`` without resume never appends to the logs
    of an earlier fit."""
    from polytask.engine import Trainer, TrainerConfig

    cfg = TrainerConfig(epochs=1, batch_size=16, threads=1, log_every=1)
    for _ in range(2):
        Trainer(make_model(), zh.tasks, config=cfg).fit(
            zh.sources(n=32), zh.val_of(), zh.collate, run_dir=tmp_path
        )
    with open(tmp_path / "train_log.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[0] == 1
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f) if r["metric"] == "criterion"] == ["0"]


def test_a_second_writer_is_refused_with_the_holders_pid(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    fd = os.open(run / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process holds it
        config = str(tmp_path / "config.yaml")
        for flags in (["--resume"], ["--overwrite"]):
            problem = _error(_cli("train", config, "--out", str(run), *flags), "--out")
            assert "another polytask process" in problem
            holder = (run / ".lock").read_text().strip()
            assert holder.isdigit() and f"(PID {holder})" in problem
    finally:
        os.close(fd)
    assert snapshot(run) == before


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(
    finished, tmp_path, caplog
):
    run = _copy(finished, tmp_path)
    for name in ("checkpoints", "best", "results.json", "metrics.csv"):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    manifest = json.loads((run / "manifest.json").read_text())  # as written at the start
    manifest.update(
        complete=False, files={k: v for k, v in manifest["files"].items() if (run / k).exists()}
    )
    (run / "manifest.json").write_text(json.dumps(manifest))
    config = str(tmp_path / "config.yaml")
    # another config is still refused: the run was started with this one
    problem = _error(
        _cli("train", config, "--out", str(run), "--resume", "--set", "seed=99"), "--resume"
    )
    assert "seed" in problem and not (run / "checkpoints").exists()
    result = _cli("train", config, "--out", str(run), "--resume")
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "starts it again from step 0" in caplog.text
    assert (run / "checkpoints" / "last").is_dir() and (run / "results.json").is_file()
    assert _cli("eval", str(run)).exit_code == 0


def test_resume_without_a_checkpoint_refuses(finished, tmp_path):
    run = _copy(finished, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    config = str(tmp_path / "config.yaml")
    problem = _error(_cli("train", config, "--out", str(run), "--resume"), "--resume")
    assert "no checkpoint" in problem
    assert snapshot(run) == before
    problem = _error(_cli("train", config, "--out", str(tmp_path / "new"), "--resume"), "--resume")
    assert "no run to resume" in problem and not (tmp_path / "new").exists()
    # --overwrite says to start again
    result = _cli("train", config, "--out", str(run), "--resume", "--overwrite")
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert (run / "checkpoints" / "last").is_dir()


def test_resume_with_another_config_names_the_key(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    result = _cli(
        "train",
        str(tmp_path / "config.yaml"),
        "--out",
        str(run),
        "--resume",
        "--set",
        "trainer.lr=0.5",
    )
    assert _error(result, "--resume").startswith("trainer.lr is 0.5 but the run")
    assert snapshot(run) == before


def test_resume_of_a_finished_run_cleans_stale_leftovers(finished, tmp_path):
    """A kill leaves temporary files in the run and a staging directory beside it: the next
    start removes them; the finished run is read back, not trained again."""
    run = _copy(finished, tmp_path)
    (run / ".config.yaml.abc.tmp").write_text("half")
    (run / "checkpoints" / ".last.xyz.tmp").mkdir()
    stale = tmp_path / ".run.staging-dead.tmp"
    stale.mkdir()
    (stale / ".lock").write_text("999999\n")
    before = snapshot(run)
    result = _cli("train", str(tmp_path / "config.yaml"), "--out", str(run), "--resume")
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert not stale.exists()
    after = snapshot(run)
    new_events = {k for k in after if k.startswith("tensorboard/")} - set(before)
    assert set(after) - new_events == set(before) - {".config.yaml.abc.tmp"}
    for name in ("best/tensors.safetensors", "checkpoints/last/tensors.safetensors", "config.yaml"):
        assert after[name] == before[name], name


def test_a_failed_new_run_leaves_no_directory(finished, tmp_path, monkeypatch):
    _copy(finished, tmp_path)
    from polytask.engine.trainer import Trainer

    def fails(self, *args, **kwargs):
        raise OptionError("val", "no validation labels", "give some")

    monkeypatch.setattr(Trainer, "fit", fails)
    out = tmp_path / "new"
    result = _cli("train", str(tmp_path / "config.yaml"), "--out", str(out))
    assert "no validation labels" in _error(result, "val")
    assert not out.exists()


# ------------------------------------------------------------------ --out and -o
def test_out_that_is_a_file(finished, tmp_path):
    _copy(finished, tmp_path)
    (tmp_path / "file").write_text("mine")
    result = _cli("train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "file"))
    assert "is a file" in _error(result, "--out")
    assert (tmp_path / "file").read_text() == "mine"


def test_compare_and_sweep_out_that_is_a_file(finished, tmp_path):
    _copy(finished, tmp_path)
    target = tmp_path / "file"
    target.write_text("mine")
    config = str(tmp_path / "config.yaml")
    result = _cli("sweep", config, "--out", str(target), "--methods", "mean")
    assert "is a file" in _error(result, "--out")
    result = _cli("compare", config, "--out", str(target))
    assert "is a file" in _error(result, "--out")
    assert target.read_text() == "mine"


def test_compare_and_sweep_with_a_bad_config_create_no_out(finished, tmp_path):
    _copy(finished, tmp_path)
    config = str(tmp_path / "config.yaml")
    out = tmp_path / "new"
    bad = ("--set", "model.encoder.chanels=[8]")
    _error(_cli("compare", config, "--out", str(out), *bad), "model.encoder.chanels")
    _error(
        _cli("sweep", config, "--out", str(out), "--methods", "mean", *bad), "model.encoder.chanels"
    )
    # every trial is checked before the first trains: a bad name in --methods trains nothing
    problem = _error(
        _cli("sweep", config, "--out", str(out), "--methods", "mean,meen"), "--methods"
    )
    assert "did you mean 'mean'?" in problem
    assert not out.exists()


def test_out_that_cannot_be_written(finished, tmp_path):
    _copy(finished, tmp_path)
    result = _cli("train", str(tmp_path / "config.yaml"), "--out", "/sys/polytask-run")
    assert "cannot write the run directory" in _error(result, "--out")


def test_out_holding_other_files_refuses(finished, tmp_path):
    _copy(finished, tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for flags in ([], ["--overwrite"]):
        result = _cli(
            "train", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "mine"), *flags
        )
        assert "not a polytask run" in _error(result, "--out")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_predict_output_into_a_missing_directory(finished, tmp_path):
    _, _, run = finished
    before = snapshot(run)
    (tmp_path / "in.txt").write_text("The screen is great\n")
    target = tmp_path / "missing" / "out.jsonl"
    result = _cli("predict", str(run), str(tmp_path / "in.txt"), "-o", str(target))
    assert "does not exist" in _error(result, "--output")
    assert not target.parent.exists() and snapshot(run) == before
    result = _cli("predict", str(run), str(tmp_path / "in.txt"), "-o", str(tmp_path))
    assert "is a directory" in _error(result, "--output")


# ------------------------------------------------------------------ readers verify
def test_edited_label_order_is_caught(finished, tmp_path):
    run = _copy(finished, tmp_path)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["tasks"]["aspects"]["labels"] = list(reversed(TAGS))
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    before = snapshot(run)
    problem = _error(_cli("eval", str(run), "--json"), str(run / "config.yaml"))
    assert problem.startswith("tasks.aspects.labels is ['I-ASP', 'B-ASP', 'O'] but the run")
    err = _error_of(lambda: polytask.load(run))
    assert isinstance(err, CheckpointError) and err.option == str(run / "config.yaml")
    assert snapshot(run) == before


def test_corrupted_weights_are_caught(finished, tmp_path):
    run = _copy(finished, tmp_path)
    weights = run / "best" / "tensors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-40:-8] = b"\xff" * 32  # inside the tensors, not the header: safetensors reads it
    weights.write_bytes(bytes(data))
    before = snapshot(run)
    (tmp_path / "in.txt").write_text("The screen is great\n")
    for args in (["eval", str(run), "--json"], ["predict", str(run), str(tmp_path / "in.txt")]):
        result = _cli(*args)
        assert "corrupt" in _error(result, str(weights)) and result.stdout == ""
    assert _error_of(lambda: polytask.load(run)).option == str(weights)
    assert snapshot(run) == before


def test_a_checkpoint_records_its_own_digest(finished, tmp_path):
    """A checkpoint checks its weights on every read, manifest or not (``--resume`` of a
    killed run, single-task baselines)."""
    _, _, run = finished
    shutil.copytree(run / "checkpoints" / "last", tmp_path / "last")
    weights = tmp_path / "last" / "tensors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x7f" * 8
    weights.write_bytes(bytes(data))
    err = _error_of(lambda: ckpt.load_checkpoint(tmp_path / "last"))
    assert isinstance(err, CheckpointError) and err.option == str(weights)
    assert "SHA-256" in err.problem


def test_resume_from_corrupted_weights_refuses(finished, tmp_path):
    run = _copy(finished, tmp_path)
    weights = run / "checkpoints" / "last" / "tensors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x7f" * 8
    weights.write_bytes(bytes(data))
    before = snapshot(run)
    result = _cli("train", str(tmp_path / "config.yaml"), "--out", str(run), "--resume")
    assert "corrupt" in _error(result, str(weights))
    assert snapshot(run) == before


def test_broken_yaml_in_a_runs_config(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "config.yaml").write_text("tasks: [unclosed\n")
    before = snapshot(run)
    assert "not valid YAML" in _error(_cli("eval", str(run)), str(run / "config.yaml"))
    assert snapshot(run) == before


def test_malformed_run_json(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "run.json").write_text("{not json")
    before = snapshot(run)
    (tmp_path / "in.txt").write_text("The screen is great\n")
    result = _cli("predict", str(run), str(tmp_path / "in.txt"))
    assert "not valid JSON" in _error(result, str(run / "run.json"))
    (run / "run.json").write_text("[]")
    assert "lacks" in _error(_cli("eval", str(run)), str(run / "run.json"))
    assert snapshot(run) != before  # (the second damage) — the reads wrote nothing:
    assert {k: v for k, v in snapshot(run).items() if k != "run.json"} == {
        k: v for k, v in before.items() if k != "run.json"
    }


def test_missing_manifest(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "manifest.json").unlink()
    assert "missing" in _error(_cli("eval", str(run)), str(run / "manifest.json"))


# ------------------------------------------------------------------ sweep
def test_sweep_trials_are_reused_only_with_resume(finished, tmp_path):
    _copy(finished, tmp_path)
    config, out = str(tmp_path / "config.yaml"), str(tmp_path / "sw")
    args = [
        "sweep",
        config,
        "--out",
        out,
        "--methods",
        "mean",
        "--json",
        "--set",
        "trainer.epochs=1",
    ]
    assert _cli(*args).exit_code == 0
    trial = tmp_path / "sw" / "method_mean"
    before = snapshot(trial)
    problem = _error(_cli(*args), "--out")
    assert str(trial) in problem and "already holds a run" in problem
    assert snapshot(trial) == before
    resumed = _cli(*args, "--resume")
    assert resumed.exit_code == 0, (resumed.stderr, resumed.exception)
    for name in ("best/tensors.safetensors", "checkpoints/last/tensors.safetensors"):
        assert snapshot(trial)[name] == before[name]
