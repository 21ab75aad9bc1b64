"""Step cost of every balancing method, as a ratio to the plain sum of losses, beside torchjd
0.18 and LibMTL 1.1.5.

Model: hard-sharing MLP, trunk 256 -> 3 x (Linear 512 + ReLU), K linear heads 512 -> 1,
MSE per task, batch 128, float32, SGD (lr 1e-3, no momentum). One *step* is the full
training step: forward, the balancing backward, ``optimizer.step()``, ``zero_grad``.

Every configuration (library x method x level x K) is timed against the plain sum
(``sum(losses).backward()``) in the same process, interleaved: each round runs a block of
``--steps`` sum steps and then a block of ``--steps`` method steps; the round's ratio is
median(method block) / median(sum block). Reported: the median over ``--rounds`` rounds of
these paired ratios, with their quartiles and range, and the medians of the step times.
Pairing cancels slow drifts of the machine (here the whole process sometimes runs ~1.4x
slower for minutes, sum and method alike, then recovers), not bursts of load from other
processes (with 2 threads on 2 busy cores a torch step can slow down many-fold): each K
first times the plain sum alone (its reference), and a configuration whose paired sum
blocks are off that reference by more than ``--load-tolerance`` (2x) is measured again (up
to ``--retries`` times; the JSON keeps ``attempts``, and a note where it never settled).

* polytask: every name in ``polytask.balancing.available()``, built with ``make(name)`` and
  driven as the Trainer drives it (``bind``, its ``parameters()`` in the optimiser,
  ``balancing.backward(losses, features=trunk output, shared=trunk parameters,
  level=...)``, ``after_step``), at every level it supports; loss weightings have no level.
* torchjd: ``mtl_backward(losses, features=...)`` + ``jac_to_grad(trunk params, aggregator)``.
* LibMTL: its HPS model mixed with the weighting class, driven as its Trainer does, in
  parameter mode (``rep_grad=False``) and representation mode (``rep_grad=True``); see
  ``peers.py`` for the three work-arounds it needs.

Each configuration is also checked to update the trunk (LibMTL's loss weightings in
representation mode do not: flagged). Peak memory: the extra resident memory of a step
above the memory held before it (VmHWM after resetting it via /proc/self/clear_refs, minus
VmRSS before), measured in a child process run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
freed buffers return to the OS and each step's peak is seen afresh; timing runs in a
process with the default allocator.

Separately: Nash-MTL's weight solve alone at K = 10 on Gramians of the real per-task
gradients of this model, polytask ``weights(G)`` vs torchjd's cvxpy/ECOS solve.

    benchmarks/.venv-peers/bin/python benchmarks/balancing/step_cost.py [--rounds 20]
        [--steps 3] [--threads 2] [--K 2 10 40] [--methods upgrad mgda ...]
        [--libs polytask torchjd libmtl]
        [--device cuda --input 1024 --width 2048 --depth 4 --batch 512 --no-memory --no-nash]

(``--device``/``--input``/``--width``/``--depth``/``--batch``: the GPU check's table,
benchmarks/gpu/check.sh; on CUDA each timed step ends with a synchronisation.)
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

# numpy/scipy work in the peers (cvxpy, quadprog, LibMTL's CAGrad) is on K x K matrices: keep
# OpenBLAS to one thread so that its pool never competes with torch's threads for the cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

warnings.filterwarnings(
    "ignore", message=".*not DPP.*"
)  # cvxpy, inside torchjd's NashMTL, on every solve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import methods  # noqa: E402
import peers  # noqa: E402

import polytask  # noqa: E402
from polytask import balancing  # noqa: E402
from polytask.balancing.base import LossWeighting  # noqa: E402

IN_DIM, WIDTH, DEPTH, BATCH, LR = 256, 512, 3, 128, 1e-3
LEVELS = ("features", "params")
#: where models and batches live (``--device``; the CPU unless told); ``--input``, ``--width``,
#: ``--depth`` and ``--batch`` replace the model's sizes above (the GPU check's table:
#: 1024 -> 4 x 2048, batch 512)
DEVICE = torch.device("cpu")


def _sync() -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a no-op on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# --------------------------------------------------------------------------- model
def build_model(k: int, seed: int = 0) -> tuple[nn.Sequential, dict[str, nn.Linear]]:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = IN_DIM
    for _ in range(DEPTH):
        layers += [nn.Linear(width, WIDTH), nn.ReLU()]
        width = WIDTH
    trunk = nn.Sequential(*layers)
    heads = {f"t{i}": nn.Linear(WIDTH, 1) for i in range(k)}
    if DEVICE.type != "cpu":
        trunk.to(DEVICE)
        for h in heads.values():
            h.to(DEVICE)
    return trunk, heads


def make_batches(k: int, n: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(IN_DIM, k, generator=g) / IN_DIM**0.5
    out = []
    for _ in range(n):
        x = torch.randn(BATCH, IN_DIM, generator=g)
        y = torch.tanh(x @ w) + 0.1 * torch.randn(BATCH, k, generator=g)
        out.append((x.to(DEVICE), y.to(DEVICE)))
    return out


def task_losses(
    heads: dict[str, nn.Module] | nn.ModuleDict, z: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        t: nn.functional.mse_loss(h(z).squeeze(-1), y[:, i])
        for i, (t, h) in enumerate(heads.items())
    }


# --------------------------------------------------------------------------- runners
@dataclass
class Runner:
    """One configuration: ``step()`` runs one full training step on the next batch."""

    library: str
    method: str
    level: str
    k: int
    step: Callable[[], None]
    trunk: nn.Module
    note: str = ""


def _cycle(batches: list) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    state = {"i": 0}

    def nxt() -> tuple[torch.Tensor, torch.Tensor]:
        state["i"] = (state["i"] + 1) % len(batches)
        return batches[state["i"]]

    return nxt


def sum_runner(k: int, base: tuple, batches: list) -> Runner:
    trunk, heads = copy.deepcopy(base)
    params = list(trunk.parameters()) + [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.SGD(params, lr=LR)
    nxt = _cycle(batches)

    def step() -> None:
        x, y = nxt()
        losses = task_losses(heads, trunk(x), y)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return Runner("plain", "sum", "-", k, step, trunk)


def polytask_runner(name: str, level: str, k: int, base: tuple, batches: list) -> Runner:
    trunk, heads = copy.deepcopy(base)
    method, note = methods.build(POLYTASK_SPECS, name)
    method.bind(list(heads))
    if DEVICE.type != "cpu":
        method.to(DEVICE)
    params = list(trunk.parameters()) + [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.SGD(params + list(method.parameters()), lr=LR)
    shared = list(trunk.parameters())
    lvl = None if level == "-" else level
    nxt = _cycle(batches)

    def step() -> None:
        x, y = nxt()
        z = trunk(x)
        losses = task_losses(heads, z, y)
        opt.zero_grad(set_to_none=True)
        balancing.backward(losses, method=method, features=z, shared=shared, level=lvl)
        opt.step()
        method.after_step(
            {t: v.detach() for t, v in losses.items()},
            torch.no_grad()(lambda: task_losses(heads, trunk(x), y)),
        )

    return Runner("polytask", name, level, k, step, trunk, note=note)


def torchjd_runner(name: str, k: int, base: tuple, batches: list) -> Runner:
    from torchjd.autojac import jac_to_grad, mtl_backward

    trunk, heads = copy.deepcopy(base)
    aggregator = peers.torchjd_methods(k)[name]()
    shared = list(trunk.parameters())
    tasks_params = [list(h.parameters()) for h in heads.values()]
    opt = torch.optim.SGD(shared + [p for ps in tasks_params for p in ps], lr=LR)
    nxt = _cycle(batches)

    def step() -> None:
        x, y = nxt()
        z = trunk(x)
        losses = list(task_losses(heads, z, y).values())
        opt.zero_grad(set_to_none=True)
        mtl_backward(losses, features=z, tasks_params=tasks_params, shared_params=shared)
        jac_to_grad(shared, aggregator)
        opt.step()

    return Runner("torchjd", name, "params", k, step, trunk, note=repr(aggregator))


def libmtl_runner(name: str, rep_grad: bool, k: int, base: tuple, batches: list) -> Runner:
    trunk, heads = copy.deepcopy(base)
    model, kwargs = peers.libmtl_model(name, trunk, heads, rep_grad)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    names = list(heads)
    nxt = _cycle(batches)

    def step() -> None:  # the body of LibMTL.Trainer.train's inner loop
        x, y = nxt()
        preds = model(x)
        losses = torch.stack(
            [nn.functional.mse_loss(preds[t].squeeze(-1), y[:, i]) for i, t in enumerate(names)]
        )
        opt.zero_grad()
        model.backward(losses, **kwargs)
        opt.step()

    level = "features" if rep_grad else "params"
    return Runner(
        "LibMTL", name, level, k, step, trunk, note=f"{peers.LIBMTL_METHODS[name][0]}{kwargs or ''}"
    )


POLYTASK_SPECS: dict[str, str] = {}


def make_method(name: str, **options: Any) -> Any:
    return methods.build(POLYTASK_SPECS, name, **options)[0]


def configurations(
    k: int, libs: list[str], methods: list[str] | None, only_levels: list[str] | None = None
) -> list[tuple[str, str, str, Callable]]:
    """(library, method, level, factory(base, batches) -> Runner) for every configuration
    (only those at ``only_levels`` where given)."""
    out: list[tuple[str, str, str, Callable]] = []
    if "polytask" in libs:
        for name in sorted(POLYTASK_SPECS):
            if methods and name not in methods:
                continue
            try:
                probe = make_method(name)
            except Exception as err:  # noqa: BLE001 - a method that cannot be built is reported
                out.append(
                    (
                        "polytask",
                        name,
                        "?",
                        _raiser(f"make({name!r}) failed: {type(err).__name__}: {err}"),
                    )
                )
                continue
            if isinstance(probe, LossWeighting) or getattr(probe, "needs", "") == "losses":
                levels = ["-"]
            else:
                levels = [lv for lv in LEVELS if lv in tuple(getattr(probe, "levels", LEVELS))]
            for lv in levels:
                out.append(
                    (
                        "polytask",
                        name,
                        lv,
                        lambda base, batches, name=name, lv=lv: polytask_runner(
                            name, lv, k, base, batches
                        ),
                    )
                )
    if "torchjd" in libs:
        for name in peers.torchjd_methods(k):
            if methods and name not in methods:
                continue
            out.append(
                (
                    "torchjd",
                    name,
                    "params",
                    lambda base, batches, name=name: torchjd_runner(name, k, base, batches),
                )
            )
    if "libmtl" in libs and peers.libmtl_version() is not None:
        for name in peers.LIBMTL_METHODS:
            if methods and name not in methods:
                continue
            for rep in (False, True):
                out.append(
                    (
                        "LibMTL",
                        name,
                        "features" if rep else "params",
                        lambda base, batches, name=name, rep=rep: libmtl_runner(
                            name, rep, k, base, batches
                        ),
                    )
                )
    return out if not only_levels else [c for c in out if c[2] in only_levels]


def _raiser(message: str) -> Callable:
    def factory(*_args: Any) -> Runner:
        raise RuntimeError(message)

    return factory


# --------------------------------------------------------------------------- measuring
@dataclass
class Result:
    library: str
    method: str
    level: str
    k: int
    status: str = "ok"  # ok | failed | unavailable
    error: str = ""
    note: str = ""
    updates_trunk: bool | None = None
    ms: float | None = None
    sum_ms: float | None = None
    ratio: float | None = None
    ratio_q25: float | None = None
    ratio_q75: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    rounds: int = 0
    attempts: int = 1
    sum_ref_ms: float | None = None
    peak_mib: float | None = None
    sum_peak_mib: float | None = None
    round_ratios: list[float] = field(default_factory=list)


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _block(step: Callable[[], None], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _trunk_changes(runner: Runner) -> bool:
    before = [p.detach().clone() for p in runner.trunk.parameters()]
    runner.step()
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, runner.trunk.parameters()))


def time_config(runner: Runner, plain: Runner, rounds: int, steps: int, warmup: int) -> Result:
    res = Result(runner.library, runner.method, runner.level, runner.k, note=runner.note)
    res.updates_trunk = _trunk_changes(runner)
    for _ in range(warmup):
        plain.step()
        runner.step()
    method_t, sum_t = [], []
    for _ in range(rounds):
        sum_t.append(_block(plain.step, steps))
        method_t.append(_block(runner.step, steps))
    res.round_ratios = [m / s for m, s in zip(method_t, sum_t)]
    res.ms = 1e3 * statistics.median(method_t)
    res.sum_ms = 1e3 * statistics.median(sum_t)
    res.ratio = statistics.median(res.round_ratios)
    res.ratio_q25, res.ratio_q75 = (
        _quantile(res.round_ratios, 0.25),
        _quantile(res.round_ratios, 0.75),
    )
    res.ratio_min, res.ratio_max = min(res.round_ratios), max(res.round_ratios)
    res.rounds = rounds
    if not res.updates_trunk:
        res.note = (
            res.note + "; " if res.note else ""
        ) + "the step leaves the shared trunk unchanged"
    return res


def _status_kib() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(key + r":\s+(\d+)", text).group(1)) for key in ("VmRSS", "VmHWM")}


def peak_step_mib(runner: Runner, steps: int = 2) -> float:
    """Extra resident memory of ``steps`` steps above what was resident before them (MiB)."""
    runner.step()  # lazily created state (solver set-up, optimiser buffers) belongs to the model
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib()["VmRSS"]
    for _ in range(steps):
        runner.step()
    return (_status_kib()["VmHWM"] - before) / 1024


def memory_phase(args: argparse.Namespace) -> None:
    """Child process: peak step memory of every configuration, as JSON on stdout."""
    torch.set_num_threads(args.threads)
    POLYTASK_SPECS.update(methods.discover(not args.no_discover))
    out: dict[str, float | str] = {}
    for k in args.K:
        base = build_model(k)
        batches = make_batches(k)
        out[f"plain|sum|-|{k}"] = peak_step_mib(sum_runner(k, base, batches))
        for lib, name, level, factory in configurations(k, args.libs, args.methods, args.levels):
            key = f"{lib}|{name}|{level}|{k}"
            try:
                out[key] = peak_step_mib(factory(base, batches))
            except Exception as err:  # noqa: BLE001
                out[key] = f"{type(err).__name__}: {err}"
            gc.collect()
    print("MEMORY-JSON " + json.dumps(out))


def measure_memory(args: argparse.Namespace) -> dict[str, float | str]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        "memory",
        "--threads",
        str(args.threads),
        "--K",
        *map(str, args.K),
        "--libs",
        *args.libs,
        *("--input", str(args.input), "--width", str(args.width)),
        *("--depth", str(args.depth), "--batch", str(args.batch)),
    ] + (["--no-discover"] if args.no_discover else [])
    if args.methods:
        cmd += ["--methods", *args.methods]
    if args.levels:
        cmd += ["--levels", *args.levels]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY-JSON "):
            return json.loads(line[len("MEMORY-JSON ") :])
    print(f"memory phase failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
    return {}


# --------------------------------------------------------------------------- Nash-MTL solve
def nash_reference(g: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """α > 0 with G α = 1/α: Newton on φ(α) = ½αᵀGα − Σ log α_i (strictly convex for G ≻ 0),
    each step shortened to keep α > 0 and to decrease φ."""
    a = 1 / g.diagonal().clamp_min(1e-300).sqrt()

    def phi(x: torch.Tensor) -> float:
        return float(0.5 * x @ g @ x - x.log().sum())

    for _ in range(iters):
        grad = g @ a - 1 / a
        if float(grad.norm()) <= 1e-13 * float((1 / a).norm()):
            break
        step = torch.linalg.solve(g + torch.diag(1 / a**2), grad)
        t = 1.0
        while bool(((a - t * step) <= 0).any()) or phi(a - t * step) > phi(a):
            t /= 2
            if t < 1e-12:
                return a
        a = a - t * step
    return a


def nash_solve(k: int = 10, n: int = 20, reps: int = 3) -> dict[str, Any]:
    """Nash-MTL's weight solve alone on n Gramians of real per-task gradients (params level)."""
    base = build_model(k)
    trunk, heads = base
    shared = list(trunk.parameters())
    grams = []
    opt = torch.optim.SGD(
        list(trunk.parameters()) + [p for h in heads.values() for p in h.parameters()], lr=LR
    )
    for x, y in make_batches(k, n=n, seed=7):
        losses = list(task_losses(heads, trunk(x), y).values())
        rows = []
        for loss in losses:
            grads = torch.autograd.grad(loss, shared, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        jac = torch.stack(rows)
        grams.append(jac @ jac.T)  # float32, as in training
        opt.zero_grad(set_to_none=True)
        sum(losses).backward()
        opt.step()  # the next Gramian comes from the next training step
    out: dict[str, Any] = {
        "K": k,
        "gramians": n,
        "source": "params-level Gramians of consecutive SGD steps",
    }

    def residual(g: torch.Tensor, a: torch.Tensor) -> float:
        g64, a64 = g.double(), a.double()
        return float((g64 @ a64 - 1 / a64).norm() / (1 / a64).norm())

    # reference: the unique minimiser of ½αᵀGα − Σ log α_i (G positive definite), whose
    # stationarity condition is Nash-MTL's G α = 1/α; damped Newton in float64
    refs = [nash_reference(g.double()) for g in grams]
    out["reference_residual_max"] = max(residual(g, a) for g, a in zip(grams, refs))

    def rel_to_ref(sols: list[torch.Tensor]) -> float:
        return max(float((a.double() - r).abs().max() / r.abs().max()) for a, r in zip(sols, refs))

    # polytask
    try:
        method, out["polytask_options"] = methods.build(
            POLYTASK_SPECS, "nash_mtl", update_every=1, max_norm=0.0
        )
        method.bind([f"t{i}" for i in range(k)])
        losses = {f"t{i}": torch.tensor(1.0) for i in range(k)}
        method.weights(grams[0], losses)  # warm-up
        times, ours = [], []
        for _ in range(reps):
            ours = []
            for g in grams:
                t0 = time.perf_counter()
                ours.append(method.weights(g, losses).detach())
                times.append(time.perf_counter() - t0)
        out["polytask_ms"] = 1e3 * statistics.median(times)
        out["polytask_residual_max"] = max(residual(g, a) for g, a in zip(grams, ours))
        out["polytask_max_rel_diff_to_reference"] = rel_to_ref(ours)
    except Exception as err:  # noqa: BLE001
        out["polytask_error"] = f"{type(err).__name__}: {err}"
        ours = []
    # torchjd (its Weighting takes a matrix M and forms M Mᵀ; M = Cholesky factor of G, K x K)
    if peers.torchjd_version() is not None:
        from torchjd.aggregation import NashMTL

        factors = [torch.linalg.cholesky(g.double()).float() for g in grams]
        weighting = NashMTL(n_tasks=k, max_norm=0.0).weighting  # no norm clipping: the raw solve
        weighting(factors[0])
        times, theirs = [], []
        for _ in range(reps):
            weighting.reset()
            weighting(factors[0])
            theirs = []
            for _g, m in zip(grams, factors):
                t0 = time.perf_counter()
                a = weighting(m)
                times.append(time.perf_counter() - t0)
                # torchjd divides G by |G|_F but multiplies the constraint back by the same
                # factor (as the official Nash-MTL code does): a solves the raw G a = 1/a
                theirs.append(a.double())
        out["torchjd_ms"] = 1e3 * statistics.median(times)
        out["torchjd_residual_max"] = max(residual(g, a) for g, a in zip(grams, theirs))
        out["torchjd_max_rel_diff_to_reference"] = rel_to_ref(theirs)
        if ours:
            out["speedup"] = out["torchjd_ms"] / out["polytask_ms"]
            rel = [
                float((a.double() - b).abs().max() / b.abs().max()) for a, b in zip(ours, theirs)
            ]
            out["max_rel_diff_to_torchjd"] = max(rel)
            out["median_rel_diff_to_torchjd"] = statistics.median(rel)
    return out


# --------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None
    return {
        "cpu": cpu,
        "device": str(DEVICE),
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "polytask": polytask.__version__,
        "torchjd": peers.torchjd_version(),
        "LibMTL": peers.libmtl_version(),
        "load_before": os.getloadavg(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }


def fmt_ratio(r: Result) -> str:
    if r.status != "ok":
        return r.status
    return f"{r.ratio:5.2f} [{r.ratio_q25:.2f}–{r.ratio_q75:.2f}]"


def print_table(results: list[Result]) -> None:
    by = {(r.library, r.method, r.level, r.k): r for r in results}
    tj = {(r.method, r.k): r for r in results if r.library == "torchjd" and r.status == "ok"}
    print(
        f"\n{'library':9} {'method':12} {'level':8} {'K':>3} {'ms':>8} {'×sum [IQR]':>18} "
        f"{'÷torchjd':>9} {'peak MiB':>9}  note"
    )
    for key in sorted(by, key=lambda kk: (kk[3], kk[1], kk[0], kk[2])):
        r = by[key]
        rel = ""
        if (
            r.library == "polytask"
            and r.level == "params"
            and (r.method, r.k) in tj
            and r.status == "ok"
        ):
            rel = f"{r.ratio / tj[(r.method, r.k)].ratio:.2f}"
        ms = f"{r.ms:8.2f}" if r.ms is not None else f"{'—':>8}"
        peak = f"{r.peak_mib:9.1f}" if isinstance(r.peak_mib, float) else f"{'—':>9}"
        note = r.error if r.status != "ok" else r.note
        print(
            f"{r.library:9} {r.method:12} {r.level:8} {r.k:>3} {ms} {fmt_ratio(r):>18} {rel:>9} "
            f"{peak}  {note[:90]}"
        )


def main() -> None:
    global DEVICE, IN_DIM, WIDTH, DEPTH, BATCH
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed block")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--K", type=int, nargs="+", default=[2, 10, 40])
    ap.add_argument("--methods", nargs="*", default=None, help="only these method names")
    ap.add_argument("--libs", nargs="+", default=["polytask", "torchjd", "libmtl"])
    ap.add_argument(
        "--levels",
        nargs="+",
        default=None,
        choices=["features", "params", "-"],
        help="only configurations at these levels ('-': loss weightings)",
    )
    ap.add_argument(
        "--load-tolerance",
        type=float,
        default=2.0,
        help="re-measure a configuration whose paired plain-sum blocks are off the K's reference "
        "time by more than this factor (external load)",
    )
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--no-discover",
        action="store_true",
        help="only registered polytask methods (default: also Balancer classes found in "
        "polytask/balancing/*.py that are not registered yet)",
    )
    ap.add_argument("--no-nash", action="store_true")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "balancing_step_cost.json"
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="re-measure: replace the configurations measured now in the existing --out file "
        "(and its Nash-MTL solve unless --no-nash), keep the others",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--input", type=int, default=IN_DIM, help="input width of the trunk")
    ap.add_argument("--width", type=int, default=WIDTH, help="width of each trunk layer")
    ap.add_argument("--depth", type=int, default=DEPTH, help="trunk layers (Linear + ReLU)")
    ap.add_argument("--batch", type=int, default=BATCH, help="examples per step")
    ap.add_argument("--phase", default="time", choices=["time", "memory"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    DEVICE = torch.device(args.device)
    IN_DIM, WIDTH, DEPTH, BATCH = args.input, args.width, args.depth, args.batch
    if DEVICE.type != "cpu" and not args.no_memory:
        ap.error("--no-memory is needed off the CPU (peak memory is read from /proc)")
    if args.phase == "memory":
        memory_phase(args)
        return
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    info = machine()
    info.update(
        threads=args.threads,
        openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
        load_tolerance=args.load_tolerance,
        retries=args.retries,
        rounds=args.rounds,
        steps_per_block=args.steps,
        warmup=args.warmup,
        model=f"{IN_DIM} -> {DEPTH} x {WIDTH} ReLU -> K x Linear({WIDTH}, 1), MSE, "
        f"batch {BATCH}, float32, SGD lr {LR}",
    )
    print(json.dumps(info))
    POLYTASK_SPECS.update(methods.discover(not args.no_discover))
    info["polytask_registered"] = balancing.available()
    info["polytask_unregistered"] = {n: s for n, s in POLYTASK_SPECS.items() if n != s}
    print(
        f"polytask methods: {sorted(POLYTASK_SPECS)} (unregistered, found by module: "
        f"{sorted(info['polytask_unregistered'])})"
    )
    results: list[Result] = []
    for k in args.K:
        base = build_model(k)
        batches = make_batches(k)
        plain = sum_runner(k, base, batches)
        for _ in range(args.warmup):
            plain.step()
        # reference time of the plain sum at this K: a configuration whose paired sum blocks
        # are far from it ran under external load (other processes on the cores) and is re-measured
        ref = statistics.median(_block(plain.step, args.steps) for _ in range(10))
        print(f"K={k:<3} plain sum: {1e3 * ref:.2f} ms per step (reference for this K)", flush=True)
        for lib, name, level, factory in configurations(k, args.libs, args.methods, args.levels):
            try:
                runner = factory(base, batches)
            except Exception as err:  # noqa: BLE001
                results.append(
                    Result(
                        lib,
                        name,
                        level,
                        k,
                        status="unavailable",
                        error=f"{type(err).__name__}: {err}",
                    )
                )
                print(f"K={k:<3} {lib:9} {name:12} {level:8} unavailable: {err}", flush=True)
                continue
            attempt = 0
            while True:
                attempt += 1
                try:
                    res = time_config(runner, plain, args.rounds, args.steps, args.warmup)
                except Exception as err:  # noqa: BLE001
                    tb = traceback.format_exc().strip().splitlines()
                    res = Result(
                        lib,
                        name,
                        level,
                        k,
                        status="failed",
                        error=f"{type(err).__name__}: {err}"[:300],
                        note=tb[-3] if len(tb) >= 3 else "",
                    )
                    break
                res.attempts, res.sum_ref_ms = attempt, 1e3 * ref
                off = max(res.sum_ms / res.sum_ref_ms, res.sum_ref_ms / res.sum_ms)
                if off <= args.load_tolerance:
                    break
                if attempt > args.retries:
                    res.note = (res.note + "; " if res.note else "") + (
                        f"plain sum {off:.1f}x off its reference in all {attempt} attempts: "
                        "external load"
                    )
                    break
                print(
                    f"K={k:<3} {lib:9} {name:12} {level:8} plain sum {res.sum_ms:.1f} ms vs "
                    "reference "
                    f"{res.sum_ref_ms:.1f} ms: external load, measuring again",
                    flush=True,
                )
            results.append(res)
            print(
                f"K={k:<3} {lib:9} {name:12} {level:8} "
                + (
                    f"{res.ms:8.2f} ms  ×sum {fmt_ratio(res)}"
                    if res.status == "ok"
                    else f"{res.status}: {res.error}"
                )
                + (f"  ({res.note})" if res.note and res.status == "ok" else ""),
                flush=True,
            )
            del runner
            gc.collect()
    nash = None if args.no_nash else nash_solve()
    if nash:
        print("Nash-MTL weight solve, K=10:", json.dumps(nash))
    if not args.no_memory:
        mem = measure_memory(args)
        for r in results:
            v = mem.get(f"{r.library}|{r.method}|{r.level}|{r.k}")
            r.peak_mib = v if isinstance(v, float) else None
            s = mem.get(f"plain|sum|-|{r.k}")
            r.sum_peak_mib = s if isinstance(s, float) else None
    info["load_after"] = os.getloadavg()
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in results]
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        new_keys = {(r["library"], r["method"], r["level"], r["k"]) for r in rows}
        kept = [
            r
            for r in old["results"]
            if (r["library"], r["method"], r["level"], r["k"]) not in new_keys
        ]
        for r in rows:
            r["remeasured"] = info["date"]
        rows = kept + rows
        remeasured = old["machine"].get("remeasured", []) + [
            {
                "date": info["date"],
                "configs": sorted(f"{a}|{b}|{c}|{d}" for a, b, c, d in new_keys),
                "load_before": info["load_before"],
                "load_after": info["load_after"],
            }
        ]
        info = dict(old["machine"], remeasured=remeasured)
        nash = nash if nash is not None else old.get("nash_solve")
    args.out.write_text(
        json.dumps(
            {
                "machine": info,
                "results": rows,
                "nash_solve": nash,
                "memory_method": "VmHWM - VmRSS around 2 steps after one warm-up step, "
                "/proc/self/clear_refs reset, MALLOC_MMAP_THRESHOLD_=65536",
            },
            indent=1,
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
