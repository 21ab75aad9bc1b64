"""Gated mixtures of experts: MMoE (Ma et al. 2018) and CGC / PLE (Tang et al. 2020).

**MMoE** (Ma, Zhao, Yi, Chen, Hong & Chi 2018, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD): E experts ``f_e`` shared by all tasks and
one softmax gate per task reading the input,

    y_t = Σ_e g_t(x)_e f_e(x),     g_t(x) = softmax(W_t x̄)
    (W_t: Linear, or MLP with gate_hidden)

**CGC / PLE** (Tang, Liu, Zhao & Gong 2020, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys): shared experts
``E^s`` and task-specific experts ``E^t``; task ``t``'s gate mixes only its own and the shared
experts,

    y_t = g_t(x̄)ᵀ [E^t(x); E^s(x)]                                (CGC, one level)

PLE stacks ``levels`` such extraction layers. At level ``l ≥ 2`` task ``t``'s experts and gate
read task ``t``'s previous output ``y_t^{(l-1)}``; the shared experts and the shared gate read
the previous shared output ``s^{(l-1)}``, and the shared gate mixes all experts of the level:

    y_t^{(l)} = g_t^{(l)}(y_t^{(l-1)})ᵀ [E^{t,(l)}(y_t^{(l-1)}); E^{s,(l)}(s^{(l-1)})]
    s^{(l)}   = g_s^{(l)}(s^{(l-1)})ᵀ [E^{1,(l)}; ...; E^{T,(l)}; E^{s,(l)}]     (l < levels)

with ``y_t^{(0)} = s^{(0)} = x̄``. Level-1 experts are full encoders (``encoder()``); experts at
levels ≥ 2 are ``ReLU(W u + b)`` blocks of width ``expert_hidden``. The last level has no
shared gate (nothing reads it).

**Gate input x̄.** For feature encoders (``input_kind == "features"``) the level-1 gates read
the raw ``inputs["x"]`` (B, F), as in both papers (``gate_input="x"``). Other inputs (tokens,
sub-words) have no vector to read, so with ``gate_input="encoder"`` one extra fresh encoder
(shared by every gate, hence a shared parameter) computes x̄ as its top layer; for sequence
encoders gates are then per token and experts are mixed per token (padding stays zero).

**Ownership** follows the routing exactly. MMoE: experts and the gate encoder are shared;
gate ``t`` and head ``t`` are task ``t``'s. CGC: shared experts (and the gate encoder) are
shared; task ``t``'s experts, gate and head are task ``t``'s. PLE with L levels: task ``t``'s
experts at levels < L feed the shared gate of their level and so reach every task: they are
shared, as are task gates at levels < L-1 (their output feeds such experts); task ``t`` owns
its experts at level L, its gates at levels L-1 and L, and its head.

``task_features[t]`` is the task's gated mixture (what its head reads); ``shared_features`` is
None: no single tensor separates the losses from the shared experts, so gradient methods run
at the parameter level. ``features`` is empty: no one shared tensor is what a task's branch
reads (it reads several experts' outputs through its gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..nn.base import Encoder, EncoderOutput
from .base import EncoderFactory, HeadsFactory, MultiTaskModel, MultiTaskOutput, _params


def _check_count(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(
            name, f"{value!r} must be an integer >= {minimum}", f"e.g. {name}: {max(minimum, 2)}"
        )
    return value


def _no_experts() -> OptionError:
    return OptionError(
        "shared_experts", "no experts at all", "e.g. shared_experts: 1, task_experts: 1"
    )


def _check_width(value: object, name: str) -> int | None:
    if value is None:
        return None
    return _check_count(value, name, 1)


class Gate(nn.Module):
    """``softmax(W z)`` over ``n`` experts; ``W`` is a Linear map or, with ``hidden``,
    Linear-ReLU-Linear. Works on (B, D) or per token on (B, T, D)."""

    def __init__(self, in_dim: int, n: int, hidden: int | None = None) -> None:
        super().__init__()
        if hidden is None:
            self.net = nn.Sequential(nn.Linear(in_dim, n))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n))

    def forward(self, z: Tensor) -> Tensor:
        first = cast(nn.Linear, self.net[0])  # __init__ always starts net with an nn.Linear
        return torch.softmax(self.net(z.to(first.weight.dtype)), dim=-1)


class ExpertBlock(nn.Module):
    """An expert at PLE level ≥ 2: ``ReLU(W u + b)`` (per token for sequences)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, u: Tensor) -> Tensor:
        return torch.relu(self.linear(u))


