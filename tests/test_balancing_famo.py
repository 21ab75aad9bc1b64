"""FAMO: one backward pass per step, a convex combination of the task gradients, logits that
favour the tasks whose log-loss falls slowest — so all losses fall at similar rates."""

from __future__ import annotations

import json
import math

import pytest
import torch
import toy_problems as toy
from jacobians import DTYPES, K_VALUES, SCALES

from polytask.balancing.famo import FAMO, TaskAdam
from polytask.balancing.fixed import Mean
from polytask.errors import OptionError


def _losses(values, dtype=torch.float64, grad=False) -> dict[str, torch.Tensor]:
    return {
        f"t{i}": torch.tensor(float(v), dtype=dtype, requires_grad=grad)
        for i, v in enumerate(values)
    }


def _log_loss_decrease(method, steps: int) -> tuple[list[float], list[float]]:
    """log L_i(0) − log L_i(end) on test data of the GradNorm synthetic problem (T = 2,
    σ = (1, 100)), trained with Adam 3e-3 on fresh batches, through the Trainer's protocol
    (the step hook re-evaluates the step's batch after the update); and, per task, the sum
    over steps of that same-batch log-loss decrease (what FAMO's logits respond to)."""
    problem = toy.gradnorm_problem((1.0, 100.0), n_train=1, n_test=500, seed=0)
    net = problem.model()
    method.bind(problem.tasks)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        start = problem.losses(net, problem.x_test, problem.y_test)
    on_batch = [0.0 for _ in problem.tasks]
    for _ in range(steps):
        x, y = problem.sample(100, gen)
        losses = problem.losses(net, x, y)
        opt.zero_grad()
        method.combine(losses).backward()
        opt.step()
        after = torch.no_grad()(problem.losses)(net, x, y)
        for i, t in enumerate(problem.tasks):
            on_batch[i] += math.log(float(losses[t].detach()) / float(after[t]))
        method.after_step(
            {t: v.detach() for t, v in losses.items()}, closure=lambda after=after: after
        )
    with torch.no_grad():
        end = problem.losses(net, problem.x_test, problem.y_test)
    return [math.log(float(start[t]) / float(end[t])) for t in problem.tasks], on_batch


def test_famo_decreases_all_losses_at_more_similar_rates_than_equal_weights() -> None:
    """On the GradNorm problem with output scales 1 and 100, equal weights spend the shared
    trunk on the large task (the small one's loss does not fall); FAMO lowers both, and the
    ratio of the two log-loss decreases is much closer to 1."""
    mean, _ = _log_loss_decrease(Mean(), 500)
    method = FAMO()
    famo, on_batch = _log_loss_decrease(method, 500)

    def ratio(d: list[float]) -> float:
        return min(d) / max(d)

    assert min(famo) > 0.02, famo
    assert ratio(famo) > ratio(mean) + 0.2, (famo, mean)
    assert ratio(mean) < 0.1, mean
    # and the logits have moved toward the task whose loss fell least on its own batches
    slow, fast = ("task0", "task1") if on_batch[0] < on_batch[1] else ("task1", "task0")
    assert method.logits[slow] > 0.01 > -0.01 > method.logits[fast], (method.logits, on_batch)


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_famo_gradient_is_the_convex_combination_z_over_cD(k, scale, dtype) -> None:
    """∂combine/∂L_i = z_i / (c D_i), D_i = L_i − m_i + ε, c = Σ z_j / D_j: positive weights
    summing to 1 (a convex combination of the task gradients, whatever the losses' units)."""
    g = torch.Generator().manual_seed(k)
    values = scale * torch.logspace(-1, 1, k, dtype=torch.float64)[torch.randperm(k, generator=g)]
    method = FAMO(eps=1e-8 * scale)
    logits = torch.randn(k, generator=g, dtype=torch.float64)
    method.load_state_dict({"logits": {f"t{i}": float(v) for i, v in enumerate(logits)}})
    losses = _losses(values, dtype, grad=True)
    total = method.combine(losses)
    assert total.dtype == dtype
    lam = torch.stack(torch.autograd.grad(total, list(losses.values()))).double()
    z = torch.softmax(logits, 0)
    d = values.to(dtype).double() + 1e-8 * scale
    expected = (z / d) / (z / d).sum()
    tol = {"rtol": 1e-5, "atol": 0} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 0}
    torch.testing.assert_close(lam, expected, **tol)
    torch.testing.assert_close(method.weights(losses), expected, **tol)
    assert float(lam.sum()) == pytest.approx(1.0, rel=1e-5) and bool((lam > 0).all())


