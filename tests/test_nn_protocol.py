"""The encoder layer protocol (``start``, ``layer(i)``, ``forward`` as their loop): a user's own
encoder, defined here, is cross-stitched and attended (MTAN) through it alone."""

from __future__ import annotations

import copy

import pytest
import torch
from routing import IdentityHead
from torch import nn

from polytask.errors import OptionError
from polytask.nn import ClassifierHead, Encoder
from polytask.nn.base import EncoderState, steps_layerwise
from polytask.sharing import MTAN, CrossStitch


class Residual(Encoder):
    """A user's encoder: ``h_0 = W_in x``, ``h_d = h_{d-1} + tanh(W_d h_{d-1})``."""

    input_kind = "features"
    is_sequence = False

    def __init__(self, dim: int = 3, width: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.layer_dims = [width] * layers
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def start(self, inputs):
        return EncoderState(self.inp(inputs["x"]))

    def layer(self, i, state):
        return state.with_h(state.h + torch.tanh(self.blocks[i](state.h)))


class AllAtOnce(Residual):
    """Implements the protocol, but computes every layer in ``start`` (like the transformer)."""

    layerwise = False


X = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
Y = {"a": torch.tensor([0, 1, 0, 1, 1, 0]), "b": torch.tensor([1, 1, 0, 0, 1, 0])}


def _heads(dims):
    return {t: ClassifierHead(d, 2) for t, d in dims.items()}


def test_forward_is_the_default_loop_over_start_and_layer() -> None:
    torch.manual_seed(0)
    enc = Residual()
    out = enc({"x": X})
    h = enc.inp(X)
    assert len(out.layers) == 3 and out.mask is None
    for i, layer in enumerate(out.layers):
        h = h + torch.tanh(enc.blocks[i](h))
        torch.testing.assert_close(layer, h, rtol=0, atol=0)


def test_only_encoders_whose_layers_read_the_state_can_be_stepped() -> None:
    assert steps_layerwise(Residual())
    assert not steps_layerwise(AllAtOnce()) and not steps_layerwise(nn.Linear(2, 2))
    with pytest.raises(OptionError) as err:
        CrossStitch.from_parts(encoder=AllAtOnce, heads=_heads, tasks=["a", "b"])
    assert err.value.option == "encoder"


def test_identity_stitch_is_independent_towers_then_training_moves_the_stitch() -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=Residual, heads=_heads, tasks=["a", "b"], init="identity"
    )
    towers = {t: copy.deepcopy(model.towers[t]) for t in "ab"}
    heads = {t: copy.deepcopy(model.heads[t]) for t in "ab"}
    out = model({"x": X})
    for t in "ab":  # α = I: each task's output is its own tower and head, as separate networks
        alone = heads[t](towers[t]({"x": X}).last)
        torch.testing.assert_close(out.outputs[t], alone, rtol=0, atol=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    alphas = [model.alpha(d).detach().clone() for d in model.after]
    for _ in range(3):
        out = model({"x": X})
        loss = sum(nn.functional.cross_entropy(out.outputs[t], Y[t]) for t in "ab")
        opt.zero_grad()
        loss.backward()
        for d in model.after:  # the mixing runs between the user's layers: α gets gradient off I
            grad = model.alpha(d).grad
            assert grad is not None and bool(grad[0, 1] != 0) and bool(grad[1, 0] != 0)
        opt.step()
    assert all(not torch.equal(a, model.alpha(d)) for a, d in zip(alphas, model.after))


def test_the_next_layer_reads_the_stitched_state() -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(encoder=Residual, heads=_heads, tasks=["a", "b"], after=[1])
    layers, _ = model.tower_outputs({"x": X})
    alpha = model.alpha(1)
    first = [model.towers[t].layer(0, model.towers[t].start({"x": X})).h for t in "ab"]
    mixed = alpha[0, 0] * first[0] + alpha[0, 1] * first[1]
    torch.testing.assert_close(layers[0][0], mixed, rtol=0, atol=0)
    second = model.towers["a"].layer(1, EncoderState(mixed)).h
    torch.testing.assert_close(layers[0][1], second, rtol=0, atol=0)


def test_mtan_attends_to_a_user_encoder() -> None:
    torch.manual_seed(0)
    model = MTAN.from_parts(
        encoder=Residual,
        heads=lambda d: {t: IdentityHead() for t in d},
        tasks=["a", "b"],
        depths=[2, 3],
    )
    out = model({"x": X})
    assert out.outputs["a"].shape == (6, 4)
    grads = torch.autograd.grad(out.outputs["a"].sum(), list(model.encoder.parameters()))
    assert all(bool(g.abs().sum() > 0) for g in grads)
