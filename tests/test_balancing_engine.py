"""The per-task autograd (``balancing._autograd``) and ``balancing.backward`` for gradient methods.

Every check compares ``.grad`` after ``backward()`` with the update computed by hand from
K per-task gradients, each from its own forward pass and ``torch.autograd.grad`` (no
engine code in the reference), in float64 to 1e-10: at both levels, K ∈ K_VALUES, for a
Gramian weighting and for an aggregator that is not a linear combination of the rows
(an elementwise median). Then: accumulation into existing ``.grad``, the K-pass fallback,
chunked products, hierarchical taps, the errors, and the Trainer and config hookup.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import pytest
import torch
from jacobians import K_VALUES
from torch import Tensor, nn

from polytask import balancing
from polytask.balancing import _autograd as autograd
from polytask.balancing.backward import resolve_level
from polytask.balancing.base import GradientAggregator, GramianWeighting, task_names
from polytask.config import ConfigError, Experiment, validate
from polytask.data.base import Example
from polytask.data.collate import Collator
from polytask.engine import Trainer, TrainerConfig
from polytask.errors import OptionError
from polytask.nn import MLP, heads_for
from polytask.nn.base import Encoder, EncoderOutput
from polytask.sharing import Custom, HardSharing, Hierarchical, MultiTaskOutput
from polytask.tasks import Regression, Task

TOL = {"rtol": 1e-10, "atol": 1e-12}


# ------------------------------------------------------------------ stand-in methods
class RidgeGramian(GramianWeighting):
    """w ∝ (G + mean(diag G) I)⁻¹ 1: depends non-linearly on every entry of the Gramian."""

    name = "ridge_gramian"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        self.seen.append(names)
        k = len(names)
        reg = gramian.diagonal().mean().clamp_min(1e-30)
        w = torch.linalg.solve(
            gramian + reg * torch.eye(k, dtype=gramian.dtype), torch.ones(k, dtype=gramian.dtype)
        )
        return w / w.sum()


class Median(GradientAggregator):
    """Elementwise median of the rows: no linear combination of them."""

    name = "median"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def aggregate(self, jacobian: Tensor, losses: Mapping[str, Tensor] | None = None) -> Tensor:
        self.seen.append(task_names(jacobian.shape[0], losses))
        return jacobian.median(dim=0).values


class FeaturesOnly(Median):
    name = "features_only"
    levels = ("features",)


METHODS = {"gramian": RidgeGramian, "median": Median}


def expected_update(method: GradientAggregator, rows: Tensor) -> Tensor:
    """The method's update from a hand-built (K, P) Jacobian."""
    if isinstance(method, GramianWeighting):
        return method.weights(rows @ rows.T) @ rows
    return method.aggregate(rows)


# ------------------------------------------------------------------ toy model
class Toy(nn.Module):
    """MLP trunk z = tanh(W2 tanh(W1 x)) and K linear heads; MSE of head i against y_i."""

    def __init__(self, k: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh()).double()
        self.heads = nn.ModuleList(nn.Linear(6, 2) for _ in range(k)).double()
        g = torch.Generator().manual_seed(seed + 1)
        self.x = torch.randn(8, 5, generator=g, dtype=torch.float64)
        self.y = (
            torch.randn(k, 8, 2, generator=g, dtype=torch.float64)
            * torch.linspace(0.1, 10, k).view(k, 1, 1).double()
        )

    def shared(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def forward(self) -> tuple[dict[str, Tensor], Tensor]:
        z = self.trunk(self.x)
        return {f"t{i}": (h(z) - self.y[i]).pow(2).mean() for i, h in enumerate(self.heads)}, z


def by_hand(model: Toy, method: GradientAggregator, level: str, scale: float) -> list[Tensor]:
    """Expected ``.grad`` of [*shared, *heads' params] from K separate forward/backward passes."""
    shared = model.shared()
    k = len(model.heads)
    per_task, feature_rows = [], []
    for i in range(k):
        losses, z = model()
        loss = losses[f"t{i}"]
        grads = torch.autograd.grad(loss, shared + list(model.heads[i].parameters()) + [z])
        per_task.append(grads)
        feature_rows.append(grads[-1].reshape(-1))
    heads = [scale * g for i in range(k) for g in per_task[i][len(shared) : -1]]
    if level == "params":
        rows = torch.stack(
            [torch.cat([g.reshape(-1) for g in per_task[i][: len(shared)]]) for i in range(k)]
        )
        d = expected_update(method, rows) * scale
        out, at = [], 0
        for p in shared:
            out.append(d[at : at + p.numel()].view_as(p))
            at += p.numel()
        return out + heads
    dz = expected_update(method, torch.stack(feature_rows)) * scale
    _, z = model()
    return list(torch.autograd.grad(z, shared, grad_outputs=dz.view_as(z))) + heads


def params_of(model: Toy) -> list[nn.Parameter]:
    return model.shared() + [p for h in model.heads for p in h.parameters()]


def preset_grads(params: list[nn.Parameter], seed: int = 7) -> list[Tensor | None]:
    """Random .grad on every other parameter, None on the rest (accumulation semantics)."""
    g = torch.Generator().manual_seed(seed)
    before = []
    for j, p in enumerate(params):
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) if j % 2 == 0 else None
        before.append(None if p.grad is None else p.grad.clone())
    return before


