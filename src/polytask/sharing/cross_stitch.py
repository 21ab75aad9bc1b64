"""Cross-stitch networks: task towers mixed layer by layer by learned linear units.

Misra, Shrivastava, Gupta & Hebert (2016), "Cross-stitch Networks for Multi-task Learning".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..nn.base import Encoder, steps_layerwise
from .base import (
    EncoderFactory,
    HeadsFactory,
    MultiTaskModel,
    MultiTaskOutput,
    _params,
    build_towers,
    check_options,
    invalid_option,
)

#: initialisations of the stitch units
INITS = ("identity", "uniform", "balanced")
_OPTIONS = ("after", "init", "freeze_stitch", "tie_init")


def _mix(alpha: Tensor, hs: Sequence[Tensor]) -> list[Tensor]:
    """``x̃_i = Σ_j α_ij x_j``, summed in task order with one product per term, so that every
    tower's mixture is computed the same way (a matrix product may round rows differently,
    which would break the exact reproduction of separate / shared networks)."""
    out = []
    for i in range(len(hs)):
        acc = alpha[i, 0] * hs[0]
        for j in range(1, len(hs)):
            acc = acc + alpha[i, j] * hs[j]
        out.append(acc)
    return out


def stitch_init(k: int, init: str) -> Tensor:
    """The K × K initial stitch matrix: identity, uniform (1/K) or balanced (0.9 on the
    diagonal, 0.1 split evenly off it, as in Misra et al.)."""
    if init == "identity" or k == 1:
        return torch.eye(k)
    if init == "uniform":
        return torch.full((k, k), 1.0 / k)
    if init == "balanced":
        a = torch.full((k, k), 0.1 / (k - 1))
        a.fill_diagonal_(0.9)
        return a
    raise invalid_option("init", init, f"use one of {list(INITS)}")


class CrossStitch(MultiTaskModel):
    """Task towers whose activations are mixed after chosen layers by learned stitch units.

    Each task ``i`` has a tower (an encoder of one architecture shared by all towers, with
    its own weights) and a head. After each layer ``l`` in ``after`` the towers' outputs
    are replaced by linear combinations (Misra et al. 2016, eq. 1)

        x̃_i^{(l)} = Σ_j α_ij^{(l)} x_j^{(l)},

    with one learned K × K matrix ``α^{(l)}`` per stitched layer (one scalar per task pair,
    applied to every feature and token), and layer ``l+1`` of tower ``i`` reads ``x̃_i^{(l)}``.
    ``f_i(x) = g_i(x̃_i^{(L)})`` (``x_i^{(L)}`` when the top layer is not stitched).

    Initialisation reproduces the two extremes: ``identity`` (α = I) gives K separate
    networks; ``uniform`` (α = 1/K) with towers starting tied (``tie_init``) gives one
    fully shared network (every tower computes the same thing); ``balanced`` (α_ii = 0.9,
    off-diagonal 0.1/(K−1)) is the paper's choice.

    Ownership and routing. The stitch units are the shared parameters (buffers, not
    parameters, with ``freeze_stitch``); tower ``i`` and head ``i`` are task ``i``'s. Note that
    task ``j``'s loss also reaches tower ``i``'s layers up to the last stitched depth below
    the top (through α_ji, when non-zero): "task-specific" here means the group each task
    owns, not the only tensors its loss touches. No single tensor separates the losses
    from the stitch units, so ``shared_features`` is None; ``features[t]`` and
    ``task_features[t]`` are tower t's (stitched) top layer.

    Towers run one layer at a time through the encoder protocol
    (:meth:`~polytask.nn.Encoder.start`, :meth:`~polytask.nn.Encoder.layer`): every built-in
    encoder but the pretrained transformer (whose blocks run inside the pretrained model), and
    any user encoder that implements it (on a LeNet's feature maps α mixes whole maps: one
    scalar per task pair, every channel and position). Every task's tower is run on
    every call (the stitch units mix them), heads only for the tasks asked for.

    Args:
        towers: task name -> encoder; all of the same type and layer widths.
        heads: task name -> head ``g_i(features, mask)``.
        after: depths (1-based) after which to stitch; default every layer but the last.
        init: ``"identity"``, ``"uniform"`` or ``"balanced"`` (default).
        freeze_stitch: keep α fixed at its initial value.
        tie_init: copy the first tower's initial weights into every tower.
    """

    provides_shared_features = False

    def __init__(
        self,
        towers: Mapping[str, Encoder],
        heads: Mapping[str, nn.Module],
        after: Sequence[int] | None = None,
        init: str = "balanced",
        freeze_stitch: bool = False,
        tie_init: bool = False,
    ) -> None:
        super().__init__()
        if set(towers) != set(heads) or not heads:
            raise OptionError(
                "towers",
                f"towers {sorted(towers)} and heads {sorted(heads)} name different tasks",
                "give one tower and one head per task",
            )
        self.task_names = list(heads)
        first = towers[self.task_names[0]]
        for t in self.task_names:
            enc = towers[t]
            if not steps_layerwise(enc):
                raise OptionError(
                    "encoder",
                    f"cross_stitch runs towers layer by layer, and "
                    f"{type(enc).__name__} does not (it implements no Encoder.start / "
                    "Encoder.layer, or its layers do not read the state they are given)",
                    "use an encoder that implements the layer protocol (mlp, cnn, bilstm, lenet, "
                    "tabular, or your own Encoder with start and layer)",
                )
            if type(enc) is not type(first) or list(enc.layer_dims) != list(first.layer_dims):
                raise OptionError(
                    "towers",
                    f"tower {t!r} ({type(enc).__name__} {enc.layer_dims}) differs from "
                    f"tower {self.task_names[0]!r} ({type(first).__name__} {first.layer_dims})",
                    "build every tower with the same encoder settings",
                )
        depth = first.num_layers
        if after is None:
            after = list(range(1, depth))
        if isinstance(after, (str, bytes)) or not isinstance(after, Sequence):
            raise invalid_option("after", after, f"use a list of depths in 1..{depth}, e.g. [1]")
        for d in after:
            if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= depth:
                raise invalid_option(
                    "after",
                    list(after),
                    f"use depths in 1..{depth} (the towers have {depth} layer(s))",
                )
        if init not in INITS:
            raise invalid_option("init", init, f"use one of {list(INITS)}")
        if not isinstance(freeze_stitch, bool):
            raise invalid_option("freeze_stitch", freeze_stitch, "use true or false")
        if not isinstance(tie_init, bool):
            raise invalid_option("tie_init", tie_init, "use true or false")
        self.after = sorted(set(after))
        self.init = init
        self.freeze_stitch = freeze_stitch
        self.towers = nn.ModuleDict({t: towers[t] for t in self.task_names})
        self.heads = nn.ModuleDict(dict(heads))
        if tie_init:
            state = first.state_dict()
            for t in self.task_names[1:]:
                self.towers[t].load_state_dict(state)
        k = len(self.task_names)
        self.stitch = nn.ParameterDict() if not freeze_stitch else None
        for d in self.after:
            alpha = stitch_init(k, init)
            if freeze_stitch:
                self.register_buffer(f"stitch_{d}", alpha)
            else:
                self.stitch[str(d)] = nn.Parameter(alpha)  # type: ignore[index]
        self.check_ownership()

    @classmethod
    def from_parts(
        cls, *, encoder: EncoderFactory, heads: HeadsFactory, tasks: Sequence[str], **options: Any
    ) -> CrossStitch:
        """One fresh ``encoder()`` per task; options ``after``, ``init``, ``freeze_stitch``,
        ``tie_init``."""
        check_options(options, _OPTIONS, "cross_stitch")
        return cls(*build_towers(encoder, heads, tasks), **options)

    def alpha(self, depth: int) -> Tensor:
        """The stitch matrix α^{(depth)} (rows: receiving task, columns: source task)."""
        if self.stitch is None:
            buffer: Tensor = getattr(self, f"stitch_{depth}")
            return buffer
        parameter: Tensor = self.stitch[str(depth)]
        return parameter

    def tower_outputs(
        self, inputs: Mapping[str, Tensor]
    ) -> tuple[list[list[Tensor]], Tensor | None]:
        """Per task (task order) every layer's (stitched) output, and the token mask.

        Each tower runs through the encoder protocol (``start``, then ``layer(d)``); after a
        stitched depth every tower's ``state.h`` is replaced by its mixture."""
        towers = [cast(Encoder, self.towers[t]) for t in self.task_names]
        states = [tower.start(inputs) for tower in towers]
        mask = states[0].mask
        layers: list[list[Tensor]] = [[] for _ in towers]
        for d in range(towers[0].num_layers):
            states = [tower.layer(d, s) for tower, s in zip(towers, states)]
            if d + 1 in self.after:
                mixed = _mix(self.alpha(d + 1).to(states[0].h.dtype), [s.h for s in states])
                states = [s.with_h(h) for s, h in zip(states, mixed)]
            for i, s in enumerate(states):
                layers[i].append(s.h)
        return layers, mask

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        layers, mask = self.tower_outputs(inputs)
        top = {t: layers[i][-1] for i, t in enumerate(self.task_names)}
        outputs = {t: self.heads[t](top[t], mask) for t in tasks}
        features = {t: top[t] for t in tasks}
        return MultiTaskOutput(
            outputs=outputs,
            features=features,
            mask=mask,
            shared_features=None,
            task_features=dict(features),
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        return [] if self.stitch is None else list(self.stitch.values())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return _params([self.towers[task], self.heads[task]])