def mix(experts: Sequence[Tensor], gate: Tensor, mask: Tensor | None = None) -> Tensor:
    """``Σ_e gate[..., e] · experts[e]``; a (B, E) gate broadcasts over the tokens of (B, T, D)
    experts; padding positions (``mask`` False) are zero."""
    stacked = torch.stack(list(experts), dim=-1)  # (B, [T,] D, E)
    g = gate
    while g.dim() < stacked.dim() - 1:
        g = g.unsqueeze(1)
    y = (stacked * g.unsqueeze(-2)).sum(-1)
    if mask is not None and y.dim() == 3:
        y = y * mask.unsqueeze(-1).to(y.dtype)
    return y


class _GateInput(nn.Module):
    """x̄ for the level-1 gates: the raw ``inputs["x"]`` or a (shared) gate encoder's top layer."""

    def __init__(self, reference: Encoder, gate_encoder: Encoder | None) -> None:
        super().__init__()
        self.encoder = gate_encoder
        if gate_encoder is not None:
            self.dim = gate_encoder.output_dim
        elif reference.input_kind == "features" and isinstance(
            input_dim := getattr(reference, "input_dim", None), int
        ):
            self.dim = input_dim
        else:
            raise OptionError(
                "gate_input",
                "'x' needs a feature encoder with input_dim (got input_kind="
                f"{reference.input_kind!r})",
                "gate_input: encoder",
            )

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        if self.encoder is not None:
            encoded: EncoderOutput = self.encoder(inputs)
            return encoded.last
        return inputs["x"]


def _gate_choice(gate_input: str | None, probe: Encoder) -> str:
    if gate_input is None:
        return "x" if probe.input_kind == "features" else "encoder"
    if gate_input not in ("x", "encoder"):
        raise OptionError("gate_input", f"{gate_input!r} is unknown", "use x or encoder")
    return gate_input


_Level1 = tuple[list[Encoder], dict[str, list[Encoder]], Encoder | None]


def _level1(
    encoder: EncoderFactory,
    tasks: Sequence[str],
    shared_experts: int,
    task_experts: int,
    gate_input: str | None,
) -> _Level1:
    """CGC / PLE level-1 experts, built in this order: shared, each task's, then the gate
    encoder (``None`` when the gates read ``x``)."""
    _check_count(shared_experts, "shared_experts", 0)
    _check_count(task_experts, "task_experts", 0)
    if task_experts == 0 and shared_experts == 0:
        raise _no_experts()
    shared = [encoder() for _ in range(shared_experts)]
    task = {t: [encoder() for _ in range(task_experts)] for t in tasks}
    probe = (shared or task[tasks[0]])[0]
    return shared, task, encoder() if _gate_choice(gate_input, probe) == "encoder" else None


def _same_width(experts: Sequence[Encoder], what: str) -> int:
    widths = {e.output_dim for e in experts}
    if len(widths) != 1:
        raise OptionError(
            what, f"experts have different output widths {sorted(widths)}", "use one encoder shape"
        )
    return widths.pop()


