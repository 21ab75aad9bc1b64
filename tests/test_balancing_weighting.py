"""Loss weightings uw, dwa, rlw, gls, imtl_l: the properties that define each, at every K.

Every method is checked against its closed form (value and gradient w.r.t. each loss) at
K ∈ K_VALUES, loss scales 1e-6 … 1e6 and both dtypes; uncertainty weighting also by
training on a problem with known noise levels.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from jacobians import DTYPES, K_VALUES, SCALES
from torch import nn

from polytask.balancing.dwa import DynamicWeightAverage
from polytask.balancing.gls import GeometricLossStrategy
from polytask.balancing.imtl_l import IMTLL
from polytask.balancing.rlw import RandomLossWeighting
from polytask.balancing.uw import UncertaintyWeighting
from polytask.errors import OptionError

CASES = [(k, s, d) for k in K_VALUES for s in SCALES for d in DTYPES]
CASE_IDS = [f"K{k}-s{s:g}-{str(d)[6:]}" for k, s, d in CASES]


def _losses(
    k: int, scale: float = 1.0, dtype: torch.dtype = torch.float64, seed: int = 0
) -> dict[str, torch.Tensor]:
    """K positive leaf losses spread over two decades around ``scale`` (gradients w.r.t. them
    are the effective weights λ_i)."""
    g = torch.Generator().manual_seed(seed + k)
    values = scale * torch.logspace(-1, 1, k, dtype=torch.float64)[torch.randperm(k, generator=g)]
    return {f"t{i}": v.to(dtype).requires_grad_(True) for i, v in enumerate(values)}


def _grads(total: torch.Tensor, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack(torch.autograd.grad(total, list(losses.values()))).double()


def _values(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([v.detach() for v in losses.values()]).double()


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 0.0} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0.0}


def _json_round_trip(state: dict) -> dict:
    """What a checkpoint keeps: JSON, tensors as lists."""
    return json.loads(json.dumps(state, default=lambda o: o.tolist()))


# ----------------------------------------------------------------------------- uncertainty
# weighting


@pytest.mark.parametrize("k, scale, dtype", CASES, ids=CASE_IDS)
def test_uw_closed_form_and_stationary_point(k, scale, dtype) -> None:
    """L = Σ c_i e^{-s_i} L_i + s_i/2; ∂L/∂L_i = c_i e^{-s_i}; ∂L/∂s_i = 0 exactly at σ² = L
    (regression, c = 1/2) and σ² = 2L (classification, c = 1)."""
    losses = _losses(k, scale, dtype)
    kinds = {t: ("classification" if i % 2 else "regression") for i, t in enumerate(losses)}
    method = UncertaintyWeighting(kind=kinds)
    method.bind(list(losses))
    values = _values(losses)
    c = torch.tensor(
        [1.0 if kinds[t] == "classification" else 0.5 for t in losses], dtype=torch.float64
    )
    s = torch.randn(k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    method.load_state_dict({"log_var": dict(zip(losses, s.tolist()))})
    s = torch.tensor(
        list(method.state_dict()["log_var"].values()), dtype=torch.float64
    )  # as stored (float32)
    total = method.combine(losses)
    assert total.dtype == dtype
    expected = (c * torch.exp(-s) * values + 0.5 * s).sum()
    torch.testing.assert_close(total.double(), expected, **_tol(dtype))
    torch.testing.assert_close(
        _grads(method.combine(losses), losses), c * torch.exp(-s), **_tol(dtype)
    )
    # at σ_i² = 2 c_i L_i the gradient w.r.t. every s_i vanishes
    method.load_state_dict({"log_var": dict(zip(losses, torch.log(2 * c * values).tolist()))})
    params = method.parameters()
    grads = torch.autograd.grad(method.combine({t: v.detach() for t, v in losses.items()}), params)
    assert max(abs(float(g)) for g in grads) < 2e-6  # s is a float32 parameter
    assert method.variances()[next(iter(losses))] == pytest.approx(
        float(2 * c[0] * values[0]), rel=1e-6
    )


def test_uw_learns_the_noise_variance_of_each_task() -> None:
    """Two regression tasks y_i = a_i·x + noise with std 0.5 and 2, a shared trunk: the learned
    σ_i² reach the tasks' training MSE (and so the noise variance 0.25 and 4) within 20%."""
    torch.manual_seed(0)
    n, d = 2000, 4
    x = torch.randn(n, d)
    std = (0.5, 2.0)
    a = torch.randn(2, d)
    y = torch.stack([x @ a[i] + std[i] * torch.randn(n) for i in range(2)])
    trunk = nn.Sequential(nn.Linear(d, 16), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(16, 1) for _ in range(2)])
    method = UncertaintyWeighting()
    method.bind(["quiet", "noisy"])
    opt = torch.optim.Adam(
        list(trunk.parameters()) + list(heads.parameters()) + method.parameters(), lr=0.03
    )

    def losses() -> dict[str, torch.Tensor]:
        h = trunk(x)
        return {
            t: (heads[i](h).squeeze(-1) - y[i]).pow(2).mean()
            for i, t in enumerate(["quiet", "noisy"])
        }

    for _ in range(400):
        opt.zero_grad()
        method.combine(losses()).backward()
        opt.step()
    with torch.no_grad():
        mse = {t: float(v) for t, v in losses().items()}
    var = method.variances()
    for i, t in enumerate(["quiet", "noisy"]):
        assert var[t] == pytest.approx(mse[t], rel=0.2), (t, var, mse)
        assert var[t] == pytest.approx(std[i] ** 2, rel=0.2), (t, var)
    assert var["noisy"] / var["quiet"] > 10  # and the weights 1/(2σ²) follow


