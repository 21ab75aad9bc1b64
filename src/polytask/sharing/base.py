"""What every sharing architecture declares: parameter ownership and shared features.

A multi-task model is a set of mappings f_i = g_i ∘ h_i ∘ h_0 that share parts. Each
architecture states, without anything being inferred elsewhere:

* :meth:`MultiTaskModel.shared_parameters` — parameters that more than one task passes
  through (h_0);
* :meth:`MultiTaskModel.task_parameters` — parameters only task i passes through
  (h_i and g_i);
* :attr:`MultiTaskOutput.features` — per task, the shared-feature tensor its own
  branch reads (the output of h_0 it taps);
* :attr:`MultiTaskOutput.shared_features` — the one tensor z every task's loss in the call
  passes through, and through which alone the shared parameters below it reach the
  losses. Feature-level gradient balancing takes per-task gradients there
  (:func:`polytask.balancing.backward`); :attr:`MultiTaskModel.provides_shared_features`
  declares whether an architecture gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence, TypeVar

from torch import Tensor, nn

from ..errors import OptionError
from ..nn.base import Encoder

#: ``encoder()``: a fresh encoder on every call
EncoderFactory = Callable[[], Encoder]
#: ``heads(widths)``: task name -> head reading ``widths[task]``-wide features
HeadsFactory = Callable[[Mapping[str, int]], Mapping[str, nn.Module]]
_M = TypeVar("_M", bound="MultiTaskModel")


@dataclass
class MultiTaskOutput:
    """``outputs[task]``: what the task's kind takes as output (logits or TagScores);
    ``features[task]``: the shared tensor that task's branch reads; ``mask``: token mask of
    sequence features (None otherwise); ``shared_features``: the one tensor every task's loss
    in the call passes through and that separates the losses from the shared parameters
    below it (None where the architecture has no such tensor); ``task_features[task]``: the
    task-specific representation its head reads (a tower's output, a gated mixture of
    experts, attention-selected features), which representation-similarity penalties pull
    together (empty where every head reads the same shared tensor); ``gates[task]``: in gated
    architectures (MMoE, CGC/PLE) the gate weights (B, E) or per token (B, T, E) of the
    mixture that task's head reads (PLE: the top level's gate, over the task's own experts
    then the shared ones), which training diagnostics average (empty elsewhere);
    ``lower_gates``: PLE's gates below the top level, keyed ``"level d: task"`` and
    ``"level d: shared"`` (the shared gate mixes every task's experts, then the shared ones)."""

    outputs: dict[str, Any]
    features: dict[str, Tensor] = field(default_factory=dict)
    mask: Tensor | None = None
    shared_features: Tensor | None = None
    task_features: dict[str, Tensor] = field(default_factory=dict)
    gates: dict[str, Tensor] = field(default_factory=dict)
    lower_gates: dict[str, Tensor] = field(default_factory=dict)


class MultiTaskModel(nn.Module):
    """Base class: subclasses implement ``forward`` and the two ownership methods."""

    task_names: list[str]
    #: whether ``forward`` gives :attr:`MultiTaskOutput.shared_features` (None: only the
    #: output tells, e.g. a :class:`~polytask.sharing.Custom` module)
    provides_shared_features: bool | None = False

    @classmethod
    def from_parts(
        cls: type[_M],
        *,
        encoder: EncoderFactory,
        heads: HeadsFactory,
        tasks: Sequence[str],
        **options: Any,
    ) -> _M:
        """The architecture for ``tasks``, built from parts (how the config builds every one).

        ``encoder()`` builds a fresh encoder on each call (towers and experts call it once per
        tower or expert); ``heads(widths)`` builds one head per task reading the given widths;
        ``options`` are the architecture's own (``after``, ``depths``, ``experts``, ``taps``,
        ...). A bad option raises :class:`~polytask.errors.OptionError` naming it. Subclasses
        may name their options as keyword-only parameters with defaults (the config layer
        checks a config's options against that signature before the call).

        The default builds one shared encoder, heads reading its top layer, and calls
        ``cls(encoder, heads, **options)``.
        """
        enc = encoder()
        built = heads({t: enc.output_dim for t in tasks})
        return cls(enc, built, **options)

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:  # pragma: no cover
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        raise NotImplementedError

    def penalty(self, output: MultiTaskOutput) -> Tensor | None:
        """An optional regulariser added to every step's update, not balanced (soft sharing's
        tie between towers, a representation-similarity term); ``None`` by default."""
        return None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"shared": [...], "task:<name>": [...]}``; every parameter is in exactly one."""
        groups = {"shared": self.shared_parameters()}
        for t in self.task_names:
            groups[f"task:{t}"] = self.task_parameters(t)
        return groups

    def check_ownership(self) -> None:
        """Raise if a parameter is unowned or owned twice (catches wrapping mistakes)."""
        seen: dict[int, str] = {}
        for group, params in self.parameter_groups().items():
            for p in params:
                if id(p) in seen:
                    raise ValueError(f"parameter owned by both {seen[id(p)]!r} and {group!r}")
                seen[id(p)] = group
        names = {id(p): n for n, p in self.named_parameters()}
        missing = [names[i] for i in names if i not in seen]
        if missing:
            raise ValueError(f"parameters not declared shared or task-specific: {missing[:5]}")

    def _check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        if tasks is None:
            return list(self.task_names)
        unknown = [t for t in tasks if t not in self.task_names]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model has {self.task_names}")
        return list(tasks)


def _params(modules: Iterator[nn.Module] | Sequence[nn.Module]) -> list[nn.Parameter]:
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def invalid_option(name: str, value: object, fix: str) -> OptionError:
    """``OptionError(name, "<value> is invalid", fix)``."""
    return OptionError(name, f"{value!r} is invalid", fix)


def check_options(options: Mapping[str, Any], known: Sequence[str], architecture: str) -> None:
    """Raise :class:`~polytask.errors.OptionError` naming the first option not in ``known``."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(
            unknown[0], f"unknown option for {architecture}", f"use one of {list(known)}"
        )


def build_towers(
    encoder: EncoderFactory, heads: HeadsFactory, tasks: Sequence[str]
) -> tuple[dict[str, Encoder], dict[str, nn.Module]]:
    """One fresh ``encoder()`` per task (a tower) and the heads reading each tower's top layer."""
    towers = {t: encoder() for t in tasks}
    built = heads({t: towers[t].output_dim for t in tasks})
    return towers, {t: built[t] for t in tasks}