def assert_grads(
    params: list[nn.Parameter], before: list[Tensor | None], expected: list[Tensor]
) -> None:
    for j, (p, b, e) in enumerate(zip(params, before, expected)):
        assert p.grad is not None, j
        torch.testing.assert_close(p.grad, e if b is None else b + e, **TOL, msg=f"parameter {j}")


def run_backward(model: Toy, method, level: str, scale: float = 0.5, **kw) -> Tensor:
    losses, z = model()
    return balancing.backward(
        losses,
        method=method,
        features=z if level == "features" else None,
        shared=model.shared(),
        level=level,
        scale=scale,
        **kw,
    )


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("level", ["features", "params"])
@pytest.mark.parametrize("kind", sorted(METHODS))
@pytest.mark.parametrize("k", (1, *K_VALUES))
def test_backward_equals_the_update_computed_by_hand(k: int, kind: str, level: str) -> None:
    model = Toy(k, seed=k)
    method = METHODS[kind]()
    expected = by_hand(model, method, level, scale=0.5)
    params = params_of(model)
    before = preset_grads(params)
    method.seen.clear()
    total = run_backward(model, method, level)
    assert_grads(params, before, expected)
    assert method.seen == [[f"t{i}" for i in range(k)]]  # rows named after the tasks
    losses, _ = model()
    assert not total.requires_grad
    torch.testing.assert_close(total, sum(losses.values()).detach(), **TOL)


def _gradient_cases() -> list[tuple[str, str]]:
    cases = []
    for name in balancing.available():
        method = balancing.make(name)
        if isinstance(method, GradientAggregator) and method.needs != "losses":
            cases += [(name, level) for level in getattr(method, "levels", ("features", "params"))]
    return cases


def _record_inputs(method: GradientAggregator) -> list[Tensor]:
    """What the method is handed from now on: the Gramian its solve sees, or the Jacobian."""
    inputs: list[Tensor] = []
    if isinstance(method, GramianWeighting):
        solve = method._solve

        def recording_solve(g: Tensor, eps: float, names: list[str], losses=None) -> Tensor:
            inputs.append(g.clone())
            return solve(g, eps, names, losses)

        method._solve = recording_solve  # type: ignore[method-assign]
    else:
        aggregate = method.aggregate

        def recording_aggregate(jacobian: Tensor, losses=None) -> Tensor:
            inputs.append(jacobian.clone())
            return aggregate(jacobian, losses)

        method.aggregate = recording_aggregate  # type: ignore[method-assign]
    return inputs


@pytest.mark.parametrize(("name", "level"), _gradient_cases())
def test_a_loss_scale_is_taken_off_before_the_method_and_put_back_after(
    name: str, level: str
) -> None:
    """fp16: a GradScaler's scale S (a tensor) multiplies the losses so that their gradients
    do not underflow. The method must see the per-task gradients of the unscaled losses
    (bit for bit: S is a power of 2), and every parameter gets S × the update, which the
    scaler divides out before the optimiser's step. Forgetting to unscale hands the method
    S·J (a Gramian S² too large), so the recorded inputs differ."""
    s = 2.0**12
    runs = []
    for scale in (1.0, torch.tensor(s, dtype=torch.float64)):
        torch.manual_seed(0)  # randomised methods draw alike in both runs
        model, method = Toy(3, seed=3), balancing.make(name)
        method.bind([f"t{i}" for i in range(3)])
        inputs = _record_inputs(method)
        run_backward(model, method, level, scale=scale)
        runs.append((inputs, [p.grad.clone() for p in params_of(model)]))
    (plain_inputs, plain_grads), (scaled_inputs, scaled_grads) = runs
    assert len(scaled_inputs) == len(plain_inputs) == 1
    torch.testing.assert_close(scaled_inputs[0], plain_inputs[0], rtol=1e-12, atol=0)
    for j, (a, b) in enumerate(zip(plain_grads, scaled_grads)):
        torch.testing.assert_close(b, s * a, rtol=1e-10, atol=1e-12 * s, msg=f"parameter {j}")


