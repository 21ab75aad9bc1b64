"""The toy problems: the two-objective problem as the official codes define it (values,
closed-form Jacobian, trajectory runner) and the GradNorm synthetic regression (data, model)."""

from __future__ import annotations

import math

import pytest
import torch
import toy_problems as toy

from polytask.balancing.base import GradientAggregator
from polytask.balancing.fixed import Mean
from polytask.balancing.uw import UncertaintyWeighting


def _by_hand(x1: float, x2: float, l1_scale: float) -> tuple[float, float]:
    """The official codes' objectives, in plain Python (f2 with + tanh(−x2))."""
    eps = 5e-6
    f1 = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), eps)) + 6
    f2 = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), eps)) + 6
    g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c1, c2 = max(math.tanh(0.5 * x2), 0.0), max(math.tanh(-0.5 * x2), 0.0)
    return l1_scale * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2


POINTS = list(toy.TOY_START_POINTS + toy.CAGRAD_EXTRA_START_POINTS) + [
    (0.0, 0.0),
    (3.0, 0.0),
    (-7.0, 0.5),
    (1.0, 2.0),
    (-3.0, 1.5),
    (5.0, -8.3552),
    (-3.3, 0.3),
]


@pytest.mark.parametrize("l1_scale", [0.1, 1.0])
def test_toy_losses_are_the_official_definition(l1_scale) -> None:
    theta = torch.tensor(POINTS, dtype=torch.float64)
    got = toy.toy_losses(theta, l1_scale)
    expected = torch.tensor([_by_hand(x1, x2, l1_scale) for x1, x2 in POINTS], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the sign of tanh in f2 matters: the papers' "− tanh(−x2)" gives another value here
    x1, x2 = 1.0, 2.0
    printed = math.log(abs(0.5 * (-x1 + 3) - math.tanh(-x2) + 2)) + 6
    assert (
        abs(
            float(toy.toy_losses(torch.tensor([x1, x2]), l1_scale)[1])
            - math.tanh(0.5 * x2) * printed
        )
        > 0.1
    )


def test_closed_form_jacobian_equals_autograd() -> None:
    """At the start points, kinks (x2 = 0), near the ε clamp and at 300 random points."""
    g = torch.Generator().manual_seed(0)
    pts = torch.cat(
        [
            torch.tensor(POINTS, dtype=torch.float64),
            torch.rand(300, 2, generator=g, dtype=torch.float64) * 24 - 12,
            torch.tensor([[-7.0 + 2 * math.tanh(1.0), -1.0]], dtype=torch.float64),
        ]
    )  # u1 = 0
    for l1_scale in (0.1, 1.0):
        for p in pts:
            theta = p.clone().requires_grad_(True)
            values = toy.toy_losses(theta, l1_scale)
            jac = torch.stack(
                [torch.autograd.grad(values[i], theta, retain_graph=True)[0] for i in range(2)]
            )
            v2, j2 = toy.toy_losses_and_jacobian(p, l1_scale)
            torch.testing.assert_close(v2, values.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(j2, jac, rtol=1e-10, atol=1e-10)
    # batched: (..., 2) -> (..., 2), (..., 2, 2)
    v, j = toy.toy_losses_and_jacobian(pts.view(-1, 1, 2))
    assert v.shape == (len(pts), 1, 2) and j.shape == (len(pts), 1, 2, 2)


def test_pareto_front_points() -> None:
    theta, losses = toy.toy_pareto_front(15, l1_scale=1.0)
    assert theta.shape == (15, 2) and bool((theta[:, 1] == toy.TOY_PARETO_X2).all())
    assert float(theta[0, 0]) == -7.0 and float(theta[-1, 0]) == 7.0
    # along the front one objective rises while the other falls (a trade-off)
    assert bool((losses[1:, 0] < losses[:-1, 0]).all()) and bool(
        (losses[1:, 1] > losses[:-1, 1]).all()
    )


class _MeanRows(GradientAggregator):
    name = "mean_rows"

    def aggregate(self, jacobian, losses=None):
        return jacobian.mean(0)


def test_toy_trajectory_is_adam_on_the_balanced_gradient() -> None:
    """The runner equals a plain autograd + torch.optim.Adam loop; a loss weighting and the
    equivalent gradient aggregator give the same path; method parameters are trained."""
    steps = 300
    theta = torch.nn.Parameter(torch.tensor([-7.5, -0.5], dtype=torch.float64))
    opt = torch.optim.Adam([theta], lr=1e-2)
    path = [theta.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        toy.toy_losses(theta).mean().backward()
        opt.step()
        path.append(theta.detach().clone())
    reference = torch.stack(path)
    by_mean = toy.toy_trajectory(Mean(), (-7.5, -0.5), steps=steps, lr=1e-2)
    by_rows = toy.toy_trajectory(_MeanRows(), (-7.5, -0.5), steps=steps, lr=1e-2)
    torch.testing.assert_close(by_mean, reference, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(by_rows, reference, rtol=1e-9, atol=1e-9)
    sparse = toy.toy_trajectory(Mean(), (-7.5, -0.5), steps=steps, lr=1e-2, every=100)
    torch.testing.assert_close(sparse, reference[::100], rtol=1e-9, atol=1e-9)
    uw = UncertaintyWeighting()
    toy.toy_trajectory(uw, (9.0, 9.0), steps=20, lr=1e-2)
    assert any(v != 0.0 for v in uw.state_dict()["log_var"].values())


def test_gradnorm_problem_data_and_model() -> None:
    sigmas = (1.0, 100.0)
    a = toy.gradnorm_problem(sigmas, n_train=64, n_test=16, seed=3)
    b = toy.gradnorm_problem(sigmas, n_train=64, n_test=16, seed=3)
    c = toy.gradnorm_problem(sigmas, n_train=64, n_test=16, seed=4)
    assert (
        torch.equal(a.x_train, b.x_train)
        and torch.equal(a.y_test, b.y_test)
        and torch.equal(a.B, b.B)
    )
    assert not torch.equal(a.x_train, c.x_train)
    assert (
        a.x_train.shape == (64, 250)
        and a.y_train.shape == (2, 64, 100)
        and a.y_test.shape == (2, 16, 100)
    )
    torch.testing.assert_close(a.x_train.norm(dim=1), torch.ones(64))
    assert float(a.x_train.min()) < 0 < float(a.x_train.max())
    # y_i = σ_i tanh((B + ε_i) x)
    for i, s in enumerate(sigmas):
        expected = s * torch.tanh(a.x_train.double() @ (a.B.double() + a.eps[i].double()).T)
        torch.testing.assert_close(a.y_train[i].double(), expected, rtol=1e-4, atol=1e-4 * s)
    assert 8.0 < float(a.B.std()) < 12.0 and 2.5 < float(a.eps.std()) < 4.5
    x, y = a.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 250) and y.shape == (2, 5, 100)
    xb, yb = a.batch(7, torch.Generator().manual_seed(0))
    assert xb.shape == (7, 250) and yb.shape == (2, 7, 100)
    net, same = a.model(), a.model()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), same.parameters()))
    linears = [m for m in net.trunk if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(250, 100)] + [(100, 100)] * 3
    assert net.last_shared is linears[-1] and set(net.heads) == {"task0", "task1"}
    with torch.no_grad():
        losses = a.losses(net, a.x_test, a.y_test)
    assert set(losses) == {"task0", "task1"} and float(losses["task1"]) > 1000 * float(
        losses["task0"]
    )
    assert toy.spread_sigmas(10)[0] == 1.0 and toy.spread_sigmas(10)[-1] == pytest.approx(100.0)
    assert len(toy.spread_sigmas(10)) == 10 and toy.spread_sigmas(1) == (1.0,)
    with pytest.raises(ValueError):
        toy.gradnorm_problem(())
