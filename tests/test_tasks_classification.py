import math

import pytest
import torch

from polytask.errors import OptionError
from polytask.tasks import Classification, Task


def test_loss_hand_computed():
    kind = Classification(["neg", "pos"])
    # softmax([0, 0]) = [1/2, 1/2] -> -log 1/2 = ln 2; softmax([ln 3, 0]) = [3/4, 1/4] -> ln 4
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    loss = kind.loss(logits, torch.tensor([0, 1]), torch.tensor([True, True]))
    assert loss.item() == pytest.approx(1.5 * math.log(2.0))


def test_masked_example_changes_neither_loss_nor_gradient():
    kind = Classification(["a", "b", "c"])
    base = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    x1 = base.clone().requires_grad_()
    l1 = kind.loss(x1, torch.tensor([0, 2, 1]), torch.ones(3, dtype=torch.bool))
    l1.backward()
    x2 = torch.cat([base, torch.tensor([[9.0, -9.0, 3.0]])]).requires_grad_()
    l2 = kind.loss(x2, torch.tensor([0, 2, 1, 1]), torch.tensor([True, True, True, False]))
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(x1.grad, x2.grad[:3])
    assert torch.all(x2.grad[3] == 0)


def test_loss_without_labels_raises():
    kind = Classification(["a", "b"])
    with pytest.raises(ValueError, match="selects no labelled entry"):
        kind.loss(
            torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.bool)
        )


def test_encode_target():
    kind = Classification(["neg", "neu", "pos"])
    assert kind.encode_target("pos") == (2, True)
    assert kind.encode_target(None) == (0, False)
    with pytest.raises(ValueError, match=r"unknown label 'positive'.*\['neg', 'neu', 'pos'\]"):
        kind.encode_target("positive")
    assert Classification(["0", "1"]).encode_target(1) == (1, True)


def test_metrics_hand_computed():
    kind = Classification(["a", "b", "c"])
    one_hot = {"a": [0.8, 0.1, 0.1], "b": [0.1, 0.8, 0.1], "c": [0.1, 0.1, 0.8]}
    preds = [one_hot[x] for x in ["a", "b", "b", "b", "c"]]
    targets = ["a", "a", "b", "c", None]  # the last one is missing and skipped
    m = kind.metrics(preds, targets)
    assert m["accuracy"] == pytest.approx(0.5)
    # F1: a = 2/3 (P 1, R 1/2), b = 1/2 (P 1/3, R 1), c = 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # a class that never occurs still counts (as 0) in macro-F1 over all labels
    m4 = Classification(["a", "b", "c", "d"]).metrics([p + [0.0] for p in preds], targets)
    assert m4["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 4)
    # labels as predictions give the same numbers
    assert kind.metrics(["a", "b", "b", "b", "c"], targets) == m


def test_metrics_without_targets_are_nan():
    m = Classification(["a", "b"]).metrics([[0.4, 0.6]], [None])
    assert math.isnan(m["accuracy"]) and math.isnan(m["macro_f1"])


def test_decode_and_format():
    kind = Classification(["neg", "pos"])
    probs = kind.decode(torch.tensor([[0.0, math.log(3.0)]]))
    assert probs[0] == pytest.approx([0.25, 0.75])
    out = kind.format_prediction(probs[0])
    assert out["label"] == "pos"
    assert out["probabilities"] == pytest.approx({"neg": 0.25, "pos": 0.75})


def test_label_set_validation_and_task_defaults():
    with pytest.raises(OptionError, match="repeat") as err:
        Classification(["a", "a"])
    assert err.value.option == "labels"
    with pytest.raises(OptionError, match="at least 2") as err:
        Classification(["a"])
    assert err.value.option == "labels"
    task = Task("sentiment", Classification(["neg", "pos"]))
    assert task.primary_metric == "accuracy" and task.higher_is_better is True
    with pytest.raises(OptionError) as err:
        Task("sentiment", Classification(["neg", "pos"]), primary_metric="f1")
    assert err.value.option == "primary_metric" and "accuracy" in err.value.fix
