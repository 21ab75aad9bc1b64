"""``polytask validate``: check a config and its data without training.

Everything ``train`` does before its first step — read and split every source, infer or
check the label sets, build the vocabulary, the model, the balancing method and the
sampler — and a summary of what it found: examples per source and split, for each task
the examples carrying its label and the share missing, its label counts, the input
lengths (and how many training examples ``data.max_length`` cuts), a tokenisation sample
per source, the model's parameter count, and the notes a run would log (labels seen only
in val/test, IOB repairs). Nothing is written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from ..config.build import SPLITS, Experiment
from ..config.schema import Config
from ..errors import OptionError
from .training import count_parameters, located

__all__ = ["check_config", "check_text"]


def _labels_of(raw: Any, kind: str) -> list[str]:
    if raw is None:
        return []
    if kind in ("tagging", "token_classification"):
        return [str(t) for t in raw if t is not None]
    if kind == "classification":
        return [str(raw)]
    return []


def check_config(cfg: Config, base_dir: Path) -> dict[str, Any]:
    """Build everything a run needs from ``cfg`` and summarise it (raises the one-line
    errors ``train`` would)."""
    exp = Experiment(cfg, base_dir)
    try:
        model = exp.build_model()
        method = exp.build_method()
        exp.build_sampler(exp.train_sources())
    except OptionError as err:
        raise located(err) from None
    limit = cfg.data.max_length
    sources: dict[str, Any] = {}
    tasks: dict[str, Any] = {
        t: {
            "kind": task.kind.kind,
            "labels": list(getattr(task.kind, "labels", []) or []),
            "labels_from": exp.label_origin.get(t, "config"),
            "splits": {},
            "label_counts": Counter(),
        }
        for t, task in exp.tasks.items()
    }
    for name, splits in exp.sources.items():
        entry: dict[str, Any] = {}
        for split in SPLITS:
            examples = getattr(splits, split)
            lengths = [len(ex.inputs.get("tokens") or ()) for ex in examples]
            entry[split] = {
                "examples": len(examples),
                "tokens_mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
                "tokens_max": max(lengths, default=0),
            }
            if split == "train" and limit is not None:
                entry[split]["cut_by_max_length"] = sum(n > limit for n in lengths)
            for t in {k for ex in examples for k in ex.targets if k in tasks}:
                labelled = [ex.targets.get(t) for ex in examples if ex.targets.get(t) is not None]
                counts = tasks[t]["splits"].setdefault(split, {"examples": 0, "labelled": 0})
                counts["examples"] += len(examples)
                counts["labelled"] += len(labelled)
                for raw in labelled:
                    tasks[t]["label_counts"].update(_labels_of(raw, tasks[t]["kind"]))
        first = splits.train[0] if splits.train else None
        entry["sample"] = list((first.inputs.get("tokens") or [])[:20]) if first else []
        entry["input"] = _input_kind(first)
        sources[name] = entry
    for info in tasks.values():
        for counts in info["splits"].values():
            counts["missing_share"] = (
                round(1 - counts["labelled"] / counts["examples"], 4) if counts["examples"] else 0.0
            )
        info["label_counts"] = dict(info["label_counts"].most_common(12))
    notes = list(exp.label_notes) + [
        f"tasks.{t}: {n} I-X tag(s) read as B-X in data.sources.{s} ({split})"
        for (t, s, split), n in getattr(exp, "tag_repairs", {}).items()
    ]
    return {
        "sources": sources,
        "tasks": tasks,
        "model": {
            "encoder": cfg.model.encoder.type,
            "sharing": cfg.model.sharing,
            "parameters": count_parameters(model),
        },
        "balancing": method.name or type(method).__name__,
        "sampler": cfg.sampler.type,
        "notes": notes,
    }


def _input_kind(example: Any) -> str:
    """What a source's examples give the model, in words (tokens, features, an image, ...)."""
    if example is None:
        return "no examples"
    inputs = example.inputs
    if "tokens" in inputs:
        return "tokens"
    if "image" in inputs:
        shape = getattr(inputs["image"], "shape", None)
        return "image " + " × ".join(map(str, shape)) if shape is not None else "image"
    if "features" in inputs or "categorical" in inputs or "row" in inputs:
        width = len(inputs.get("features") or ()) + len(inputs.get("categorical") or ())
        return f"{width} features" if width else "a table row"
    return ", ".join(sorted(inputs)) or "nothing"


def check_text(summary: Mapping[str, Any]) -> str:
    """The summary as lines for the terminal."""
    out = ["sources (examples train / val / test; inputs: tokens per example mean, max):"]
    for name, s in summary["sources"].items():
        sizes = " / ".join(str(s[split]["examples"]) for split in SPLITS)
        train = s["train"]
        cut = train.get("cut_by_max_length")
        cut_text = f"; {cut} cut by data.max_length" if cut else ""
        given = s.get("input", "tokens")
        shown = (
            f"tokens {train['tokens_mean']}, {train['tokens_max']}{cut_text}"
            if given == "tokens"
            else given
        )
        out.append(f"  {name}: {sizes}; {shown}")
        if s["sample"]:
            out.append(f"    sample: {' | '.join(s['sample'])}")
    out.append("tasks (labelled examples per split, share missing):")
    for t, info in summary["tasks"].items():
        splits = ", ".join(
            f"{split} {c['labelled']} ({c['missing_share']:.0%} missing)"
            for split, c in info["splits"].items()
        )
        out.append(f"  {t} [{info['kind']}, labels from {info['labels_from']}]: {splits}")
        if info["label_counts"]:
            counts = ", ".join(f"{k} {v}" for k, v in info["label_counts"].items())
            out.append(f"    label counts (train/val/test): {counts}")
    m = summary["model"]
    out.append(
        f"model: {m['encoder']} encoder, {m['sharing']} sharing, {m['parameters']:,} parameters; "
        f"balancing {summary['balancing']}; sampler {summary['sampler']}"
    )
    for note in summary["notes"]:
        out.append(f"note: {note}")
    out.append("ok: the config and its data are ready to train")
    return "\n".join(out)
