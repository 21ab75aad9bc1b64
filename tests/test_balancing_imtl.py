"""IMTL (hybrid): IMTL-G weights on the gradients of the IMTL-L-scaled losses, scales learned
through s.grad = e^s L − 1."""

from __future__ import annotations

import json
import math

import pytest
import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian
from torch import nn

from polytask import balancing
from polytask.balancing.imtl import IMTL
from polytask.balancing.imtl_g import IMTLG, imtl_g_weights
from polytask.errors import OptionError

CASES = [(k, s, d) for k in K_VALUES for s in SCALES for d in DTYPES]
CASE_IDS = [f"K{k}-s{s:g}-{str(d)[6:]}" for k, s, d in CASES]


def _bound(k: int, seed: int = 0, spread: float = 1.0) -> tuple[IMTL, torch.Tensor]:
    method = IMTL()
    names = [f"t{i}" for i in range(k)]
    method.bind(names)
    s = spread * torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    method.load_state_dict({"scale": dict(zip(names, s.tolist()))})
    stored = torch.tensor(list(method.state_dict()["scale"].values()), dtype=torch.float64)
    return method, stored


@pytest.mark.parametrize("k, scale, dtype", CASES, ids=CASE_IDS)
def test_imtl_is_imtl_g_on_the_scaled_gradients(k, scale, dtype) -> None:
    """weights = α(D G D) ⊙ e^s with D = diag(e^s): the update equals IMTL-G's on the rows
    e^{s_i} g_i, has equal projections onto every unit task gradient, and Σ α_i = 1."""
    p = max(2 * k, 8)  # full row rank
    jac = random_jacobian(k, p, seed=k, scale=scale, dtype=dtype)
    method, s = _bound(k, seed=k)
    e = torch.exp(s)
    w = method.weights(jac @ jac.T)
    assert w.dtype == dtype
    alpha = w.double() / e
    assert float(alpha.sum()) == pytest.approx(1.0, rel=1e-4 if dtype == torch.float32 else 1e-9)
    d = method.aggregate(jac)
    reference = IMTLG().aggregate((jac.double() * e.unsqueeze(1)).to(dtype))
    tol = (
        {"rtol": 2e-3, "atol": 1e-3 * float(reference.abs().max())}
        if dtype == torch.float32
        else {"rtol": 1e-7, "atol": 1e-9 * float(reference.abs().max())}
    )
    torch.testing.assert_close(d, reference, **tol)
    j64 = jac.double()
    proj = (j64 / j64.norm(dim=1, keepdim=True)) @ d.double()
    torch.testing.assert_close(proj, proj.mean().expand(k), **tol)
    assert float(proj.mean()) > 0


@pytest.mark.parametrize("k", K_VALUES)
def test_imtl_with_zero_scales_is_imtl_g(k) -> None:
    jac = random_jacobian(k, 3 * k, seed=1)
    method = IMTL()
    method.bind([f"t{i}" for i in range(k)])
    torch.testing.assert_close(
        method.weights(jac @ jac.T), imtl_g_weights(jac @ jac.T), rtol=1e-12, atol=1e-15
    )


def test_imtl_scales_get_the_imtl_l_gradient_and_are_learned() -> None:
    """weights(G, losses) adds e^{s_i} L_i − 1 to s_i.grad; with the optimiser over
    parameters() the scaled losses e^{s_i} L_i go to 1."""
    method, s = _bound(3, seed=2)
    jac = random_jacobian(3, 9, seed=2)
    losses = {"t0": torch.tensor(0.01), "t1": torch.tensor(1.0), "t2": torch.tensor(50.0)}
    method.weights(jac @ jac.T, losses)
    grads = torch.tensor([float(p.grad) for p in method.parameters()], dtype=torch.float64)
    expected = torch.exp(s) * torch.tensor([0.01, 1.0, 50.0], dtype=torch.float64) - 1
    torch.testing.assert_close(grads, expected, rtol=1e-6, atol=1e-6)
    method.weights(jac @ jac.T, losses)  # accumulates, like backward
    torch.testing.assert_close(
        torch.tensor([float(p.grad) for p in method.parameters()], dtype=torch.float64),
        2 * expected,
        rtol=1e-6,
        atol=1e-6,
    )
    opt = torch.optim.Adam(method.parameters(), lr=0.1, betas=(0.9, 0.99))
    for _ in range(600):
        opt.zero_grad()
        method.weights(jac @ jac.T, losses)
        opt.step()
    for t, v in losses.items():
        assert method.loss_scales()[t] * float(v) == pytest.approx(1.0, abs=0.02)


def test_imtl_through_backward_fills_the_shared_and_scale_gradients() -> None:
    """balancing.backward at level params: shared parameters get (α ⊙ e^s)ᵀ J, the scales
    their IMTL-L gradient; task heads their own ∇L_i."""
    torch.manual_seed(0)
    trunk = nn.Linear(4, 6)
    heads = nn.ModuleList([nn.Linear(6, 1) for _ in range(3)])
    x, y = torch.randn(16, 4), torch.randn(3, 16)
    method, s = _bound(3, seed=4)

    def losses() -> dict[str, torch.Tensor]:
        h = torch.tanh(trunk(x))
        return {f"t{i}": (heads[i](h).squeeze(-1) - y[i] * (i + 1)).pow(2).mean() for i in range(3)}

    per_task = [
        torch.cat([g.flatten() for g in torch.autograd.grad(losses()[t], list(trunk.parameters()))])
        for t in ("t0", "t1", "t2")
    ]
    jac = torch.stack(per_task).double()
    values = {t: v.detach() for t, v in losses().items()}
    e = torch.exp(s)
    alpha = imtl_g_weights((e.unsqueeze(1) * (jac @ jac.T) * e.unsqueeze(0)).float()).double()
    expected = (alpha * e) @ jac
    head_grads = [torch.autograd.grad(losses()[f"t{i}"], heads[i].weight)[0] for i in range(3)]
    balancing.backward(losses(), method=method, shared=list(trunk.parameters()), level="params")
    for i in range(3):
        torch.testing.assert_close(heads[i].weight.grad, head_grads[i])
    got = torch.cat([p.grad.flatten() for p in trunk.parameters()]).double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    s_grad = torch.tensor([float(p.grad) for p in method.parameters()], dtype=torch.float64)
    torch.testing.assert_close(
        s_grad,
        e * torch.tensor([float(v) for v in values.values()], dtype=torch.float64) - 1,
        rtol=1e-5,
        atol=1e-6,
    )


def test_imtl_state_round_trip_bind_and_options() -> None:
    method, _ = _bound(2, seed=5)
    params = method.parameters()
    saved = json.loads(json.dumps(method.state_dict()))
    other = IMTL()
    other.bind(["t0", "t1"])
    other.load_state_dict(saved)
    g = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    assert torch.equal(other.weights(g), method.weights(g))
    method.load_state_dict({"scale": {"t0": 0.25}})
    assert method.parameters()[0] is params[0] and math.isclose(float(params[0].detach()), 0.25)
    with pytest.raises(ValueError, match=r"imtl: parameters\(\) before bind"):
        IMTL().parameters()
    with pytest.raises(ValueError, match="task 'zz' was not bound"):
        method.weights(torch.eye(1), {"zz": torch.tensor(1.0)})
    with pytest.raises(OptionError) as err:
        IMTL(init_scale=float("inf"))
    assert err.value.option == "init_scale"
    # a third party without bind: scales created on first use (IMTL-G until trained)
    free = IMTL()
    torch.testing.assert_close(free.weights(g.double()), imtl_g_weights(g.double()))
