"""``polytask train | eval | predict | compare | sweep | list``.

Configuration problems print one line ``error: <field or file>: <problem>; fix: <hint>``
and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import typer

from .config.errors import ConfigError
from .errors import PolytaskError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Multi-task learning: train, evaluate, predict, and compare against single-task models.",
)

_STATE = {"debug": False}


def _fail(err: BaseException) -> None:
    if _STATE["debug"]:
        traceback.print_exc()
    msg = " ".join(str(err).split())  # one line, whatever the message
    if not isinstance(err, PolytaskError):  # where, problem and fix are known for those only
        msg = (
            f"{type(err).__name__}: {msg}; fix: see the message (run with --debug for a traceback)"
        )
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _guard(fn: Any, *args: Any, refuse_imports: bool = False, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with its errors as one line and exit 2; ``refuse_imports``
    (``--no-imports``): every import path a config names is refused before importing it."""
    from .registry import no_imports

    try:
        with no_imports(refuse_imports):
            return fn(*args, **kwargs)
    except (PolytaskError, FileNotFoundError) as err:
        _fail(err)
    except OSError as err:  # an I/O error (read-only, disk full, a file where a folder goes)
        if _STATE["debug"]:
            raise
        _fail(
            ConfigError(
                str(err.filename or ""),
                err.strerror or str(err),
                "check the path, its permissions and the free space",
            )
        )
    except (ValueError, ImportError) as err:
        if _STATE["debug"]:
            raise
        _fail(err)


def _no_imports_option() -> Any:
    return typer.Option(
        False,
        "--no-imports",
        help="Refuse every import path (package.module:Class) the config names, before "
        "importing anything: only built-in and registered names. A config that names "
        "modules is code; use this for configs you do not trust.",
    )


def _device_option(default: str | None) -> Any:
    where = "the config's trainer.device (default auto)" if default is None else default
    return typer.Option(
        default,
        "--device",
        help="Where the model runs: auto (CUDA when available, else the CPU), cpu, cuda or "
        f"cuda:N (default: {where}).",
    )


def _checked_device(device: str) -> str:
    """``device`` when this machine has it, else a one-line error at ``--device``."""
    from .engine.trainer import resolve_device
    from .errors import OptionError

    try:
        resolve_device(device)
    except OptionError as err:
        raise ConfigError("--device", err.problem, err.fix) from None
    return device


def _with_device(overrides: list[str] | None, device: str | None) -> list[str]:
    """The ``--set`` overrides, then ``trainer.device`` from ``--device`` when given."""
    return [*(overrides or []), *([f"trainer.device={_checked_device(device)}"] if device else [])]


def _read(config: Path, overrides: list[str] | None) -> tuple[Any, Any]:
    from .config.load import read_config

    return read_config(config, overrides or [])


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"polytask {__version__} (torch {torch_version()})")
        raise typer.Exit()


def torch_version() -> str:
    import torch

    return str(torch.__version__)


#: the commands that run across torchrun's ranks (the others run in one process)
_DISTRIBUTED_COMMANDS = {"train"}


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    _STATE["debug"] = debug
    command = ctx.invoked_subcommand
    if command and command not in _DISTRIBUTED_COMMANDS:
        from .engine.distributed import world_size_from_env

        if world_size_from_env() > 1:
            _fail(
                ConfigError(
                    "torchrun",
                    f"polytask {command} runs in one process, not across "
                    f"{world_size_from_env()} ranks (only train does)",
                    f"run polytask {command} without torchrun",
                )
            )


