"""Cross-stitch networks: task towers mixed layer by layer by learned linear units.

Misra, Shrivastava, Gupta & Hebert (2016), "Cross-stitch Networks for Multi-task Learning".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..nn.base import Encoder
from ..nn.bilstm import BiLSTM, _right_padded_lengths, run_packed
from ..nn.cnn import CNN
from ..nn.lenet import LeNet
from ..nn.mlp import MLP
from .base import MultiTaskModel, MultiTaskOutput, _params

#: initialisations of the stitch units
INITS = ("identity", "uniform", "balanced")
_OPTIONS = ("after", "init", "freeze_stitch", "tie_init")


def _option_error(name: str, value: object, fix: str) -> ValueError:
    return ValueError(f"model.sharing_options.{name}: {value!r} is invalid; fix: {fix}")


# ---------------------------------------------------------------- layer-wise execution
# The encoders give every layer at once; cross-stitch needs to mix the towers between
# layers, so it runs each tower one layer at a time. These functions mirror the encoders'
# own forward passes exactly (tests check that running all layers reproduces
# ``encoder(inputs).layers`` bit for bit).
def _supports_layerwise(encoder: Encoder) -> bool:
    return isinstance(encoder, (MLP, CNN, BiLSTM, LeNet))


def _start(encoder: Encoder, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, object]:
    """``(h_0, mask, context)``: the input of layer 1, the token mask and what the layers need."""
    if isinstance(encoder, LeNet):  # steps through its own stem / layer methods
        return encoder.stem(inputs), None, None
    if isinstance(encoder, MLP):
        if "x" not in inputs:
            raise KeyError(f"MLP reads inputs['x'] (B, F); got keys {sorted(inputs)}")
        h = inputs["x"]
        if h.dim() != 2 or h.shape[-1] != encoder.input_dim:
            raise ValueError(
                f"MLP expects inputs['x'] of shape (B, {encoder.input_dim}); got {tuple(h.shape)}")
        return h.to(encoder.linears[0].weight.dtype), None, None
    if isinstance(encoder, CNN):
        if "tokens" not in inputs:
            raise KeyError(f"CNN reads inputs['tokens'] (B, T); got keys {sorted(inputs)}")
        tokens = inputs["tokens"]
        mask = tokens != encoder.padding_idx
        return encoder.embedding(tokens), mask, None
    if isinstance(encoder, BiLSTM):
        if "tokens" not in inputs:
            raise KeyError(f"BiLSTM reads inputs['tokens'] (B, T); got keys {sorted(inputs)}")
        tokens = inputs["tokens"]
        mask = tokens != encoder.padding_idx
        h = encoder.embedding(tokens)
        if encoder.chars is not None:
            if "chars" not in inputs:
                raise KeyError("BiLSTM was built with char_vocab_size, so it reads inputs['chars'] (B, T, C)")
            h = torch.cat([h, encoder.chars(inputs["chars"])], dim=-1)
        return h, mask, _right_padded_lengths(mask)
    raise TypeError(f"{type(encoder).__name__} cannot run layer by layer")  # pragma: no cover


def _layer(encoder: Encoder, d: int, h: Tensor, mask: Tensor | None, context: object) -> Tensor:
    """Output of layer ``d`` (0-based) of ``encoder`` given that layer's input ``h``."""
    if isinstance(encoder, MLP):
        return encoder.activations[d](encoder.linears[d](encoder.dropout(h)))
    if isinstance(encoder, LeNet):
        return encoder.layer(d, h)
    assert mask is not None
    keep = mask.unsqueeze(-1)
    if isinstance(encoder, CNN):
        x = torch.where(keep, encoder.dropout(h), 0.0)
        out = torch.relu(encoder.convs[d](x.transpose(1, 2))).transpose(1, 2)
        return torch.where(keep, out, 0.0)
    if isinstance(encoder, BiLSTM):
        out, _ = run_packed(encoder.lstms[d], encoder.dropout(h), context)  # type: ignore[arg-type]
        return torch.where(keep, out, 0.0)
    raise TypeError(f"{type(encoder).__name__} cannot run layer by layer")  # pragma: no cover


