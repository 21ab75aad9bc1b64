"""Attention sharing: MTAN (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
Attention", CVPR).

One shared backbone computes features ``f^{(d)}`` at every depth ``d``; each task owns soft
attention modules that select, elementwise, the features it needs at several depths:

    a_t^{(d_1)} = σ(g_t^{(d_1)}(f^{(d_1)}))
    a_t^{(d_k)} = σ(g_t^{(d_k)}([f^{(d_k)}; P_t^{(d_k)}(â_t^{(d_{k-1})})]))      k > 1
    â_t^{(d)}   = a_t^{(d)} ⊙ f^{(d)}

where ``d_1 < d_2 < ... < d_K`` are the attended depths (default: every layer; the top layer
is always one), ``g`` is a linear map (or, with ``hidden``, Linear-ReLU-Linear) to the width
of depth ``d``, and ``P_t^{(d_k)}(u) = ReLU(W u + b)`` projects the previous attended
features to the width of depth ``d_k`` (the paper's per-task shared-block ``f``; 1×1 here,
as the features are vectors or per-token vectors). Task ``t``'s head reads ``â_t^{(d_K)}``.

For sequence encoders (B, T, D_d) the masks are per token and padding positions are set to
zero in every ``â``.

For the feature maps (B, C_d, H_d, W_d) of image encoders (those that declare
``layer_shapes``, e.g. :class:`~polytask.nn.LeNet`) the masks are per channel and position,
as in the paper: ``g`` is a 1×1 convolution (Conv-ReLU-Conv with ``hidden``), the
concatenation is along channels, and ``P(u) = ReLU(conv_{1×1}(pool(u)))`` first max-pools the
previous map to the current resolution (adaptive max pooling; the paper pools between
blocks). Where a vector depth follows a map (LeNet's fc layer after its second conv
block), ``P(u) = ReLU(W vec(u) + b)`` reads the flattened map, as the backbone's own fc layer
does. A map depth after a vector depth is rejected.

``shared_features`` is ``None``: the attention modules read intermediate layers, so no single
tensor separates every loss from the backbone; gradient methods run at the parameter level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import OptionError
from ..nn.base import Encoder
from .base import EncoderFactory, HeadsFactory, MultiTaskModel, MultiTaskOutput, _params


def _is_map(shape: Sequence[int] | None) -> bool:
    return shape is not None and len(shape) == 3


class AttentionBlock(nn.Module):
    """One task's attention module at one depth: ``a = σ(g([f; P(â_prev)]))``.

    ``shape`` / ``prev_shape``: per-example shapes of ``f`` and of the previous attended
    features, ``(C, H, W)`` for feature maps; ``None`` (default) for vectors or per-token
    vectors of width ``dim`` / ``prev_dim`` (linear ``g`` and ``P`` on the last dimension).
    """

    def __init__(
        self,
        dim: int,
        prev_dim: int | None,
        hidden: int | None,
        shape: Sequence[int] | None = None,
        prev_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.spatial = _is_map(shape)
        self.flatten_prev = prev_dim is not None and _is_map(prev_shape) and not self.spatial
        if self.spatial and prev_dim is not None and not _is_map(prev_shape):
            map_shape = cast(Sequence[int], shape)  # spatial: shape is a (C, H, W) map
            raise OptionError(
                "depths",
                f"a feature-map depth {tuple(map_shape)} follows a vector depth",
                "attend only to depths from the last vector layer on, or to maps only",
            )
        self.out_size = None if not self.spatial else (int(shape[1]), int(shape[2]))  # type: ignore[index]
        layer: Callable[[int, int], nn.Module] = (
            (lambda i, o: nn.Conv2d(i, o, 1)) if self.spatial else nn.Linear
        )
        if prev_dim is None:
            self.project: nn.Module | None = None
        elif self.flatten_prev:
            n = 1
            for s in prev_shape:  # type: ignore[union-attr]
                n *= int(s)
            self.project = nn.Linear(n, dim)
        else:
            self.project = layer(prev_dim, dim)
        in_dim = dim if prev_dim is None else 2 * dim
        if hidden is None:
            self.gate = nn.Sequential(layer(in_dim, dim))
        else:
            self.gate = nn.Sequential(layer(in_dim, hidden), nn.ReLU(), layer(hidden, dim))

    def mask(self, f: Tensor, prev: Tensor | None) -> Tensor:
        """The attention mask ``a`` ∈ (0, 1), same shape as ``f``."""
        if self.project is not None:
            if prev is None:
                raise ValueError(
                    "AttentionBlock at a deeper depth needs the previous attended features"
                )
            if self.flatten_prev:
                prev = prev.flatten(1)
            elif self.spatial and tuple(prev.shape[-2:]) != self.out_size:
                out_size = cast(tuple[int, int], self.out_size)  # set whenever spatial
                prev = F.adaptive_max_pool2d(prev, out_size)
            f = torch.cat([f, torch.relu(self.project(prev))], dim=1 if self.spatial else -1)
        return torch.sigmoid(self.gate(f))


class MTAN(MultiTaskModel):
    """Shared backbone + per-task attention modules at several depths (MTAN, Liu et al. 2019).

    ``a_t^{(d)} = σ(g_t^{(d)}([f^{(d)}; P_t^{(d)}(â_t^{(d-)})]))``,
    ``â_t^{(d)} = a_t^{(d)} ⊙ f^{(d)}``
    (see the module docstring); task ``t``'s head reads the attended features at the top
    attended depth.

    Ownership: the encoder is shared; each task owns its attention modules (all depths) and
    its head. ``features[t]`` is the backbone's top layer (the shared tensor the task's last
    attention selects from); ``task_features[t]`` is ``â_t`` at the top depth;
    ``shared_features`` is ``None`` (the attention modules read intermediate layers, so no
    single tensor separates the losses from the backbone).

    Args:
        encoder: the shared backbone.
        heads: task name -> head reading ``encoder.layer_dims[-1]``-wide features.
        depths: 1-based depths that get attention modules (sorted, unique, must include the
            top layer); default every layer.
        hidden: hidden width of each attention MLP ``g``; ``None``: one linear map.
    """

    provides_shared_features = False

    def __init__(
        self,
        encoder: Encoder,
        heads: Mapping[str, nn.Module],
        depths: Sequence[int] | None = None,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.task_names = list(heads)
        self.depths = _check_depths(depths, encoder.num_layers)
        if hidden is not None and (
            isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0
        ):
            raise OptionError(
                "hidden", f"{hidden!r} is not a positive integer", "e.g. hidden: 32, or null"
            )
        dims = encoder.layer_dims
        shapes: Sequence[tuple[int, ...] | None] = encoder.layer_shapes or [None] * len(dims)
        self.attention = nn.ModuleDict()
        for t in self.task_names:
            blocks = nn.ModuleList()
            prev = prev_shape = None
            for d in self.depths:
                blocks.append(AttentionBlock(dims[d - 1], prev, hidden, shapes[d - 1], prev_shape))
                prev, prev_shape = dims[d - 1], shapes[d - 1]
            self.attention[t] = blocks
        self.check_ownership()

    @classmethod
    def from_parts(  # type: ignore[override]
        cls,
        *,
        encoder: EncoderFactory,
        heads: HeadsFactory,
        tasks: Sequence[str],
        depths: Sequence[int] | None = None,
        hidden: int | None = None,
    ) -> MTAN:
        """One shared ``encoder()``; options ``depths`` and ``hidden``."""
        enc = encoder()
        _check_depths(depths, enc.num_layers)
        return cls(enc, heads({t: enc.layer_dims[-1] for t in tasks}), depths=depths, hidden=hidden)

    def attend(self, task: str, layers: Sequence[Tensor], mask: Tensor | None) -> list[Tensor]:
        """Task's attended features ``â_t^{(d)}`` at each attended depth, in order."""
        keep = None if mask is None else mask.unsqueeze(-1).to(layers[0].dtype)
        out: list[Tensor] = []
        prev = None
        # __init__ stores a ModuleList of AttentionBlock per task
        blocks = cast(Iterable[AttentionBlock], self.attention[task])
        for block, d in zip(blocks, self.depths):
            f = layers[d - 1]
            a = block.mask(f, prev)
            h = a * f
            if keep is not None:
                h = h * keep
            out.append(h)
            prev = h
        return out

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        enc = self.encoder(inputs)
        outputs, features, task_features = {}, {}, {}
        for t in tasks:
            h = self.attend(t, enc.layers, enc.mask)[-1]
            features[t] = enc.layers[-1]
            task_features[t] = h
            outputs[t] = self.heads[t](h, enc.mask)
        return MultiTaskOutput(
            outputs=outputs,
            features=features,
            mask=enc.mask,
            shared_features=None,
            task_features=task_features,
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        return _params([self.encoder])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        return _params([self.attention[task], self.heads[task]])


def _check_depths(depths: Sequence[int] | None, num_layers: int) -> list[int]:
    if depths is None:
        return list(range(1, num_layers + 1))
    if isinstance(depths, (str, int)) or not depths:
        raise OptionError(
            "depths",
            f"{depths!r} is not a non-empty list of depths",
            f"e.g. depths: {list(range(1, num_layers + 1))}",
        )
    for d in depths:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= num_layers:
            raise OptionError(
                "depths",
                f"depth {d!r} is outside 1..{num_layers}",
                f"the encoder has {num_layers} layer(s)",
            )
    out = sorted(set(depths))
    if len(out) != len(depths):
        raise OptionError("depths", f"{list(depths)} repeats a depth", "list each depth once")
    if out[-1] != num_layers:
        raise OptionError(
            "depths",
            f"{list(depths)} omits the top layer {num_layers}",
            f"add {num_layers} (heads read the top attended features)",
        )
    return out
