"""ONNX export of a multi-task model: the shared encoder and every head as one graph.

**Inputs** are the tensors the run's collator makes (:mod:`polytask.data.collate`), by the
encoder's ``input_kind`` (:data:`INPUTS`): ``tokens`` (B, T) int64 (0 = padding, 1 =
unknown; the run's ``vocab.json``) and, for a BiLSTM with characters, ``chars`` (B, T, C)
int64; ``x`` (B, F) float32 for ``mlp`` and ``tabular`` (category indices as floats);
``image`` (B, C, H, W) float32 for ``lenet``; ``input_ids``, ``attention_mask`` (B, S) int64
and ``word_index`` (B, W) int64, ``word_mask`` (B, W) bool for a ``transformer`` (one
window per input, at most the encoder's ``max_length`` sub-tokens: the non-windowed
:meth:`polytask.nn.SubwordTokenizer.encode`). The batch axis and every sequence axis
(T, C, S, W) are dynamic.

**Outputs**, in the order of the run's tasks, one per task named after it: the tensor the
task's kind reads (classification / multilabel / regression scores (B, K), tagging scores
(B, T, K)). A tagging task with a CRF gives its emission scores (B, T, K) under its own name
and three more outputs, ``TASK.transitions`` (K, K) (``[i, j]``: tag i followed by tag j),
``TASK.start`` and ``TASK.end`` (K,): Viterbi decoding stays **outside** the graph (its loop
over a dynamic length gains nothing in ONNX); decode with
:func:`polytask.tasks.linear_chain.viterbi_decode` or any Viterbi over
``start + E[0]``, ``+ transitions + E[t]``, ``+ end``, on the real tokens of each row (the
mask is ``tokens != 0``, or ``word_mask``). The graph's metadata (``polytask.tasks``) lists
each task's kind, labels and outputs.

**Exporters.** :func:`torch.onnx.export` with ``dynamo=True`` (``torch.export``) is tried
first; where it fails, the TorchScript-based exporter (``dynamo=False``). The BiLSTM takes
an equivalent dense path under an exporter (:func:`polytask.nn.bilstm.run_dense`: packed
sequences and data-dependent checks cannot be traced: through ``run_packed`` the dynamo
exporter stops at ``DataDependentOutputException: aten.equal.default`` and the TorchScript one
at ``RuntimeError: vector::_M_range_check: __n (which is 0) >= this->size() (which is 0)``), so
all six built-in encoders (mlp, cnn, tabular, lenet, bilstm with characters, transformer)
export with ``dynamo=True``; none is excluded. :func:`export_onnx` checks the written graph
in onnxruntime against the PyTorch model on every sample batch (other batch sizes and
lengths than the exported one) and refuses a maximum absolute difference above
:data:`TOLERANCE`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..data.base import Example
from ..errors import PolytaskError
from ..nn.base import Encoder
from ..tasks.base import TagScores

if TYPE_CHECKING:
    from ..config.build import Experiment

__all__ = [
    "EXPORTERS",
    "INPUTS",
    "TOLERANCE",
    "ExportError",
    "OnnxExport",
    "TaskGraph",
    "export_onnx",
    "export_run",
    "input_axes",
    "input_names",
    "sample_batches",
]

#: largest absolute difference allowed between onnxruntime and PyTorch outputs
TOLERANCE = 1e-4
#: ``exporter=`` values: ``auto`` tries ``dynamo`` and falls back to ``torchscript``
EXPORTERS = ("auto", "dynamo", "torchscript")
#: graph inputs by the encoder's ``input_kind``, each with its axes' names
INPUTS: dict[str, dict[str, dict[int, str]]] = {
    "tokens": {"tokens": {0: "batch", 1: "tokens"}},
    "features": {"x": {0: "batch"}},
    "tabular": {"x": {0: "batch"}},
    "image": {"image": {0: "batch"}},
    "subwords": {
        "input_ids": {0: "batch", 1: "subwords"},
        "attention_mask": {0: "batch", 1: "subwords"},
        "word_index": {0: "batch", 1: "words"},
        "word_mask": {0: "batch", 1: "words"},
    },
}
_CHARS = {"chars": {0: "batch", 1: "tokens", 2: "chars"}}
_CRF_PARTS = ("transitions", "start", "end")
_INSTALL = "pip install 'polytask[onnx]'"


class ExportError(PolytaskError, ValueError):
    """An export that cannot be done or does not match PyTorch, as one line."""


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the graph's file, the exporter that made it
    (``"dynamo"`` or ``"torchscript"``), its input and output names, and the largest
    absolute difference from PyTorch over the ``checked`` sample batches (their batch
    sizes); ``fallback`` holds the dynamo exporter's error where the TorchScript one was used."""

    path: Path
    exporter: str
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: float
    checked: list[int] = field(default_factory=list)
    fallback: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": TOLERANCE,
            "checked_batch_sizes": self.checked,
            "fallback": self.fallback,
        }


