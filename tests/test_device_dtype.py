"""Every tensor follows its inputs' device and dtype; mixed precision on every path.

CI has no GPU, so device-following is tested through its CPU proxy, dtype-following: a
tensor a method, task or architecture creates without taking its inputs' dtype into
account shows up as a float32 tensor in a float64 step (or as a crash mixing the two),
exactly where, on CUDA, it would show up as a CPU tensor beside CUDA ones. Under
``torch.autocast("cpu", dtype=torch.bfloat16)`` every method and architecture must give a
finite update and leave the parameters' dtype alone; fp16 runs through a GradScaler whose
overflowing steps are skipped and counted, never raised.
"""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from polytask import balancing
from polytask.balancing import GradientAggregator, GramianWeighting, LossWeighting
from polytask.cli import app
from polytask.config import validate
from polytask.config.errors import ConfigError
from polytask.engine import Trainer, TrainerConfig
from polytask.engine.trainer import deterministic_mode
from polytask.nn.bilstm import CharBiLSTM
from polytask.sharing import ARCHITECTURES
from polytask.tasks.linear_chain import crf_log_likelihood

K = 3
TASKS = [f"t{i}" for i in range(K)]


def _make(name: str) -> balancing.Balancer:
    params = inspect.signature(balancing.METHODS[name]).parameters
    method = balancing.make(name, **({"seed": 0} if "seed" in params else {}))
    method.bind(TASKS)
    return method


def _levels(name: str) -> list[str | None]:
    cls = balancing.METHODS[name]
    if issubclass(cls, LossWeighting):
        return [None]
    return [lv for lv in ("features", "params") if lv in cls.levels]


METHOD_CASES = [(n, lv) for n in balancing.available() for lv in _levels(n)]


def _toy(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.ModuleList, Any]:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh()).to(dtype)
    heads = torch.nn.ModuleList(torch.nn.Linear(7, 1) for _ in range(K)).to(dtype)
    x = torch.randn(6, 5, dtype=dtype)
    y = torch.randn(6, K, dtype=dtype)

    def forward() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = trunk(x)
        losses = {
            t: ((h(z).squeeze(1) - y[:, i]) ** 2).mean() * (i + 1)
            for i, (t, h) in enumerate(zip(TASKS, heads))
        }
        return z, losses

    return trunk, heads, forward


def _bf16() -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("precision", ["float64", "bf16"])
@pytest.mark.parametrize("name, level", METHOD_CASES)
def test_every_method_steps_in_float64_and_under_bf16_autocast(
    name: str, level: str | None, precision: str
) -> None:
    """Two steps (the second sees the state the first left): every gradient has its
    parameter's dtype and is finite, the update moves the parameters and keeps their
    dtype."""
    dtype = torch.float64 if precision == "float64" else torch.float32
    trunk, heads, forward = _toy(dtype)
    method = _make(name)
    params = [*trunk.parameters(), *heads.parameters()]
    optimizer = torch.optim.SGD([*params, *method.parameters()], lr=0.05)
    before = [p.detach().clone() for p in params]
    ctx = _bf16 if precision == "bf16" else nullcontext
    for _ in range(2):
        with ctx():
            z, losses = forward()
        if precision == "bf16":
            assert z.dtype == torch.bfloat16
            losses = {t: v.float() for t, v in losses.items()}  # as the Trainer does
        else:
            assert all(v.dtype == torch.float64 for v in losses.values())
        total = balancing.backward(
            losses, method=method, features=z, shared=list(trunk.parameters()), level=level
        )
        assert torch.isfinite(total)
        for p in params:
            assert p.grad is not None and p.grad.dtype == p.dtype
            assert torch.isfinite(p.grad).all()
        optimizer.step()
        optimizer.zero_grad()

        def closure() -> dict[str, torch.Tensor]:
            with torch.no_grad(), ctx():
                return {t: v.detach().float() for t, v in forward()[1].items()}

        method.after_step({t: v.detach() for t, v in losses.items()}, closure)
        method.on_epoch_end()
    for p in params:
        assert p.dtype == dtype and torch.isfinite(p).all()
    assert any(not torch.equal(p, p0) for p, p0 in zip(params, before))


