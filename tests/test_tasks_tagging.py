import math

import pytest
import torch

from polytask.errors import OptionError
from polytask.tasks import Tagging, TagScores, Task

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _zeros_crf(c):
    return torch.zeros(c, c), torch.zeros(c), torch.zeros(c)


def test_softmax_loss_hand_computed_and_masking():
    kind = Tagging(["O", "B-X", "I-X"])
    # token (0,0): uniform over 3 -> ln 3; token (0,1): [ln 2, 0, 0] target O -> p = 1/2 -> ln 2
    scores = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [5.0, -5.0, 9.0]]])
    target = torch.tensor([[1, 0, 1]])
    mask = torch.tensor([[True, True, False]])
    x = scores.clone().requires_grad_()
    loss = kind.loss(x, target, mask)
    assert loss.item() == pytest.approx((math.log(3) + math.log(2)) / 2)
    loss.backward()
    assert torch.all(x.grad[0, 2] == 0)
    # the masked token's scores and target do not matter
    other = scores.clone()
    other[0, 2] = torch.tensor([-3.0, 1.0, 0.0])
    assert kind.loss(other, torch.tensor([[1, 0, 2]]), mask).item() == pytest.approx(loss.item())


def test_crf_loss_hand_computed_mean_over_labelled_sequences():
    kind = Tagging(["O", "B-X"], crf=True)
    trans, start, end = _zeros_crf(2)
    emissions = torch.zeros(3, 2, 2)
    # all scores 0: every length-n tag sequence has probability 2^-n
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    target = torch.tensor([[0, 1], [1, 0], [1, 1]])
    loss = kind.loss(TagScores(emissions, trans, start, end), target, mask)
    # mean over the 2 labelled sequences (the third has no labels): (ln 4 + ln 2) / 2
    assert loss.item() == pytest.approx(1.5 * math.log(2.0))


def test_crf_loss_hand_computed_with_transitions():
    kind = Tagging(["O", "B-X"], crf=True)
    # T = 2, emissions 0, transition O->B-X = ln 3, others 0: Z = 1 + 3 + 1 + 1 = 6
    trans = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    scores = TagScores(torch.zeros(1, 2, 2), trans, torch.zeros(2), torch.zeros(2))
    loss = kind.loss(scores, torch.tensor([[0, 1]]), torch.tensor([[True, True]]))
    assert loss.item() == pytest.approx(-math.log(3 / 6))


def test_crf_needs_prefix_mask_and_matching_output():
    kind = Tagging(["O", "B-X"], crf=True)
    trans, start, end = _zeros_crf(2)
    scores = TagScores(torch.zeros(1, 3, 2), trans, start, end)
    with pytest.raises(ValueError, match="not a prefix"):
        kind.loss(scores, torch.zeros(1, 3, dtype=torch.long), torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="needs TagScores"):
        kind.loss(
            torch.zeros(1, 3, 2),
            torch.zeros(1, 3, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="set crf=True"):
        Tagging(["O", "B-X"]).loss(
            scores, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match=r"expected \(B, T, C\)"):
        Tagging(["O", "B-X", "I-X"]).loss(
            torch.zeros(1, 3, 2),
            torch.zeros(1, 3, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.bool),
        )


def test_decode_argmax_vs_viterbi():
    labels = ["O", "B-X", "I-X"]
    emissions = torch.tensor([[[1.0, 0.9, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    # argmax picks O then I-X (ill-formed); forbidding O -> I-X makes Viterbi pick B-X I-X
    assert Tagging(labels).decode(emissions, mask) == [[0, 2]]
    trans = torch.zeros(3, 3)
    trans[0, 2] = -100.0
    scores = TagScores(emissions, trans, torch.zeros(3), torch.zeros(3))
    assert Tagging(labels, crf=True).decode(scores, mask) == [[1, 2]]
    assert Tagging(labels).decode(emissions) == [[0, 2, 2]]


def test_encode_target():
    kind = Tagging(LABELS)
    assert kind.encode_target(["B-PER", "I-PER", "O"]) == ([1, 2, 0], [True, True, True])
    assert kind.encode_target(["B-LOC", None]) == ([3, 0], [True, False])
    assert kind.encode_target(None) == ([], [])
    with pytest.raises(ValueError, match=r"unknown tag 'B-ORG'"):
        kind.encode_target(["B-ORG"])


def test_label_validation():
    with pytest.raises(OptionError, match="outside tag 'O'") as err:
        Tagging(["B-X", "I-X"])
    assert err.value.option == "labels"
    with pytest.raises(OptionError, match="'E-X' is not valid in the BIO scheme") as err:
        Tagging(["O", "B-X", "E-X"])
    assert err.value.option == "labels"
    assert Tagging(["O", "S-X", "B-X", "E-X"], scheme="iobes").scheme == "BIOES"


def test_metrics_strict_hand_computed():
    kind = Tagging(LABELS)
    targets = [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["B-LOC", "I-LOC"],
        None,  # missing: skipped
        [None, "O"],  # partly labelled: token accuracy only
    ]
    predictions = [
        ["B-PER", "I-PER", "O", "B-PER"],
        ["I-LOC", "I-LOC"],  # not an entity in strict mode
        ["B-PER"],
        ["B-PER", "O"],
    ]
    m = kind.metrics(predictions, targets)
    # entities: gold PER, LOC, LOC; predicted PER(0,2), PER(3,4); one exact match
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    # tokens: 3/4 + 1/2 + 1/1 labelled tokens correct
    assert m["token_accuracy"] == pytest.approx(5 / 7)
    # indices give the same result
    as_idx = [[LABELS.index(t) for t in p] for p in predictions]
    assert kind.metrics(as_idx, targets) == m


def test_metrics_bioes_strict():
    kind = Tagging(["O", "S-PER", "B-LOC", "I-LOC", "E-LOC"], scheme="BIOES")
    m = kind.metrics([["S-PER", "B-LOC", "I-LOC"]], [["S-PER", "B-LOC", "E-LOC"]])
    assert (m["precision"], m["recall"]) == pytest.approx((1.0, 0.5))
    assert m["token_accuracy"] == pytest.approx(2 / 3)


def test_metrics_errors():
    kind = Tagging(LABELS)
    with pytest.raises(ValueError, match="2 tags for 1 target"):
        kind.metrics([["O", "O"]], [["O"]])
    # a prediction cut short by max_length: the cut tokens are predicted "O"
    cut = kind.metrics([["B-PER"]], [["B-PER", "O", "B-LOC"]])
    assert (cut["precision"], cut["recall"], cut["token_accuracy"]) == pytest.approx(
        (1.0, 0.5, 2 / 3)
    )
    with pytest.raises(ValueError, match="unknown tag 'B-ORG'"):
        kind.metrics([["O"]], [["B-ORG"]])
    assert all(math.isnan(v) for v in kind.metrics([["O"]], [None]).values())


def test_format_prediction_and_task_defaults():
    kind = Tagging(LABELS)
    out = kind.format_prediction([1, 2, 0, 3, 4])
    assert out["tags"] == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    assert out["spans"] == [
        {"type": "PER", "start": 0, "end": 2},
        {"type": "LOC", "start": 3, "end": 5},
    ]
    task = Task("ner", kind)
    assert task.primary_metric == "f1" and task.higher_is_better is True
    assert kind.is_token_level and kind.output_size == 5