@pytest.mark.parametrize("level", ["features", "params"])
def test_the_two_levels_differ_and_the_method_matters(level: str) -> None:
    """Guards the exactness test against a reference that cannot fail."""
    model = Toy(3)
    other = "params" if level == "features" else "features"
    run_backward(model, Median(), level)
    got = [p.grad.clone() for p in model.shared()]
    for ref in (by_hand(model, Median(), other, 0.5), by_hand(model, RidgeGramian(), level, 0.5)):
        assert any((g - r).abs().max() > 1e-6 for g, r in zip(got, ref))


def test_grads_accumulate_over_calls() -> None:
    model = Toy(3)
    for level in ("features", "params"):
        model.zero_grad(set_to_none=True)
        run_backward(model, RidgeGramian(), level)
        once = [p.grad.clone() for p in params_of(model)]
        run_backward(model, RidgeGramian(), level)
        for p, g in zip(params_of(model), once):
            torch.testing.assert_close(p.grad, 2 * g, **TOL)


def test_parameters_the_losses_do_not_reach_keep_no_grad() -> None:
    """Like loss.backward(): an unreached parameter's .grad stays None (an optimiser skips it)."""
    model = Toy(3)
    unused = nn.Linear(2, 2).double()
    losses, _ = model()
    losses = {t: losses[t] for t in ("t0", "t2")}
    balancing.backward(
        losses, method=Median(), shared=model.shared() + list(unused.parameters()), level="params"
    )
    assert all(
        p.grad is None for p in list(unused.parameters()) + list(model.heads[1].parameters())
    )
    assert all(p.grad is not None for p in model.shared())


# ------------------------------------------------------------------ fallback and chunks
def test_fallback_to_k_passes_gives_the_same_grads_and_logs_once(monkeypatch, caplog) -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError("vmap: no batching rule for this op")

    level = "params"
    model = Toy(10)
    method = RidgeGramian()
    expected = by_hand(model, method, level, 0.5)
    monkeypatch.setattr(autograd, "batched_grad", refuse)
    monkeypatch.setattr(autograd, "_warned", set())
    params = params_of(model)
    before = preset_grads(params)
    with caplog.at_level(logging.WARNING, logger="polytask.balancing"):
        run_backward(model, method, level)
        assert_grads(params, before, expected)
        run_backward(model, method, level)
    warnings = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(warnings) == 1 and "no batching rule" in warnings[0].getMessage()


@pytest.mark.parametrize("k", [2, 10])
def test_feature_rows_split_from_one_pass_equal_k_passes(k: int, monkeypatch) -> None:
    """The one-pass split (hooks on the heads' first operations) against K passes through
    the heads, and backward() through the K-pass path against the hand-computed update."""
    model = Toy(k)
    losses, z = model()
    split = autograd.split_jacobian(list(losses.values()), z)
    assert split is not None
    torch.testing.assert_close(split, autograd.looped_grad(list(losses.values()), [z])[0], **TOL)
    method = Median()
    expected = by_hand(model, method, "features", 0.5)
    monkeypatch.setattr(autograd, "split_jacobian", lambda *a: None)
    monkeypatch.setattr(autograd, "one_pass_feature_backward", lambda *a, **kw: False)
    params = params_of(model)
    before = preset_grads(params)
    run_backward(model, method, "features")
    assert_grads(params, before, expected)


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_feature_level_takes_one_backward_pass_when_heads_are_separate(
    kind: str, monkeypatch
) -> None:
    """With one head per task the feature-level step is a single backward pass: no
    separate pass through the heads (feature_jacobian / split_jacobian / looped_grad are
    never called) and the heads' backward runs once, yet .grad equals the hand update."""
    model = Toy(10, seed=3)
    method = METHODS[kind]()
    expected = by_hand(model, method, "features", 0.5)

    def refuse(*_a, **_kw):
        raise AssertionError("a second pass through the heads was taken")

    for name in ("feature_jacobian", "split_jacobian", "looped_grad"):
        monkeypatch.setattr(autograd, name, refuse)
    runs = []
    handle = model.heads[0].register_full_backward_hook(lambda *_a: runs.append(1))
    params = params_of(model)
    before = preset_grads(params)
    run_backward(model, method, "features")
    handle.remove()
    assert_grads(params, before, expected)
    assert len(runs) == 1