def test_uw_parameters_need_bind_and_unknown_tasks_are_errors() -> None:
    method = UncertaintyWeighting()
    with pytest.raises(ValueError, match=r"uw: parameters\(\) before bind"):
        method.parameters()
    method.bind(["a", "b"])
    assert len(method.parameters()) == 2
    with pytest.raises(ValueError, match="task 'c' was not bound"):
        method.combine({"c": torch.tensor(1.0)})
    # a subset of the tasks: only theirs terms
    part = method.combine({"b": torch.tensor(3.0)})
    assert float(part.detach()) == pytest.approx(1.5)
    with pytest.raises(OptionError, match=r"unknown task\(s\) \['z'\]") as err:
        UncertaintyWeighting(kind={"z": "regression"}).bind(["a"])
    assert err.value.option == "kind"


# ----------------------------------------------------------------------------- DWA


def _dwa_expected(k: int, epoch_means: list[list[float]], temperature: float) -> torch.Tensor:
    if len(epoch_means) < 2:
        return torch.ones(k, dtype=torch.float64)
    w = torch.tensor(epoch_means[-1], dtype=torch.float64) / torch.tensor(
        epoch_means[-2], dtype=torch.float64
    )
    e = torch.exp(w / temperature)
    return k * e / e.sum()


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("temperature", [0.5, 2.0, 10.0])
def test_dwa_weights_from_a_known_loss_history(k, temperature) -> None:
    """λ_k = K exp(w_k/T) / Σ exp(w_i/T), w_k = mean loss of the last epoch over the one
    before; λ = 1 for the first two epochs; combine's gradient w.r.t. L_k is λ_k."""
    g = torch.Generator().manual_seed(k)
    method = DynamicWeightAverage(temperature=temperature)
    tasks = [f"t{i}" for i in range(k)]
    means: list[list[float]] = []
    for epoch in range(4):
        losses = _losses(k, seed=epoch)
        weights = torch.stack(torch.autograd.grad(method.combine(losses), list(losses.values())))
        torch.testing.assert_close(
            weights.double(), _dwa_expected(k, means, temperature), rtol=1e-12, atol=0
        )
        assert float(weights.sum()) == pytest.approx(k)
        steps = torch.rand(5, k, generator=g, dtype=torch.float64) * (epoch + 1)
        for row in steps:
            method.after_step(dict(zip(tasks, row)))
        means.append(steps.mean(0).tolist())
        method.on_epoch_end()
    # a task absent from a batch: the present ones get |present| · softmax over them
    present = {t: v for t, v in _losses(k).items() if t != "t0"}
    lam = torch.stack(torch.autograd.grad(method.combine(present), list(present.values()))).double()
    full = _dwa_expected(k, means, temperature)
    torch.testing.assert_close(lam, (k - 1) * full[1:] / full[1:].sum(), rtol=1e-12, atol=0)