class MMoE(MultiTaskModel):
    """Multi-gate mixture of experts (Ma et al. 2018, KDD):
    ``y_t = Σ_e softmax(W_t x̄)_e f_e(x)``, head ``t`` reads ``y_t``.

    Args:
        experts: the E expert encoders (distinct modules, same output width).
        heads: task name -> head reading the experts' width.
        gate_encoder: ``None`` to gate on the raw ``inputs["x"]`` (feature encoders), or an
            encoder whose top layer every gate reads (shared).
        gate_hidden: hidden width of each gate MLP; ``None``: one linear map.

    Ownership: experts and gate encoder shared; gate ``t`` and head ``t`` task ``t``'s.
    ``shared_features`` is None (see :mod:`polytask.sharing.experts`).
    """

    provides_shared_features = False

    def __init__(
        self,
        experts: Sequence[Encoder],
        heads: Mapping[str, nn.Module],
        gate_encoder: Encoder | None = None,
        gate_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if len(experts) < 1:
            raise OptionError("experts", "MMoE needs at least one expert", "e.g. experts: 4")
        _check_width(gate_hidden, "gate_hidden")
        self.experts = nn.ModuleList(experts)
        self.dim = _same_width(experts, "experts")
        self.gate_input = _GateInput(experts[0], gate_encoder)
        self.heads = nn.ModuleDict(dict(heads))
        self.task_names = list(heads)
        self.gates = nn.ModuleDict(
            {t: Gate(self.gate_input.dim, len(experts), gate_hidden) for t in self.task_names}
        )
        self.check_ownership()

    @classmethod
    def from_parts(  # type: ignore[override]
        cls,
        *,
        encoder: EncoderFactory,
        heads: HeadsFactory,
        tasks: Sequence[str],
        experts: int = 4,
        gate_hidden: int | None = None,
        gate_input: str | None = None,
    ) -> MMoE:
        """``experts`` fresh ``encoder()`` experts (and one gate encoder with
        ``gate_input: encoder``)."""
        _check_count(experts, "experts")
        _check_width(gate_hidden, "gate_hidden")
        built = [encoder() for _ in range(experts)]
        gate_encoder = encoder() if _gate_choice(gate_input, built[0]) == "encoder" else None
        return cls(
            built,
            heads({t: built[0].output_dim for t in tasks}),
            gate_encoder=gate_encoder,
            gate_hidden=gate_hidden,
        )

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        encoded = [e(inputs) for e in self.experts]
        mask = encoded[0].mask
        outs = [o.last for o in encoded]
        z = self.gate_input(inputs)
        outputs, task_features, gates = {}, {}, {}
        for t in tasks:
            gates[t] = self.gates[t](z)
            y = mix(outs, gates[t], mask)
            task_features[t] = y
            outputs[t] = self.heads[t](y, mask)
        return MultiTaskOutput(
            outputs=outputs,
            features={},
            mask=mask,
            shared_features=None,
            task_features=task_features,
            gates=gates,
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        return _params([self.experts, self.gate_input])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return _params([self.gates[task], self.heads[task]])


class ExtractionLevel(nn.Module):
    """One PLE extraction layer: shared experts, per-task experts, per-task gates and
    (below the top level) a shared gate over all experts."""

    def __init__(
        self,
        shared: Sequence[nn.Module],
        task: Mapping[str, Sequence[nn.Module]],
        gate_dims: Mapping[str, int],
        shared_gate_dim: int | None,
        hidden: int | None,
    ) -> None:
        super().__init__()
        self.shared = nn.ModuleList(shared)
        self.task = nn.ModuleDict({t: nn.ModuleList(m) for t, m in task.items()})
        n_s = len(shared)
        self.task_gates = nn.ModuleDict(
            {t: Gate(gate_dims[t], len(task[t]) + n_s, hidden) for t in task}
        )
        n_all = n_s + sum(len(m) for m in task.values())
        self.shared_gate = None if shared_gate_dim is None else Gate(shared_gate_dim, n_all, hidden)


class PLE(MultiTaskModel):
    """Progressive Layered Extraction (Tang et al. 2020, RecSys); ``levels=1`` is CGC.

    ``y_t^{(l)} = g_t^{(l)}(y_t^{(l-1)})ᵀ [E^{t,(l)}; E^{s,(l)}]``,
    ``s^{(l)} = g_s^{(l)}(s^{(l-1)})ᵀ [E^{1,(l)}; …; E^{T,(l)}; E^{s,(l)}]``,
    ``y^{(0)} = s^{(0)} = x̄``;
    head ``t`` reads ``y_t^{(L)}`` (see :mod:`polytask.sharing.experts` for experts, gate input
    and the exact ownership).

    Args:
        shared_experts: level-1 shared expert encoders.
        task_experts: task name -> its level-1 expert encoders (a task may have none).
        heads: task name -> head reading the top level's width.
        levels: number of extraction layers L (1 = CGC).
        expert_hidden: width of the experts at levels ≥ 2 (default: the level-1 width).
        gate_encoder: ``None`` for raw ``inputs["x"]`` gates, or the encoder the level-1 gates read.
        gate_hidden: hidden width of each gate MLP; ``None``: one linear map.
    """

    provides_shared_features = False

    def __init__(
        self,
        shared_experts: Sequence[Encoder],
        task_experts: Mapping[str, Sequence[Encoder]],
        heads: Mapping[str, nn.Module],
        levels: int = 1,
        expert_hidden: int | None = None,
        gate_encoder: Encoder | None = None,
        gate_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.task_names = list(heads)
        _check_count(levels, "levels")
        _check_width(expert_hidden, "expert_hidden")
        _check_width(gate_hidden, "gate_hidden")
        unknown = sorted(set(task_experts) - set(self.task_names))
        if unknown:
            raise OptionError(
                "task_experts", f"unknown task(s) {unknown}", f"use {self.task_names}"
            )
        level1_task = {t: list(task_experts.get(t, ())) for t in self.task_names}
        all1 = list(shared_experts) + [e for es in level1_task.values() for e in es]
        if not all1:
            raise _no_experts()
        for t in self.task_names:
            if not level1_task[t] and not shared_experts:
                raise OptionError(
                    "task_experts",
                    f"task {t!r} has no expert to gate",
                    "task_experts >= 1 or shared_experts >= 1",
                )
        width = _same_width(all1, "experts")
        self.levels_count = levels
        self.gate_input = _GateInput(all1[0], gate_encoder)
        self.heads = nn.ModuleDict(dict(heads))
        n_s = len(shared_experts)
        n_t = {t: len(level1_task[t]) for t in self.task_names}
        hid = expert_hidden or width
        levels_list = []
        in_dim = self.gate_input.dim
        shared: Sequence[nn.Module]
        task: Mapping[str, Sequence[nn.Module]]
        for depth in range(1, levels + 1):
            if depth == 1:
                shared, task = list(shared_experts), level1_task
                gate_dims = {t: in_dim for t in self.task_names}
                shared_dim = in_dim
            else:
                prev = width if depth == 2 else hid
                shared = [ExpertBlock(prev, hid) for _ in range(n_s)]
                task = {t: [ExpertBlock(prev, hid) for _ in range(n_t[t])] for t in self.task_names}
                gate_dims = {t: prev for t in self.task_names}
                shared_dim = prev
            levels_list.append(
                ExtractionLevel(
                    shared, task, gate_dims, shared_dim if depth < levels else None, gate_hidden
                )
            )
        self.extraction = nn.ModuleList(levels_list)
        self.out_dim = width if levels == 1 else hid
        self.check_ownership()

    @classmethod
    def from_parts(  # type: ignore[override]
        cls,
        *,
        encoder: EncoderFactory,
        heads: HeadsFactory,
        tasks: Sequence[str],
        shared_experts: int = 1,
        task_experts: int = 1,
        levels: int = 2,
        expert_hidden: int | None = None,
        gate_hidden: int | None = None,
        gate_input: str | None = None,
    ) -> PLE:
        """Fresh ``encoder()`` experts at level 1 (shared, then each task's), then the levels."""
        _check_count(levels, "levels")
        _check_width(expert_hidden, "expert_hidden")
        _check_width(gate_hidden, "gate_hidden")
        shared, task, gate_encoder = _level1(
            encoder, tasks, shared_experts, task_experts, gate_input
        )
        probe = (shared or task[tasks[0]])[0]
        width = probe.output_dim if levels == 1 else (expert_hidden or probe.output_dim)
        return cls(
            shared,
            task,
            heads({t: width for t in tasks}),
            levels=levels,
            expert_hidden=expert_hidden,
            gate_encoder=gate_encoder,
            gate_hidden=gate_hidden,
        )

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        top = len(self.extraction)
        mask: Tensor | None = None
        z = self.gate_input(inputs)
        y: dict[str, Tensor] = {}
        gates: dict[str, Tensor] = {}
        lower: dict[str, Tensor] = {}  # the gates below the top level (diagnostics)
        s: Tensor = z
        for depth, level in enumerate(self._levels(), start=1):
            needed = (
                tasks if depth == top else self.task_names
            )  # the shared gate mixes every task's experts
            if depth == 1:

                def run(e: nn.Module, u: Tensor | None) -> Tensor:  # u: unused at level 1
                    nonlocal mask
                    o: EncoderOutput = e(inputs)
                    mask = o.mask if mask is None else mask
                    return o.last
            else:

                def run(e: nn.Module, u: Tensor | None) -> Tensor:
                    out: Tensor = e(u)
                    return out

            shared_out = [run(e, s) for e in level.shared]
            # level.task holds one ModuleList of experts per task
            task_out = {
                t: [run(e, y[t] if depth > 1 else None) for e in cast(nn.ModuleList, level.task[t])]
                for t in needed
            }
            gates = {t: level.task_gates[t](y[t] if depth > 1 else z) for t in needed}
            new_y = {t: mix(task_out[t] + shared_out, gates[t], mask) for t in needed}
            if level.shared_gate is not None:
                # the shared gate mixes [E^1; ...; E^T; E^s]: each task's experts in task order,
                # then shared
                everything = [o for t in self.task_names for o in task_out[t]] + shared_out
                shared_gate = level.shared_gate(s)
                s = mix(everything, shared_gate, mask)
                lower[f"level {depth}: shared"] = shared_gate
            if depth < top:
                lower.update({f"level {depth}: {t}": gates[t] for t in needed})
            y = new_y
        outputs = {t: self.heads[t](y[t], mask) for t in tasks}
        return MultiTaskOutput(
            outputs=outputs,
            features={},
            mask=mask,
            shared_features=None,
            task_features={t: y[t] for t in tasks},
            gates={t: gates[t] for t in tasks},  # the top level's
            lower_gates=lower,
        )

    def _levels(self) -> Sequence[ExtractionLevel]:
        # __init__ fills extraction with ExtractionLevel only
        return cast(Sequence[ExtractionLevel], self.extraction)

    def _task_modules(self, task: str) -> list[nn.Module]:
        top = len(self.extraction)
        levels = self._levels()
        mods: list[nn.Module] = [
            self.heads[task],
            levels[top - 1].task[task],
            levels[top - 1].task_gates[task],
        ]
        if top >= 2:
            mods.append(levels[top - 2].task_gates[task])
        return mods

    def shared_parameters(self) -> list[nn.Parameter]:
        own = {id(p) for t in self.task_names for p in _params(self._task_modules(t))}
        return [p for p in _params([self.gate_input, self.extraction]) if id(p) not in own]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return _params(self._task_modules(task))


class CGC(PLE):
    """Customized Gate Control (Tang et al. 2020): one PLE extraction layer,
    ``y_t = softmax(W_t x̄)ᵀ [E^t(x); E^s(x)]``. Task ``t`` owns its experts, gate and head."""

    def __init__(
        self,
        shared_experts: Sequence[Encoder],
        task_experts: Mapping[str, Sequence[Encoder]],
        heads: Mapping[str, nn.Module],
        gate_encoder: Encoder | None = None,
        gate_hidden: int | None = None,
    ) -> None:
        super().__init__(
            shared_experts,
            task_experts,
            heads,
            levels=1,
            gate_encoder=gate_encoder,
            gate_hidden=gate_hidden,
        )

    @classmethod
    def from_parts(  # type: ignore[override]
        cls,
        *,
        encoder: EncoderFactory,
        heads: HeadsFactory,
        tasks: Sequence[str],
        shared_experts: int = 1,
        task_experts: int = 1,
        gate_hidden: int | None = None,
        gate_input: str | None = None,
    ) -> CGC:
        """Fresh ``encoder()`` experts: shared, then each task's."""
        _check_width(gate_hidden, "gate_hidden")
        shared, task, gate_encoder = _level1(
            encoder, tasks, shared_experts, task_experts, gate_input
        )
        probe = (shared or task[tasks[0]])[0]
        return cls(
            shared,
            task,
            heads({t: probe.output_dim for t in tasks}),
            gate_encoder=gate_encoder,
            gate_hidden=gate_hidden,
        )