def _print_metrics(metrics: dict[str, dict[str, float]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("task", "metric", "value"):
        table.add_column(col)
    for t, ms in metrics.items():
        for m, v in ms.items():
            table.add_row(t, m, f"{v:.4f}")
    Console(stderr=False).print(table)


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML config."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<name>)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override, e.g. trainer.epochs=3."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its checkpoints/last."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace the run in --out: the new run is trained beside it and swapped in when "
        "complete (with --resume: start again when there is no checkpoint).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print test metrics as JSON."),
    device: str | None = _device_option(None),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Train the multi-task model; writes a run directory (an existing one only with
    --resume or --overwrite)."""
    from .runs import train

    def go() -> Any:
        cfg, raw = _read(config, _with_device(set_, device))
        run = out or Path("runs") / cfg.name
        return train(cfg, raw, config.resolve().parent, run, resume=resume, overwrite=overwrite)

    result = _guard(go, refuse_imports=no_imports)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports for all
        return
    if as_json:
        typer.echo(json.dumps(result.test))
    else:
        _print_metrics(result.test, f"test metrics ({result.run_dir})")


def _parse_tests(items: list[str] | None) -> dict[str, Path]:
    out = {}
    for item in items or []:
        task, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--test {item}",
                "not of the form TASK=PATH",
                "write e.g. --test aspects=test.jsonl",
            )
        out[task] = Path(path)
    return out


def evaluate_run(
    run_dir: Path, tests: dict[str, Path], fmt: str | None, device: str = "auto"
) -> dict[str, dict[str, float]]:
    """Metrics of a trained run on its own test split, or on other files per task."""
    from .config.build import Experiment
    from .config.schema import SourceConfig
    from .config.sources import load_source
    from .runs import load

    run = load(run_dir, device=_checked_device(device))
    cfg = run.cfg
    if not tests:
        exp = Experiment(
            cfg,
            run.base_dir,
            vocab=run.vocab,
            labels={
                t: list(k.kind.labels) for t, k in run.tasks.items() if hasattr(k.kind, "labels")
            },
        )
        return run.evaluate(exp.train_sources(split="test"))
    results: dict[str, dict[str, float]] = {}
    for task, path in tests.items():
        if task not in run.tasks:
            raise ConfigError(f"--test {task}", "undefined task", f"use one of {sorted(run.tasks)}")
        name, src = next(
            ((n, s) for n, s in cfg.data.sources.items() if task in s.tasks), (None, None)
        )
        if src is None:
            raise ConfigError(
                f"--test {task}", "no source of the run labels this task", "check the task name"
            )
        same = (fmt or src.format) == src.format
        # another format reads the task's labels from its default field (CoNLL: the last column)
        field = src.tasks[task] if same else _default_field(str(fmt), task)
        source = SourceConfig(
            format=fmt or src.format,
            train=str(path.resolve()),
            tasks={task: field},
            options=src.options if same else {},
        )
        data_cfg = cfg.data.model_copy(update={"val_fraction": 0.0, "test_fraction": 0.0})
        examples = load_source(f"--test {task}", source, data_cfg, Path.cwd(), cfg.seed).train
        for i, ex in enumerate(examples):
            raw = ex.targets.get(task)
            if raw is not None:
                try:
                    run.tasks[task].kind.encode_target(raw)
                except ValueError as err:
                    raise ConfigError(
                        str(path), f"example {ex.id or i}: {err}", "the run's label set is fixed"
                    ) from None
        metrics = run.evaluate({"test": examples})
        results[task] = metrics.get(task, {})
    return results


def _default_field(fmt: str, task: str) -> Any:
    """Where format ``fmt`` finds ``task``'s labels when nothing says (``Reader.default_field``)."""
    from .data.formats import FORMATS
    from .errors import OptionError

    try:
        return FORMATS.resolve(fmt).default_field(task)
    except OptionError as err:
        raise ConfigError("--format", err.problem, err.fix) from None


@app.command("eval")
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `polytask train`."),
    test: list[str] | None = typer.Option(
        None, "--test", help="TASK=PATH: evaluate TASK on another file."
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        help="Format of the --test files (see `polytask list formats`, or "
        "package.module:Class); another format than the run's reads labels from its default "
        "field (CoNLL: the last column; others: the field named TASK).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {task: {metric: value}} as JSON."),
    device: str = _device_option("auto"),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Evaluate a trained run (its test split, or --test files)."""
    metrics = _guard(
        lambda: evaluate_run(run_dir, _parse_tests(test), fmt, device), refuse_imports=no_imports
    )
    if as_json:
        typer.echo(json.dumps(metrics))
    else:
        _print_metrics(metrics, f"metrics ({run_dir})")


@app.command("predict")
def predict_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `polytask train`."),
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help="Text (a line each), .jsonl or .csv file; for a format-tabular run, rows: "
        ".jsonl objects of column -> value, or a .csv with a header; for a format-molecules "
        "run, SMILES (a line each, or the run's SMILES column / field of a .csv / .jsonl).",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="JSONL output file (default stdout)."
    ),
    text_field: str | None = typer.Option(
        None,
        "--text-field",
        help="JSONL field / CSV column with the text (default text; for a format-molecules "
        "run, the SMILES column it was trained with).",
    ),
    tokenizer: str | None = typer.Option(
        None,
        "--tokenizer",
        help="How raw text is split: whitespace, words or chars (default: as the run's "
        "sources split it in training).",
    ),
    device: str = _device_option("auto"),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Predict every task for each input (one forward pass); writes JSONL."""
    from .runs import load
    from .runs.inputs import read_inputs, read_rows

    def go() -> list[dict[str, Any]]:
        if output is not None:
            _check_output(output)
        run = load(run_dir, device=_checked_device(device))
        if run.experiment.tabular is not None:  # format tabular: rows of column -> value
            rows = read_rows(input_path)
            return [{"input": x, **p} for x, p in zip(rows, run.predict(rows))]
        field = text_field or run.smiles_column or "text"  # molecules: SMILES as trained
        inputs = read_inputs(input_path, field)
        return [
            {"input": x if isinstance(x, str) else " ".join(x), **p}
            for x, p in zip(inputs, run.predict(inputs, tokenizer=tokenizer))
        ]

    rows = _guard(go, refuse_imports=no_imports)
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    if output:
        _guard(_write_output, output, lines)
    else:
        sys.stdout.write(lines)


def _check_output(path: Path) -> None:
    """Fail before any work when ``--output`` cannot be written."""
    if path.is_dir():
        raise ConfigError("--output", f"{path} is a directory", "give a file path")
    if not path.parent.is_dir():
        raise ConfigError(
            "--output", f"directory {path.parent} does not exist", "create it, or give another path"
        )


def _write_output(path: Path, text: str) -> None:
    from .engine.checkpoint import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise ConfigError(
            "--output",
            f"cannot write {path}: {err.strerror or err}",
            "give a writable path with free space",
        ) from None


@app.command("compare")
def compare_cmd(
    config: Path = typer.Argument(..., help="YAML config."),
    seeds: int = typer.Option(
        1, "--seeds", help="Seeds (seed, seed+1, ...): mean ± std and a paired 95% CI."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output directory (default runs/<name>-compare)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help="Override, e.g. trainer.epochs=3."),
    as_json: bool = typer.Option(
        False, "--json", help="Print {stl, mtl, delta_m[, ci95]} as JSON."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Reuse the seeds an interrupted compare into --out finished."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the seeds a comparison into --out left."
    ),
    baselines: Path | None = typer.Option(
        None,
        "--baselines",
        help="Where single-task models are kept and reused across comparisons "
        "(keyed by a digest of what they depend on; default: baselines/ beside --out).",
    ),
    device: str | None = _device_option(None),
    report: bool = typer.Option(
        False, "--report", help="Also write OUT/report.html (see `polytask report`)."
    ),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Train MTL and one STL model per task on the same data; print the table and Δm."""
    from .runs import compare

    def go() -> Any:
        cfg, raw = _read(config, _with_device(set_, device))
        directory = out or Path("runs") / f"{cfg.name}-compare"
        return compare(
            cfg,
            raw,
            config.resolve().parent,
            directory,
            seeds=seeds,
            resume=resume,
            overwrite=overwrite,
            baselines=baselines,
        ), directory

    summary, directory = _guard(go, refuse_imports=no_imports)
    if report:
        from .report import write_report

        _guard(write_report, [directory], directory / "report.html")
    if as_json:
        keys = ("stl", "mtl", "delta_m", "ci95")
        typer.echo(json.dumps({k: summary[k] for k in keys if k in summary}))
    else:
        typer.echo((directory / "compare.md").read_text(encoding="utf-8"))


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="YAML config."),
    grid: list[str] | None = typer.Option(
        None, "--grid", help="KEY=V1,V2,... e.g. balancing.weights.ner=0.1,1"
    ),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma-separated methods to train beside, e.g. uw,famo."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output directory (default runs/<name>-sweep)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help="Override, e.g. trainer.epochs=3."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the trials an interrupted sweep into --out left."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the trials a sweep into --out left (see train)."
    ),
    device: str | None = _device_option(None),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Search fixed task weights on validation data; report the best beside adaptive methods."""
    from .sweep import parse_grid, sweep

    def go() -> Any:
        cfg, raw = _read(config, _with_device(set_, device))
        names = [m.strip() for m in (methods or "").split(",") if m.strip()]
        directory = out or Path("runs") / f"{cfg.name}-sweep"
        return sweep(
            raw,
            config.resolve().parent,
            directory,
            parse_grid(grid or []),
            names,
            resume=resume,
            overwrite=overwrite,
        ), directory

    summary, directory = _guard(go, refuse_imports=no_imports)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        typer.echo((directory / "sweep.md").read_text(encoding="utf-8"))


#: ``polytask list KIND``: each pluggable kind's registry, by the word a user types
REGISTRIES = {
    "methods": "polytask.balancing:METHODS",
    "kinds": "polytask.tasks:KINDS",
    "encoders": "polytask.nn:ENCODERS",
    "architectures": "polytask.sharing:ARCHITECTURES",
    "task-layers": "polytask.sharing:TASK_LAYERS",
    "samplers": "polytask.data.samplers:SAMPLERS",
    "formats": "polytask.data.formats:FORMATS",
}


@app.command("list")
def list_cmd(
    kind: str = typer.Argument(..., metavar="KIND", help=" | ".join(REGISTRIES)),
    names_only: bool = typer.Option(False, "--names", help="Print the names only."),
) -> None:
    """List the names a config may give for KIND, each with its docstring's first line
    (any other name must be an import path package.module:Class)."""
    from ._imports import import_object
    from .registry import describe

    if kind not in REGISTRIES:
        _fail(ConfigError("KIND", f"unknown kind {kind!r}", f"use one of {', '.join(REGISTRIES)}"))
    registry = import_object(REGISTRIES[kind])
    width = max(map(len, registry), default=0)
    for name in registry.names():
        typer.echo(name if names_only else f"{name:<{width}}  {describe(registry[name])}".rstrip())


@app.command("report")
def report_cmd(
    directories: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR...",
        help="Run, comparison or grouping (group --train) directories, side by side.",
    ),
    out: Path = typer.Option(
        Path("report.html"), "--out", "-o", help="HTML file (PNGs go to <stem>_files/)."
    ),
) -> None:
    """Write one self-contained HTML report (opens from disk, offline): learning curves,
    loss weights, gradient conflict, STL vs MTL with Δm and its CI, cost; for a grouping,
    single-task vs all-in-one vs grouped per task."""
    from .report import write_report

    path = _guard(write_report, directories, out)
    typer.echo(f"wrote {path}")


@app.command("validate")
def validate_cmd(
    config: Path = typer.Argument(..., help="YAML config."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override, e.g. trainer.epochs=3."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Check a config and its data without training: examples per source and split, label
    sets and counts, missing-label shares, input lengths, a tokenisation sample, the model."""
    from .runs.validation import check_config, check_text

    def go() -> Any:
        cfg, _ = _read(config, set_)
        return check_config(cfg, config.resolve().parent)

    summary = _guard(go, refuse_imports=no_imports)
    typer.echo(json.dumps(summary, ensure_ascii=False) if as_json else check_text(summary))


@app.command("init")
def init_cmd(
    data_files: list[Path] = typer.Argument(
        ...,
        metavar="DATA_FILE...",
        help="JSONL, CSV/TSV/.data (text, tabular or SMILES) or CoNLL files.",
    ),
    out: Path = typer.Option(Path("config.yaml"), "--out", "-o", help="Config file to write."),
    name: str | None = typer.Option(
        None, "--name", help="The run name (default from the first file)."
    ),
    targets: list[str] | None = typer.Option(
        None,
        "--targets",
        help="Task columns COL[,COL...] (repeatable): a tabular CSV's tasks (default: its "
        "last column); in other files only these become tasks. CoNLL files refuse it.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
) -> None:
    """Propose a commented config from data files: tasks and their kinds, label sets, an
    encoder (text, tabular or SMILES fingerprints), a sampler. `polytask validate` it,
    then `polytask train` it."""
    from .config.propose import propose, render
    from .engine.checkpoint import atomic_write_text

    columns = [c.strip() for t in targets or [] for c in t.split(",") if c.strip()]

    def go() -> tuple[str, list[str]]:
        if out.exists() and not force:
            raise ConfigError(
                "--out", f"{out} exists", "give --force to replace it, or another --out"
            )
        if not out.parent.is_dir():
            raise ConfigError("--out", f"directory {out.parent} does not exist", "create it")
        if targets is not None and not columns:
            raise ConfigError("--targets", "names no column", "give COL[,COL...]")
        proposal = propose(data_files, targets=columns or None)
        text = render(proposal, out, name)
        atomic_write_text(out, text)
        return text, proposal.messages

    text, messages = _guard(go)
    typer.echo(text, nl=False)
    for message in messages:
        typer.echo(f"note: {message}", err=True)
    typer.echo(f"# wrote {out}", err=True)


@app.command("serve")
def serve_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `polytask train`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    max_batch: int = typer.Option(32, "--max-batch", help="Inputs per forward pass."),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="How long a request waits to share its batch."
    ),
    queue_size: int = typer.Option(
        1024, "--queue", help="Inputs waiting at most; beyond, requests get 503 + Retry-After."
    ),
    max_inputs: int = typer.Option(256, "--max-inputs", help="Inputs per request."),
    device: str = _device_option("auto"),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Serve every task of a run over HTTP (POST /predict, GET /health, GET /tasks, /docs)
    from one forward pass per micro-batch; needs the serve extra (fastapi, uvicorn)."""
    from .serve import Limits, serve

    limits = Limits(
        max_inputs=max_inputs, max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size
    )
    _guard(
        lambda: serve(str(run_dir), host, port, limits, device=_checked_device(device)),
        refuse_imports=no_imports,
    )


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by `polytask train`."),
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Path | None = typer.Option(
        None, "--out", help="Output file (default RUN_DIR/model.onnx)."
    ),
    exporter: str = typer.Option(
        "auto", "--exporter", help="auto (dynamo, else TorchScript), dynamo or torchscript."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the export's summary as JSON."),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Export the shared encoder and every head as one ONNX graph (per-task outputs named
    after the tasks), checked against PyTorch in onnxruntime; needs the onnx extra."""
    from .export import TOLERANCE, export_run

    done = _guard(
        lambda: export_run(run_dir, out, format=fmt, exporter=exporter), refuse_imports=no_imports
    )
    if as_json:
        typer.echo(json.dumps(done.summary()))
        return
    typer.echo(
        f"wrote {done.path} ({done.exporter} exporter; outputs: {', '.join(done.outputs)}); "
        f"onnxruntime vs PyTorch max abs diff {done.max_abs_diff:.2e} <= {TOLERANCE:g} "
        f"on batches of {', '.join(map(str, done.checked))}"
    )


@app.command("affinity")
def affinity_cmd(
    config: Path = typer.Argument(..., help="YAML config of the joint model."),
    out: Path = typer.Option(..., "--out", help="Run directory (gets affinity.json)."),
    every: int = typer.Option(10, "--every", help="Steps between two affinity samples."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override, e.g. trainer.epochs=3."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in --out."),
    device: str | None = _device_option(None),
    no_imports: bool = _no_imports_option(),
) -> None:
    """Train the joint model and record task affinity (Fifty et al. 2021): Z[i][j] =
    1 - L_j(θ - η∇L_i) / L_j(θ) on the shared parameters, averaged over training."""
    from .runs import train

    def go() -> dict[str, Any]:
        if every < 1:
            raise ConfigError("--every", f"{every} is not ≥ 1", "give a number of steps")
        cfg, raw = _read(config, _with_device(set_, device))
        result = train(
            cfg, raw, config.resolve().parent, out, overwrite=overwrite, affinity_every=every
        )
        return dict(json.loads((result.run_dir / "affinity.json").read_text("utf-8")))

    data = _guard(go, refuse_imports=no_imports)
    tasks = data["tasks"]
    width = max(len(t) for t in tasks)
    typer.echo(
        f"task affinity Z[row -> column] over {data['samples']} samples ({out}/affinity.json)"
    )
    typer.echo(" " * (width + 2) + "  ".join(f"{t:>8}" for t in tasks))
    for t, row in zip(tasks, data["matrix"]):
        cells = "  ".join(f"{v:>8.4f}" if v is not None else f"{'-':>8}" for v in row)
        typer.echo(f"{t:<{width}}  {cells}")


@app.command("group")
def group_cmd(
    run_dir: Path = typer.Argument(..., help="A run of `polytask affinity` (its affinity.json)."),
    groups: int = typer.Option(2, "--groups", help="How many networks to propose."),
    partition: bool = typer.Option(
        False, "--partition", help="Disjoint groups (default: a task may train in several)."
    ),
    top: int = typer.Option(3, "--top", help="How many proposals to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the proposals as JSON."),
    train_it: bool = typer.Option(
        False,
        "--train",
        help="Train the best proposal and compare it on test data with the all-in-one and "
        "single-task models (Δm, paired CI over seeds).",
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds for --train."),
    out: Path | None = typer.Option(
        None, "--out", help="Where --train writes (default RUN_DIR/grouping)."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help="Override for --train."),
    resume: bool = typer.Option(False, "--resume", help="Reuse what an earlier --train left."),
    device: str | None = _device_option(None),
) -> None:
    """Propose which tasks to train together from a run's task affinity (TAG, Fifty et al.
    2021): G groups maximising each task's affinity from the others in its best group."""
    from .analysis import propose_groups

    def go() -> list[Any]:
        path = run_dir / "affinity.json"
        if not path.is_file():
            raise ConfigError(
                str(run_dir), "holds no affinity.json", "record it with polytask affinity CONFIG"
            )
        data = json.loads(path.read_text("utf-8"))
        matrix = [[0.0 if v is None else v for v in row] for row in data["matrix"]]
        try:
            return propose_groups(matrix, data["tasks"], groups, partition=partition, top=top)
        except ValueError as err:
            raise ConfigError("--groups", str(err), "give a number of groups ≤ the tasks") from None

    proposals = _guard(go)
    if train_it:
        overrides = _guard(lambda: _with_device(set_, device))
        _train_grouping(
            run_dir, proposals[0], seeds, out or run_dir / "grouping", overrides, resume
        )
        return
    if as_json:
        typer.echo(
            json.dumps(
                [{"groups": p.groups, "serves": p.serves, "score": p.score} for p in proposals]
            )
        )
        return
    for rank, p in enumerate(proposals, 1):
        shown = " | ".join("{" + ", ".join(g) + "}" for g in p.groups)
        typer.echo(f"{rank}. score {p.score:.4f}: {shown}")


def _train_grouping(
    run_dir: Path, proposal: Any, seeds: int, out: Path, overrides: list[str] | None, resume: bool
) -> None:
    from .config.load import apply_override
    from .runs.directory import read_run
    from .runs.grouped import train_grouping
    from .runs.prediction import base_dir_of

    def go() -> dict[str, Any]:
        files = read_run(run_dir)
        raw = dict(files.config)
        for assignment in overrides or []:
            apply_override(raw, assignment)
        return train_grouping(
            raw, base_dir_of(run_dir, files.meta), out, proposal, seeds, resume=resume
        )

    result = _guard(go)
    typer.echo("groups: " + " | ".join("{" + ", ".join(g) + "}" for g in result["groups"]))
    typer.echo("task | STL | all-in-one | grouped   (primary metric, mean over seeds)")
    for t, v in result["per_task"].items():
        typer.echo(f"{t} | {v['stl']:.4f} | {v['all']:.4f} | {v['grouped']:.4f}")
    dm = result["delta_m"]
    ci = result["grouped_minus_all_ci95"]
    shown = f" (grouped − all-in-one, paired 95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}])" if ci else ""
    typer.echo(f"Δm: grouped {dm['grouped']:+.2f} %, all-in-one {dm['all_in_one']:+.2f} %{shown}")
    typer.echo(f"written to {out / 'grouping.json'}")


def main() -> None:
    from .engine.distributed import world_size_from_env

    if world_size_from_env() <= 1:
        app()
        return
    try:  # one rank of torchrun's: see exit_rank
        app()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    exit_rank(code)


def exit_rank(code: int) -> None:
    """End a torchrun rank whose command has finished (its files written and closed, its
    process group destroyed) without the interpreter's finalisation.

    At finalisation, gloo's transport threads can still hold work objects whose tensors
    reference Python; destroying them then aborts the process (SIGABRT, "terminate called
    without an active exception"; pytorch/pytorch#179291), and torchrun reports a job that
    succeeded as failed. Seen here about once in ten two-rank runs, after the run had been
    written. The streams and log handlers are flushed first."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say there
            pass
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