def test_dwa_faster_falling_loss_gets_smaller_weight_and_state_round_trips() -> None:
    method = DynamicWeightAverage()
    for epoch_losses in ([4.0, 4.0], [2.0, 4.0]):  # task a halves, task b stays
        for _ in range(3):
            method.after_step(
                {"a": torch.tensor(epoch_losses[0]), "b": torch.tensor(epoch_losses[1])}
            )
        method.on_epoch_end()
    lam = method.weights(["a", "b"])
    assert lam[0] < 1 < lam[1]
    method.after_step({"a": torch.tensor(1.0)})  # an epoch in progress is state too
    clone = DynamicWeightAverage()
    clone.load_state_dict(_json_round_trip(method.state_dict()))
    assert clone.state_dict() == method.state_dict()
    for m in (method, clone):
        m.after_step({"a": torch.tensor(0.5), "b": torch.tensor(4.0)})
        m.on_epoch_end()
    torch.testing.assert_close(
        clone.weights(["a", "b"]), method.weights(["a", "b"]), rtol=0, atol=0
    )


# ----------------------------------------------------------------------------- RLW


@pytest.mark.parametrize("k", K_VALUES)
def test_rlw_weights_are_reproducible_positive_and_sum_to_one(k) -> None:
    losses = _losses(k)
    a, b, c = RandomLossWeighting(seed=3), RandomLossWeighting(seed=3), RandomLossWeighting(seed=4)
    draws = []
    for _ in range(5):
        lam = torch.stack(torch.autograd.grad(a.combine(losses), list(losses.values())))
        torch.testing.assert_close(lam, a.last_weights, rtol=1e-12, atol=0)  # combine = Σ λ_i L_i
        b.combine(losses)
        c.combine(losses)
        assert torch.equal(a.last_weights, b.last_weights)
        assert not torch.equal(a.last_weights, c.last_weights)
        assert bool((lam > 0).all()) and float(lam.sum()) == pytest.approx(1.0, abs=1e-12)
        draws.append(lam)
    assert len({tuple(d.tolist()) for d in draws}) == 5  # fresh weights at every step
    # the weights are softmax(ε) with ε the generator's normal draws
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(k, generator=g, dtype=torch.float64)
    torch.testing.assert_close(draws[0], torch.softmax(eps, 0), rtol=1e-12, atol=0)


def test_rlw_weights_are_uniform_on_average_and_state_round_trips() -> None:
    method = RandomLossWeighting(seed=0)
    mean = torch.stack([method.draw(10) for _ in range(3000)]).mean(0)
    torch.testing.assert_close(mean, torch.full((10,), 0.1, dtype=torch.float64), rtol=0, atol=0.01)
    saved = _json_round_trip(method.state_dict())
    clone = RandomLossWeighting(seed=123)
    clone.load_state_dict(saved)
    assert torch.equal(clone.draw(7), method.draw(7))
    # without seed or generator the draws follow torch's global seed
    torch.manual_seed(5)
    first = RandomLossWeighting().draw(4)
    torch.manual_seed(5)
    assert (
        torch.equal(RandomLossWeighting().draw(4), first)
        and RandomLossWeighting().state_dict() == {}
    )
    own = torch.Generator().manual_seed(9)
    assert torch.equal(
        RandomLossWeighting(generator=own).draw(3),
        torch.softmax(
            torch.randn(3, generator=torch.Generator().manual_seed(9), dtype=torch.float64), 0
        ),
    )


# ----------------------------------------------------------------------------- GLS