def test_split_sums_what_several_operations_of_one_loss_send() -> None:
    model = Toy(3)
    _, z = model()
    losses = [
        (head(z) - 1).pow(2).mean() + (i + 1) * (z * z[:, :1]).mean() + z.sum() * 0.1
        for i, head in enumerate(model.heads)
    ]
    split = autograd.split_jacobian(losses, z)
    assert split is not None
    torch.testing.assert_close(split, autograd.looped_grad(losses, [z])[0], **TOL)


def test_split_refuses_operations_shared_by_several_losses() -> None:
    model = Toy(3)
    _, z = model()
    h = z * 2  # one consumer of z read by every loss
    losses = [(head(h) - 1).pow(2).mean() for head in model.heads]
    assert autograd.split_jacobian(losses, z) is None
    total = z.sum()
    assert (
        autograd.split_jacobian([total], total) is None
    )  # a loss that is the feature tensor itself
    rows = autograd.feature_jacobian(losses, z)
    for i, loss in enumerate(losses):
        torch.testing.assert_close(
            rows[i], torch.autograd.grad(loss, z, retain_graph=True)[0], **TOL
        )


def test_one_walk_finds_the_leaves_on_each_side_of_the_features_and_the_owners() -> None:
    """cut_at: the leaves above z (heads), below z (trunk), every consumer of z owned by the
    one loss that reads it — the same sets as separate walks; a consumer read by every loss
    leaves no owners, and a loss that does not read z leaves its trunk out of the leaves."""
    model = Toy(3)
    named, z = model()
    losses = list(named.values())
    cut = autograd.cut_at(losses, z)
    heads = [p for h in model.heads for p in h.parameters()]
    assert {id(p) for p in cut.above} == {id(p) for p in heads}
    assert {id(p) for p in cut.below} == {id(p) for p in model.shared()}
    assert {id(p) for p in cut.leaves()} == {id(p) for p in autograd.reached_leaves(losses)}
    assert cut.reads and cut.owners is not None
    assert sorted(i for i, _ in cut.owners.values()) == [0, 1, 2]
    shared_op = z * 2
    cut = autograd.cut_at([(h(shared_op) - 1).pow(2).mean() for h in model.heads], z)
    assert cut.reads and cut.owners is None
    unread = autograd.cut_at([model.heads[0].weight.sum()], z)
    assert not unread.reads and unread.leaves() == [model.heads[0].weight]


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 64])
def test_chunked_products_give_the_same_grads(chunk_size: int) -> None:
    level = "params"
    model = Toy(10)
    method = Median()
    expected = by_hand(model, method, level, 0.5)
    params = params_of(model)
    before = preset_grads(params)
    calls = []
    real = autograd.batched_grad

    def counting(outputs, inputs, cotangents):
        calls.append(cotangents.shape[0])
        return real(outputs, inputs, cotangents)

    engine_batched = pytest.MonkeyPatch()
    engine_batched.setattr(autograd, "batched_grad", counting)
    try:
        run_backward(model, method, level, chunk_size=chunk_size)
    finally:
        engine_batched.undo()
    assert_grads(params, before, expected)
    step = min(chunk_size, 10)
    assert calls == [min(step, 10 - i) for i in range(0, 10, step)]  # ONE product per chunk, not K


def test_jacobian_rows_equal_separate_gradients_and_zero_for_unreached() -> None:
    model = Toy(3)
    losses, z = model()
    extra = nn.Parameter(torch.ones(2, dtype=torch.float64))
    values = list(losses.values()) + [
        (extra * 0).sum() + 1.0,
        torch.tensor(2.0, dtype=torch.float64),
    ]
    jz, jw = autograd.jacobian(values, [z, extra])
    assert jz.shape == (5, *z.shape) and jw.shape == (5, 2)
    for i, loss in enumerate(values[:3]):
        torch.testing.assert_close(jz[i], torch.autograd.grad(loss, z, retain_graph=True)[0], **TOL)
    assert jz[3:].abs().max() == 0 and jw.abs().max() == 0
    with pytest.raises(ValueError, match="chunk_size"):
        autograd.jacobian(values, [z], chunk_size=0)
    looped = autograd.jacobian(values, [z, extra], batched=False)
    torch.testing.assert_close(looped, [jz, jw], **TOL)


