"""DB-MTL: gradients of the log-losses, averaged over steps, each rescaled to the largest norm."""

from __future__ import annotations

import json

import pytest
import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian, structured_jacobian

from polytask.balancing.db_mtl import DBMTL
from polytask.errors import DataError, OptionError

CASES = [(k, s, d) for k in K_VALUES for s in SCALES for d in DTYPES]
CASE_IDS = [f"K{k}-s{s:g}-{str(d)[6:]}" for k, s, d in CASES]


def _losses(k: int, seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"t{i}": scale * (torch.rand((), generator=g, dtype=torch.float64) + 0.1) for i in range(k)
    }


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 0.0} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 0.0}


def _reference(jacs, losses_seq, beta=0.9, sigma=0.0, eps=1e-8):
    """Algorithm 1 of the paper, written out in float64."""
    buf = None
    out = []
    for t, (jac, losses) in enumerate(zip(jacs, losses_seq), start=1):
        vals = torch.tensor([float(v) for v in losses.values()], dtype=torch.float64)
        g = jac.double() / (vals + eps).unsqueeze(1)
        b = beta / t**sigma
        buf = (1 - b) * g if buf is None else b * buf + (1 - b) * g
        norms = buf.norm(dim=1)
        out.append(((norms.max() / (norms + eps)).unsqueeze(1) * buf).sum(0))
    return out


@pytest.mark.parametrize("k, scale, dtype", CASES, ids=CASE_IDS)
def test_db_mtl_matches_the_algorithm_over_three_steps(k, scale, dtype) -> None:
    jacs = [random_jacobian(k, 25, seed=k + s, scale=scale, dtype=dtype) for s in range(3)]
    losses = [_losses(k, seed=s) for s in range(3)]
    method = DBMTL(beta=0.8, beta_sigma=0.5)
    expected = _reference(jacs, losses, beta=0.8, sigma=0.5)
    for jac, ls, exp in zip(jacs, losses, expected):
        d = method.aggregate(jac, ls)
        assert d.dtype == dtype and d.shape == (25,)
        torch.testing.assert_close(d.double(), exp, **_tol(dtype))


@pytest.mark.parametrize("k", K_VALUES)
def test_db_mtl_every_rescaled_task_gradient_has_the_largest_norm(k) -> None:
    """d = Σ_i c_i ĝ_i with ‖c_i ĝ_i‖ = max_j ‖ĝ_j‖ for every i (gradient-magnitude balancing),
    also on the structured Jacobian with row norms over 1e-1 … 1e3."""
    jac = structured_jacobian(k, seed=k)
    losses = _losses(k, seed=k)
    method = DBMTL()
    method.aggregate(jac, losses)
    buf = torch.stack([method.buffers[t] for t in losses])
    norms = buf.norm(dim=1)
    coeff = norms.max() / (norms + method.eps)
    torch.testing.assert_close(
        coeff * norms, torch.full((k,), float(norms.max()), dtype=torch.float64), rtol=1e-5, atol=0
    )  # up to the ε in the denominator


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("unit", [1e-6, 1e3])
def test_db_mtl_is_blind_to_each_losss_units(k, unit) -> None:
    """Multiplying task 0's loss by a constant (so its value and gradient) leaves every update
    unchanged: log-loss scale balancing."""
    a, b = DBMTL(eps=1e-30), DBMTL(eps=1e-30)  # the property holds where L_i ≫ ε
    for s in range(3):
        jac = random_jacobian(k, 20, seed=s)
        losses = _losses(k, seed=s)
        scaled_jac = jac.clone()
        scaled_jac[0] *= unit
        scaled = dict(losses)
        scaled["t0"] = losses["t0"] * unit
        torch.testing.assert_close(
            b.aggregate(scaled_jac, scaled), a.aggregate(jac, losses), rtol=1e-8, atol=0
        )


def test_db_mtl_average_converges_and_losses_none_means_log_gradients() -> None:
    jac = random_jacobian(3, 10, seed=1)
    losses = _losses(3, seed=1)
    method = DBMTL(beta=0.5)
    for _ in range(60):
        d = method.aggregate(jac, losses)
    g = jac / torch.tensor(
        [float(v) + 1e-8 for v in losses.values()], dtype=torch.float64
    ).unsqueeze(1)
    n = g.norm(dim=1)
    torch.testing.assert_close(
        d, ((n.max() / (n + 1e-8)).unsqueeze(1) * g).sum(0), rtol=1e-10, atol=0
    )
    # without losses the rows are taken as gradients of the log-losses already
    other = DBMTL(beta=0.5)
    for _ in range(60):
        d2 = other.aggregate(g)
    torch.testing.assert_close(d2, d, rtol=1e-10, atol=0)


def test_db_mtl_missing_tasks_state_round_trip_and_errors() -> None:
    method = DBMTL()
    jac = random_jacobian(3, 8, seed=0, dtype=torch.float32)
    losses = _losses(3)
    method.aggregate(jac, losses)
    kept = method.buffers["t1"].clone()
    method.aggregate(jac[[0, 2]], {"t0": losses["t0"], "t2": losses["t2"]})
    assert torch.equal(method.buffers["t1"], kept)
    clone = DBMTL()
    clone.load_state_dict(json.loads(json.dumps(method.state_dict(), default=lambda o: o.tolist())))
    assert clone.step == method.step
    for s in range(2):
        j = random_jacobian(3, 8, seed=s + 5, dtype=torch.float32)
        assert torch.equal(clone.aggregate(j, losses), method.aggregate(j, losses))
    with pytest.raises(DataError, match="5 gradient entries but the task's average has 8"):
        method.aggregate(random_jacobian(3, 5), losses)
    with pytest.raises(ValueError, match="unknown state keys"):
        method.load_state_dict({"ema": {}})
    assert DBMTL.levels == ("params",) and DBMTL.needs == "jacobian"
    single = DBMTL().aggregate(torch.tensor([[3.0, 4.0]]), {"a": torch.tensor(2.0)})
    torch.testing.assert_close(single, torch.tensor([3.0, 4.0]) * 0.1 / (2.0 + 1e-8))


@pytest.mark.parametrize(
    "option, value",
    [("beta", 1.0), ("beta", -0.1), ("beta_sigma", -1.0), ("eps", 0.0), ("beta", "0.9")],
)
def test_db_mtl_bad_options(option, value) -> None:
    with pytest.raises(OptionError) as err:
        DBMTL(**{option: value})
    assert err.value.option.partition(".")[0] == option and err.value.fix  # min_losses.a