def run_layerwise(encoder: Encoder, inputs: Mapping[str, Tensor]) -> tuple[list[Tensor], Tensor | None]:
    """Every layer's output computed one layer at a time (equal to ``encoder(inputs)``)."""
    h, mask, ctx = _start(encoder, inputs)
    layers = []
    for d in range(encoder.num_layers):
        h = _layer(encoder, d, h, mask, ctx)
        layers.append(h)
    return layers, mask


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
    raise _option_error("init", init, f"use one of {list(INITS)}")


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

    Towers must run one layer at a time: :class:`~polytask.nn.MLP`, :class:`~polytask.nn.CNN`,
    :class:`~polytask.nn.BiLSTM` and :class:`~polytask.nn.LeNet` encoders are supported (on a
    LeNet's feature maps α mixes whole maps: one scalar per task pair, every channel and
    position). Every task's tower is run on
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
            raise ValueError(
                f"CrossStitch: towers {sorted(towers)} and heads {sorted(heads)} must name the same tasks")
        self.task_names = list(heads)
        first = towers[self.task_names[0]]
        for t in self.task_names:
            enc = towers[t]
            if not _supports_layerwise(enc):
                raise ValueError(
                    f"model.sharing: cross_stitch runs towers layer by layer and supports MLP, CNN, "
                    f"BiLSTM and LeNet encoders; got {type(enc).__name__}; fix: use one of those encoders")
            if type(enc) is not type(first) or list(enc.layer_dims) != list(first.layer_dims):
                raise ValueError(
                    f"CrossStitch: tower {t!r} ({type(enc).__name__} {enc.layer_dims}) differs from "
                    f"tower {self.task_names[0]!r} ({type(first).__name__} {first.layer_dims}); "
                    "fix: build every tower with the same encoder settings")
        depth = first.num_layers
        if after is None:
            after = list(range(1, depth))
        if isinstance(after, (str, bytes)) or not isinstance(after, Sequence):
            raise _option_error("after", after, f"use a list of depths in 1..{depth}, e.g. [1]")
        for d in after:
            if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= depth:
                raise _option_error("after", list(after), f"use depths in 1..{depth} (the towers have {depth} layer(s))")
        if init not in INITS:
            raise _option_error("init", init, f"use one of {list(INITS)}")
        if not isinstance(freeze_stitch, bool):
            raise _option_error("freeze_stitch", freeze_stitch, "use true or false")
        if not isinstance(tie_init, bool):
            raise _option_error("tie_init", tie_init, "use true or false")
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
        cls,
        *,
        encoder: Callable[[], Encoder],
        heads: Callable[[Mapping[str, int]], Mapping[str, nn.Module]],
        tasks: Sequence[str],
        **options: object,
    ) -> CrossStitch:
        """One fresh ``encoder()`` per task; options ``after``, ``init``, ``freeze_stitch``, ``tie_init``."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"model.sharing_options.{unknown[0]}: unknown option for cross_stitch; "
                             f"fix: use one of {list(_OPTIONS)}")
        towers = {t: encoder() for t in tasks}
        built = heads({t: towers[t].output_dim for t in tasks})
        return cls(towers, {t: built[t] for t in tasks}, **options)  # type: ignore[arg-type]

    def alpha(self, depth: int) -> Tensor:
        """The stitch matrix α^{(depth)} (rows: receiving task, columns: source task)."""
        if self.stitch is None:
            return getattr(self, f"stitch_{depth}")
        return self.stitch[str(depth)]

    def tower_outputs(self, inputs: Mapping[str, Tensor]) -> tuple[list[list[Tensor]], Tensor | None]:
        """Per task (task order) every layer's (stitched) output, and the token mask."""
        names = self.task_names
        starts = [_start(self.towers[t], inputs) for t in names]
        hs = [s[0] for s in starts]
        mask = starts[0][1]
        layers: list[list[Tensor]] = [[] for _ in names]
        for d in range(self.towers[names[0]].num_layers):
            hs = [_layer(self.towers[t], d, h, s[1], s[2]) for t, h, s in zip(names, hs, starts)]
            if d + 1 in self.after:
                hs = _mix(self.alpha(d + 1).to(hs[0].dtype), hs)
            for i, h in enumerate(hs):
                layers[i].append(h)
        return layers, mask

    def forward(self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        layers, mask = self.tower_outputs(inputs)
        top = {t: layers[i][-1] for i, t in enumerate(self.task_names)}
        outputs = {t: self.heads[t](top[t], mask) for t in tasks}
        features = {t: top[t] for t in tasks}
        return MultiTaskOutput(outputs=outputs, features=features, mask=mask,
                               shared_features=None, task_features=dict(features))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [] if self.stitch is None else list(self.stitch.values())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return _params([self.towers[task], self.heads[task]])
