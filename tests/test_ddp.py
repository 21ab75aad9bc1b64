"""Data-parallel training across processes (gloo on the CPU): N ranks apply the update one
process applies on the same global batch, whatever the method and level, with a shard that
holds no label of a task; runs resume with another number of ranks; a killed rank ends the
job and the run resumes; two "nodes" on 127.0.0.1 train like one process.

Each test starts real processes with ``python -m torch.distributed.run`` (torchrun)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ddp_setup as setup
import pytest
import torch
from safetensors.torch import load_file
from tiny_reviews import cli, one_error, write_project

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _torchrun(*args: str, nproc: int = 2, cwd: Path | None = None, **launch: str) -> list[str]:
    opts = [f"--{k}={v}" for k, v in launch.items()] or ["--standalone"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *opts,
        f"--nproc_per_node={nproc}",
        *args,
    ]


def _run(
    cmd: list[str], cwd: Path | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------ the update of one process
def test_every_method_gives_the_update_of_one_process_on_the_global_batch(tmp_path) -> None:
    """Every balancing method at each level it supports, and gradient accumulation: after
    the whole run (12 steps, AdamW, clipping, validation and best-epoch selection) the
    weights of both ranks are identical and equal the single-process run on the same global
    batch."""
    _run(_torchrun("tests/ddp_setup.py", str(tmp_path), json.dumps(setup.CASES)), cwd=ROOT)
    train, val = setup.data()
    init = setup.model().state_dict()
    for case in setup.CASES:
        name = setup.case_name(case)
        one = setup.trainer(case, **case.get("overrides", {}))
        one.fit(train, val, setup.collate())
        ref = one.model.state_dict()
        ranks = [torch.load(tmp_path / f"{name}.rank{r}.pt") for r in (0, 1)]
        assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ref), name
        assert _max_diff(ranks[0], ref) < TOLERANCE, (name, _max_diff(ranks[0], ref))
        assert _max_diff(ref, init) > 0.1, f"{name}: training moved nothing"


def test_the_problem_has_a_shard_without_labels_of_a_task() -> None:
    """The case the criterion names: in some step, one rank's part of a source holds labels
    of ``sparse`` and the other's none (so that rank sends a zero row)."""
    from polytask.engine.distributed import World

    train, _ = setup.data()
    joint = {"method": "fixed", "level": None, "sampler": "joint"}
    loader = setup.trainer(joint).make_loader(train, setup.collate())
    worlds = [World(r, 2, r, torch.device("cpu"), None) for r in (0, 1)]  # type: ignore[arg-type]
    found = 0
    for step in loader.plan(0):
        labelled = [
            any(train["rows"][i].targets["sparse"] is not None for i in w.shard(step["rows"]))
            for w in worlds
        ]
        found += labelled[0] != labelled[1]
    assert found >= 1


# ------------------------------------------------------------ resume with other rank counts
RESUMED = [
    {"method": "famo", "level": None, "sampler": "joint", "overrides": {"checkpoint_every": 3}},
    {"method": "nash_mtl", "level": "params", "sampler": "joint",
     "overrides": {"checkpoint_every": 3}},
]  # fmt: skip


