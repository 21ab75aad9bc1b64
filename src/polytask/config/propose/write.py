"""The commented YAML config of a :class:`Proposal`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .model import Proposal


def _flow(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    """``name`` as a YAML mapping key: plain when safe, else quoted."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name) else _flow(name)


def render(proposal: Proposal, out: str | Path, name: str | None = None) -> str:
    """The commented YAML config of ``proposal``, its paths relative to ``out``'s folder."""
    base = Path(out).resolve().parent
    chars = any(s.chars for s in proposal.sources)
    kind = proposal.input_kind
    lines = [
        "# Proposed by `polytask init` from the data files: check the task kinds and label",
        "# sets, then `polytask validate` this file and `polytask train` it.",
        f"name: {name or (proposal.sources[0].name + '-mtl')}",
        "seed: 0",
        "tasks:",
    ]
    for task in proposal.tasks.values():
        key = _key(task.name)
        lines.append(f"  {key}:  # {task.note}" if task.note else f"  {key}:")
        lines.append(f"    kind: {task.kind}")
        if task.labels is not None:
            lines.append(f"    labels: {_flow(task.labels)}")
        if task.kind == "tagging":
            lines.append("    crf: true  # a linear-chain CRF over the tags")
        for option, value in task.options.items():
            lines.append(f"    {option}: {_flow(value)}")
    lines += ["data:"]
    if chars:
        lines.append("  tokenizer: chars  # CJK text without spaces: one token per character")
    lines.append("  sources:")
    for src in proposal.sources:
        lines.append(f"    {_key(src.name)}:")
        lines.append(f"      format: {src.format}")
        for split, path in src.files.items():
            lines.append(f"      {split}: {_flow(_relative(path, base))}")
        lines.append("      tasks:")
        for task_name, column in src.tasks.items():
            lines.append(f"        {_key(task_name)}: {_flow(column)}")
        if src.options:
            lines.append("      options:")
            for option, value in src.options.items():
                if option in src.option_notes:
                    lines.append(f"        # {src.option_notes[option]}")
                lines.append(f"        {option}: {_flow(value)}")
        for note in src.notes:
            lines.append(f"      # {note}")
    splits = {s for src in proposal.sources for s in src.files}
    if "val" not in splits:
        lines.append(
            "  val_fraction: 0.1  # carved from train by seed where a source has no val file"
        )
    if "test" not in splits:
        lines.append("  test_fraction: 0.1")
    if kind == "text":
        lines.append(
            "  vocab: {min_freq: 2"
            + (", chars: true}" if proposal.token_level and not chars else "}")
        )
    lines.append("model:")
    if kind == "tabular":
        lines.append("  # an MLP over the standardised numbers and embedded categories")
        lines.append("  encoder: {type: tabular, hidden: [64, 32], dropout: 0.1}")
    elif kind == "molecules":
        lines.append("  # an MLP over the fingerprints (as examples/tox21.yaml)")
        lines.append("  encoder: {type: mlp, hidden: [256, 128], dropout: 0.3}")
    elif proposal.token_level:
        extra = ", char_dim: 30, char_hidden: 25" if not chars else ""
        lines.append(
            "  # a word BiLSTM" + (" with characters" if extra else "") + ": tasks tag tokens"
        )
        lines.append(
            "  encoder: {type: bilstm, embed_dim: 100, hidden: 100, layers: 2, "
            f"dropout: 0.3{extra}}}"
        )
    else:
        lines.append("  encoder: {type: cnn, embed_dim: 100, channels: [128, 128], dropout: 0.3}")
    if len(proposal.sources) > 1:
        lines += [
            "sampler:",
            "  # several data sets: every step holds a batch of each, so the balancing method",
            "  # sees every task's loss in every step",
            "  type: joint",
        ]
    if len(proposal.tasks) > 1:
        lines += [
            "balancing:",
            "  # compare methods on validation data with `polytask sweep --methods ...`",
            "  method: nash_mtl" if len(proposal.sources) > 1 else "  method: cagrad",
        ]
    if kind == "text":
        lines += ["trainer:", "  epochs: 10", "  batch_size: 32", "  lr: 0.002"]
        lines.append("  patience: 3  # stop after 3 epochs without a better validation score")
    else:
        lines += ["trainer:", "  epochs: 20", "  batch_size: 128", "  lr: 0.001"]
        lines.append("  patience: 5  # stop after 5 epochs without a better validation score")
        lines.append("  eval_batch_size: 1024")
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(base))
    except ValueError:
        return str(resolved)
