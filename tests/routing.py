"""Helpers shared by the architecture tests: which parameters a loss reaches, names of a
parameter list, hand-set linear layers, a parameter-free head, and the layers a cross-stitch
tower computes."""

from __future__ import annotations

import copy

import torch
from torch import nn


class IdentityHead(nn.Module):
    """A parameter-free head: the task's output is the features it reads."""

    def forward(self, h, mask=None):
        return h


def reached(model: nn.Module, loss: torch.Tensor) -> dict[str, bool]:
    """Parameter name -> whether ``loss`` sends it a non-zero gradient."""
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return {n: g is not None and bool(g.abs().sum() > 0) for n, g in zip(names, grads)}


def param_names(model: nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def set_linear(linear: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.tensor(bias, dtype=linear.bias.dtype))


def stitched_layers(encoder: nn.Module, inputs) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Every layer's output of tower ``a`` in a frozen identity cross-stitch of ``encoder`` and a
    copy (towers run through the encoder protocol; at α = I that is ``encoder(inputs)``), and
    the mask."""
    from polytask.sharing.cross_stitch import CrossStitch

    towers = {"a": encoder, "b": copy.deepcopy(encoder)}
    model = CrossStitch(
        towers, {"a": IdentityHead(), "b": IdentityHead()}, init="identity", freeze_stitch=True
    )
    layers, mask = model.tower_outputs(inputs)
    return layers[0], mask