def test_losses_of_separate_batches_take_one_pass_each_at_the_params_level() -> None:
    """Disjoint batches (a list of features): one backward pass per loss, no batched
    product and no extra pass for the task-specific parameters; same update."""
    torch.manual_seed(0)
    trunk = nn.Linear(4, 3).double()
    heads = nn.ModuleList(nn.Linear(3, 1).double() for _ in range(2))
    xs = [torch.randn(5, 4, dtype=torch.float64) for _ in range(2)]

    def step(features: bool) -> list[Tensor]:
        for p in [*trunk.parameters(), *heads.parameters()]:
            p.grad = None
        zs = [trunk(x) for x in xs]
        losses = {str(i): heads[i](z).pow(2).mean() for i, z in enumerate(zs)}
        balancing.backward(
            losses,
            method=balancing.MGDA(),
            features=zs if features else None,
            shared=list(trunk.parameters()),
            level=None if features else "params",
        )
        return [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]]

    reference = step(features=False)
    calls: list[str] = []
    spy = pytest.MonkeyPatch()
    spy.setattr(autograd, "batched_grad", lambda *a, **k: calls.append("batched"))
    original = autograd.looped_grad
    spy.setattr(
        autograd, "looped_grad", lambda *a, **k: calls.append("looped") or original(*a, **k)
    )
    try:
        got = step(features=True)
    finally:
        spy.undo()
    assert calls == ["looped"]
    torch.testing.assert_close(got, reference, **TOL)


# ------------------------------------------------------------------ hierarchical taps
class Bypass(Encoder):
    """Layer 2 reads the input, not layer 1: layer 1 does not separate layer-2 tasks."""

    input_kind = "features"
    is_sequence = False

    def __init__(self) -> None:
        super().__init__()
        self.layer_dims = [4, 4]
        self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)

    def forward(self, inputs: Mapping[str, Tensor]) -> EncoderOutput:
        x = inputs["x"]
        return EncoderOutput(
            layers=[torch.tanh(self.a(x)), torch.tanh(self.b(x)) + 0 * self.a.bias.sum()]
        )


def _hier(**kw) -> Hierarchical:
    torch.manual_seed(0)
    tasks = [Task(t, Regression()) for t in ("a", "b", "c")]
    model = Hierarchical(
        MLP(4, [6, 5, 5], activation="tanh"),
        heads_for(tasks, {"a": 6, "b": 5, "c": 5}, sequence=False),
        taps={"a": 1, "b": 2},
        **kw,
    )
    return model.double()


def _hier_losses(
    model: Hierarchical, x: Tensor, tasks=None
) -> tuple[dict[str, Tensor], MultiTaskOutput]:
    out = model({"x": x}, tasks=tasks)
    return {
        t: (o.squeeze(-1) - float(i + 1)).pow(2).mean()
        for i, (t, o) in enumerate(out.outputs.items())
    }, out


def test_hierarchical_features_are_the_lowest_tap_of_the_call() -> None:
    model = _hier()
    x = torch.randn(5, 4, dtype=torch.float64)
    enc = model.encoder({"x": x})
    for tasks, depth in ((None, 1), (["b", "c"], 2), (["c"], 3), (["a"], 1)):
        out = model({"x": x}, tasks=tasks)
        torch.testing.assert_close(out.shared_features, enc.layers[depth - 1], rtol=0, atol=0)
    assert Hierarchical.provides_shared_features and HardSharing.provides_shared_features
    assert Custom.provides_shared_features is None


def test_feature_level_on_a_hierarchical_model_with_taps() -> None:
    """z = layer 1: the first encoder layer gets (∂z/∂θ)ᵀ d_z; deeper encoder layers, which
    only the tasks tapping them reach, and the heads get ∇ Σ_i L_i."""
    model = _hier()
    x = torch.randn(9, 4, dtype=torch.float64)
    method = RidgeGramian()
    rows = []
    for t in ("a", "b", "c"):
        losses, out = _hier_losses(model, x)
        rows.append(torch.autograd.grad(losses[t], out.shared_features)[0].reshape(-1))
    dz = expected_update(method, torch.stack(rows))
    losses, out = _hier_losses(model, x)
    # b and c read layer 1 through the same layer-2 operations: no one-pass split, K passes
    assert autograd.split_jacobian(list(losses.values()), out.shared_features) is None
    below = list(model.encoder.linears[0].parameters())
    above = [p for p in model.parameters() if all(p is not q for q in below)]
    expected = list(
        torch.autograd.grad(
            out.shared_features,
            below,
            grad_outputs=dz.view_as(out.shared_features),
            retain_graph=True,
        )
    )
    expected += list(torch.autograd.grad(sum(losses.values()), above))
    losses, out = _hier_losses(model, x)
    balancing.backward(
        losses, method=method, features=out.shared_features, shared=model.shared_parameters()
    )
    for p, e in zip(below + above, expected):
        torch.testing.assert_close(p.grad, e, **TOL)