def test_a_two_rank_run_resumes_with_one_rank_and_vice_versa(tmp_path) -> None:
    """Killed at step 5 (last checkpoint: step 3): 2 ranks -> resumed by 1 process, and
    1 process -> resumed by 2 ranks; both end where an uninterrupted 1-process run ends."""
    train, val = setup.data()
    two_then_one = tmp_path / "two_then_one"
    two_then_one.mkdir()
    _run(_torchrun("tests/ddp_setup.py", str(two_then_one), json.dumps(RESUMED), "5"), cwd=ROOT)
    one_then_two = tmp_path / "one_then_two"
    one_then_two.mkdir()
    original = setup.RunLogger.log_step
    try:
        setup.crash_at(5)
        for case in RESUMED:
            with pytest.raises(setup.Crash):
                setup.trainer(case, **case["overrides"]).fit(
                    train, val, setup.collate(), run_dir=one_then_two / setup.case_name(case)
                )
    finally:
        setup.RunLogger.log_step = original  # type: ignore[method-assign]
    for folder in (two_then_one, one_then_two):  # the kill left a checkpoint at step 3
        for case in RESUMED:
            saved = folder / setup.case_name(case) / "checkpoints" / "last" / "state.json"
            assert json.loads(saved.read_text())["state"]["step"] == 3, saved
    cmd = _torchrun("tests/ddp_setup.py", str(one_then_two), json.dumps(RESUMED), "0", "resume")
    _run(cmd, cwd=ROOT)
    original_restore = setup.Trainer._restore
    try:
        restored = setup.record_restores()
        for case in RESUMED:
            name = setup.case_name(case)
            ref = setup.trainer(case, **case["overrides"])
            ref.fit(train, val, setup.collate())
            resumed = setup.trainer(case, **case["overrides"])
            del restored[:]
            resumed.fit(train, val, setup.collate(), run_dir=two_then_one / name, resume=True)
            assert restored == [3], f"{name}: 1 process did not resume from step 3: {restored}"
            assert _max_diff(resumed.model.state_dict(), ref.model.state_dict()) < TOLERANCE, name
            for rank in (0, 1):
                record = one_then_two / f"{name}.rank{rank}.restored.json"
                assert json.loads(record.read_text()) == [3], f"{name}: rank {rank} started afresh"
            by_two = torch.load(one_then_two / f"{name}.rank0.pt")
            assert _max_diff(by_two, ref.model.state_dict()) < TOLERANCE, name
    finally:
        setup.Trainer._restore = original_restore  # type: ignore[method-assign]


# ------------------------------------------------------------ the command line
def _project(folder: Path, **trainer: object) -> Path:
    opts = {"epochs": 2, "checkpoint_every": 2} | trainer
    return write_project(folder, trainer=opts, balancing={"method": "upgrad"})


def _weights(run: Path, part: str = "best") -> dict[str, torch.Tensor]:
    return load_file(str(run / part / "tensors.safetensors"))


def test_torchrun_train_writes_one_run_equal_to_one_process(tmp_path) -> None:
    """``torchrun -m polytask train``: rank 0 writes the run (weights, metrics, results with
    ``ranks: 2``), rank 1 nothing; weights and test metrics equal a 1-process run."""
    config = _project(tmp_path)
    assert cli("train", config, "--out", tmp_path / "one").exit_code == 0
    done = _run(
        _torchrun("-m", "polytask", "train", str(config), "--out", "two", "--json"), cwd=tmp_path
    )
    two = tmp_path / "two"
    assert _max_diff(_weights(two), _weights(tmp_path / "one")) < TOLERANCE
    results = [json.loads((tmp_path / r / "results.json").read_text()) for r in ("one", "two")]
    assert results[1]["ranks"] == 2 and results[0]["ranks"] == 1
    for task, metrics in results[0]["test"].items():
        for metric, value in metrics.items():
            assert results[1]["test"][task][metric] == pytest.approx(value, abs=1e-6)
    assert done.stdout.count('"aspects"') == 1  # rank 0 prints for all
    strays = {p.name for p in tmp_path.iterdir()} - {"one", "two", "config.yaml", "train.jsonl"}
    assert not strays


