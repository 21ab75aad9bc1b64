"""Hard and hierarchical parameter sharing.

Hierarchical sharing (Søgaard & Goldberg 2016; Hashimoto et al. 2017; Sanh et al. 2019):
``f_i(x) = g_i(h_i(h_0^{(d_i)}(x)))`` where ``h_0^{(d)}`` is the shared encoder up to depth
``d``, each task taps its own depth ``d_i`` (e.g. tagging from layer 1, sentiment from
layer 2), ``h_i`` are optional task-specific layers and ``g_i`` the task's head.

Hard sharing (Caruana 1997) is the special case where every task taps the top layer and
has no task-specific layers: ``f_i(x) = g_i(h(x))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Mapping, Sequence, cast

from torch import Tensor, nn

from ..balancing._autograd import separates
from ..errors import OptionError
from ..nn.base import Encoder
from .base import EncoderFactory, HeadsFactory, MultiTaskModel, MultiTaskOutput, _params


class Hierarchical(MultiTaskModel):
    """Shared encoder stack, per-task tap depth, optional task layers, task heads.

    ``shared_features`` of the output is the encoder layer at the lowest depth tapped by the
    tasks in the call: every task's loss passes through it (deeper layers are computed from
    it). Where the encoder's deeper layers bypass it (e.g. word-level layers gathered from a
    transformer's sub-word states), there is no such tensor for mixed depths and
    ``shared_features`` is None; this is checked once per set of tapped depths on the
    autograd graph.

    Args:
        encoder: the shared stack ``h_0`` (an :class:`~polytask.nn.base.Encoder`).
        heads: task name -> head module ``g_i(features, mask)``.
        taps: task name -> depth (1-based) of the encoder layer the task reads; default:
            the top layer.
        task_layers: task name -> module ``h_i(features, mask) -> features`` applied before
            the head (see :mod:`polytask.sharing.task_layers`).
    """

    provides_shared_features = True

    def __init__(
        self,
        encoder: Encoder,
        heads: Mapping[str, nn.Module],
        taps: Mapping[str, int] | None = None,
        task_layers: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.task_names = list(heads)
        self.taps = check_taps(taps, encoder.num_layers, self.task_names)
        shapes = getattr(encoder, "layer_shapes", None)
        layers = dict(task_layers or {})
        for t, d in self.taps.items():
            shape = shapes[d - 1] if shapes else None
            if shape is not None and not encoder.is_sequence and len(shape) > 1 and t not in layers:
                known = cast(Sequence[Any], shapes)  # shape came from it, so it is a sequence
                vectors = [i + 1 for i, s in enumerate(known) if s is not None and len(s) == 1]
                raise OptionError(
                    f"taps.{t}",
                    f"depth {d} of the encoder is a {tuple(shape)} feature map, "
                    "and task heads read vectors",
                    f"tap a vector layer (depth {' or '.join(map(str, vectors)) or '?'}), or share "
                    "the maps with sharing: mtan or cross_stitch",
                )
        for t in layers:
            if t not in self.heads:
                raise OptionError(
                    "task_layers", f"unknown task {t!r}", f"use one of {self.task_names}"
                )
        self.task_layers = nn.ModuleDict(layers)
        self._separating: dict[tuple[int, ...], bool] = {}
        self.check_ownership()

    @classmethod
    def from_parts(  # type: ignore[override]
        cls,
        *,
        encoder: EncoderFactory,
        heads: HeadsFactory,
        tasks: Sequence[str],
        taps: Mapping[str, int] | None = None,
        task_layers: Mapping[str, Callable[[int], nn.Module]] | None = None,
    ) -> Hierarchical:
        """One shared ``encoder()``; ``taps`` (task -> depth) and ``task_layers`` (task ->
        ``make(in_dim)`` building its layer ``h_i`` over the tapped width, in task order).
        Heads read the task layer's ``out_dim`` where it has one, else the tapped width."""
        enc = encoder()
        depths = check_taps(taps, enc.num_layers, tasks)
        layers: dict[str, nn.Module] = {}
        widths: dict[str, int] = {}
        for t in tasks:
            widths[t] = enc.layer_dims[depths[t] - 1]
            if task_layers and t in task_layers:
                layers[t] = task_layers[t](widths[t])
                widths[t] = getattr(layers[t], "out_dim", widths[t])
        return cls(enc, heads(widths), taps=dict(taps or {}), task_layers=layers)

    def forward(
        self, inputs: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> MultiTaskOutput:
        tasks = self._check_tasks(tasks)
        enc = self.encoder(inputs)
        outputs, features = {}, {}
        for t in tasks:
            h = enc.layers[self.taps[t] - 1]
            features[t] = h
            if t in self.task_layers:
                h = self.task_layers[t](h, enc.mask)
            outputs[t] = self.heads[t](h, enc.mask)
        return MultiTaskOutput(
            outputs=outputs,
            features=features,
            mask=enc.mask,
            shared_features=self._shared_features(enc.layers, tasks),
        )

    def _shared_features(self, layers: Sequence[Tensor], tasks: Sequence[str]) -> Tensor | None:
        depths = tuple(sorted({self.taps[t] for t in tasks}))
        if not depths:
            return None
        z = layers[depths[0] - 1]
        if len(depths) > 1:
            ok = self._separating.get(depths)
            if ok is None:
                ok = separates(z, [layers[d - 1] for d in depths[1:]])
                if z.grad_fn is not None:  # only a graph answers; cache its answer
                    self._separating[depths] = ok
            if not ok:
                return None
        return z

    def shared_parameters(self) -> list[nn.Parameter]:
        return _params([self.encoder])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        self._check_tasks([task])
        mods = [self.heads[task]] + ([self.task_layers[task]] if task in self.task_layers else [])
        return _params(mods)


class HardSharing(Hierarchical):
    """Hard parameter sharing: ``f_i(x) = g_i(h(x))`` — every head reads the encoder's top layer."""

    def __init__(self, encoder: Encoder, heads: Mapping[str, nn.Module]) -> None:
        super().__init__(encoder, heads)

    @classmethod
    def from_parts(
        cls, *, encoder: EncoderFactory, heads: HeadsFactory, tasks: Sequence[str], **options: Any
    ) -> HardSharing:
        """One shared ``encoder()``, every head reading its top layer; no options."""
        if options:
            raise OptionError(
                sorted(options)[0],
                "hard sharing reads the top layer and has no taps, task layers or other options",
                "use sharing: hierarchical for taps or task_layers",
            )
        enc = encoder()
        return cls(enc, heads({t: enc.output_dim for t in tasks}))


def check_taps(taps: Mapping[str, int] | None, depth: int, tasks: Sequence[str]) -> dict[str, int]:
    """Task -> tapped depth (default the top, ``depth``) for every task, each in ``1..depth``;
    :class:`~polytask.errors.OptionError` naming ``taps`` or ``taps.<task>`` otherwise."""
    out = {t: depth for t in tasks}
    for t, d in (taps or {}).items():
        if t not in out:
            raise OptionError("taps", f"unknown task {t!r}", f"use one of {list(tasks)}")
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= depth:
            raise OptionError(
                f"taps.{t}",
                f"depth {d!r} is outside 1..{depth}",
                f"the encoder has {depth} layer(s)",
            )
        out[t] = d
    return out