def test_no_shared_features_where_a_deeper_layer_bypasses_the_tap() -> None:
    torch.manual_seed(0)
    tasks = [Task(t, Regression()) for t in ("a", "b")]
    model = Hierarchical(Bypass(), heads_for(tasks, 4, sequence=False), taps={"a": 1, "b": 2})
    x = torch.randn(3, 3)
    assert model({"x": x}).shared_features is None
    assert model({"x": x}, tasks=["b"]).shared_features is not None  # one tap: its layer separates
    enc = model.encoder({"x": x})
    assert not autograd.separates(enc.layers[0], [enc.layers[1]])
    deep = _hier().encoder({"x": torch.randn(2, 4, dtype=torch.float64)})
    assert autograd.separates(deep.layers[0], [deep.layers[2]])
    # with level None the engine then works on the parameters
    _, out = _hier_losses(model, x)
    assert resolve_level(Median(), None, has_features=out.shared_features is not None) == "params"


def test_custom_modules_may_return_shared_features() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.head = nn.Linear(3, 2), nn.Linear(2, 1)

        def forward(self, inputs, tasks):
            z = self.trunk(inputs["x"])
            return {"a": self.head(z)}, {"a": z}, z

    model = Custom(Net(), ["a"], shared=["trunk"], task_params={"a": ["head"]})
    out = model({"x": torch.randn(2, 3)})
    assert out.shared_features is out.features["a"]


# ------------------------------------------------------------------ errors
def test_errors_name_the_field_and_the_fix() -> None:
    model = Toy(2)
    losses, z = model()
    # OptionError: the argument's own name, the problem and the fix (no config path)
    with pytest.raises(OptionError, match="'features' needs the shared feature tensor") as info:
        balancing.backward(losses, method=Median(), shared=model.shared(), level="features")
    assert info.value.option == "level" and info.value.fix.startswith("use level: params")
    with pytest.raises(OptionError, match="'median'.*no shared parameters") as info:
        balancing.backward(losses, method=Median(), features=z, shared=[])
    assert info.value.option == "method" and info.value.fix.startswith("use a loss-weighting")
    with pytest.raises(
        OptionError, match="method 'features_only' works at level features only"
    ) as info:
        balancing.backward(
            losses, method=FeaturesOnly(), features=z, shared=model.shared(), level="params"
        )
    assert (info.value.option, info.value.fix) == ("level", "set level: features")
    with pytest.raises(OptionError, match="method 'features_only'.*features") as info:
        balancing.backward(losses, method=FeaturesOnly(), shared=model.shared())
    assert info.value.option == "level" and "shared features" in info.value.fix
    with pytest.raises(OptionError, match="unknown level 'layer'") as info:
        balancing.backward(
            losses, method=Median(), features=z, shared=model.shared(), level="layer"
        )
    assert info.value.option == "level" and info.value.fix.startswith("use features, params")
    with pytest.raises(OptionError, match="level 'params' needs `shared`") as info:
        balancing.backward(losses, method=Median(), level="params")
    assert info.value.option == "shared"
    assert "balancing." not in str(info.value)
    with pytest.raises(ValueError, match="no task losses"):
        balancing.backward({}, method=Median(), features=z)
    with pytest.raises(ValueError, match="must be a scalar"):
        balancing.backward({"a": z.sum(1)}, method=Median(), features=z)
    with pytest.raises(OptionError, match="no loss depends on the feature tensor") as info:
        balancing.backward(losses, method=Median(), features=torch.ones(3, requires_grad=True) * 2)
    assert info.value.option == "features"
    # nothing was differentiated by the failed calls
    assert all(p.grad is None for p in model.parameters())


def test_level_defaults_and_loss_weightings() -> None:
    assert resolve_level(Median(), None, has_features=True) == "features"
    assert resolve_level(Median(), None, has_features=False) == "params"
    assert resolve_level(Median(), None, has_features=None) is None  # decided per call
    assert resolve_level(FeaturesOnly(), None, has_features=None) is None
    assert (
        resolve_level(balancing.make("sum"), "features", has_features=False, has_shared=False)
        is None
    )
    # a loss weighting ignores the level and the features: (scale · combine).backward()
    model = Toy(2)
    losses, _ = model()
    balancing.backward(losses, method=balancing.make("sum"), level="features", scale=0.5)
    ref = Toy(2)
    ref_losses, _ = ref()
    (0.5 * sum(ref_losses.values())).backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL)