def input_names(model: nn.Module, input_kind: str) -> list[str]:
    """The graph's inputs for ``model`` reading ``input_kind`` (``chars`` when a BiLSTM
    reads characters)."""
    if input_kind not in INPUTS:
        raise ExportError(
            "input_kind", f"{input_kind!r} has no ONNX inputs", f"use one of {sorted(INPUTS)}"
        )
    names = list(INPUTS[input_kind])
    if input_kind == "tokens" and any(getattr(m, "chars", None) for m in model.modules()):
        names.append("chars")
    return names


def input_axes(names: Sequence[str]) -> dict[str, dict[int, str]]:
    """Dynamic axes (index -> name) of each input."""
    table = {k: v for kind in INPUTS.values() for k, v in kind.items()} | _CHARS
    return {n: dict(table[n]) for n in names}


class TaskGraph(nn.Module):
    """``model`` with positional tensor inputs (in ``inputs`` order) and a flat tuple of
    outputs: each task's tensor in ``tasks`` order, a CRF task's emissions followed by its
    transition, start and end scores (what ONNX export traces)."""

    def __init__(self, model: nn.Module, inputs: Sequence[str], tasks: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.inputs = list(inputs)
        self.tasks = list(tasks)

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        out = self.model(dict(zip(self.inputs, tensors))).outputs
        flat: list[Tensor] = []
        for t in self.tasks:
            o = out[t]
            if isinstance(o, TagScores):
                flat.extend([o.emissions, o.transitions, o.start, o.end])
            elif isinstance(o, Tensor):
                flat.append(o)
            else:
                raise ExportError(
                    f"task {t}",
                    f"its head returns a {type(o).__name__}, not a tensor or TagScores",
                    "give the task a head that returns tensors",
                )
        return tuple(flat)

    def output_names(self, outputs: Mapping[str, Any]) -> list[str]:
        """Names of the flat outputs, given one call's ``MultiTaskOutput.outputs``."""
        names: list[str] = []
        for t in self.tasks:
            names.append(t)
            if isinstance(outputs[t], TagScores):
                names.extend(f"{t}.{part}" for part in _CRF_PARTS)
        return names


def _one_line(err: BaseException) -> str:
    """The exporter's own error as one line (the summary line of torch.onnx's long report)."""
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        rest = lines[lines.index("## Exception summary") + 1 :]
        if rest:
            return " ".join(rest[0].split())
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' warnings and progress logs silenced (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(
            "--format onnx", f"ONNX export needs onnx and onnxruntime ({error})", _INSTALL
        ) from None
    return onnx, onnxruntime


