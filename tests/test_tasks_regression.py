import math

import pytest
import torch

from polytask.errors import OptionError
from polytask.tasks import Regression, Task


def test_loss_hand_computed():
    out = torch.tensor([[1.0], [3.0], [10.0]])
    target = torch.tensor([[0.0], [1.0], [0.0]])
    mask = torch.tensor([[True], [True], [False]])
    assert Regression().loss(out, target, mask).item() == pytest.approx((1 + 4) / 2)
    assert Regression(loss="l1").loss(out, target, mask).item() == pytest.approx((1 + 2) / 2)


def test_masked_entries_change_neither_loss_nor_gradient():
    kind = Regression(dim=2)
    base = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    target = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    mask = torch.tensor([[True, False], [True, True]])
    x1 = base.clone().requires_grad_()
    l1 = kind.loss(x1, target, mask)
    l1.backward()
    x2 = torch.cat([base, torch.tensor([[100.0, -50.0]])]).requires_grad_()
    l2 = kind.loss(
        x2,
        torch.cat([target, torch.tensor([[3.0, 3.0]])]),
        torch.cat([mask, torch.tensor([[False, False]])]),
    )
    l2.backward()
    torch.testing.assert_close(l1, l2)
    # d/dŷ of mean (ŷ − y)² over 3 entries = 2(ŷ − y)/3 on present entries, 0 elsewhere
    torch.testing.assert_close(x1.grad, torch.tensor([[2 / 3, 0.0], [-1.0, -2 / 3]]))
    torch.testing.assert_close(x2.grad[:2], x1.grad)


def test_encode_target():
    assert Regression().encode_target(2.5) == ([2.5], [True])
    assert Regression().encode_target(None) == ([0.0], [False])
    assert Regression(dim=2).encode_target([1, None]) == ([1.0, 0.0], [True, False])
    assert Regression().encode_target("0.5") == ([0.5], [True])
    with pytest.raises(ValueError, match="'abc' is not a number"):
        Regression().encode_target("abc")
    with pytest.raises(ValueError, match="not finite"):
        Regression().encode_target(float("nan"))
    with pytest.raises(ValueError, match="expected 2"):
        Regression(dim=2).encode_target([1.0])
    with pytest.raises(OptionError, match="'huber'") as err:
        Regression(loss="huber")
    assert err.value.option == "loss"


def test_metrics_hand_computed():
    kind = Regression()
    m = kind.metrics([2.0, 2.0, 5.0, 100.0], [1.0, 2.0, 3.0, None])
    # errors 1, 0, 2; r2 = 1 − SS_res / SS_tot = 1 − 5/2
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["r2"] == pytest.approx(-1.5)


def test_metrics_per_dimension_with_names():
    kind = Regression(dim=2, names=["x", "y"])
    m = kind.metrics([[1.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [4.0, None]])
    assert m["mae_x"] == pytest.approx(1.0) and m["mae_y"] == pytest.approx(1.0)
    assert m["rmse_x"] == pytest.approx(math.sqrt(2.0))
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx((math.sqrt(2.0) + 1.0) / 2)
    assert math.isnan(m["r2_y"])  # one labelled value: R² undefined
    assert m["r2"] == pytest.approx(m["r2_x"])
    task = Task("pos", kind, primary_metric="rmse_y")
    assert task.higher_is_better is False


def test_decode_format_and_direction():
    kind = Regression()
    assert kind.decode(torch.tensor([[1.5], [2.0]])) == [1.5, 2.0]
    assert kind.format_prediction(1.5) == {"value": 1.5}
    two = Regression(dim=2, names=["v", "a"])
    assert two.format_prediction([1.0, 2.0]) == {
        "value": [1.0, 2.0],
        "values": {"v": 1.0, "a": 2.0},
    }
    task = Task("score", kind)
    assert task.primary_metric == "rmse" and task.higher_is_better is False
    assert kind.higher_is_better("mae") is False and kind.higher_is_better("r2") is True
