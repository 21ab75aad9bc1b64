"""LeNet encoder: layer shapes, exact values on fixed weights, layer-by-layer stepping,
gradients."""

from __future__ import annotations

import pytest
import torch

from polytask.errors import OptionError
from polytask.nn import ENCODERS, LeNet


def test_default_is_the_multimnist_lenet_on_36_pixel_images() -> None:
    net = LeNet()
    assert net.input_kind == "image" and not net.is_sequence
    assert net.layer_dims == [10, 20, 50] and net.num_layers == 3 and net.output_dim == 50
    assert net.layer_shapes == [(10, 16, 16), (20, 6, 6), (50,)]
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv1.kernel_size) == (1, 10, (5, 5))
    assert (net.conv2.in_channels, net.conv2.out_channels, net.conv2.kernel_size) == (
        10,
        20,
        (5, 5),
    )
    assert (net.fc.in_features, net.fc.out_features) == (720, 50)
    out = net({"image": torch.rand(3, 1, 36, 36)})
    assert [tuple(h.shape) for h in out.layers] == [(3, 10, 16, 16), (3, 20, 6, 6), (3, 50)]
    assert out.mask is None and out.last is out.layers[-1]
    assert all(torch.all(h >= 0) for h in out.layers)  # every layer ends in a ReLU
    assert ENCODERS["lenet"] is LeNet


@pytest.mark.parametrize(
    "size, shapes",
    [
        (28, [(10, 12, 12), (20, 4, 4), (50,)]),  # the MNIST LeNet: 320 inputs to the fc layer
        ((40, 30), [(10, 18, 13), (20, 7, 4), (50,)]),  # floor pooling of odd sizes
    ],
)
def test_layer_shapes_follow_the_image_size(size, shapes) -> None:
    net = LeNet(image_size=size)
    assert net.layer_shapes == shapes
    h, w = (size, size) if isinstance(size, int) else size
    out = net({"image": torch.rand(2, 1, h, w)})
    assert [tuple(x.shape[1:]) for x in out.layers] == shapes


def test_values_equal_a_hand_computation() -> None:
    """1×1 kernels, one channel, 10×10 image: 10 -> pool 5 -> pool 2 (floor), so the fc reads a
    1×2×2 map. conv1 = x - 0.5 then max-pool then ReLU; conv2 = identity."""
    net = LeNet(image_size=10, channels=[1, 1], kernel_size=1, hidden=2)
    with torch.no_grad():
        net.conv1.weight.fill_(1.0)
        net.conv1.bias.fill_(-0.5)
        net.conv2.weight.fill_(1.0)
        net.conv2.bias.zero_()
        net.fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 0.0, 0.0]]))
        net.fc.bias.copy_(torch.tensor([0.5, 0.0]))
    image = torch.zeros(1, 1, 10, 10)
    image[0, 0, 0, 0] = 1.0  # block (0, 0) of both poolings
    image[0, 0, 3, 6] = 2.0  # layer-1 cell (1, 3) -> layer-2 cell (0, 1)
    image[0, 0, 9, 9] = 7.0  # layer-1 cell (4, 4): dropped by the floor pooling of 5 -> 2
    out = net({"image": image})
    # layer 1: relu(max over each 2x2 block of x - 0.5): 0.5 at (0, 0), 1.5 at (1, 3), 6.5 at (4, 4)
    h1 = torch.zeros(1, 1, 5, 5)
    h1[0, 0, 0, 0], h1[0, 0, 1, 3], h1[0, 0, 4, 4] = 0.5, 1.5, 6.5
    torch.testing.assert_close(out.layers[0], h1)
    # layer 2: max over the 2x2 blocks of the top-left 4x4 of h1
    torch.testing.assert_close(out.layers[1], torch.tensor([[[[0.5, 1.5], [0.0, 0.0]]]]))
    # fc on vec = [0.5, 1.5, 0, 0]: [1*0.5 + 2*1.5 + 0.5, relu(-0.5)] = [4.0, 0]
    torch.testing.assert_close(out.layers[2], torch.tensor([[4.0, 0.0]]))


def test_start_and_layer_steps_reproduce_forward_exactly() -> None:
    torch.manual_seed(0)
    net = LeNet(dropout=0.3).eval()
    x = {"image": torch.rand(4, 1, 36, 36)}
    state = net.start(x)
    assert torch.equal(state.h, x["image"]) and state.mask is None
    ref = net(x)
    for d in range(net.num_layers):
        state = net.layer(d, state)
        assert torch.equal(state.h, ref.layers[d])
    with pytest.raises(IndexError):
        net.layer(3, state)


def test_gradients_reach_every_parameter_and_the_input() -> None:
    torch.manual_seed(0)
    net = LeNet()
    image = torch.rand(5, 1, 36, 36, requires_grad=True)
    net({"image": image}).last.pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert image.grad.abs().sum() > 0


def test_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    net = LeNet(dropout=0.5)
    x = {"image": torch.rand(4, 1, 36, 36)}
    net.eval()
    assert torch.equal(net(x).last, net(x).last)
    net.train()
    assert not torch.equal(net(x).last, net(x).last)


def test_input_dtype_follows_the_weights() -> None:
    net = LeNet().double()
    out = net({"image": torch.rand(2, 1, 36, 36)})
    assert out.last.dtype == torch.float64


@pytest.mark.parametrize(
    "inputs, error, match",
    [
        ({"x": torch.rand(2, 1, 36, 36)}, KeyError, "inputs\\['image'\\]"),
        ({"image": torch.rand(2, 36, 36)}, ValueError, r"\(B, 1, 36, 36\)"),
        ({"image": torch.rand(2, 3, 36, 36)}, ValueError, r"\(B, 1, 36, 36\)"),
        ({"image": torch.rand(2, 1, 28, 28)}, ValueError, r"got \(2, 1, 28, 28\)"),
    ],
)
def test_bad_inputs_are_named(inputs, error, match) -> None:
    with pytest.raises(error, match=match):
        LeNet()(inputs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"image_size": 12}, "image_size"),  # too small for two 5x5 conv + pool blocks
        ({"image_size": 0}, "image_size[0]"),
        ({"image_size": (36,)}, "image_size"),
        ({"channels": [10]}, "channels"),
        ({"channels": [10, 0]}, "channels[1]"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"hidden": -1}, "hidden"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_options_raise_naming_the_option(kwargs, name) -> None:
    with pytest.raises(OptionError) as err:
        LeNet(**kwargs)
    assert err.value.option == name


def test_a_head_tapping_a_feature_map_is_a_clear_error() -> None:
    from polytask.nn.heads import ClassifierHead
    from polytask.sharing import Hierarchical

    encoder = LeNet()
    heads = {"left": ClassifierHead(50, 10), "right": ClassifierHead(50, 10)}
    with pytest.raises(OptionError, match=r"depth 1 .*\(10, 16, 16\) feature map") as err:
        Hierarchical(encoder, heads, taps={"left": 1})
    assert err.value.option == "taps.left" and "depth 3" in err.value.fix
    model = Hierarchical(encoder, heads, taps={"left": 3})
    assert model.taps == {"left": 3, "right": 3}