# ------------------------------------------------------------------ trainer
def _regression_setup(k: int = 3, n: int = 16):
    tasks = {f"r{i}": Task(f"r{i}", Regression()) for i in range(k)}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    examples = [
        Example(
            inputs={"features": row.tolist()},
            targets={
                t: float(torch.sin(row.sum() * (i + 1))) * 10 ** (i - 1)
                for i, t in enumerate(tasks)
            },
        )
        for row in x
    ]
    collate = Collator(tasks, input_kind="features")

    def model() -> HardSharing:
        torch.manual_seed(0)
        return HardSharing(
            MLP(4, [8, 8], activation="tanh"), heads_for(list(tasks.values()), 8, sequence=False)
        )

    return tasks, {"rows": examples}, collate, model


@pytest.mark.parametrize("level", ["features", "params", None])
def test_trainer_step_applies_the_balanced_update_to_every_parameter(level) -> None:
    """One plain-SGD step on the whole data set: Δθ = -lr · grad from backward() at the
    configured level, and every shared parameter moves (LibMTL's representation-gradient
    mode never updated the shared trunk)."""
    tasks, data, collate, make = _regression_setup()
    lr = 0.1
    model = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainerConfig(
        epochs=1,
        max_steps=1,
        batch_size=16,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        clip_norm=None,
        lr=lr,
        threads=1,
        level=level,
    )
    Trainer(model, tasks, method=RidgeGramian(), config=cfg).fit(data, data, collate)

    ref = make()
    batch = collate(data["rows"], "rows")
    out = ref(batch.inputs)
    losses = {t: tasks[t].kind.loss(out.outputs[t], *batch.targets[t]) for t in tasks}
    balancing.backward(
        losses,
        method=RidgeGramian(),
        features=out.shared_features,
        shared=ref.shared_parameters(),
        level=level,
    )
    shared = {
        n for n, p in model.named_parameters() if any(p is q for q in model.shared_parameters())
    }
    assert shared == {n for n, _ in model.named_parameters() if n.startswith("encoder.")}
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert not torch.equal(p.detach(), before[n]), f"{n} did not move"
        torch.testing.assert_close(
            p.detach() - before[n], -lr * q.grad, rtol=1e-4, atol=1e-7, msg=n
        )


def test_trainer_levels_give_different_updates_and_check_the_level() -> None:
    tasks, data, collate, make = _regression_setup()
    moved = {}
    for level in ("features", "params"):
        model = make()
        cfg = TrainerConfig(
            epochs=1,
            max_steps=1,
            batch_size=16,
            optimizer="sgd",
            momentum=0.0,
            weight_decay=0.0,
            clip_norm=None,
            lr=0.1,
            threads=1,
            level=level,
        )
        Trainer(model, tasks, method=Median(), config=cfg).fit(data, data, collate)
        moved[level] = model.encoder.linears[0].weight.detach().clone()
    assert (moved["features"] - moved["params"]).abs().max() > 1e-6
    with pytest.raises(OptionError, match="works at level features only") as info:
        Trainer(make(), tasks, method=FeaturesOnly(), config=TrainerConfig(level="params"))
    assert info.value.option == "level"
    with pytest.raises(OptionError, match="unknown level") as info:
        Trainer(make(), tasks, method=Median(), config=TrainerConfig(level="both"))
    assert info.value.option == "level"

    class NoShared(Custom):
        provides_shared_features = False

    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.h = nn.ModuleDict({t: nn.Linear(4, 1) for t in tasks})

        def forward(self, inputs, names):
            return {t: self.h[t](inputs["x"]) for t in names}, {}

    soft = NoShared(Heads(), list(tasks), shared=[], task_params={t: [f"h.{t}"] for t in tasks})
    with pytest.raises(OptionError, match="'median'.*no shared parameters") as info:
        Trainer(soft, tasks, method=Median())
    assert info.value.option == "method"
    with pytest.raises(OptionError, match="'features' needs the shared feature tensor") as info:
        Trainer(
            NoShared(
                make(),
                list(tasks),
                shared=["encoder"],
                task_params={t: [f"heads.{t}"] for t in tasks},
            ),
            tasks,
            method=Median(),
            config=TrainerConfig(level="features"),
        )
    assert info.value.option == "level"
    Trainer(soft, tasks, method=balancing.make("sum"))  # a loss weighting needs no shared part


# ------------------------------------------------------------------ config
ROWS = [
    {"tokens": ["a", "b", "c"][: 1 + i % 3], "sentiment": "pos" if i % 2 else "neg"}
    for i in range(12)
]