@pytest.mark.parametrize("name", balancing.available())
def test_what_a_method_returns_follows_its_input_dtype(name: str) -> None:
    """The CPU proxy for device-following: float64 in, float64 out (a tensor the method
    made on its own — on the CPU, in float32 — would show here)."""
    method = _make(name)
    torch.manual_seed(1)
    jac = torch.randn(K, 11, dtype=torch.float64)
    losses = {t: torch.rand((), dtype=torch.float64) + 0.5 for t in TASKS}
    if isinstance(method, LossWeighting):
        out = method.combine(losses)
    elif isinstance(method, GramianWeighting):
        out = method.weights(jac @ jac.T, losses)
    else:
        assert isinstance(method, GradientAggregator)
        out = method.aggregate(jac, losses)
    assert out.dtype == torch.float64 and out.device == jac.device
    assert torch.isfinite(out).all()


def test_learned_method_scalars_move_with_the_model() -> None:
    """``Balancer.to`` moves a method's own parameters in place (uw's log σ² live beside the
    model: no host-device copy per step), keeping the objects an optimiser holds."""
    method = _make("uw")
    params = method.parameters()
    assert method.to(torch.device("cpu")) is method
    assert [id(p) for p in method.parameters()] == [id(p) for p in params]
    assert all(p.device.type == "cpu" for p in params)


# ------------------------------------------------------------------------ architectures
EXAMPLES = {
    p.stem: p
    for p in (Path(__file__).resolve().parents[1] / "examples" / "architectures").glob("*.yaml")
}


def _architecture(name: str, zh: Any, make_model: Any) -> tuple[torch.nn.Module, Any, Any]:
    """(model, tasks, one step's batches) of a tiny model of architecture ``name``."""
    if name in ("hard", "hierarchical"):
        model = make_model(hard=name == "hard")
        trainer = Trainer(model, zh.tasks, config=TrainerConfig(batch_size=8, device="cpu"))
        step = next(trainer.make_loader(zh.sources(n=16), zh.collate).iterate(0))
        return model, zh.tasks, step
    from polytask.config import Experiment, read_config

    # the example's model over the fixture's data (its vocabulary and label sets): the
    # example's own data would take seconds to read
    _, raw = read_config(EXAMPLES[name], ["model.encoder.embed_dim=8", "model.encoder.hidden=8"])
    labels = {t: list(k.kind.labels) for t, k in zh.tasks.items()}
    exp = Experiment(
        validate(raw),
        EXAMPLES[name].parent,
        vocab={"tokens": zh.vocab.to_json()},
        labels=labels,
        load_data=False,
    )
    model = exp.build_model()
    trainer = Trainer(model, zh.tasks, config=TrainerConfig(batch_size=8, device="cpu"))
    step = next(trainer.make_loader(zh.sources(n=16), zh.collate).iterate(0))
    return model, zh.tasks, step


