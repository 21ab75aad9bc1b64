"""The parts of the GPU check (benchmarks/gpu/check.sh runs each in its own process).

    python benchmarks/gpu/checks.py PART --device cuda --result PART.json [--work DIR]

PART is one of

* ``balancing``: every balancing method at every level it supports, three steps on the same
  tiny hard-sharing model and data on ``--device`` and on the CPU; every ``.grad`` (model and
  method parameters) equal within float32 tolerance (see :data:`RTOL`).
* ``precision``: training at fp32 / bf16 / fp16 for every encoder kind (cnn, bilstm words +
  characters with a CRF, transformer from a tiny random BERT, mlp on feature vectors, tabular,
  lenet on images): finite losses at every step, ``skipped_steps`` a number.
* ``cli``: ``python -m polytask train / eval / predict / compare`` with ``--device``; eval and
  predict on the device equal to the same on the CPU, and the loaded model on the device.
* ``resume``: ``trainer.deterministic: true`` on the device, a run killed (SIGKILL) after a
  checkpoint and resumed with ``--resume`` ends with ``torch.equal`` weights (best/ and
  checkpoints/last/) to an uninterrupted run.
* ``stepcost``: reads the step-cost JSON (benchmarks/balancing/step_cost.py) and prints the
  issue's targets as PASS / MISS (measurements: a miss does not fail the check).
* ``assemble``: gathers the parts' results into ``OUT/gpu_check.json``.

Each part prints ``PASS``/``FAIL`` lines and rewrites its ``--result`` JSON after every case,
so a part stopped by its time budget still leaves what it did.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import inspect
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]

#: part a: |grad(device) - grad(cpu)| <= RTOL * max|grad(cpu)| (+ ATOL) for every gradient
#: tensor, every step. float32 carries ~6e-8 relative rounding per operation; different
#: kernels (cuBLAS vs CPU BLAS reduction orders) and the methods' small solves (MGDA's
#: Frank-Wolfe, Nash-MTL, CAGrad) amplify that by a few orders at most on this well-conditioned
#: toy: 1e-4 is loose enough for those and tight enough to catch a wrong update.
RTOL, ATOL = 1e-4, 1e-7
PRECISIONS = ("fp32", "bf16", "fp16")


# --------------------------------------------------------------------------- reporting
class Part:
    """Cases of one part: each PASS/FAIL line printed and the JSON rewritten."""

    def __init__(self, name: str, result: Path, device: str) -> None:
        self.name, self.result, self.device = name, result, device
        self.cases: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}  # more fields for the JSON
        self.write()

    def record(self, case: str, ok: bool, detail: str = "", **extra: Any) -> None:
        line = f"{'PASS' if ok else 'FAIL'}  {self.name}: {case}"
        print(line + (f"  ({detail})" if detail else ""), flush=True)
        self.cases.append({"case": case, "ok": bool(ok), "detail": detail, **extra})
        self.write()

    def run(self, case: str, fn: Callable[[], tuple[bool, str, dict[str, Any]]]) -> None:
        t0 = time.perf_counter()
        try:
            ok, detail, extra = fn()
        except Exception as err:  # noqa: BLE001 - a crash is this case's failure
            tb = traceback.format_exc().strip().splitlines()
            where = next((x.strip() for x in reversed(tb) if x.strip().startswith("File")), "")
            ok, detail, extra = False, f"{type(err).__name__}: {err}"[:600] + f" [{where}]", {}
        self.record(case, ok, detail, seconds=round(time.perf_counter() - t0, 3), **extra)

    def write(self) -> None:
        failed = sum(not c["ok"] for c in self.cases)
        data = {
            "part": self.name,
            "device": self.device,
            "passed": len(self.cases) - failed,
            "failed": failed,
            "seconds": round(time.perf_counter() - self.t0, 2),
            "notes": self.notes,
            "cases": self.cases,
            **self.extra,
        }
        self.result.write_text(json.dumps(data, indent=1))

    def finish(self) -> int:
        self.write()
        failed = sum(not c["ok"] for c in self.cases)
        print(
            f"{self.name}: {len(self.cases) - failed} passed, {failed} failed "
            f"in {time.perf_counter() - self.t0:.1f} s",
            flush=True,
        )
        return 1 if failed else 0


def _torch_setup(device: str, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # initialise CUDA (and fail here when it is missing)
        torch.set_float32_matmul_precision("highest")  # float32 on both sides, no TF32
        torch.backends.cudnn.allow_tf32 = False
    return torch


# --------------------------------------------------------------------------- part a
def part_balancing(args: argparse.Namespace) -> int:
    """Every method x level: three steps on --device and on the CPU, gradients compared."""
    torch = _torch_setup(args.device, args.threads)
    from polytask import balancing
    from polytask.balancing import LossWeighting

    part = Part("balancing", args.result, args.device)
    part.notes.append(
        f"tolerance: |g_dev - g_cpu| <= {RTOL:g} * max|g_cpu| + {ATOL:g} per gradient tensor, "
        "every step; randomised methods (pcgrad, graddrop, gradvac, rlw) built with seed=0: "
        "their draws come from a CPU torch.Generator, the same numbers on both devices"
    )
    k, tasks = 3, ["t0", "t1", "t2"]

    def levels(name: str) -> list[str | None]:
        cls = balancing.METHODS[name]
        if issubclass(cls, LossWeighting) or getattr(cls, "needs", "") == "losses":
            return [None]
        return [lv for lv in ("features", "params") if lv in tuple(cls.levels)]

    def make(name: str) -> Any:
        params = inspect.signature(balancing.METHODS[name]).parameters
        method = balancing.make(name, **({"seed": 0} if "seed" in params else {}))
        method.bind(tasks)
        return method

    def trajectory(name: str, level: str | None, device: str) -> list[list[Any]]:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        trunk = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh()
        )
        heads = torch.nn.ModuleList(torch.nn.Linear(32, 1) for _ in range(k))
        data = [
            (torch.randn(24, 16, generator=gen), torch.randn(24, k, generator=gen))
            for _ in range(3)
        ]
        trunk.to(device)
        heads.to(device)
        data = [(x.to(device), y.to(device)) for x, y in data]
        method = make(name)
        method.to(torch.device(device))
        params = [*trunk.parameters(), *heads.parameters(), *method.parameters()]
        optimizer = torch.optim.SGD(params, lr=0.05)

        def forward(x: Any, y: Any) -> tuple[Any, dict[str, Any]]:
            z = trunk(x)
            losses = {
                t: ((h(z).squeeze(1) - y[:, i]) ** 2).mean() * (i + 1)
                for i, (t, h) in enumerate(zip(tasks, heads))
            }
            return z, losses

        out = []
        for x, y in data:
            z, losses = forward(x, y)
            optimizer.zero_grad(set_to_none=True)
            balancing.backward(
                losses, method=method, features=z, shared=list(trunk.parameters()), level=level
            )
            grads = []
            for p in params:
                if p.grad is not None and p.grad.device.type != torch.device(device).type:
                    raise AssertionError(f"a gradient on {p.grad.device}, not on {device}")
                grads.append(None if p.grad is None else p.grad.detach().float().cpu().clone())
            out.append(grads)
            optimizer.step()

            def closure(x: Any = x, y: Any = y) -> dict[str, Any]:
                with torch.no_grad():
                    return {t: v.detach() for t, v in forward(x, y)[1].items()}

            method.after_step({t: v.detach() for t, v in losses.items()}, closure)
            method.on_epoch_end()
        return out

    def compare(name: str, level: str | None) -> tuple[bool, str, dict[str, Any]]:
        dev = trajectory(name, level, args.device)
        ref = trajectory(name, level, "cpu")
        worst, problems = 0.0, []
        for step, (gd, gc) in enumerate(zip(dev, ref)):
            for i, (a, b) in enumerate(zip(gd, gc)):
                if (a is None) != (b is None):
                    problems.append(f"step {step} param {i}: grad None on one device only")
                    continue
                if a is None:
                    continue
                if not torch.isfinite(a).all():
                    problems.append(f"step {step} param {i}: non-finite gradient")
                    continue
                scale = float(b.abs().max())
                diff = float((a - b).abs().max())
                worst = max(worst, diff / scale if scale > 0 else diff)
                if diff > RTOL * scale + ATOL:
                    problems.append(
                        f"step {step} param {i}: max diff {diff:.3g} (scale {scale:.3g})"
                    )
        detail = f"max rel diff {worst:.2e}" + ("; " + "; ".join(problems[:3]) if problems else "")
        return not problems, detail, {"max_rel_diff": worst}

    for name in balancing.available():
        for level in levels(name):
            part.run(
                f"{name} @ {level or 'loss weighting'}", lambda n=name, lv=level: compare(n, lv)
            )
    return part.finish()


# --------------------------------------------------------------------------- tiny data
TAGS = ["O", "B-ASP", "I-ASP"]
WORDS = "the screen is good bad battery life fast and light keyboard broke".split()


def review_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sentences with aspect tags and a sentiment label (a learnable rule: 'bad'/'broke' is
    negative), ``n`` rows, deterministic."""
    import random

    rng = random.Random(seed)
    aspects = [["screen"], ["battery", "life"], ["keyboard"], ["speakers"], ["touch", "pad"]]
    good, bad = ["good", "great", "fast", "light"], ["bad", "broke", "slow", "heavy"]
    rows = []
    for i in range(n):
        asp = rng.choice(aspects)
        neg = i % 2 == 1
        word = rng.choice(bad if neg else good)
        lead = rng.choice([["the"], ["my"], []])
        tokens = [*lead, *asp, "is", word] if rng.random() < 0.5 else [word, *asp]
        tags = ["O"] * len(tokens)
        start = tokens.index(asp[0])
        for j in range(len(asp)):
            tags[start + j] = "B-ASP" if j == 0 else "I-ASP"
        rows.append({"tokens": tokens, "tags": tags, "label": "neg" if neg else "pos"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")


def text_config(name: str, encoder: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "tasks": {
            "aspects": {"kind": "tagging", "labels": TAGS},
            "sentiment": {"kind": "classification", "labels": ["neg", "pos"]},
        },
        "data": {
            "sources": {
                "reviews": {
                    "format": "jsonl",
                    "train": "train.jsonl",
                    "tasks": {"aspects": "tags", "sentiment": "label"},
                }
            },
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "model": {"encoder": encoder},
        "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.01, "threads": 1, "progress": False},
        "diagnostics": {"every": 1},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT (hidden 16) and its WordPiece tokenizer, saved as safetensors:
    no download."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for r in review_rows(64) for w in r["tokens"]})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ed", "##ing"]
    vocab += list("abcdefghijklmnopqrstuvwxyz")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def write_projects(work: Path) -> dict[str, Path]:
    """One folder per encoder kind that a config can name, each with its data and
    ``config.yaml``; returns kind -> config path."""
    import yaml

    out: dict[str, Path] = {}

    def save(kind: str, cfg: dict[str, Any]) -> None:
        path = work / kind / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
        out[kind] = path

    for kind in ("cnn", "bilstm", "transformer", "mlp", "tabular"):
        (work / kind).mkdir(parents=True, exist_ok=True)
    rows = review_rows(48)
    write_jsonl(work / "cnn" / "train.jsonl", rows)
    save(
        "cnn",
        text_config(
            "gpu-cnn",
            {"type": "cnn", "embed_dim": 16, "channels": [16, 16]},
            balancing={"method": "upgrad"},
        ),
    )
    write_jsonl(work / "bilstm" / "train.jsonl", rows)
    cfg = text_config(
        "gpu-bilstm",
        {
            "type": "bilstm",
            "embed_dim": 16,
            "hidden": 16,
            "layers": 2,
            "char_dim": 8,
            "char_hidden": 8,
        },
        model={"sharing": "hierarchical", "taps": {"aspects": 1, "sentiment": 2}},
        balancing={"method": "fixed", "weights": {"sentiment": 1.0, "aspects": 0.3}},
    )
    cfg["tasks"]["aspects"]["crf"] = True
    cfg["data"]["vocab"] = {"chars": True}
    save("bilstm", cfg)
    write_jsonl(work / "transformer" / "train.jsonl", rows)
    bert = tiny_bert(work / "transformer" / "tiny-bert")
    save(
        "transformer",
        text_config(
            "gpu-transformer",
            {"type": "transformer", "path": str(bert), "max_length": 32},
            balancing={"method": "pcgrad", "seed": 0},
        ),
    )
    import random

    rng = random.Random(0)
    feats = []
    for _ in range(64):
        x = [rng.gauss(0, 1) for _ in range(12)]
        feats.append(
            {"features": x, "label": "a" if x[0] + x[1] > 0 else "b", "score": sum(x[:4]) / 4}
        )
    write_jsonl(work / "mlp" / "train.jsonl", feats)
    save(
        "mlp",
        {
            "name": "gpu-mlp",
            "seed": 0,
            "tasks": {
                "label": {"kind": "classification", "labels": ["a", "b"]},
                "score": {"kind": "regression"},
            },
            "data": {
                "sources": {
                    "vectors": {
                        "format": "jsonl",
                        "train": "train.jsonl",
                        "tasks": {"label": "label", "score": "score"},
                    }
                },
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            },
            "model": {"encoder": {"type": "mlp", "hidden": [32, 32]}},
            "balancing": {"method": "mgda"},
            "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.01, "threads": 1, "progress": False},
            "diagnostics": {"every": 1},
        },
    )
    lines = ["x,colour,kind,score,a,b"]
    for i in range(64):
        kind = "big" if i % 2 else "small"
        lines.append(
            f"{i},{['red', 'green', 'blue'][i % 3]},{kind},{i / 10:.1f},{i % 2},{(i // 2) % 2}"
        )
    (work / "tabular" / "t.csv").write_text("\n".join(lines) + "\n", "utf-8")
    save(
        "tabular",
        {
            "name": "gpu-tabular",
            "seed": 0,
            "tasks": {
                "kind": {"kind": "classification"},
                "score": {"kind": "regression"},
                "flags": {"kind": "multilabel", "labels": ["a", "b"]},
            },
            "data": {
                "sources": {
                    "t": {
                        "format": "tabular",
                        "train": "t.csv",
                        "tasks": {"kind": "kind", "score": "score", "flags": ["a", "b"]},
                        "options": {"numeric": ["x"], "categorical": ["colour"]},
                    }
                },
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            },
            "model": {"encoder": {"type": "tabular", "hidden": [16, 16]}},
            "balancing": {"method": "uw"},
            "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.01, "threads": 1, "progress": False},
            "diagnostics": {"every": 1},
        },
    )
    return out


def _losses_finite(run: Path) -> tuple[bool, str]:
    """Every task loss in diagnostics.jsonl (one sample per step here) is finite."""
    path = run / "diagnostics.jsonl"
    if not path.is_file():
        return False, "no diagnostics.jsonl"
    n, bad = 0, []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for task, value in (row.get("losses") or {}).items():
            n += 1
            if value is None or not math.isfinite(float(value)):
                bad.append(f"step {row.get('step')} {task}={value}")
    if n == 0:
        return False, "no losses logged"
    return not bad, f"{n} losses" + (f", non-finite: {bad[:3]}" if bad else " finite")


# --------------------------------------------------------------------------- part b
def part_precision(args: argparse.Namespace) -> int:
    torch = _torch_setup(args.device, args.threads)
    from polytask.config.load import read_config
    from polytask.runs import train

    part = Part("precision", args.result, args.device)
    try:  # no "Loading weights" progress bar per transformer run
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - only the log's looks
        pass
    work = Path(args.work) / "precision"
    work.mkdir(parents=True, exist_ok=True)
    try:
        projects = write_projects(work)
    except Exception as err:  # noqa: BLE001
        part.record("write the tiny projects", False, f"{type(err).__name__}: {err}")
        return part.finish()

    def run_config(kind: str, precision: str) -> tuple[bool, str, dict[str, Any]]:
        config = projects[kind]
        overrides = [f"trainer.precision={precision}", f"trainer.device={args.device}"]
        cfg, raw = read_config(config, overrides)
        out = config.parent / f"run-{precision}"
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        train(cfg, raw, config.parent, out)
        used = torch.cuda.max_memory_allocated() if cuda else None
        results = json.loads((out / "results.json").read_text())
        ok, detail = _losses_finite(out)
        skipped = results.get("skipped_steps")
        is_number = isinstance(skipped, int) and not isinstance(skipped, bool)
        steps = results.get("steps", 0)
        ok = ok and is_number and steps > 0 and (not cuda or bool(used))
        return (
            ok,
            f"{steps} steps, {detail}, skipped_steps={skipped!r}"
            + (f", CUDA peak {used / 2**20:.1f} MiB" if cuda else ""),
            {"skipped_steps": skipped, "steps": steps},
        )

    def run_lenet(precision: str) -> tuple[bool, str, dict[str, Any]]:
        from polytask import balancing
        from polytask.data.base import Example
        from polytask.data.collate import Collator
        from polytask.engine import Trainer, TrainerConfig
        from polytask.nn import ClassifierHead, LeNet
        from polytask.sharing import ARCHITECTURES
        from polytask.tasks import Classification, Task

        labels = ["a", "b", "c"]
        tasks = {t: Task(t, Classification(labels)) for t in ("left", "right")}
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        examples = []
        for i in range(40):
            img = torch.rand(1, 14, 14, generator=gen)
            examples.append(
                Example(
                    {"image": img},
                    {"left": labels[i % 3], "right": labels[(i // 3) % 3]},
                    id=str(i),
                )
            )
        encoder = LeNet(image_size=14, channels=(3, 4), kernel_size=3, hidden=8)
        model = ARCHITECTURES["hard"](encoder, {t: ClassifierHead(8, len(labels)) for t in tasks})
        trainer = Trainer(
            model,
            tasks,
            balancing.make("upgrad"),
            TrainerConfig(
                epochs=1,
                batch_size=8,
                lr=0.01,
                device=args.device,
                precision=precision,
                progress=False,
                diagnostics_every=1,
            ),
        )
        run = work / "lenet" / f"run-{precision}"
        report = trainer.fit(
            {"images": examples[:32]},
            {"images": examples[32:]},
            Collator(tasks, input_kind="image"),
            run_dir=run,
        )
        ok, detail = _losses_finite(run)
        skipped = report.skipped_steps
        on_device = next(model.parameters()).device.type == torch.device(args.device).type
        ok = ok and isinstance(skipped, int) and report.steps > 0 and on_device
        return (
            ok,
            f"{report.steps} steps, {detail}, skipped_steps={skipped!r}, "
            f"model on {next(model.parameters()).device}",
            {"skipped_steps": skipped, "steps": report.steps},
        )

    part.notes.append(
        "encoders: cnn (upgrad), bilstm words+chars with CRF, hierarchical (fixed), transformer "
        "(random 2-layer BERT, hidden 16; pcgrad), mlp on feature vectors (mgda), tabular (uw), "
        "lenet on 14x14 images through the Python API (upgrad); 1 epoch each"
    )
    for kind in ("cnn", "bilstm", "transformer", "mlp", "tabular", "lenet"):
        for precision in PRECISIONS:
            if kind == "lenet":
                part.run(f"{kind} {precision}", lambda p=precision: run_lenet(p))
            elif kind in projects:
                part.run(f"{kind} {precision}", lambda k=kind, p=precision: run_config(k, p))
    return part.finish()


# --------------------------------------------------------------------------- part c
def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONHASHSEED="0")


def _polytask(*args: Any, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "polytask", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _close(a: Any, b: Any, tol: float, path: str = "") -> list[str]:
    """Where two JSON values differ (numbers: by more than ``tol``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(a)} vs {sorted(b)}"]
        return [d for k in a for d in _close(a[k], b[k], tol, f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, tol, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        same = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(b))
        return [] if same else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def part_cli(args: argparse.Namespace) -> int:
    torch = _torch_setup(args.device, args.threads)
    part = Part("cli", args.result, args.device)
    work = Path(args.work) / "cli"
    work.mkdir(parents=True, exist_ok=True)
    import yaml

    write_jsonl(work / "train.jsonl", review_rows(48))
    cfg = text_config(
        "gpu-cli",
        {
            "type": "bilstm",
            "embed_dim": 16,
            "hidden": 16,
            "layers": 1,
            "char_dim": 8,
            "char_hidden": 8,
        },
        balancing={"method": "upgrad"},
    )
    cfg["tasks"]["aspects"]["crf"] = True
    cfg["data"]["vocab"] = {"chars": True}
    cfg["trainer"]["epochs"] = 2
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
    (work / "inputs.txt").write_text(
        "the screen is good\nmy battery life is bad\nbroke keyboard\nfast touch pad\n", "utf-8"
    )
    dev = args.device
    state: dict[str, Any] = {}

    def ran(proc: subprocess.CompletedProcess) -> str:
        return f"rc {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}"

    def train_case() -> tuple[bool, str, dict[str, Any]]:
        proc = _polytask(
            "train", config, "--out", work / "run", "--json", "--device", dev, cwd=work
        )
        if proc.returncode != 0:
            return False, ran(proc), {}
        state["test"] = json.loads(proc.stdout.strip().splitlines()[-1])
        return True, f"test metrics {state['test']}", {}

    def eval_case() -> tuple[bool, str, dict[str, Any]]:
        on_dev = _polytask("eval", work / "run", "--json", "--device", dev, cwd=work)
        on_cpu = _polytask("eval", work / "run", "--json", "--device", "cpu", cwd=work)
        if on_dev.returncode or on_cpu.returncode:
            return False, f"{dev}: {ran(on_dev)}; cpu: {ran(on_cpu)}", {}
        a = json.loads(on_dev.stdout.strip().splitlines()[-1])
        b = json.loads(on_cpu.stdout.strip().splitlines()[-1])
        diffs = _close(a, b, 1e-6)
        if "test" in state:
            diffs += _close(a, state["test"], 1e-6, "vs train's test metrics")
        return not diffs, f"{dev} = cpu within 1e-6: {a}" + (f"; {diffs[:3]}" if diffs else ""), {}

    def predict_case() -> tuple[bool, str, dict[str, Any]]:
        outs = {}
        for d in (dev, "cpu"):
            path = work / f"pred-{d.replace(':', '')}.jsonl"
            proc = _polytask(
                "predict", work / "run", work / "inputs.txt", "--device", d, "-o", path, cwd=work
            )
            if proc.returncode != 0:
                return False, f"{d}: {ran(proc)}", {}
            outs[d] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        diffs = _close(outs[dev], outs["cpu"], 1e-5)
        return (
            not diffs and len(outs[dev]) == 4,
            f"{len(outs[dev])} predictions, {dev} = cpu within 1e-5"
            + (f"; {diffs[:3]}" if diffs else ""),
            {},
        )

    def loaded_case() -> tuple[bool, str, dict[str, Any]]:
        from polytask.runs import load

        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        run = load(work / "run", device=dev)
        where = {p.device.type for p in run.model.parameters()}
        preds = run.predict([["the", "screen", "is", "bad"]])
        used = torch.cuda.max_memory_allocated() if dev.startswith("cuda") else 0
        ok = where == {torch.device(dev).type} and bool(preds)
        if dev.startswith("cuda"):
            ok = ok and used > 0
        return ok, f"parameters on {sorted(where)}, CUDA memory used {used} B", {}

    def compare_case() -> tuple[bool, str, dict[str, Any]]:
        proc = _polytask(
            "compare",
            config,
            "--seeds",
            "1",
            "--out",
            work / "cmp",
            "--json",
            "--device",
            dev,
            cwd=work,
            timeout=180,
        )
        if proc.returncode != 0:
            return False, ran(proc), {}
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        ok = {"stl", "mtl", "delta_m"} <= set(summary)
        return ok, f"delta_m {summary.get('delta_m')}", {}

    part.run(f"train --device {dev}", train_case)
    part.run(f"eval --device {dev} vs cpu", eval_case)
    part.run(f"predict --device {dev} vs cpu", predict_case)
    part.run(f"load(run, device={dev}): model and predictions there", loaded_case)
    part.run(f"compare --seeds 1 --device {dev}", compare_case)
    return part.finish()


# --------------------------------------------------------------------------- part d
def _checkpoint_step(run: Path) -> int | None:
    for name in ("last", ".last.old"):
        try:
            return json.loads((run / "checkpoints" / name / "state.json").read_text())["state"][
                "step"
            ]
        except (OSError, ValueError, KeyError):
            continue
    return None


def part_resume(args: argparse.Namespace) -> int:
    torch = _torch_setup(args.device, args.threads)
    from safetensors.torch import load_file

    part = Part("resume", args.result, args.device)
    work = Path(args.work) / "resume"
    work.mkdir(parents=True, exist_ok=True)
    import yaml

    write_jsonl(work / "train.jsonl", review_rows(200, seed=3))
    cfg = text_config(
        "gpu-resume",
        {
            "type": "bilstm",
            "embed_dim": 16,
            "hidden": 16,
            "layers": 2,
            "dropout": 0.2,
            "char_dim": 8,
            "char_hidden": 8,
        },
        model={"sharing": "hierarchical", "taps": {"aspects": 1, "sentiment": 2}},
        balancing={"method": "gradvac", "seed": 1},
    )
    cfg["tasks"]["aspects"]["crf"] = True
    cfg["data"]["vocab"] = {"chars": True}
    cfg["trainer"].update(
        epochs=3, batch_size=8, deterministic=True, checkpoint_every=2, device=args.device
    )
    cfg["diagnostics"] = {"every": 5}
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
    part.notes.append(
        "bilstm words+chars, CRF, hierarchical, dropout 0.2, gradvac (seed 1), 3 epochs of "
        "16 steps, trainer.deterministic: true, checkpoint_every: 2"
    )

    def cmd(out: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "polytask",
            "train",
            str(config),
            "--out",
            str(out),
            "--json",
            *extra,
        ]

    def check() -> tuple[bool, str, dict[str, Any]]:
        ref = work / "ref"
        done = subprocess.run(
            cmd(ref), cwd=work, env=_env(), capture_output=True, text=True, timeout=150
        )
        if done.returncode != 0:
            return False, f"uninterrupted run: rc {done.returncode}: {done.stderr[-400:]}", {}
        total = _checkpoint_step(ref)
        if not total or total < 12:
            return False, f"the uninterrupted run ended at step {total}", {}
        tries = []
        for attempt, kill_after in enumerate((total // 2 + 3, total // 3 + 1, 4)):
            run = work / f"run{attempt}"
            proc = subprocess.Popen(
                cmd(run), cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and proc.poll() is None:
                    step = _checkpoint_step(run)
                    if step is not None and step >= kill_after:
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.002)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
            killed_at = _checkpoint_step(run)
            if proc.returncode != -signal.SIGKILL or killed_at is None or killed_at >= total:
                tries.append(f"not killed mid-run (rc {proc.returncode}, step {killed_at})")
                continue
            resumed = subprocess.run(
                cmd(run, "--resume"),
                cwd=work,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=150,
            )
            if resumed.returncode != 0:
                return False, f"--resume: rc {resumed.returncode}: {resumed.stderr[-400:]}", {}
            problems = []
            for sub in ("best", "checkpoints/last"):
                a = load_file(str(ref / sub / "tensors.safetensors"))
                b = load_file(str(run / sub / "tensors.safetensors"))
                if set(a) != set(b):
                    problems.append(f"{sub}: different tensor names")
                    continue
                differ = [k for k in a if not torch.equal(a[k], b[k])]
                if differ:
                    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in differ)
                    problems.append(
                        f"{sub}: {len(differ)}/{len(a)} tensors differ (max {worst:.3g}), "
                        f"e.g. {differ[0]}"
                    )
            if (run / "metrics.csv").read_text() != (ref / "metrics.csv").read_text():
                problems.append("metrics.csv differs")
            detail = f"killed at checkpoint step {killed_at} of {total}, resumed: " + (
                "best/ and checkpoints/last/ torch.equal, metrics.csv equal"
                if not problems
                else "; ".join(problems)
            )
            return not problems, detail, {"killed_at": killed_at, "total": total}
        return False, "; ".join(tries), {}

    part.run(f"kill -9 + --resume on {args.device}, deterministic", check)
    return part.finish()


# --------------------------------------------------------------------------- part e
def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def part_stepcost(args: argparse.Namespace) -> int:
    """The issue's targets from the step-cost JSON; misses are measurements, not failures."""
    part = Part("stepcost", args.result, args.device)
    path = Path(args.json)
    if not path.is_file():
        part.record("step-cost table measured", False, f"no {path}")
        return part.finish()
    work = Path(args.work)
    for line in _lines(work / "stepcost_errors"):
        part.record(f"step_cost.py {line.split()[0]}", False, f"exited with {line.split()[-1]}")
    data = json.loads(path.read_text())
    measured = {r["k"] for r in data["results"]}
    for k in args.expected_k:
        if k not in measured:
            part.notes.append(f"K={k} not measured: the time budget ran out")
            print(f"NOTE  stepcost: K={k} not measured (time budget)", flush=True)
    if data["machine"].get("torchjd") is None:
        part.notes.append("torchjd is not installed: no ÷torchjd targets")
        print("NOTE  stepcost: torchjd is not installed: no ÷torchjd targets", flush=True)
    rows = [r for r in data["results"] if r.get("status") == "ok"]
    failed = [r for r in data["results"] if r.get("status") == "failed"]
    crashed = [(r["library"], r["method"], r["level"], r["k"], r["error"][:80]) for r in failed]
    part.record(
        "step-cost table measured",
        bool(rows) and not failed,
        f"{len(rows)} configurations at K = {sorted({r['k'] for r in rows})}"
        + (f"; failed: {crashed[:5]}" if failed else ""),
    )
    tj = {(r["method"], r["k"]): r for r in rows if r["library"] == "torchjd"}
    lines, targets = [], []

    def target(what: str, value: float | None, limit: float, note: str = "") -> None:
        verdict = "n/a" if value is None else ("PASS" if value <= limit else "MISS")
        shown = "—" if value is None else f"{value:.2f}"
        lines.append(f"{verdict:5} {what:44} {shown:>6} (target <= {limit})  {note}")
        targets.append(
            {"what": what, "value": value, "limit": limit, "verdict": verdict, "note": note}
        )

    for r in sorted(rows, key=lambda r: (r["k"], r["method"])):
        if r["library"] != "polytask":
            continue
        if r["level"] == "params":
            peer = tj.get((r["method"], r["k"]))
            if peer is None:
                continue
            target(
                f"params {r['method']} K={r['k']} ÷ torchjd",
                r["ratio"] / peer["ratio"],
                1.05,
                f"{r['ms']:.2f} ms vs torchjd {peer['ms']:.2f} ms",
            )
        elif r["level"] == "-":
            target(
                f"loss weighting {r['method']} K={r['k']} ×sum",
                r["ratio"],
                1.1,
                f"{r['ms']:.2f} ms",
            )
        elif r["level"] == "features" and r["k"] == 10:
            target(f"features {r['method']} K=10 ×sum", r["ratio"], 1.5, f"{r['ms']:.2f} ms")
    missing_tj = sorted(
        {
            r["method"]
            for r in data["results"]
            if r["library"] == "torchjd" and r.get("status") != "ok"
        }
    )
    print("\nissue 12 targets (ratios: medians of paired rounds; misses are measurements):")
    for line in lines:
        print("  " + line)
    if missing_tj:
        print(f"  torchjd configurations not measured: {missing_tj}")
    counts = {v: sum(t["verdict"] == v for t in targets) for v in ("PASS", "MISS", "n/a")}
    print(f"  targets: {counts}")
    part.notes.append(f"targets: {counts} (a MISS is a measurement, not a failure)")
    part.extra.update(targets=targets, machine=data.get("machine"))
    return part.finish()


# --------------------------------------------------------------------------- assemble
def part_assemble(args: argparse.Namespace) -> int:
    """OUT/gpu_check.json from the parts' results and check.sh's timings."""
    import torch

    work, out = Path(args.work), Path(args.out)
    timings = {}
    tpath = work / "timings.tsv"
    if tpath.is_file():
        for row in csv.reader(tpath.open(), delimiter="\t"):
            if len(row) >= 4:
                timings[row[0]] = {"rc": int(row[1]), "seconds": float(row[2]), "budget_s": row[3]}
    gpu = None
    if args.device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(args.device))
    parts = {}
    any_failed = False
    for name in ("install", "balancing", "precision", "cli", "resume", "stepcost", "throughput"):
        t = timings.get(name)
        path = work / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
        elif t is None:
            continue
        else:
            data = {"part": name, "cases": []}
        rc = None if t is None else t["rc"]
        status = "pass"
        if rc in (124, 137):
            status = "timeout"
        elif rc != 0 or data.get("failed"):
            status = "fail"
        data.update(
            status=status,
            rc=rc,
            seconds=None if t is None else t["seconds"],
            budget_s=None if t is None else t["budget_s"],
        )
        any_failed |= status in ("fail", "timeout")
        parts[name] = data
    versions = {}
    for mod in ("pydantic", "seqeval", "torchjd", "cvxpy", "numpy", "scipy", "transformers"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001
            versions[mod] = None
    report = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "device": args.device,
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "total_seconds": float(args.total) if args.total else None,
        "passed": not any_failed,
        "parts": parts,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(f"\n{'part':12} {'status':8} {'seconds':>8} {'budget':>7}  cases")
    for name, data in parts.items():
        cases = data.get("cases", [])
        n_fail = sum(not c["ok"] for c in cases)
        secs = data.get("seconds")
        print(
            f"{name:12} {data['status']:8} {secs if secs is not None else '—':>8} "
            f"{data.get('budget_s') or '—':>7}  {len(cases) - n_fail}/{len(cases)} passed"
        )
    print(
        f"\n{'PASS' if not any_failed else 'FAIL'}: GPU check on {gpu or args.device}, torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}; {out / 'gpu_check.json'}"
    )
    return 1 if any_failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "part", choices=["balancing", "precision", "cli", "resume", "stepcost", "assemble"]
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--result", type=Path, default=None)
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="stepcost: the step-cost JSON")
    ap.add_argument("--out", default=None, help="assemble: OUT_DIR")
    ap.add_argument("--total", default=None, help="assemble: the script's seconds so far")
    ap.add_argument(
        "--expected-k", type=int, nargs="*", default=[], help="stepcost: the K that were asked"
    )
    args = ap.parse_args()
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="polytask-gpucheck-")
    if args.result is None:
        args.result = Path(args.work) / f"{args.part}.json"
    return {
        "balancing": part_balancing,
        "precision": part_precision,
        "cli": part_cli,
        "resume": part_resume,
        "stepcost": part_stepcost,
        "assemble": part_assemble,
    }[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