def _config(tmp_path: Path, **balancing_section) -> dict:
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    return {
        "tasks": {"sentiment": {"kind": "classification"}},
        "data": {
            "sources": {
                "rows": {
                    "format": "jsonl",
                    "train": "rows.jsonl",
                    "tasks": {"sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 4, "channels": [4]}},
        "balancing": balancing_section,
    }


def test_config_level_is_validated_and_reaches_the_trainer(tmp_path: Path, monkeypatch) -> None:
    exp = Experiment(
        validate(_config(tmp_path, method="test_balancing_engine:Median", level="params")), tmp_path
    )
    assert isinstance(exp.build_method(), Median)
    assert exp.trainer_config().level == "params"
    assert (
        "level"
        not in validate(_config(tmp_path, method="sum", level="features")).balancing.options()
    )
    with pytest.raises(ConfigError) as err:
        validate(_config(tmp_path, level="layers"))
    assert err.value.where == "balancing.level"
    exp = Experiment(
        validate(_config(tmp_path, method="test_balancing_engine:FeaturesOnly", level="params")),
        tmp_path,
    )
    with pytest.raises(ConfigError) as err:
        exp.build_method()
    assert err.value.where == "balancing.level" and err.value.fix == "set level: features"

    from polytask import sharing

    class Soft(Hierarchical):
        provides_shared_features = False

    monkeypatch.setitem(sharing.ARCHITECTURES, "soft", Soft)
    raw = _config(tmp_path, method="test_balancing_engine:Median", level="features")
    raw["model"]["sharing"] = "soft"
    with pytest.raises(ConfigError) as err:
        Experiment(validate(raw), tmp_path).build_method()
    assert err.value.where == "balancing.level" and "level: params" in err.value.fix
    raw["balancing"]["level"] = None
    Experiment(validate(raw), tmp_path).build_method()  # automatic: params


# ------------------------------------------------------------------ the real sequence model
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("level", ["features", "params"])
def test_bilstm_crf_model_matches_the_hand_computed_update(
    zh, make_model, hard: bool, level: str
) -> None:
    """Packed BiLSTM encoder, attention-pooled classifier and CRF tagger on a batch that mixes
    reviews (sentiment) and news (NER): the batched product and the split go through them."""
    model = make_model(hard=hard).double()
    batch = zh.collate(zh.train["reviews"][:5] + zh.train["news"][:5], "mixed")
    method = RidgeGramian()

    def losses_out():
        out = model(batch.inputs)
        return {
            t: zh.tasks[t].kind.loss(out.outputs[t], *batch.targets[t])
            for t in ("sentiment", "ner")
        }, out

    shared = model.shared_parameters()
    params = list(model.parameters())
    rows = []
    for t in ("sentiment", "ner"):
        losses, out = losses_out()
        inputs = shared if level == "params" else [out.shared_features]
        grads = torch.autograd.grad(losses[t], inputs, allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    d = expected_update(method, torch.stack(rows))
    losses, out = losses_out()
    if level == "params":
        expected = dict(zip(map(id, shared), d.split([p.numel() for p in shared])))
        rest = [p for p in params if id(p) not in expected]
        expected.update(
            zip(map(id, rest), torch.autograd.grad(sum(losses.values()), rest, allow_unused=True))
        )
    else:
        z = out.shared_features
        below = [p for p in shared if id(p) in {id(q) for q in autograd.reached_leaves([z])}]
        expected = dict(
            zip(
                map(id, below),
                torch.autograd.grad(z, below, grad_outputs=d.view_as(z), retain_graph=True),
            )
        )
        rest = [p for p in params if id(p) not in expected]
        expected.update(
            zip(map(id, rest), torch.autograd.grad(sum(losses.values()), rest, allow_unused=True))
        )
        if not hard:  # z = layer 1; layer 2 is shared but above z: it gets ∇ L_sentiment
            assert any(id(p) not in map(id, below) for p in shared)
    losses, out = losses_out()
    balancing.backward(
        losses, method=method, features=out.shared_features, shared=shared, level=level
    )
    for p in params:
        e = expected[id(p)]
        if e is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, e.view_as(p), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("level", ["features", "params"])
def test_trainer_runs_a_gradient_method_on_the_sequence_model(zh, make_model, level: str) -> None:
    model = make_model(hard=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainerConfig(
        epochs=1,
        max_steps=2,
        batch_size=8,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        clip_norm=None,
        lr=0.1,
        threads=1,
        level=level,
    )
    Trainer(model, zh.tasks, method=RidgeGramian(), config=cfg).fit(
        zh.sources(n=16), zh.val_of(), zh.collate
    )
    shared = {id(p) for p in model.shared_parameters()}
    for n, p in model.named_parameters():
        if id(p) in shared:
            assert not torch.equal(p.detach(), before[n]), f"shared parameter {n} did not move"