def _export(
    graph: TaskGraph,
    args: tuple[Tensor, ...],
    path: Path,
    outputs: list[str],
    exporter: str,
    token_level: set[str],
) -> str:
    """Write ``graph`` traced on ``args`` to ``path`` with ``exporter``."""
    axes = input_axes(graph.inputs)
    large = sum(p.numel() * p.element_size() for p in graph.parameters()) > 1_800_000_000
    with _quiet():
        if exporter == "dynamo":
            from torch.export import Dim

            shapes = tuple({i: Dim.DYNAMIC for i in axes[n]} for n in graph.inputs)
            torch.onnx.export(
                graph,
                args,
                str(path),
                dynamo=True,
                input_names=graph.inputs,
                output_names=outputs,
                dynamic_shapes=(shapes,),
                external_data=large,
                verbose=False,
            )
        else:
            torch.onnx.export(
                graph,
                args,
                str(path),
                dynamo=False,
                input_names=graph.inputs,
                output_names=outputs,
                dynamic_axes={**axes, **_output_axes(graph, outputs, token_level)},
                verbose=False,
            )
    return exporter


def _declare(proto: Any, axes: Mapping[str, Mapping[int, str]]) -> None:
    """Name the dynamic axes of the graph's inputs and outputs (``batch``, ``tokens``, ...)
    and drop the exporter's intermediate shape annotations, which may hold the traced sizes;
    onnxruntime infers them again."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for i, name in axes.get(value.name, {}).items():
            if i < len(dims):
                dims[i].dim_param = name
    del proto.graph.value_info[:]


def _name_outputs(onnx: Any, proto: Any, names: list[str]) -> None:
    """Give the graph's outputs ``names`` where an exporter renamed one (the TorchScript
    exporter names a constant-folded output, e.g. CRF transitions, after its initializer)."""
    if len(proto.graph.output) != len(names):
        raise ExportError(
            "export",
            f"the graph has {len(proto.graph.output)} outputs, expected {len(names)} ({names})",
            "report the run's config",
        )
    for value, name in zip(proto.graph.output, names):
        if value.name != name:
            proto.graph.node.append(onnx.helper.make_node("Identity", [value.name], [name]))
            value.name = name


def _output_axes(
    graph: TaskGraph, outputs: list[str], token_level: set[str]
) -> dict[str, dict[int, str]]:
    """Dynamic axes of the task outputs (a CRF's scores have none)."""
    seq = "words" if "word_mask" in graph.inputs else "tokens"
    return {
        n: ({0: "batch", 1: seq} if n in token_level else {0: "batch"})
        for n in outputs
        if n in graph.tasks
    }


def _session(onnxruntime: Any, path: Path) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _parity(
    graph: TaskGraph, session: Any, batches: Sequence[Mapping[str, Tensor]], outputs: list[str]
) -> float:
    """The largest absolute difference between PyTorch and onnxruntime over ``batches``."""
    worst = 0.0
    for batch in batches:
        args = tuple(batch[n] for n in graph.inputs)
        with torch.no_grad():
            expected = graph(*args)
        feed = {n: a.cpu().numpy() for n, a in zip(graph.inputs, args)}
        got = session.run(outputs, feed)
        for name, e, g in zip(outputs, expected, got):
            e_np = e.detach().cpu().double().numpy()
            if tuple(e_np.shape) != tuple(g.shape):
                raise ExportError(
                    f"output {name}",
                    f"onnxruntime gives shape {tuple(g.shape)}, PyTorch {tuple(e_np.shape)} "
                    f"(batch of {args[0].shape[0]})",
                    "report it with the run's config; export with --exporter torchscript",
                )
            if e_np.size:
                diff = abs(e_np - g.astype("float64"))
                worst = max(worst, float("inf") if not (diff == diff).all() else float(diff.max()))
    return worst


def export_onnx(
    model: nn.Module,
    batches: Sequence[Mapping[str, Tensor]],
    path: str | Path,
    *,
    input_kind: str,
    exporter: str = "auto",
    tolerance: float = TOLERANCE,
    metadata: Mapping[str, Any] | None = None,
) -> OnnxExport:
    """Export ``model`` (a :class:`~polytask.sharing.MultiTaskModel`) to ``path``, traced on
    ``batches[0]``, and check the graph in onnxruntime on every batch (max abs diff <=
    ``tolerance``, else :class:`ExportError`). The file is written only once it passed.

    ``batches`` are input mappings as the run's collator makes them; give other batch sizes
    and lengths than the first to check the dynamic axes. ``metadata`` is stored in the
    graph (``polytask.*`` keys, JSON values)."""
    if exporter not in EXPORTERS:
        raise ExportError("--exporter", f"unknown exporter {exporter!r}", f"use one of {EXPORTERS}")
    if not batches:
        raise ExportError("batches", "no sample inputs", "give at least one batch of inputs")
    onnx, onnxruntime = _modules()
    out = Path(path)
    if out.is_dir():
        raise ExportError("--out", f"{out} is a directory", "give a file path, e.g. model.onnx")
    if not out.parent.is_dir():
        raise ExportError(
            "--out", f"directory {out.parent} does not exist", "create it, or give another path"
        )
    model = model.cpu().eval()
    tasks = list(getattr(model, "task_names", []))
    graph = TaskGraph(model, input_names(model, input_kind), tasks).eval()
    first = batches[0]
    missing = [n for n in graph.inputs if n not in first]
    if missing:
        raise ExportError(
            "batches", f"the sample inputs lack {missing}", f"give {graph.inputs} in each batch"
        )
    args = tuple(first[n] for n in graph.inputs)
    with torch.no_grad():
        sample = model(dict(zip(graph.inputs, args))).outputs
    outputs = graph.output_names(sample)
    token_level = {t for t in tasks if getattr(sample[t], "emissions", sample[t]).dim() == 3}
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    errors: list[str] = []
    used: str | None = None
    try:
        for name in order:
            try:
                with torch.no_grad():
                    used = _export(graph, args, tmp, outputs, name, token_level)
                break
            except ExportError:
                raise
            except Exception as err:  # the exporter's own error, kept for the message
                errors.append(f"{name}: {_one_line(err)}")
        if used is None:
            raise ExportError(
                "export",
                "torch.onnx.export failed (" + "; ".join(errors) + ")",
                "see README.md, Export to ONNX, for what exports; report the model's config",
            )
        proto = onnx.load(str(tmp))
        _name_outputs(onnx, proto, outputs)
        _declare(proto, {**input_axes(graph.inputs), **_output_axes(graph, outputs, token_level)})
        info = {
            "polytask.input_kind": input_kind,
            "polytask.exporter": used,
            "polytask.outputs": json.dumps(
                {t: [n for n in outputs if n == t or n.startswith(f"{t}.")] for t in tasks}
            ),
            **{k: json.dumps(v) for k, v in (metadata or {}).items()},
        }
        for key, value in info.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(proto, str(tmp))
        session = _session(onnxruntime, tmp)
        got_names = [o.name for o in session.get_outputs()]
        if got_names != outputs:
            raise ExportError(
                "export", f"the graph's outputs are {got_names}, expected {outputs}", "report it"
            )
        worst = _parity(graph, session, batches, outputs)
        if not worst <= tolerance:
            raise ExportError(
                "parity",
                f"onnxruntime and PyTorch differ by {worst:.3g} (max abs), more than "
                f"{tolerance:g} ({used} exporter)",
                "try --exporter torchscript, or report the run's config",
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxExport(
        path=out,
        exporter=used,
        inputs=list(graph.inputs),
        outputs=outputs,
        max_abs_diff=worst,
        checked=[int(b[graph.inputs[0]].shape[0]) for b in batches],
        fallback=errors[0] if errors else None,
    )


# ----------------------------------------------------------------------- sample inputs


def _encoder(model: nn.Module, input_kind: str) -> Encoder:
    for m in model.modules():
        if isinstance(m, Encoder) and m.input_kind == input_kind:
            return m
    raise ExportError(
        "model", f"no encoder reading {input_kind!r} inputs", "export a polytask model"
    )


def _words(experiment: Experiment) -> list[str]:
    """Words to build sample sentences from: the run's vocabulary, or the sub-word
    tokenizer's whole-word pieces; plus one word no vocabulary holds."""
    if experiment.vocab is not None:
        words = [w for w in experiment.vocab.itos[2:]]
    else:
        hf = experiment.tokenizer.tokenizer
        special = set(hf.all_special_tokens)
        words = sorted(w for w in hf.get_vocab() if w not in special and not w.startswith("##"))
    return [*words[:500], "zqxjv-unseen"] if words else ["zqxjv-unseen"]


def _example(experiment: Experiment, encoder: Encoder, size: int, gen: torch.Generator) -> Example:
    kind = experiment.input_kind

    def ints(high: int, n: int) -> list[int]:
        return torch.randint(0, high, (n,), generator=gen).tolist()

    if kind in ("tokens", "subwords"):
        words = _words(experiment)
        picked = ints(len(words), size)
        return Example(inputs={"tokens": [words[i] for i in picked]})
    if kind == "features":
        width = getattr(encoder, "input_dim", None)
        if not isinstance(width, int):
            raise ExportError(
                "model.encoder",
                f"{type(encoder).__name__} has no input_dim to build sample inputs from",
                "give the encoder an input_dim attribute",
            )
        return Example(inputs={"features": torch.randn(width, generator=gen).tolist()})
    if kind == "tabular":
        numeric = int(getattr(encoder, "numeric", 0))
        cards = list(getattr(encoder, "cardinalities", []))
        codes = [ints(k + 1, 1)[0] for k in cards]
        return Example(
            inputs={"features": torch.randn(numeric, generator=gen).tolist(), "categorical": codes}
        )
    if kind == "image":
        channels = int(getattr(encoder, "in_channels", 1))
        height, width = getattr(encoder, "image_size", (28, 28))
        return Example(inputs={"image": torch.rand(channels, height, width, generator=gen)})
    raise ExportError("input_kind", f"{kind!r} has no sample inputs", f"use one of {list(INPUTS)}")


def sample_batches(
    experiment: Experiment,
    model: nn.Module,
    sizes: Sequence[int] = (2, 5, 1),
    seed: int = 0,
) -> list[dict[str, Tensor]]:
    """Synthetic input batches of ``sizes`` examples for ``experiment``'s model: sentences of
    1-8 words of its vocabulary (and one unknown word), or random rows / images of the
    encoder's shape, collated by the run's collator (a transformer: one window per input)."""
    gen = torch.Generator().manual_seed(seed)
    encoder = _encoder(model, experiment.input_kind)
    collate = experiment.collator()
    batches = []
    for size in sizes:
        lengths = torch.randint(1, 9, (size,), generator=gen).tolist()
        examples = [_example(experiment, encoder, n, gen) for n in lengths]
        batches.append(dict(collate(examples).inputs))
    return batches


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    format: str = "onnx",
    exporter: str = "auto",
) -> OnnxExport:
    """``polytask export RUN_DIR --format onnx [--out FILE]``: the run's model as one ONNX
    graph (default ``RUN_DIR/model.onnx``), checked against PyTorch on synthetic inputs of
    the run's vocabulary and shapes (:func:`sample_batches`)."""
    from ..runs.prediction import load

    if format != "onnx":
        raise ExportError("--format", f"unknown format {format!r}", "use --format onnx")
    _modules()
    run = load(run_dir, device="cpu")
    experiment = run.experiment
    batches = sample_batches(experiment, run.model)
    tasks = {
        t: {"kind": run.cfg.tasks[t].kind, "labels": list(getattr(task.kind, "labels", []))}
        for t, task in run.tasks.items()
    }
    target = Path(out) if out is not None else Path(run_dir) / "model.onnx"
    return export_onnx(
        run.model,
        batches,
        target,
        input_kind=experiment.input_kind,
        exporter=exporter,
        metadata={"polytask.tasks": tasks},
    )
