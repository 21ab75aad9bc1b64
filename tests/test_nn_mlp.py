"""MLP encoder: every layer's output, exact values on fixed weights, argument checks."""

from __future__ import annotations

import pytest
import torch
from routing import set_linear as _set

from polytask.errors import OptionError
from polytask.nn import MLP, EncoderOutput


def test_contract_attributes_and_shapes() -> None:
    mlp = MLP(5, [7, 3])
    out = mlp({"x": torch.randn(4, 5)})
    assert isinstance(out, EncoderOutput)
    assert mlp.input_kind == "features" and mlp.is_sequence is False
    assert mlp.layer_dims == [7, 3] and mlp.num_layers == 2 and mlp.output_dim == 3
    assert [tuple(h.shape) for h in out.layers] == [(4, 7), (4, 3)]
    assert out.mask is None and out.last is out.layers[-1]


def test_values_on_fixed_weights_relu() -> None:
    mlp = MLP(2, [2, 1])
    _set(mlp.linears[0], [[1.0, -1.0], [2.0, 0.0]], [0.0, -1.0])
    _set(mlp.linears[1], [[3.0, 4.0]], [0.5])
    out = mlp({"x": torch.tensor([[1.0, 2.0]])})
    # layer 1: relu([1-2, 2-1]) = [0, 1]; layer 2: relu(3*0 + 4*1 + 0.5) = 4.5
    torch.testing.assert_close(out.layers[0], torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(out.layers[1], torch.tensor([[4.5]]))


def test_values_on_fixed_weights_tanh() -> None:
    mlp = MLP(1, [1], activation="tanh")
    _set(mlp.linears[0], [[2.0]], [-1.0])
    x = torch.tensor([[0.0], [1.0], [3.0]])
    torch.testing.assert_close(mlp({"x": x}).last, torch.tanh(2 * x - 1))


def test_examples_are_independent_and_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    mlp = MLP(3, [4, 4], dropout=0.5).eval()
    x = torch.randn(5, 3)
    full = mlp({"x": x}).last
    torch.testing.assert_close(mlp({"x": x[2:3]}).last, full[2:3])
    torch.testing.assert_close(mlp({"x": x}).last, full)


def test_dropout_is_active_in_training() -> None:
    torch.manual_seed(0)
    mlp = MLP(50, [50], dropout=0.5).train()
    x = torch.ones(8, 50)
    assert not torch.equal(mlp({"x": x}).last, mlp.eval()({"x": x}).last)


def test_casts_integer_or_double_features() -> None:
    mlp = MLP(2, [3])
    x = torch.tensor([[1, 2]])
    torch.testing.assert_close(mlp({"x": x}).last, mlp({"x": x.float()}).last)
    torch.testing.assert_close(mlp({"x": x.double()}).last, mlp({"x": x.float()}).last)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"input_dim": 0, "hidden": [4]}, "input_dim"),
        ({"input_dim": 3, "hidden": []}, "hidden"),
        ({"input_dim": 3, "hidden": 8}, "hidden"),
        ({"input_dim": 3, "hidden": [4, -1]}, "hidden[1]"),
        ({"input_dim": 3, "hidden": [4], "dropout": 1.0}, "dropout"),
        ({"input_dim": 3, "hidden": [4], "activation": "swish"}, "activation"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(OptionError) as err:
        MLP(**kwargs)
    assert err.value.option == name


def test_bad_inputs() -> None:
    mlp = MLP(3, [4])
    with pytest.raises(KeyError, match="x"):
        mlp({"tokens": torch.zeros(2, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        mlp({"x": torch.zeros(2, 4)})