@pytest.mark.parametrize("precision", ["float64", "bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES.names()))
def test_every_architecture_steps_in_float64_and_under_bf16_and_fp16(
    name: str, precision: str, zh: Any, make_model: Any
) -> None:
    """One step: float64 throughout, or float32 weights under bf16 / fp16 autocast (fp16 with
    a GradScaler's loss scale, which the update carries until the scaler unscales it)."""
    model, tasks, step = _architecture(name, zh, make_model)
    dtype = torch.float64 if precision == "float64" else torch.float32
    model.to(dtype)
    method = "upgrad" if model.shared_parameters() else "fixed"  # pure soft sharing: none
    trainer = Trainer(
        model,
        tasks,
        balancing.make(method),
        TrainerConfig(device="cpu", precision="fp32" if precision == "float64" else precision),
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scale = torch.tensor(256.0) if precision == "fp16" else 1.0
    losses, _ = trainer.train_step(step, scale)
    if precision == "fp16":
        for p in model.parameters():
            if p.grad is not None:
                p.grad /= scale
    assert losses and all(v.dtype == dtype for v in losses.values())
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads
    for n, g in grads.items():
        assert g.dtype == dtype and torch.isfinite(g).all(), n
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert moved
    for n, p in model.named_parameters():
        assert p.dtype == dtype and torch.isfinite(p).all(), n


# ------------------------------------------------------------- encoders and heads
def test_the_character_bilstm_runs_under_bf16_autocast(monkeypatch: Any) -> None:
    """Its LSTM gives half-precision states under autocast, written into features of the
    embeddings' dtype (before, on CUDA: ``index_copy_(): self and source expected to have
    the same dtype, Float and Half``; the CPU kernel promotes, so the check is CUDA's,
    imposed here)."""
    index_copy = torch.Tensor.index_copy

    def strict(self: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor) -> Any:
        assert self.dtype == source.dtype, f"index_copy of {source.dtype} into {self.dtype}"
        return index_copy(self, dim, index, source)

    monkeypatch.setattr(torch.Tensor, "index_copy", strict)
    torch.manual_seed(0)
    chars = torch.randint(1, 20, (3, 5, 4))
    chars[:, :, 3] = 0
    chars[0, 3:] = 0  # padding tokens: no characters
    encoder = CharBiLSTM(20, char_dim=6, hidden=4)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            out = encoder(chars)
        assert out.dtype == torch.float32 and out.shape == (3, 5, 8)
        assert torch.isfinite(out).all() and not out[0, 3:].any()
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_the_crf_forward_algorithm_runs_in_float32_under_autocast() -> None:
    """bf16 emissions (a linear layer's output under autocast) give float32
    log-likelihoods, equal to the float64 computation on the same values to float32
    precision (bf16 arithmetic would be off by ~1e-2)."""
    torch.manual_seed(0)
    b, t, c = 4, 12, 5
    emissions = (torch.randn(b, t, c) * 3).to(torch.bfloat16)
    tags = torch.randint(0, c, (b, t))
    mask = torch.arange(t).unsqueeze(0) < torch.tensor([[12], [7], [1], [10]])
    trans, start, end = torch.randn(c, c), torch.randn(c), torch.randn(c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ll = crf_log_likelihood(emissions, tags, mask, trans, start, end)
    assert ll.dtype == torch.float32
    exact = crf_log_likelihood(
        emissions.double(), tags, mask, trans.double(), start.double(), end.double()
    )
    assert exact.dtype == torch.float64
    torch.testing.assert_close(ll.double(), exact, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------- fp16
ROOT = Path(__file__).resolve().parents[1]
ENCODER_KINDS = ("cnn", "bilstm", "transformer", "mlp", "tabular", "lenet")


def test_every_encoder_kind_trains_at_fp32_bf16_and_fp16_on_the_cpu(tmp_path: Path) -> None:
    """The GPU check's precision part (benchmarks/gpu/checks.py), run on the CPU: each
    encoder kind (cnn, word + character BiLSTM with a CRF, a transformer from a tiny random
    BERT config, mlp, tabular, lenet) trains an epoch at fp32, bf16 and fp16 (GradScaler)
    with a finite loss at every step and its skipped steps counted. On a GPU the same
    part runs on CUDA."""
    result = tmp_path / "precision.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/gpu/checks.py"), "precision"]
    cmd += ["--device", "cpu", "--threads", "1", "--work", str(tmp_path), "--result", str(result)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    cases = {c["case"]: c for c in json.loads(result.read_text())["cases"]}
    assert set(cases) == {f"{k} {p}" for k in ENCODER_KINDS for p in ("fp32", "bf16", "fp16")}
    failed = {name: c["detail"] for name, c in cases.items() if not c["ok"]}
    assert not failed and done.returncode == 0, (failed, done.stdout[-2000:], done.stderr[-2000:])
    assert all(c["steps"] > 0 and isinstance(c["skipped_steps"], int) for c in cases.values())


@pytest.fixture
def low_scale(monkeypatch: Any) -> None:
    """A GradScaler starting at 2**8 rather than 2**16: the CRF's summed log-likelihood
    overflows fp16 at 2**16 for the first steps (the scaler would skip those and halve its
    scale until it fits — correct, but not what these tests count)."""
    monkeypatch.setattr(torch.amp, "GradScaler", partial(torch.amp.GradScaler, init_scale=256.0))


class _Overflow:
    """A forward hook on a head: its ``at``-th forward pass with gradients gets a gradient
    hook that multiplies what comes back by 1e30 — the fp16 gradients overflow, whatever
    the method does with the losses."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, module: Any, inputs: Any, output: torch.Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        self.calls += 1
        if self.calls == self.at:
            output.register_hook(lambda g: g * 1e30)


FP16_CASES = [(n, lv[-1]) for n in balancing.available() for lv in [_levels(n)]] + [
    ("mgda", "features")
]


@pytest.mark.parametrize("method, level", FP16_CASES)
def test_fp16_overflow_skips_the_step_for_all_tasks_and_training_goes_on(
    method: str, level: str | None, zh: Any, make_model: Any, low_scale: None
) -> None:
    """Every method: the step whose gradients overflow is skipped (no parameter, and no
    method state, takes it), counted, and the next steps train with finite updates."""
    model = make_model(hard=True)
    overflow = _Overflow(at=2)
    model.heads["sentiment"].register_forward_hook(overflow)
    config = TrainerConfig(
        epochs=1, max_steps=4, batch_size=8, threads=1, device="cpu", precision="fp16", level=level
    )
    trainer = Trainer(model, zh.tasks, balancing.make(method), config, sampler="joint")
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = trainer.fit(zh.sources(n=32), zh.val_of(), zh.collate)
    assert overflow.calls >= 4
    assert report.steps == 4 and report.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(init[n], p) for n, p in model.named_parameters())


def test_fp16_without_overflow_skips_nothing(zh: Any, make_model: Any, low_scale: None) -> None:
    model = make_model(hard=True)
    config = TrainerConfig(
        epochs=1, max_steps=3, batch_size=8, threads=1, device="cpu", precision="fp16"
    )
    trainer = Trainer(model, zh.tasks, balancing.make("upgrad"), config, sampler="joint")
    report = trainer.fit(zh.sources(n=24), zh.val_of(), zh.collate)
    assert report.steps == 3 and report.skipped_steps == 0


def test_a_non_finite_loss_in_bf16_still_stops_training_naming_the_task(
    zh: Any, make_model: Any, monkeypatch: Any
) -> None:
    from polytask.engine.trainer import TrainingError

    kind = zh.tasks["ner"].kind
    loss = kind.loss
    monkeypatch.setattr(kind, "loss", lambda *a: loss(*a) * math.inf)
    config = TrainerConfig(epochs=1, max_steps=2, batch_size=8, device="cpu", precision="bf16")
    trainer = Trainer(make_model(), zh.tasks, config=config, sampler="joint")
    with pytest.raises(TrainingError, match="loss is inf") as err:
        trainer.fit(zh.sources(n=16), zh.val_of(), zh.collate)
    assert err.value.option == "task 'ner'"


# ---------------------------------------------------------------- deterministic mode
def test_deterministic_mode_sets_and_restores_the_flags() -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True, torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(False, torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()


def test_a_deterministic_run_trains_in_deterministic_mode(zh: Any, make_model: Any) -> None:
    """The flags hold during the steps of a ``deterministic: true`` run, and only then."""
    seen: list[bool] = []

    class Recording(balancing.Sum):
        def after_step(self, losses: Any, closure: Any = None) -> None:
            seen.append(torch.are_deterministic_algorithms_enabled())

    for deterministic in (True, False):
        seen.clear()
        config = TrainerConfig(
            epochs=1, max_steps=2, batch_size=8, device="cpu", deterministic=deterministic
        )
        Trainer(make_model(), zh.tasks, Recording(), config).fit(
            zh.sources(n=16), zh.val_of(), zh.collate
        )
        assert seen == [deterministic] * 2
        assert not torch.are_deterministic_algorithms_enabled()


def test_the_config_takes_device_and_deterministic() -> None:
    source = {"format": "jsonl", "train": "train.jsonl", "tasks": {"a": "a"}}
    base = {
        "tasks": {"a": {"kind": "classification"}},
        "data": {"sources": {"s": source}},
        "model": {"encoder": {"type": "cnn"}},
    }
    cfg = validate(dict(base))
    assert cfg.trainer.device == "auto" and cfg.trainer.deterministic is False
    assert TrainerConfig().device == "auto"
    for good in ("cpu", "cuda", "cuda:1", "auto"):
        assert validate(dict(base, trainer={"device": good})).trainer.device == good
    with pytest.raises(ConfigError, match="trainer.device.*'tpu'") as err:
        validate(dict(base, trainer={"device": "tpu"}))
    assert "cuda:N" in str(err.value)


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def run(tmp_path_factory: Any) -> tuple[Path, Path]:
    from shared_data import TRAIN_XML, laptop_rows

    tmp = tmp_path_factory.mktemp("device")
    rows = laptop_rows(TRAIN_XML, 48)
    (tmp / "train.jsonl").write_text(
        "".join(json.dumps({k: r[k] for k in ("tokens", "tags")}) + "\n" for r in rows),
        encoding="utf-8",
    )
    cfg = {
        "name": "device",
        "tasks": {"aspects": {"kind": "tagging", "labels": ["O", "B-ASP", "I-ASP"]}},
        "data": {
            "sources": {
                "laptops": {"format": "jsonl", "train": "train.jsonl", "tasks": {"aspects": "tags"}}
            }
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
        "trainer": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["train", str(tmp / "config.yaml"), "--out", str(tmp / "run"), "--device", "cpu"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    (tmp / "input.txt").write_text("the screen is great\nbattery life\n", encoding="utf-8")
    return tmp, tmp / "run"


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_eval_and_predict_take_a_device(run: tuple[Path, Path], device: str) -> None:
    tmp, run_dir = run
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--json", "--device", device])
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "aspects" in json.loads(result.stdout)
    result = CliRunner().invoke(
        app, ["predict", str(run_dir), str(tmp / "input.txt"), "--device", device]
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "command", ["eval", "predict", "train", "compare", "sweep", "affinity", "group"]
)
def test_a_bad_device_is_one_line_at_the_option(run: tuple[Path, Path], command: str) -> None:
    tmp, run_dir = run
    (tmp / "affinity-run").mkdir(exist_ok=True)
    (tmp / "affinity-run" / "affinity.json").write_text(
        '{"tasks": ["sentiment", "ner"], "matrix": [[0, 0.1], [0.2, 0]], "samples": 1}'
    )
    target = {
        "eval": [str(run_dir)],
        "predict": [str(run_dir), str(tmp / "input.txt")],
        "group": [str(tmp / "affinity-run"), "--train", "--out", str(tmp / "never-group")],
    }.get(command, [str(tmp / "config.yaml"), "--out", str(tmp / f"never-{command}")])
    result = CliRunner().invoke(app, [command, *target, "--device", "tpu"])
    assert result.exit_code == 2, (result.stdout, result.exception)
    assert result.stderr.startswith("error: --device: unknown device 'tpu'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp / f"never-{command}").exists()


def test_a_bad_device_in_the_config_names_the_field(run: tuple[Path, Path]) -> None:
    tmp, _ = run
    result = CliRunner().invoke(
        app,
        ["train", str(tmp / "config.yaml"), "--out", str(tmp / "x"), "--set", "trainer.device=tpu"],
    )
    assert result.exit_code == 2
    assert "trainer.device" in result.stderr and "'tpu'" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_at_the_option(run: tuple[Path, Path]) -> None:
    tmp, run_dir = run
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--device", "cuda"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --device: 'cuda' requested but no CUDA")


def test_results_count_the_skipped_steps(run: tuple[Path, Path]) -> None:
    _, run_dir = run
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["skipped_steps"] == 0