@pytest.mark.parametrize("k, scale, dtype", CASES, ids=CASE_IDS)
def test_gls_is_the_geometric_mean_and_its_gradient(k, scale, dtype) -> None:
    """L = (Π L_i)^{1/K}, ∂L/∂L_i = L / (K L_i) — without underflow at K = 40, scale 1e-6."""
    losses = _losses(k, scale, dtype)
    values = _values(losses)
    method = GeometricLossStrategy()
    total = method.combine(losses)
    assert total.dtype == dtype
    expected = math.exp(sum(math.log(v) for v in values.tolist()) / k)
    assert float(total.detach()) == pytest.approx(
        expected, rel=1e-6 if dtype == torch.float32 else 1e-12
    )
    assert expected > 0 and float(total.detach()) > 0
    torch.testing.assert_close(
        _grads(method.combine(losses), losses), expected / (k * values), **_tol(dtype)
    )


def test_gls_rejects_negative_losses_and_survives_a_zero_loss() -> None:
    method = GeometricLossStrategy()
    with pytest.raises(ValueError, match=r"gls: .*negative ones for \['b'\]"):
        method.combine({"a": torch.tensor(1.0), "b": torch.tensor(-0.5)})
    losses = {
        "a": torch.tensor(2.0, requires_grad=True),
        "b": torch.tensor(0.0, requires_grad=True),
    }
    total = method.combine(losses)
    total.backward()
    assert float(total.detach()) < 1e-100 and all(torch.isfinite(v.grad) for v in losses.values())
    with pytest.raises(ValueError, match="no task losses"):
        method.combine({})


# ----------------------------------------------------------------------------- IMTL-L


@pytest.mark.parametrize("k, scale, dtype", CASES, ids=CASE_IDS)
def test_imtl_l_closed_form(k, scale, dtype) -> None:
    """L = Σ e^{s_i} L_i − s_i; ∂L/∂L_i = e^{s_i}; ∂L/∂s_i = e^{s_i} L_i − 1, zero at
    s_i = −log L_i where every scaled loss equals 1."""
    losses = _losses(k, scale, dtype)
    values = _values(losses)
    method = IMTLL()
    method.bind(list(losses))
    s = torch.randn(k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    method.load_state_dict({"scale": dict(zip(losses, s.tolist()))})
    s = torch.tensor(
        list(method.state_dict()["scale"].values()), dtype=torch.float64
    )  # as stored (float32)
    total = method.combine(losses)
    assert total.dtype == dtype
    torch.testing.assert_close(total.double(), (torch.exp(s) * values - s).sum(), **_tol(dtype))
    torch.testing.assert_close(_grads(method.combine(losses), losses), torch.exp(s), **_tol(dtype))
    detached = {t: v.detach() for t, v in losses.items()}
    grads = torch.stack(torch.autograd.grad(method.combine(detached), method.parameters())).double()
    torch.testing.assert_close(
        grads, (torch.exp(s) * values - 1).float().double(), rtol=1e-5, atol=1e-5
    )
    method.load_state_dict({"scale": dict(zip(losses, (-torch.log(values)).tolist()))})
    grads = torch.stack(torch.autograd.grad(method.combine(detached), method.parameters()))
    assert float(grads.abs().max()) < 1e-5
    scaled = {t: method.loss_scales()[t] * float(v) for t, v in detached.items()}
    assert all(v == pytest.approx(1.0, rel=1e-5) for v in scaled.values())


def test_imtl_l_training_equalises_the_scaled_losses() -> None:
    """Trained by the optimiser holding ``parameters()``, e^{s_i} L_i → 1 for losses 1e-3 … 1e3."""
    values = {"a": torch.tensor(1e-3), "b": torch.tensor(1.0), "c": torch.tensor(1e3)}
    method = IMTLL()
    method.bind(list(values))
    opt = torch.optim.Adam(method.parameters(), lr=0.1, betas=(0.9, 0.99))
    for _ in range(1000):
        opt.zero_grad()
        method.combine(values).backward()
        opt.step()
    for t, v in values.items():
        assert method.loss_scales()[t] * float(v) == pytest.approx(1.0, abs=0.02), (
            method.loss_scales()
        )


# ----------------------------------------------------------------------------- shared lifecycle


@pytest.mark.parametrize(
    "make",
    [
        lambda: UncertaintyWeighting(kind="classification", init_log_var=0.3),
        lambda: IMTLL(init_scale=-0.2),
    ],
    ids=["uw", "imtl_l"],
)
def test_learned_scalars_round_trip_in_place(make) -> None:
    """load_state_dict writes into the same Parameters (an optimiser holding them keeps working)."""
    method = make()
    method.bind(["a", "b"])
    params = method.parameters()
    opt = torch.optim.SGD(params, lr=0.1)
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.3)}
    method.combine(losses).backward()
    opt.step()
    saved = _json_round_trip(method.state_dict())
    fresh = make()
    fresh.bind(["a", "b"])
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == method.state_dict()
    assert float(fresh.combine(losses).detach()) == pytest.approx(
        float(method.combine(losses).detach()), rel=1e-7
    )
    method.load_state_dict({next(iter(saved)): {"a": 1.5}})
    assert method.parameters()[0] is params[0] and float(params[0].detach()) == 1.5
    with pytest.raises(ValueError, match="not among the bound tasks"):
        method.load_state_dict({next(iter(saved)): {"zz": 1.0}})
    with pytest.raises(ValueError, match="unknown state keys"):
        method.load_state_dict({"weights": {}})