def test_two_nodes_on_localhost_train_like_one_process(tmp_path) -> None:
    """``--nnodes=2`` through torchrun's rendezvous on 127.0.0.1, one rank per node."""
    config = _project(tmp_path, epochs=1)
    assert cli("train", config, "--out", tmp_path / "one").exit_code == 0
    port = str(_free_port())
    nodes = [
        subprocess.Popen(
            _torchrun(
                "-m", "polytask", "train", str(config), "--out", "two",
                nproc=1, nnodes="2", node_rank=str(rank), master_addr="127.0.0.1",
                master_port=port,
            ),
            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    for node in nodes:
        _, err = node.communicate(timeout=120)
        assert node.returncode == 0, err[-3000:]
    assert _max_diff(_weights(tmp_path / "two"), _weights(tmp_path / "one")) < TOLERANCE


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` that torchrun (pid ``launcher``) started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def test_a_killed_rank_ends_the_job_and_the_run_resumes(tmp_path) -> None:
    """SIGKILL of rank 1 after the first checkpoint: torchrun ends the job with an error
    naming the failed rank; ``--resume`` with 2 ranks finishes the run (manifest complete)."""
    config = _project(tmp_path, epochs=25, checkpoint_every=1, batch_size=4)
    cmd = _torchrun("-m", "polytask", "train", str(config), "--out", "run")
    job = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    last = tmp_path / "run" / "checkpoints" / "last" / "state.json"
    deadline = time.monotonic() + 90
    while not last.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert last.exists() and job.poll() is None, "no checkpoint before the deadline"
    pid = _rank_pid(job.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "Signal 9" in err or "SIGKILL" in err or "exitcode" in err, err[-2000:]
    _run(
        _torchrun("-m", "polytask", "train", str(config), "--out", "run", "--resume"), cwd=tmp_path
    )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert json.loads((tmp_path / "run" / "results.json").read_text())["ranks"] == 2


def test_commands_other_than_train_refuse_to_run_across_ranks(tmp_path, monkeypatch) -> None:
    config = _project(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    one_error(cli("compare", config, "--out", tmp_path / "cmp"), "torchrun")


# ------------------------------------------------------------ in process: one pass
class _Mirror:
    """A collective of two ranks holding the same shard, played by this process as rank 0:
    every sum over the ranks doubles, every gather repeats."""

    world_size, rank = 2, 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.mul_(2)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor, tensor.clone()]


def _mirrored_step(
    name: str, scale: object, one_pass: bool, level: str = "features"
) -> tuple[list[torch.Tensor], int]:
    """One step across the mirrored ranks: the gradients, and how many times the heads ran
    backward. ``one_pass=False``: the rows first at the features, one batched product from
    the losses at the parameters (the paths before one pass and two stages)."""
    from polytask import balancing
    from polytask.balancing import _autograd, distributed

    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh()).double()
    heads = [torch.nn.Linear(6, 1).double() for _ in range(3)]
    x = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randn(3, 8, 1, dtype=torch.float64)
    z = trunk(x)
    outs = [h(z) for h in heads]
    calls = [0]
    for out in outs:  # the node that reads z for this head
        out.grad_fn.register_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    losses = {f"t{i}": ((o - y[i]) ** 2).mean() for i, o in enumerate(outs)}
    params = [*trunk.parameters(), *(p for h in heads for p in h.parameters())]
    method = balancing.make(name)
    method.bind(list(losses))
    original = distributed._one_pass, _autograd.jacobian_through
    if not one_pass:
        distributed._one_pass = lambda *args: False  # type: ignore[assignment]
        _autograd.jacobian_through = lambda *args: None  # type: ignore[assignment]
    try:
        balancing.backward(
            losses,
            method=method,
            features=z,
            shared=list(trunk.parameters()),
            level=level,
            scale=torch.tensor(2.0**8, dtype=torch.float64) if scale == "amp" else 1.0,
            collective=_Mirror(),
            params=params,
        )
    finally:
        distributed._one_pass, _autograd.jacobian_through = original  # type: ignore[assignment]
    return [p.grad.clone() for p in params], calls[0]


@pytest.mark.parametrize("scale", [1.0, "amp"])
@pytest.mark.parametrize("name", ["upgrad", "mgda", "imtl_g", "nash_mtl"])
def test_a_gramian_method_across_ranks_runs_the_heads_backward_once(name, scale) -> None:
    """At the features a Gramian method across ranks takes ONE backward pass, as in one
    process: the hook at z all-reduces the K × K Gramian and swaps in the update (each head
    runs backward once, not once for the rows and again for the update), and the gradients
    equal those of taking the rows first."""
    got, calls = _mirrored_step(name, scale, one_pass=True)
    ref, ref_calls = _mirrored_step(name, scale, one_pass=False)
    assert calls == 3 and ref_calls == 6
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, "amp"])
@pytest.mark.parametrize("name", ["upgrad", "pcgrad", "db_mtl", "excess_mtl"])
def test_across_ranks_the_parameter_level_goes_through_the_features_in_two_stages(
    name, scale, monkeypatch
) -> None:
    """At the shared parameters with one feature tensor, each rank takes its rows as one
    process does: the heads once, then K rows through the trunk
    (``_autograd.jacobian_through``), not a batched product from the losses that pushes all
    K rows through every head; the gradients are the same."""
    from polytask.balancing import _autograd

    staged = []
    through = _autograd.jacobian_through
    monkeypatch.setattr(
        _autograd, "jacobian_through", lambda *a, **kw: staged.append(1) or through(*a, **kw)
    )
    got, _ = _mirrored_step(name, scale, one_pass=True, level="params")
    assert staged == [1]
    monkeypatch.undo()
    ref, _ = _mirrored_step(name, scale, one_pass=False, level="params")
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