def test_famo_logit_update_by_hand() -> None:
    """next_step mode: the first after_step only stores; the second takes one Adam step on
    ∇_w = z ⊙ (δ − ⟨z, δ⟩), δ_i = log(before_i + ε) − log(after_i + ε)."""
    method = FAMO(lr=0.1, weight_decay=0.0, eps=1e-8, mode="next_step")
    method.after_step(_losses([1.0, 1.0, 1.0]))
    assert method.logits == {}
    method.after_step(_losses([0.5, 0.9, 1.0]))  # t0 improves most, t2 not at all
    z = torch.full((3,), 1 / 3, dtype=torch.float64)
    delta = torch.tensor([math.log(1 / 0.5), math.log(1 / 0.9), 0.0], dtype=torch.float64)
    grad = z * (delta - (z * delta).sum())
    # Adam's first step from 0 moves every logit by lr · g / (|g| + ε) ≈ −lr · sign(g)
    expected = -0.1 * grad / (grad.abs() + 1e-8)
    got = torch.tensor([method.logits[t] for t in ("t0", "t1", "t2")], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert got[2] > 0 > got[0]  # the task whose loss fell least gains weight
    # and the next combine uses the new logits
    lam = method.weights(_losses([1.0, 1.0, 1.0]))
    assert lam[2] > lam[1] > lam[0]


def test_famo_same_batch_mode_uses_the_losses_kept_by_combine() -> None:
    """same_batch: combine keeps 'before'; after_step gets the losses re-evaluated on the same
    batch after the step; then 'before' is cleared."""
    a = FAMO(mode="same_batch", lr=0.1, weight_decay=0.0)
    b = FAMO(mode="next_step", lr=0.1, weight_decay=0.0)
    before, after = _losses([1.0, 1.0]), _losses([0.5, 1.0])
    a.combine(before)
    a.after_step(after)
    b.after_step(before)
    b.after_step(after)
    assert a.logits == pytest.approx(b.logits) and a.logits["t1"] > 0
    assert a.state_dict()["before"] == {}
    a.after_step(after)  # no combine since: nothing to compare with, no update
    assert a.logits == pytest.approx(b.logits)


def test_famo_default_is_the_same_batch_rule_through_the_step_hook() -> None:
    """The default (the paper's rule): δ compares the step's losses with the same batches
    re-evaluated after the update, which the closure returns — not the next step's batch."""
    assert FAMO().mode == "same_batch"
    a, b = FAMO(lr=0.1, weight_decay=0.0), FAMO(mode="next_step", lr=0.1, weight_decay=0.0)
    before, after, next_batch = _losses([1.0, 1.0]), _losses([0.5, 1.0]), _losses([2.0, 0.1])
    calls = []

    def closure() -> dict[str, torch.Tensor]:
        calls.append(1)
        return after

    a.after_step(before, closure=closure)
    b.after_step(before)
    b.after_step(after)
    assert calls == [1] and a.logits == pytest.approx(b.logits) and a.logits["t1"] > 0
    # the next step's losses never enter the same-batch rule
    a.after_step(next_batch, closure=lambda: next_batch)
    assert a.logits["t1"] > 0
    # next_step mode never pays for the extra forward pass
    b.after_step(next_batch, closure=lambda: pytest.fail("next_step called the closure"))


def test_famo_tasks_missing_from_a_batch_keep_their_logits() -> None:
    method = FAMO(weight_decay=0.0, mode="next_step")
    method.after_step(_losses([1.0, 1.0, 1.0]))
    method.after_step({"t0": torch.tensor(0.5), "t2": torch.tensor(1.0)})
    assert set(method.logits) == {"t0", "t2"} and method.logits["t2"] > 0 > method.logits["t0"]
    # combine over a subset: softmax over the present tasks only
    lam = method.weights({"t1": torch.tensor(1.0), "t2": torch.tensor(1.0)})
    assert float(lam.sum()) == pytest.approx(1.0) and lam[1] > lam[0]
    single = method.combine({"t1": torch.tensor(2.0, requires_grad=True)})
    assert torch.isfinite(single)


def test_famo_state_round_trip_and_errors() -> None:
    a = FAMO(mode="next_step")
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        a.after_step(_losses(torch.rand(3, generator=g) + 0.1))
    b = FAMO(mode="next_step")
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    for _ in range(3):
        step = _losses(torch.rand(3, generator=g) + 0.1)
        a.after_step(step)
        b.after_step(step)
    assert a.logits == b.logits and a.parameters() == []
    with pytest.raises(ValueError, match="unknown state keys"):
        b.load_state_dict({"w": {}})
    with pytest.raises(ValueError, match="not above their min_losses"):
        FAMO(min_losses={"t0": 1.0}).combine(_losses([0.5]))
    with pytest.raises(OptionError, match="unknown task") as err:
        FAMO(min_losses={"zz": 0.0}).bind(["t0"])
    assert err.value.option == "min_losses"
    with pytest.raises(ValueError, match="no task losses"):
        FAMO().combine({})


@pytest.mark.parametrize(
    "option, value",
    [
        ("lr", 0.0),
        ("weight_decay", -1.0),
        ("eps", 0.0),
        ("mode", "every_step"),
        ("min_losses", {"a": float("nan")}),
    ],
)
def test_famo_bad_options(option, value) -> None:
    with pytest.raises(OptionError) as err:
        FAMO(**{option: value})
    assert err.value.option.partition(".")[0] == option and err.value.fix  # min_losses.a


def test_task_adam_matches_torch_adam() -> None:
    """The per-task Adam FAMO and GradNorm use is torch's Adam (with L2 weight decay)."""
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05, weight_decay=0.01)
    mine = TaskAdam(0.05, weight_decay=0.01)
    values = {"a": 0.3, "b": -1.2}
    for step in range(20):
        grad = torch.tensor([math.sin(step), math.cos(3 * step)], dtype=torch.float64)
        x.grad = grad.clone()
        opt.step()
        values = mine.step(values, {"a": float(grad[0]), "b": float(grad[1])})
    torch.testing.assert_close(
        torch.tensor([values["a"], values["b"]], dtype=torch.float64),
        x.detach(),
        rtol=1e-12,
        atol=1e-12,
    )
