"""GradNorm: weighted gradient norms driven toward Ḡ · r_i^α; weights positive, summing to T.

The defining property is checked where the paper checks it, on its synthetic regression
(benchmarks/toy_problems.py), with the Gramian of the per-task gradients at the last shared
layer; the rest on Gramians of the shared Jacobian generators at every K and scale.
"""

from __future__ import annotations

import json

import pytest
import torch
import toy_problems as toy
from jacobians import K_VALUES, SCALES, random_jacobian

from polytask.balancing.gradnorm import GradNorm
from polytask.errors import OptionError


def _losses(values) -> dict[str, torch.Tensor]:
    return {f"t{i}": torch.tensor(float(v)) for i, v in enumerate(values)}


def _train(sigmas, steps: int, gradnorm: bool, alpha: float = 0.12) -> tuple[float, list[float]]:
    """Train on the synthetic problem (Adam 3e-3, fresh batches of 100); returns the mean over
    the last quarter of the steps of std_i log(w_i n_i / (Ḡ r_i^α)) — how far the weighted
    norms are from GradNorm's targets — and the weight sums seen."""
    torch.manual_seed(0)
    problem = toy.gradnorm_problem(sigmas, n_train=1, n_test=1, seed=0)
    net = problem.model()
    method = GradNorm(alpha=alpha, lr=0.025)
    method.bind(problem.tasks)
    w_layer = net.last_shared.weight
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    spreads, sums = [], []
    for _ in range(steps):
        x, y = problem.sample(100, gen)
        losses = problem.losses(net, x, y)
        jac = torch.stack(
            [
                torch.autograd.grad(v, w_layer, retain_graph=True)[0].flatten()
                for v in losses.values()
            ]
        )
        w = method.weights(jac @ jac.T, {t: v.detach() for t, v in losses.items()})
        sums.append(float(w.sum()))
        if not gradnorm:
            w = torch.ones_like(w)
        r_alpha = (
            method.last["targets"] / method.last["weighted_norms"].mean()
        )  # r_i^α of this step
        weighted = w.double() * method.last["norms"]
        spreads.append(float(torch.log(weighted / (weighted.mean() * r_alpha)).std()))
        opt.zero_grad()
        torch.stack([w[i] * v for i, v in enumerate(losses.values())]).sum().backward()
        opt.step()
    tail = spreads[-steps // 4 :]
    return sum(tail) / len(tail), sums


@pytest.mark.parametrize("sigmas", [(1.0, 100.0), toy.spread_sigmas(10)], ids=["T2", "T10"])
def test_gradnorm_drives_weighted_norms_to_their_targets_on_the_synthetic_problem(sigmas) -> None:
    """Chen et al. 2018 §4 (α = 0.12, W = last shared layer): with fixed weights the task
    gradients' norms differ by the output scales σ_i; under GradNorm the spread of
    log(w_i ‖∇_W L_i‖ / (Ḡ r_i^α)) shrinks to well under half of it, and Σ w_i = T."""
    fixed, _ = _train(sigmas, 80, gradnorm=False)
    balanced, sums = _train(sigmas, 240, gradnorm=True)
    assert fixed > 1.0, fixed  # the problem is unbalanced to begin with
    assert balanced < 0.4 * fixed, (balanced, fixed)
    assert all(s == pytest.approx(len(sigmas), rel=1e-6) for s in sums)  # float32 weights


@pytest.mark.parametrize("k", K_VALUES)
def test_gradnorm_with_constant_losses_equalises_weighted_norms(k) -> None:
    """With r_i = 1 (no task trains faster) the target is Ḡ for every task: w_i n_i → Ḡ,
    i.e. w ∝ 1/n_i (row norms spread over 1 … 4; the additive update resolves weights to
    about its learning rate, so tiny weights are not a fair check)."""
    jac = random_jacobian(k, 30, seed=k)
    jac = (
        jac
        / jac.norm(dim=1, keepdim=True)
        * torch.linspace(1, 4, k, dtype=torch.float64).unsqueeze(1)
    )
    gramian = jac @ jac.T
    norms = jac.norm(dim=1)
    method = GradNorm(alpha=1.5, lr=0.01)
    losses = _losses([1.0] * k)
    for _ in range(1500):
        w = method.weights(gramian, losses)
        assert float(w.sum()) == pytest.approx(k, rel=1e-9) and bool((w > 0).all())
    expected = k * (1 / norms) / (1 / norms).sum()
    torch.testing.assert_close(w, expected, rtol=0.05, atol=0)


def test_gradnorm_raises_the_weight_of_the_task_that_trains_slowest() -> None:
    """Equal gradient norms, L_a(t)/L_a(0) = 1 and L_b(t)/L_b(0) = 0.1: r_a > r_b, so task a's
    target Ḡ r_a^α is larger and its weight grows; α = 0 ignores the rates."""
    gramian = torch.eye(2, dtype=torch.float64)
    for alpha, grows in [(1.0, True), (0.0, False)]:
        method = GradNorm(alpha=alpha)
        method.weights(gramian, _losses([1.0, 1.0]))  # L_i(0)
        for _ in range(50):
            w = method.weights(gramian, _losses([1.0, 0.1]))
        if grows:
            assert w[0] > 1.5 and w[1] < 0.5
        else:
            torch.testing.assert_close(w, torch.ones(2, dtype=torch.float64), rtol=0, atol=0.1)


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradnorm_weights_do_not_depend_on_the_gradients_units(k, dtype) -> None:
    """Scaling the Jacobian by 1e-6 … 1e6 leaves the whole trajectory of weights unchanged,
    and the weights come back in the Gramian's dtype."""
    jacs = [
        random_jacobian(k, 20, seed=s) * torch.logspace(-2, 2, k, dtype=torch.float64).unsqueeze(1)
        for s in range(6)
    ]
    runs = []
    for scale in SCALES:
        method = GradNorm(alpha=0.5)
        ws = []
        for i, j in enumerate(jacs):
            g = ((j * scale) @ (j * scale).T).to(dtype)
            w = method.weights(g, _losses(torch.linspace(1.0, 2.0, k) / (i + 1)))
            assert w.dtype == dtype
            ws.append(w.double())
        runs.append(torch.stack(ws))
    for other in runs[1:]:
        torch.testing.assert_close(
            other, runs[0], rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=0
        )
    assert not torch.allclose(
        runs[0][-1], torch.ones(k, dtype=torch.float64)
    )  # the weights did move


def test_gradnorm_aggregate_missing_tasks_single_task_and_errors() -> None:
    method = GradNorm()
    jac = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    losses = _losses([1.0, 2.0, 3.0])
    for _ in range(5):
        method.aggregate(jac, losses)
    w = torch.tensor(list(method.current_weights(list(losses)).values()), dtype=torch.float64)
    assert float(w.sum()) == pytest.approx(3.0)
    # a batch with only tasks t0 and t2: their weight sum is kept, t1's weight untouched
    before = method.current_weights(["t0", "t1", "t2"])
    method.weights(jac[[0, 2]] @ jac[[0, 2]].T, {"t0": losses["t0"], "t2": losses["t2"]})
    after = method.current_weights(["t0", "t1", "t2"])
    assert after["t1"] == before["t1"]
    assert after["t0"] + after["t2"] == pytest.approx(before["t0"] + before["t2"])
    assert sum(after.values()) == pytest.approx(3.0)
    # the update is wᵀJ with the weights of that step
    fresh = GradNorm()
    torch.testing.assert_close(fresh.aggregate(jac, losses), jac.sum(0))
    # K = 1: weight 1, forever
    single = GradNorm()
    for _ in range(3):
        assert float(single.weights(torch.tensor([[4.0]]), {"a": torch.tensor(2.0)})) == 1.0
    with pytest.raises(OptionError, match="gradnorm needs the task losses") as err:
        GradNorm().weights(torch.eye(2))
    assert err.value.option == "losses"
    with pytest.raises(ValueError, match="must be"):
        GradNorm().weights(torch.ones(2, 3), _losses([1.0, 1.0]))


def test_gradnorm_state_round_trip() -> None:
    jac = random_jacobian(4, 10, seed=2)
    a = GradNorm(alpha=1.0)
    for i in range(5):
        a.weights(jac @ jac.T, _losses([1.0 / (i + 1), 1.0, 2.0, 3.0]))
    b = GradNorm(alpha=1.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for i in range(5):
        losses = _losses([0.1 * (i + 1), 1.0, 1.5, 3.0])
        assert torch.equal(a.weights(jac @ jac.T, losses), b.weights(jac @ jac.T, losses))
    with pytest.raises(ValueError, match="unknown state keys"):
        b.load_state_dict({"w": {}})


@pytest.mark.parametrize(
    "option, value", [("alpha", -0.1), ("alpha", float("nan")), ("lr", 0.0), ("lr", "0.1")]
)
def test_gradnorm_bad_options(option, value) -> None:
    with pytest.raises(OptionError) as err:
        GradNorm(**{option: value})
    assert err.value.option.partition(".")[0] == option and err.value.fix  # min_losses.a
