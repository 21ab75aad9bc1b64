"""GradDrop: nothing dropped where all signs agree; each output coordinate is the sum of one
sign's gradients, the positive one chosen with probability P; leak; the batch-separated
rule; reproducible draws."""

from __future__ import annotations

import torch
from jacobians import DTYPES, K_VALUES, SCALES, random_jacobian

from polytask.balancing.graddrop import GradDrop


def test_nothing_is_dropped_where_all_gradients_share_a_sign() -> None:
    for k in K_VALUES:
        for dtype in DTYPES:
            jac = random_jacobian(k, 50, seed=k, dtype=dtype).abs()
            jac[:, 25:] *= -1  # all negative on the second half
            for seed in range(5):
                assert torch.equal(GradDrop(seed=seed).aggregate(jac), jac.sum(0)), (k, dtype, seed)


def test_each_coordinate_sums_one_signs_gradients() -> None:
    """Output_p ∈ {Σ_i max(g_ip, 0), Σ_i min(g_ip, 0)}: all gradients of the chosen sign
    pass together, none of the other (no leak)."""
    for k in K_VALUES:
        for scale in SCALES:
            jac = random_jacobian(k, 200, seed=k, scale=scale)
            d = GradDrop(seed=k).aggregate(jac)
            pos, neg = jac.clamp(min=0).sum(0), jac.clamp(max=0).sum(0)
            assert bool(((d == pos) | (d == neg)).all()), (k, scale)
            if k >= 3:  # with mixed signs, both choices occur somewhere
                mixed = (pos != 0) & (neg != 0)
                assert bool((d[mixed] == pos[mixed]).any() and (d[mixed] == neg[mixed]).any()), k


def test_the_positive_side_wins_with_probability_p() -> None:
    """P = ½(1 + Σg/Σ|g|): over 40,000 draws at a coordinate with gradients (3, −1),
    P = 0.75 and the positive side is kept 75 % of the time (±1.5 %)."""
    jac = torch.tensor([[3.0, 2.0], [-1.0, -2.0]], dtype=torch.float64).repeat(
        1, 20000
    )  # P = 0.75 and 0.5
    d = GradDrop(seed=0).aggregate(jac).reshape(20000, 2)
    kept_pos = (d > 0).double().mean(0)
    assert abs(float(kept_pos[0]) - 0.75) < 0.015 and abs(float(kept_pos[1]) - 0.5) < 0.015, (
        kept_pos
    )


def test_leak_lets_a_fraction_through() -> None:
    """d = Σ_i (ℓ_i + (1 − ℓ_i) M_i) g_i: leak 1 is the sum; a per-task leak mapping applies
    to its task only (the others default to 0)."""
    jac = random_jacobian(4, 300, seed=1)
    names = {t: torch.tensor(1.0) for t in "abcd"}
    assert torch.allclose(GradDrop(leak=1.0, seed=0).aggregate(jac), jac.sum(0), rtol=1e-14)
    pure = GradDrop(seed=3).aggregate(jac, names)
    half_b = GradDrop(leak={"b": 0.5}, seed=3).aggregate(jac, names)
    mask_b = ((pure == jac.clamp(min=0).sum(0)) & (jac[1] > 0)) | (
        (pure == jac.clamp(max=0).sum(0)) & (jac[1] < 0)
    )
    expected = pure + torch.where(mask_b, torch.zeros_like(jac[1]), 0.5 * jac[1])
    assert torch.allclose(half_b, expected, rtol=1e-12, atol=1e-15)


def test_batch_separated_rule() -> None:
    """J of shape (K, B, F): P and the masks come from the batch sums (K, F) and apply to
    every example; the output has shape (B, F) and its batch sum picks one sign of the
    summed gradients per feature."""
    jac = random_jacobian(3, 8 * 40, seed=2).reshape(3, 8, 40)
    d = GradDrop(seed=1).aggregate(jac)
    assert d.shape == (8, 40)
    summed = jac.sum(1)
    keep_pos = d.sum(0) == (jac * (summed > 0).unsqueeze(1)).sum(0).sum(0)
    keep_neg = d.sum(0) == (jac * (summed < 0).unsqueeze(1)).sum(0).sum(0)
    assert bool((keep_pos | keep_neg).all())
    for f in range(40):  # every example follows its feature's choice
        kept = (summed[:, f] > 0) if keep_pos[f] else (summed[:, f] < 0)
        assert torch.allclose(d[:, f], (jac[:, :, f] * kept.unsqueeze(1)).sum(0), rtol=1e-14), f
    # flattened input: every (example, feature) is its own coordinate
    flat = GradDrop(seed=1).aggregate(jac.reshape(3, -1))
    assert flat.shape == (320,)


def test_draws_are_reproducible() -> None:
    jac = random_jacobian(5, 500, seed=4)
    a = GradDrop(seed=7).aggregate(jac)
    assert torch.equal(a, GradDrop(seed=7).aggregate(jac))
    assert torch.equal(a, GradDrop(generator=torch.Generator().manual_seed(7)).aggregate(jac))
    assert not torch.equal(a, GradDrop(seed=8).aggregate(jac))
    torch.manual_seed(3)
    b = GradDrop().aggregate(jac)
    torch.manual_seed(3)
    assert torch.equal(b, GradDrop().aggregate(jac))


def test_through_backward_the_trunk_gets_the_batch_summed_rule() -> None:
    """At the feature level the engine hands GradDrop (K, B, F), so sign purity comes from
    batch sums (Chen et al. 2020), and the trunk receives exactly that update."""
    from polytask.balancing import backward

    torch.manual_seed(0)
    trunk, heads = (
        torch.nn.Linear(5, 6).double(),
        [torch.nn.Linear(6, 1).double() for _ in range(3)],
    )
    x = torch.randn(8, 5, dtype=torch.float64)

    def losses_and_z():
        z = trunk(x)
        return {f"t{i}": (h(z) - i).pow(2).mean() for i, h in enumerate(heads)}, z

    losses, z = losses_and_z()
    per_task = torch.stack(
        [torch.autograd.grad(v, z, retain_graph=True)[0] for v in losses.values()]
    )  # (K, B, F)
    expected_dz = GradDrop(seed=3).aggregate(per_task, {t: v.detach() for t, v in losses.items()})
    expected = torch.autograd.grad(z, trunk.weight, grad_outputs=expected_dz)[0]
    losses, z = losses_and_z()
    backward(losses, method=GradDrop(seed=3), features=z)
    torch.testing.assert_close(trunk.weight.grad, expected, rtol=1e-12, atol=1e-12)
    flat = GradDrop(seed=3).aggregate(per_task.reshape(3, -1))
    assert not torch.allclose(flat.reshape(8, 6), expected_dz), (
        "the per-example rule must differ here"
    )
