"""PCGrad on the Gramian: the sum when nothing conflicts, orthogonality after every
projection (checked on the full P-dimensional vectors), equality with a P-dimensional
reference implementation, reproducibility."""

from __future__ import annotations

import torch
from jacobians import (
    K_VALUES,
    SCALES,
    conflicting_pair,
    jacobian_cases,
    non_conflicting_jacobian,
    random_jacobian,
)

from polytask.balancing.pcgrad import PCGrad, random_orders


def reference_pcgrad(jac: torch.Tensor, orders, record: list | None = None) -> torch.Tensor:
    """Yu et al.'s Algorithm 1 on the P-dimensional rows (float64), with given orders.

    ``record`` collects (projected g_i^PC, g_j) after every projection."""
    jac = jac.double()
    out = torch.zeros(jac.shape[1], dtype=torch.float64)
    for i in range(jac.shape[0]):
        g = jac[i].clone()
        for j in orders[i]:
            j = int(j)
            if j == i:
                continue
            dot = g @ jac[j]
            if dot < 0 and jac[j] @ jac[j] > 0:
                g = g - dot / (jac[j] @ jac[j]) * jac[j]
                if record is not None:
                    record.append((g.clone(), jac[j]))
        out += g
    return out


def test_equals_the_sum_when_no_pair_conflicts() -> None:
    for k in K_VALUES:
        jac = non_conflicting_jacobian(k, seed=k)
        d = PCGrad(seed=0).aggregate(jac)
        assert torch.allclose(d, jac.sum(0), rtol=1e-12, atol=0), k
        assert torch.allclose(
            PCGrad(seed=0).weights(jac @ jac.T), torch.ones(k, dtype=torch.float64)
        )


def test_two_conflicting_gradients_by_hand() -> None:
    """g1 = (1, 0), g2 = (−½, 1): g1^PC = g1 + ½/1.25 g2 = (0.8, 0.4), g2^PC = g2 + ½ g1 = (0,
    1)."""
    jac = conflicting_pair()
    d = PCGrad(seed=0).aggregate(jac)
    assert torch.allclose(d, torch.tensor([0.8, 1.4], dtype=torch.float64), rtol=1e-14)


def test_each_projection_is_orthogonal_to_the_gradient_it_was_projected_on() -> None:
    """On the full vectors: after every projection, ⟨g_i^PC, g_j⟩ = 0 (to rounding)."""
    for case, jac in jacobian_cases():
        jac = jac.double()
        k = jac.shape[0]
        record: list = []
        reference_pcgrad(jac, random_orders(k, torch.Generator().manual_seed(1)), record)
        for g, gj in record:
            scale = float(g.norm() * gj.norm()) + 1e-300
            assert abs(float(g @ gj)) <= 1e-10 * scale, case
        if k >= 3 and "random" in case:
            assert record, case  # random rows do conflict: projections happened


def test_equals_the_p_dimensional_reference() -> None:
    """The Gramian computation gives Algorithm 1's result on the rows, for the same orders,
    at every K, scale and dtype (float32 rows: the reference runs on the same float32
    values in float64)."""
    for case, jac in jacobian_cases():
        k = jac.shape[0]
        d = PCGrad(seed=3).aggregate(jac)
        ref = reference_pcgrad(jac, random_orders(k, torch.Generator().manual_seed(3)))
        rtol = 1e-9 if jac.dtype == torch.float64 else 1e-3
        scale = float(jac.double().norm(dim=1).max())
        assert (d.double() - ref).norm() <= rtol * max(float(ref.norm()), scale), case


def test_orders_come_from_the_generator() -> None:
    jac = random_jacobian(10, 30, seed=0)
    a = PCGrad(seed=7).aggregate(jac)
    assert torch.equal(a, PCGrad(seed=7).aggregate(jac))
    assert torch.equal(a, PCGrad(generator=torch.Generator().manual_seed(7)).aggregate(jac))
    assert not torch.allclose(
        a, PCGrad(seed=8).aggregate(jac)
    )  # K = 10 conflicting rows: order matters
    torch.manual_seed(11)
    b = PCGrad().aggregate(jac)  # no seed: torch's global generator
    torch.manual_seed(11)
    assert torch.equal(b, PCGrad().aggregate(jac))
    method = PCGrad(seed=7)
    assert not torch.equal(method.aggregate(jac), method.aggregate(jac))  # the generator advances


def test_random_orders_are_permutations() -> None:
    orders = random_orders(40, torch.Generator().manual_seed(0))
    assert orders.shape == (40, 40)
    assert all(sorted(row.tolist()) == list(range(40)) for row in orders)


def test_never_worse_than_projected_for_two_tasks() -> None:
    """K = 2: the update has non-negative inner product with both gradients (PCGrad's
    conflict removal), at every scale."""
    for scale in SCALES:
        for seed in range(20):
            jac = random_jacobian(2, 5, seed=seed, scale=scale)
            d = PCGrad(seed=0).aggregate(jac)
            assert bool(((jac @ d) >= -1e-12 * float(jac.norm()) * float(d.norm())).all()), (
                scale,
                seed,
            )
