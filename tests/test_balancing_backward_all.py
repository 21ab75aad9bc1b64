"""Every registered method through ``balancing.backward``: with plain per-task gradients
computed separately, each shared and each task parameter's ``.grad`` equals the expected
combination, at every level the method allows, for K in (2, 3, 10, 40).

Loss weightings: every parameter gets ∇ combine(L) (task parameters λ_i ∇L_i). Gradient
methods: task parameters get their own ∇L_i; shared parameters get the method's update of
the per-task gradients — at the parameter level ``aggregate(J)``, at the feature level the
trunk's vector-Jacobian product with the update of the feature gradients (K, B, F). A
fresh twin of the method (same options and seed) computes the reference, so stateful and
randomised methods are covered too."""

from __future__ import annotations

import inspect

import pytest
import torch
from jacobians import K_VALUES

from polytask import balancing
from polytask.balancing import GramianWeighting, LossWeighting


def _make(name: str):
    cls = balancing.METHODS[name]
    params = inspect.signature(cls).parameters
    return balancing.make(name, **({"seed": 0} if "seed" in params else {}))


def _model(k: int):
    torch.manual_seed(k)
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh()).double()
    heads = [torch.nn.Linear(7, 1).double() for _ in range(k)]
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randn(6, k, dtype=torch.float64)

    def forward():
        z = trunk(x)
        return z, {
            f"t{i}": ((h(z).squeeze(1) - y[:, i]) ** 2).mean() * (i + 1)
            for i, h in enumerate(heads)
        }

    return trunk, heads, forward


CASES = [
    (name, level)
    for name in balancing.available()
    for level in ("features", "params")
    if level in balancing.METHODS[name].levels
]


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("name, level", CASES)
def test_backward_equals_the_hand_combination(name: str, level: str, k: int) -> None:
    trunk, heads, forward = _model(k)
    shared = list(trunk.parameters())
    head_params = [p for h in heads for p in h.parameters()]
    reference, method = _make(name), _make(name)
    tasks = [f"t{i}" for i in range(k)]
    reference.bind(tasks)
    method.bind(tasks)

    z, losses = forward()
    detached = {t: v.detach() for t, v in losses.items()}
    if isinstance(reference, LossWeighting):
        expected = torch.autograd.grad(
            reference.combine(losses), shared + head_params, allow_unused=True
        )
        expected = [
            torch.zeros_like(p) if g is None else g for p, g in zip(shared + head_params, expected)
        ]
    else:
        own = [
            torch.autograd.grad(losses[f"t{i}"], list(h.parameters()), retain_graph=True)
            for i, h in enumerate(heads)
        ]
        if level == "params":
            rows = [
                torch.cat(
                    [g.reshape(-1) for g in torch.autograd.grad(v, shared, retain_graph=True)]
                )
                for v in losses.values()
            ]
            update = reference.aggregate(torch.stack(rows), detached)
            trunk_grads = list(update.split([p.numel() for p in shared]))
            trunk_grads = [g.reshape(p.shape) for g, p in zip(trunk_grads, shared)]
        else:
            jz = torch.stack(
                [torch.autograd.grad(v, z, retain_graph=True)[0] for v in losses.values()]
            )
            if isinstance(reference, GramianWeighting):
                flat = jz.reshape(k, -1)
                dz = (reference.weights(flat @ flat.T, detached) @ flat).reshape(z.shape)
            else:
                dz = reference.aggregate(jz, detached)
            trunk_grads = list(torch.autograd.grad(z, shared, grad_outputs=dz, retain_graph=True))
        expected = trunk_grads + [g for gs in own for g in gs]

    z, losses = forward()
    balancing.backward(losses, method=method, features=z, shared=shared, level=level)
    for p, e in zip(shared + head_params, expected):
        got = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(got, e, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(
    "name, level",
    [("fixed", None), ("mgda", "features"), ("mgda", "params"), ("graddrop", "features")],
)
def test_a_penalty_adds_its_plain_gradient(name: str, level: str | None) -> None:
    """The model's penalty (soft-sharing tie, representation similarity) is not balanced:
    every parameter gets the balanced update of the losses plus the penalty's gradient."""
    trunk, heads, forward = _model(3)
    shared = list(trunk.parameters())
    params = shared + [p for h in heads for p in h.parameters()]

    def penalty_of(z):  # reaches the trunk directly and through z, and two heads
        return 0.3 * trunk[0].weight.pow(2).sum() + 0.2 * (heads[0](z) * heads[1](z)).mean()

    z, losses = forward()
    balancing.backward(losses, method=_make(name), features=z, shared=shared, level=level)
    without = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    z, _ = forward()
    plain = torch.autograd.grad(penalty_of(z), params, allow_unused=True)
    z, losses = forward()
    balancing.backward(
        losses, method=_make(name), features=z, shared=shared, level=level, penalty=penalty_of(z)
    )
    for p, w, g in zip(params, without, plain):
        torch.testing.assert_close(p.grad, w + (0 if g is None else g), rtol=1e-7, atol=1e-10)
