import math

import pytest
import torch

from polytask.tasks import Multilabel, Task


def test_loss_hand_computed_over_present_entries():
    kind = Multilabel(["food", "service"])
    # σ(0) = 1/2 -> ln 2 for either target; σ(ln 3) = 3/4 -> target 1 costs ln(4/3)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 5.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    expected = (math.log(2) + math.log(4 / 3) + math.log(2)) / 3
    assert kind.loss(logits, target, mask).item() == pytest.approx(expected)


def test_masked_entries_change_neither_loss_nor_gradient():
    kind = Multilabel(["a", "b", "c"])
    base = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, False, True], [True, True, False]])
    x1 = base.clone().requires_grad_()
    l1 = kind.loss(x1, target, mask)
    l1.backward()
    x2 = torch.cat([base, torch.tensor([[7.0, -7.0, 2.0]])]).requires_grad_()
    l2 = kind.loss(
        x2,
        torch.cat([target, torch.tensor([[0.0, 1.0, 0.0]])]),
        torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)]),
    )
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(x1.grad, x2.grad[:2])
    assert torch.all(x2.grad[2] == 0) and x1.grad[0, 1] == 0


def test_encode_target_forms_and_errors():
    kind = Multilabel(["food", "service", "price"])
    assert kind.encode_target([1, 0, None]) == ([1.0, 0.0, 0.0], [True, True, False])
    assert kind.encode_target({"service": 1}) == ([0.0, 1.0, 0.0], [False, True, False])
    assert kind.encode_target(None) == ([0.0] * 3, [False] * 3)
    assert Multilabel(["spam"]).encode_target(1) == ([1.0], [True])
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['ambience'\]"):
        kind.encode_target({"ambience": 1})
    with pytest.raises(ValueError, match="expected 3"):
        kind.encode_target([1, 0])
    with pytest.raises(ValueError, match="label 'price'.*must be 0, 1 or None"):
        kind.encode_target([1, 0, 2])
    with pytest.raises(ValueError, match="single value"):
        kind.encode_target(1)


def test_metrics_hand_computed():
    kind = Multilabel(["A", "B", "C"])
    preds = [[0.9, 0.7, 0.2], [0.8, 0.2, 0.6], [0.3, 0.5, 0.99], [0.1, 0.4, 0.4]]
    targets = [[1, 1, 0], [0, 1, 1], [1, 1, None], {"A": 0, "B": 1, "C": 1}]
    m = kind.metrics(preds, targets)
    # A: pos {0.9, 0.3}, neg {0.8, 0.1}: 3 of 4 pairs ordered -> AUC 3/4; AP = ½·1 + ½·⅔
    # B: only positives -> skipped; C (present 0.2/0, 0.6/1, 0.4/1): AUC 1, AP 1
    assert m["roc_auc"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["average_precision"] == pytest.approx((5 / 6 + 1.0) / 2)
    # decisions σ ≥ 0.5: A 2/4, B 2/4, C 2/3 correct -> 6 of 11 present entries
    assert m["accuracy"] == pytest.approx(6 / 11)


def test_metrics_nan_when_no_label_has_both_classes():
    m = Multilabel(["A"]).metrics([[0.2], [0.9]], [1, None])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["average_precision"])
    assert m["accuracy"] == 0.0


def test_decode_and_format():
    kind = Multilabel(["food", "service"])
    probs = kind.decode(torch.tensor([[0.0, math.log(3.0)]]))[0]
    assert probs == pytest.approx([0.5, 0.75])
    out = kind.format_prediction(probs)
    assert out["probabilities"] == pytest.approx({"food": 0.5, "service": 0.75})
    assert out["labels"] == ["food", "service"]
    assert Task("aspects", kind).primary_metric == "roc_auc"
