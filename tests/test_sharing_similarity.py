"""Representation-similarity penalty: linear CKA and the penalty against hand values, errors,
delegation, and that its gradient pulls the tasks' features together."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polytask.errors import OptionError
from polytask.nn import MLP, ClassifierHead
from polytask.sharing import HardSharing, MultiTaskModel, MultiTaskOutput
from polytask.sharing.similarity import RepresentationSimilarity, linear_cka
from polytask.sharing.soft import SoftSharing


def _heads(dims):
    return {t: ClassifierHead(d, 2) for t, d in dims.items()}


# ------------------------------------------------------------------ linear CKA
def test_cka_hand_values() -> None:
    x = torch.tensor([[1.0], [-1.0], [0.0], [0.0]])
    y = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    # centred already: YᵀX = 2, XᵀX = 2, YᵀY = 4 -> 4 / (2 · 4) = 0.5
    torch.testing.assert_close(linear_cka(x, y), torch.tensor(0.5))
    # orthogonal after centring -> 0
    z = torch.tensor([[0.0], [0.0], [1.0], [-1.0]])
    torch.testing.assert_close(linear_cka(x, z), torch.tensor(0.0))
    # centring matters: x + 5 is the same representation
    torch.testing.assert_close(linear_cka(x + 5.0, y), torch.tensor(0.5))
    # a 2-D case: X = [x z] (two orthogonal unit-variance columns), Y = x:
    # ‖YᵀX‖² = 2² = 4, ‖XᵀX‖ = ‖diag(2, 2)‖ = 2√2, ‖YᵀY‖ = 2 -> 4 / (4√2) = 1/√2
    torch.testing.assert_close(linear_cka(torch.cat([x, z], 1), x), torch.tensor(2**-0.5))


def test_cka_properties() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64)
    y = torch.randn(20, 3, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    torch.testing.assert_close(linear_cka(x, x), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(linear_cka(x, 3.7 * x @ q), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(linear_cka(3.7 * x @ q, y), linear_cka(x, y))
    torch.testing.assert_close(linear_cka(x, y), linear_cka(y, x))
    value = float(linear_cka(x, y))
    assert 0.0 < value < 1.0
    # not invariant to anisotropic scaling (the test above could fail)
    assert (
        float(linear_cka(x, x * torch.tensor([1.0, 10.0, 1.0, 1.0, 1.0], dtype=torch.float64)))
        < 0.99
    )


def test_cka_rejects_mismatched_examples() -> None:
    with pytest.raises(ValueError, match="same B"):
        linear_cka(torch.randn(4, 2), torch.randn(5, 2))


# ------------------------------------------------------------------ the penalty
class _Fixed(MultiTaskModel):
    """Task features are parameters (one per task), given by hand."""

    def __init__(self, feats: dict[str, list], penalty: float | None = None) -> None:
        super().__init__()
        self.task_names = list(feats)
        self.feats = nn.ParameterDict({t: nn.Parameter(torch.tensor(v)) for t, v in feats.items()})
        self._penalty = penalty

    def forward(self, inputs, tasks=None):
        tasks = self._check_tasks(tasks)
        return MultiTaskOutput(
            outputs={t: self.feats[t].sum(1) for t in tasks},
            task_features={t: self.feats[t] for t in tasks},
            mask=inputs.get("mask"),
        )

    def shared_parameters(self):
        return []

    def task_parameters(self, task):
        return [self.feats[task]]

    def penalty(self, output):
        return None if self._penalty is None else torch.tensor(self._penalty)


A = [[1.0], [-1.0], [0.0], [0.0]]
B = [[1.0], [-1.0], [1.0], [-1.0]]


def test_penalty_hand_values() -> None:
    # l2: (a − b)² = 0, 0, 1, 1 -> mean 0.5; λ = 0.2 -> 0.1; plus the inner penalty 0.3
    model = RepresentationSimilarity(
        _Fixed({"a": A, "b": B}, penalty=0.3), weight=0.2, measure="l2"
    )
    torch.testing.assert_close(model.penalty(model({})), torch.tensor(0.4))
    # cka: three tasks, c = a: pairs (a,b) 1 − 0.5, (a,c) 0, (b,c) 0.5 -> mean 1/3; λ = 0.6 -> 0.2
    model = RepresentationSimilarity(_Fixed({"a": A, "b": B, "c": A}), weight=0.6, measure="cka")
    torch.testing.assert_close(model.penalty(model({})), torch.tensor(0.2))
    # only the tasks in the output count; one task -> no pair -> the inner penalty (None)
    assert model.penalty(model({}, tasks=["a"])) is None
    torch.testing.assert_close(model.penalty(model({}, tasks=["a", "b"])), torch.tensor(0.3))


def test_sequence_features_are_mean_pooled_over_real_tokens() -> None:
    """(B=2, T=3, D=1): masked positions hold junk that must not count. Pooled a = [1, 2],
    b = [3, 2] -> l2 mean((1−3)², 0) = 2."""
    a = [[[1.0], [1.0], [99.0]], [[2.0], [-50.0], [7.0]]]
    b = [[[2.0], [4.0], [-9.0]], [[2.0], [8.0], [8.0]]]
    mask = torch.tensor([[True, True, False], [True, False, False]])
    model = RepresentationSimilarity(_Fixed({"a": a, "b": b}), weight=1.0)
    torch.testing.assert_close(model.penalty(model({"mask": mask})), torch.tensor(2.0))


def test_errors() -> None:
    torch.manual_seed(0)
    hard = HardSharing(MLP(3, [4]), _heads({"a": 4, "b": 4}))
    wrapped = RepresentationSimilarity(hard, weight=1.0)
    with pytest.raises(OptionError, match="no task_features") as err:
        wrapped.penalty(wrapped({"x": torch.randn(2, 3)}))
    assert err.value.option == "model"
    mixed = RepresentationSimilarity(_Fixed({"a": [[1.0, 2.0]], "b": [[1.0]]}), weight=1.0)
    with pytest.raises(OptionError, match=r"\(1, 2\) and 'b' \(1, 1\) differ") as err:
        mixed.penalty(mixed({}))
    assert err.value.option == "measure" and "cka" in err.value.fix
    with pytest.raises(OptionError) as err:
        RepresentationSimilarity(hard, weight=1.0, measure="cosine")
    assert err.value.option == "measure"
    with pytest.raises(OptionError) as err:
        RepresentationSimilarity(hard, weight=-1.0)
    assert err.value.option == "weight"


def test_wrapper_delegates_forward_and_ownership() -> None:
    torch.manual_seed(0)
    inner = SoftSharing.from_parts(
        encoder=lambda: MLP(3, [4]), heads=_heads, tasks=["a", "b"], weight=0.0
    )
    model = RepresentationSimilarity(inner, weight=1.0)
    model.check_ownership()
    assert model.task_names == ["a", "b"] and model.provides_shared_features is False
    assert model.shared_parameters() == [] and model.task_parameters("a") == inner.task_parameters(
        "a"
    )
    x = {"x": torch.randn(5, 3)}
    assert torch.equal(model(x).outputs["b"], inner(x).outputs["b"])


@pytest.mark.parametrize("measure", ["l2", "cka"])
def test_gradient_reaches_the_towers_and_a_step_pulls_features_together(measure) -> None:
    torch.manual_seed(0)
    inner = SoftSharing.from_parts(
        encoder=lambda: MLP(3, [6], activation="tanh"), heads=_heads, tasks=["a", "b"], weight=0.0
    )
    model = RepresentationSimilarity(inner, weight=1.0, measure=measure)
    x = {"x": torch.randn(16, 3)}
    out = model(x)
    pen = model.penalty(out)
    names, params = zip(*model.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(pen, params, allow_unused=True)))
    for n, g in grads.items():
        if n.startswith("model.towers."):
            assert g is not None and g.abs().sum() > 0, n
        else:
            assert g is None or g.abs().sum() == 0, n  # heads are untouched
    before = float(model.similarity_term(out).detach())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model.penalty(model(x)).backward()
    opt.step()
    after = float(model.similarity_term(model(x)).detach())
    assert after < before, (before, after)