@pytest.mark.parametrize(
    "build, option",
    [
        (lambda: UncertaintyWeighting(kind="poisson"), "kind"),
        (lambda: UncertaintyWeighting(kind={"a": "ordinal"}), "kind.a"),
        (lambda: UncertaintyWeighting(init_log_var=float("nan")), "init_log_var"),
        (lambda: IMTLL(init_scale="0"), "init_scale"),
        (lambda: DynamicWeightAverage(temperature=0.0), "temperature"),
        (lambda: DynamicWeightAverage(temperature=float("inf")), "temperature"),
        (lambda: RandomLossWeighting(seed=-1), "seed"),
        (lambda: RandomLossWeighting(seed=1, generator=torch.Generator()), "seed"),
        (lambda: RandomLossWeighting(generator=3), "generator"),
    ],
)
def test_bad_options_name_the_option(build, option) -> None:
    with pytest.raises(OptionError) as err:
        build()
    assert err.value.option == option and err.value.fix


@pytest.mark.parametrize(
    "method",
    [
        UncertaintyWeighting(),
        DynamicWeightAverage(),
        RandomLossWeighting(seed=0),
        GeometricLossStrategy(),
        IMTLL(),
    ],
    ids=lambda m: m.name,
)
def test_single_task_and_empty_batches(method) -> None:
    """K = 1 is a valid batch; no task at all is an error naming the cause."""
    loss = torch.tensor(0.7, requires_grad=True)
    total = method.combine({"only": loss})
    (g,) = torch.autograd.grad(total, loss)
    assert torch.isfinite(total) and float(g) > 0
    with pytest.raises(ValueError, match="no task losses"):
        method.combine({})


def test_weights_reach_the_losses_device_without_a_copy_per_step() -> None:
    """host_values_on: weights given as numbers (fixed, DWA, uw's factors) are copied to a
    device once and reused — a copy from pageable host memory would make every step wait
    for the GPU; the meta device stands in for one — and follow the losses' dtype."""
    from polytask.balancing._state import host_values_on, weighted_sum

    like = torch.empty(2, device="meta", dtype=torch.bfloat16)
    first = host_values_on([0.5, 2.0], like)
    assert first.device.type == "meta" and first.dtype == torch.bfloat16
    assert host_values_on([0.5, 2.0], like) is first  # cached, not copied again
    assert host_values_on([0.5, 3.0], like) is not first
    drawn = host_values_on(torch.tensor([0.25, 0.75], dtype=torch.float64), like)
    assert drawn.device.type == "meta" and drawn.dtype == torch.bfloat16
    cpu = torch.tensor([1.0, 4.0], dtype=torch.float64, requires_grad=True)
    total = weighted_sum({"a": cpu[0], "b": cpu[1]}, [0.5, 2.0])
    assert total.dtype == torch.float64 and float(total.detach()) == 8.5
