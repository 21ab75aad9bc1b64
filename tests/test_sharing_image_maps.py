"""MTAN and cross-stitch on a 2-D CNN (LeNet): attention per channel and position on feature
maps (hand-computed), routing, and cross-stitch's layer-wise stepping and extremes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from routing import param_names, reached, stitched_layers
from torch import nn

from polytask.errors import OptionError
from polytask.nn import ClassifierHead, Encoder, EncoderOutput, LeNet
from polytask.sharing.cross_stitch import CrossStitch
from polytask.sharing.mtan import MTAN, AttentionBlock


def _heads(dims):
    return {t: ClassifierHead(d, 10, hidden=8) for t, d in dims.items()}


def _image(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"image": torch.rand(n, 1, 36, 36, generator=torch.Generator().manual_seed(seed))}


def test_mtan_on_lenet_builds_conv_attention_on_maps_and_linear_on_the_vector() -> None:
    torch.manual_seed(0)
    model = MTAN.from_parts(encoder=LeNet, heads=_heads, tasks=["left", "right"])
    b1, b2, b3 = model.attention["left"]
    assert (
        isinstance(b1.gate[0], nn.Conv2d)
        and b1.gate[0].kernel_size == (1, 1)
        and b1.project is None
    )
    assert (b1.gate[0].in_channels, b1.gate[0].out_channels) == (10, 10)
    assert isinstance(b2.project, nn.Conv2d) and (
        b2.project.in_channels,
        b2.project.out_channels,
    ) == (10, 20)
    assert (b2.gate[0].in_channels, b2.gate[0].out_channels) == (40, 20)
    assert isinstance(b3.project, nn.Linear) and (
        b3.project.in_features,
        b3.project.out_features,
    ) == (720, 50)
    assert isinstance(b3.gate[0], nn.Linear) and b3.gate[0].in_features == 100
    x = _image()
    enc = model.encoder(x)
    hats = model.attend("left", enc.layers, None)
    assert [tuple(h.shape) for h in hats] == [(4, 10, 16, 16), (4, 20, 6, 6), (4, 50)]
    # masks are per channel and position: they vary along both
    a = b1.mask(enc.layers[0], None)
    assert a.shape == enc.layers[0].shape
    assert not torch.allclose(a[0, 0, 0, 0], a[0, 0, 8, 8]) and not torch.allclose(
        a[0, 0, 8, 8], a[0, 1, 8, 8]
    )
    out = model(x)
    assert out.outputs["left"].shape == (4, 10) and torch.equal(
        out.features["left"], enc.layers[-1]
    )
    torch.testing.assert_close(out.task_features["left"], hats[-1])


def test_map_attention_block_equals_a_hand_computation() -> None:
    """f: 1 channel 2×2; previous attended map: 1 channel 4×4. P = relu(3·maxpool_2(prev) − 1);
    g = σ(2·f − 1·P + 0.5) per position."""
    block = AttentionBlock(1, 1, None, shape=(1, 2, 2), prev_shape=(1, 4, 4))
    with torch.no_grad():
        block.project.weight.fill_(3.0)
        block.project.bias.fill_(-1.0)
        block.gate[0].weight.copy_(torch.tensor([2.0, -1.0]).reshape(1, 2, 1, 1))
        block.gate[0].bias.fill_(0.5)
    f = torch.tensor([[[[1.0, 0.0], [-1.0, 2.0]]]])
    prev = torch.tensor(
        [[[[0.0, 0.2, 1.0, 0.0], [0.1, 0.3, 0.0, 0.0], [0.0, 0.0, 0.4, 0.0], [0.5, 0.0, 0.0, 0.1]]]]
    )
    pooled = [[0.3, 1.0], [0.5, 0.4]]
    expected = [
        [
            1 / (1 + math.exp(-(2 * f[0, 0, i, j].item() - max(3 * pooled[i][j] - 1, 0.0) + 0.5)))
            for j in range(2)
        ]
        for i in range(2)
    ]
    torch.testing.assert_close(block.mask(f, prev), torch.tensor([[expected]]))


def test_map_to_vector_attention_reads_the_flattened_map() -> None:
    block = AttentionBlock(2, 3, None, shape=(2,), prev_shape=(3, 2, 2))
    prev = torch.randn(5, 3, 2, 2)
    f = torch.randn(5, 2)
    p = torch.relu(block.project(prev.flatten(1)))
    torch.testing.assert_close(
        block.mask(f, prev), torch.sigmoid(block.gate(torch.cat([f, p], dim=-1)))
    )


class _VectorThenMap(Encoder):
    input_kind = "image"
    is_sequence = False

    def __init__(self) -> None:
        super().__init__()
        self.layer_dims = [4, 2]
        self.layer_shapes = [(4,), (2, 3, 3)]
        self.linear = nn.Linear(1, 4)

    def forward(self, inputs):  # pragma: no cover - never called
        return EncoderOutput(layers=[])


def test_a_map_depth_after_a_vector_depth_is_a_config_error() -> None:
    with pytest.raises(OptionError, match="feature-map depth") as err:
        MTAN(_VectorThenMap(), {"a": ClassifierHead(2, 2)})
    assert err.value.option == "depths"
    MTAN(_VectorThenMap(), {"a": ClassifierHead(2, 2)}, depths=[2])  # maps only: fine


def test_mtan_routing_on_lenet() -> None:
    torch.manual_seed(0)
    model = MTAN.from_parts(encoder=LeNet, heads=_heads, tasks=["left", "right"], hidden=6)
    model.check_ownership()
    out = model(_image(8))
    y = torch.arange(8) % 10
    shared = param_names(model, model.shared_parameters())
    for t, other in (("left", "right"), ("right", "left")):
        r = reached(model, nn.functional.cross_entropy(out.outputs[t], y))
        assert all(r[n] for n in shared), t
        assert all(r[n] for n in param_names(model, model.task_parameters(t))), t
        assert not any(r[n] for n in param_names(model, model.task_parameters(other))), t


def test_cross_stitch_layerwise_execution_reproduces_lenet_exactly() -> None:
    torch.manual_seed(0)
    net = LeNet()
    layers, mask = stitched_layers(net, _image())
    ref = net(_image())
    assert mask is None and len(layers) == 3
    for a, b in zip(layers, ref.layers):
        assert torch.equal(a, b)


def test_cross_stitch_identity_frozen_is_separate_lenets() -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=LeNet, heads=_heads, tasks=["left", "right"], init="identity", freeze_stitch=True
    )
    assert model.after == [1, 2] and model.shared_parameters() == []
    x = _image()
    out = model(x)
    for t in model.task_names:
        assert torch.equal(out.task_features[t], model.towers[t](x).last)
        assert torch.equal(out.outputs[t], model.heads[t](model.towers[t](x).last))


def test_cross_stitch_uniform_frozen_tied_is_one_shared_lenet() -> None:
    """K = 2: ½x + ½x = x exactly, so every tower's every layer is the shared network's."""
    torch.manual_seed(0)
    model = CrossStitch.from_parts(
        encoder=LeNet,
        heads=_heads,
        tasks=["left", "right"],
        init="uniform",
        freeze_stitch=True,
        tie_init=True,
    )
    x = _image()
    shared = copy.deepcopy(model.towers["left"])(x).layers
    layers, _ = model.tower_outputs(x)
    for per_task in layers:
        for got, want in zip(per_task, shared):
            assert torch.equal(got, want)


def test_cross_stitch_on_lenet_routes_to_the_stitch_units() -> None:
    torch.manual_seed(0)
    model = CrossStitch.from_parts(encoder=LeNet, heads=_heads, tasks=["left", "right"])
    out = model(_image(8))
    y = torch.arange(8) % 10
    r = reached(model, nn.functional.cross_entropy(out.outputs["left"], y))
    assert r["stitch.1"] and r["stitch.2"]
    # the other task's tower is reached through α (below the last stitched layer) but not its
    # top (fc) layer, and not its head
    assert r["towers.right.conv1.weight"] and not r["towers.right.fc.weight"]
    assert not any(r[n] for n in r if n.startswith("heads.right."))
