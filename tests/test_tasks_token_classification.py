"""``token_classification``: one label per token from any label set (part of speech), softmax or
a CRF without span constraints; loss and metrics on hand-computed cases, masking, decoding with
probabilities, prediction output, and a forward/backward pass under every sharing architecture."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import yaml

from polytask.config import Experiment, validate
from polytask.nn import heads_for
from polytask.sharing import ARCHITECTURES
from polytask.tasks import KINDS, Tagging, TagScores, Task, TokenClassification, make_kind

POS = ["DT", "NN", "VBZ"]


def test_registered_and_options():
    kind = make_kind("token_classification", labels=POS, crf=True)
    assert KINDS["token_classification"] is TokenClassification
    assert isinstance(kind, TokenClassification) and kind.crf and kind.is_token_level
    assert kind.output_size == 3 and kind.tags is None  # no tags: heads add no constraints
    assert Task("pos", kind).primary_metric == "token_accuracy"
    assert Task("pos", kind, primary_metric="macro_f1").higher_is_better
    # no outside tag needed, any label set of two or more
    assert TokenClassification(["NNP", "VBZ"]).labels == ["NNP", "VBZ"]
    with pytest.raises(Exception, match="at least 2"):
        TokenClassification(["NN"])


def test_tagging_points_to_the_new_kind_for_labels_without_spans():
    with pytest.raises(Exception) as err:
        Tagging(["DT", "NN"])
    assert "kind: token_classification" in err.value.fix  # type: ignore[attr-defined]


def test_softmax_loss_by_hand_and_masking():
    kind = TokenClassification(POS)
    # sequence 0: token 0 scores log(1, 2, 1) -> p(NN) = 1/2; token 1 masked (scores huge,
    # target 0 from an unlabelled token); token 2 scores 0 -> p(VBZ) = 1/3
    out = torch.tensor(
        [[[0.0, math.log(2), 0.0], [100.0, -100.0, 5.0], [0.0, 0.0, 0.0]]], requires_grad=True
    )
    target = torch.tensor([[1, 0, 2]])
    mask = torch.tensor([[True, False, True]])
    loss = kind.loss(out, target, mask)
    assert loss.item() == pytest.approx(-(math.log(1 / 2) + math.log(1 / 3)) / 2)
    loss.backward()
    assert out.grad is not None and torch.all(out.grad[0, 1] == 0)  # masked: no gradient
    with pytest.raises(ValueError, match="selects no labelled entry"):
        kind.loss(out, target, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="set crf=True"):
        kind.loss(TagScores(out, torch.zeros(3, 3), torch.zeros(3), torch.zeros(3)), target, mask)


def test_crf_loss_by_hand_has_no_span_constraints():
    kind = TokenClassification(["B-NP", "I-NP"], crf=True)  # looks like BIO: still unconstrained
    emissions = torch.zeros(1, 2, 2)
    transitions = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    scores = TagScores(emissions, transitions, torch.zeros(2), torch.zeros(2))
    target, mask = torch.tensor([[1, 1]]), torch.tensor([[True, True]])
    log_z = math.log(math.exp(1) + 1 + 1 + math.exp(2))  # four paths, score A[y1, y2]
    assert kind.loss(scores, target, mask).item() == pytest.approx(log_z - 2.0)
    # the head a config builds: a CRF whose transitions are all free (Tagging's are not)
    labels = ["O", "B-NP", "I-NP"]
    heads = heads_for(
        [Task("a", TokenClassification(labels, crf=True)), Task("b", Tagging(labels, crf=True))],
        dim=4,
    )
    free = heads["a"](torch.zeros(1, 2, 4))
    constrained = heads["b"](torch.zeros(1, 2, 4))
    assert torch.all(free.transitions > -1.0)
    assert constrained.transitions.min() < -1000.0  # O -> I-NP forbidden for BIO tagging


def test_metrics_by_hand():
    kind = TokenClassification(POS)
    targets = [["DT", "NN", "VBZ"], ["NN", None, "NN"], None]
    # predictions as labels, indices and probability lists (all accepted)
    predictions = [["DT", "VBZ", "VBZ"], [1, 0, [0.1, 0.2, 0.7]], ["DT"]]
    m = kind.metrics(predictions, targets)
    # labelled tokens: DT/DT ok, NN/VBZ, VBZ/VBZ ok, NN/NN ok, (None skipped), NN/VBZ -> 3/5
    assert m["token_accuracy"] == pytest.approx(3 / 5)
    # per gold label F1: DT p=1 r=1 -> 1; NN tp=1 fp=0 fn=2 -> p=1 r=1/3 -> 1/2;
    # VBZ tp=1 fp=2 fn=0 -> p=1/3 r=1 -> 1/2
    assert m["macro_f1"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # a prediction cut short (max_length) is padded with None: counted wrong
    cut = kind.metrics([["DT"]], [["DT", "NN"]])
    assert cut["token_accuracy"] == pytest.approx(1 / 2)
    # macro-F1 averages over the labels present in the targets, not the whole label set
    assert kind.metrics([["NN"]], [["NN"]]) == {"token_accuracy": 1.0, "macro_f1": 1.0}
    assert all(math.isnan(v) for v in kind.metrics([[]], [None]).values())
    with pytest.raises(ValueError, match="unknown label 'JJ'"):
        kind.metrics([["DT"]], [["JJ"]])


def test_encode_target_and_unlabelled_tokens():
    kind = TokenClassification(POS)
    assert kind.encode_target(["NN", None, "DT"]) == ([1, 0, 0], [True, False, True])
    assert kind.encode_target(None) == ([], [])
    with pytest.raises(ValueError, match="expected a list of labels"):
        kind.encode_target("NN")
    with pytest.raises(ValueError, match=r"unknown label 'JJ': the label set is \['DT'"):
        kind.encode_target(["JJ"])


def _brute_marginals(e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    t, c = e.shape
    marg, z = torch.zeros(t, c), 0.0
    for path in itertools.product(range(c), repeat=t):
        w = math.exp(
            sum(float(e[i, y]) for i, y in enumerate(path))
            + sum(float(a[path[i - 1], path[i]]) for i in range(1, t))
        )
        z += w
        for i, y in enumerate(path):
            marg[i, y] += w
    return marg / z


def test_decode_and_probabilities_softmax_and_crf_marginals():
    torch.manual_seed(0)
    e = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    kind = TokenClassification(POS)
    assert kind.decode(e, mask) == [e[0].argmax(-1).tolist(), e[1, :2].argmax(-1).tolist()]
    kind.probabilities = True
    probs = kind.decode(e, mask)
    assert [len(p) for p in probs] == [3, 2]
    assert torch.allclose(torch.tensor(probs[0]), torch.softmax(e[0], -1), atol=1e-6)
    a = torch.randn(3, 3)
    crf = TokenClassification(POS, crf=True, probabilities=True)
    scores = TagScores(e, a, torch.zeros(3), torch.zeros(3))
    with torch.no_grad():  # as in evaluation: marginals still computed
        marg = crf.decode(scores, mask)
    assert torch.allclose(torch.tensor(marg[0]), _brute_marginals(e[0], a), atol=1e-5)
    assert torch.allclose(torch.tensor(marg[1]), _brute_marginals(e[1, :2], a), atol=1e-5)
    crf.probabilities = False
    assert len(crf.decode(scores, mask)[1]) == 2  # Viterbi path over the unmasked tokens


def test_format_prediction():
    kind = TokenClassification(POS)
    assert kind.format_prediction([0, 2, None]) == {"labels": ["DT", "VBZ", None]}
    out = kind.format_prediction([[0.7, 0.2, 0.1], None])
    assert out["labels"] == ["DT", None]
    assert out["probabilities"] == [{"DT": 0.7, "NN": 0.2, "VBZ": 0.1}, None]


# ------------------------------------------------------------------ every architecture
SENTENCES = [
    [("the", "DT"), ("dog", "NN"), ("runs", "VBZ")],
    [("a", "DT"), ("cat", "NN"), ("sleeps", "VBZ"), ("the", "DT"), ("end", "NN")],
]
OPTIONS = {
    "soft": {"weight": 0.001},
    "mmoe": {"experts": 2},
    "cgc": {"shared_experts": 1, "task_experts": 1},
    "ple": {"levels": 2, "shared_experts": 1, "task_experts": 1},
}


@pytest.fixture(scope="module")
def conll_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tc") / "pos.conll"
    lines = []
    for _ in range(4):
        for sentence in SENTENCES:
            lines += [f"{w} {p} {'O' if p != 'NN' else 'B-X'}" for w, p in sentence] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("sharing", sorted(ARCHITECTURES))
def test_every_architecture_trains_a_token_classifier(sharing, conll_file, tmp_path):
    config = {
        "tasks": {"pos": {"kind": "token_classification"}, "x": {"kind": "tagging"}},
        "data": {
            "sources": {
                "s": {"format": "conll", "train": str(conll_file), "tasks": {"pos": 1, "x": 2}}
            },
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        "model": {
            "encoder": {"type": "bilstm", "embed_dim": 6, "hidden": 4, "layers": 2},
            "sharing": sharing,
            "sharing_options": OPTIONS.get(sharing, {}),
            **({"taps": {"pos": 1, "x": 2}} if sharing == "hierarchical" else {}),
        },
    }
    try:
        cfg = validate(yaml.safe_load(yaml.safe_dump(config)))
        exp = Experiment(cfg, tmp_path)
        model = exp.build_model()
    except Exception as err:  # an option this test guessed wrong for an architecture
        pytest.fail(f"{sharing}: {err}")
    batch = exp.collator()(exp.sources["s"].train, "s")
    out = model(batch.inputs, tasks=["pos", "x"])
    target, mask = batch.targets["pos"]
    loss = exp.tasks["pos"].kind.loss(out.outputs["pos"], target, mask)
    loss.backward()
    grads = [p.grad for p in model.task_parameters("pos") if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)
    decoded = exp.tasks["pos"].kind.decode(out.outputs["pos"], out.mask)
    assert [len(d) for d in decoded] == [len(ex.inputs["tokens"]) for ex in exp.sources["s"].train]
