"""GradVac on the Gramian: a P-dimensional reference with the same orders and targets,
the corrected cosines hit their targets, EMA targets keyed by task names, the first
step (targets 0) is PCGrad."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from jacobians import K_VALUES, jacobian_cases, non_conflicting_jacobian, random_jacobian

from polytask.balancing.gradvac import GradVac, gradvac_coefficients
from polytask.balancing.pcgrad import PCGrad, random_orders


def reference_gradvac(
    jac: torch.Tensor,
    orders,
    targets: dict,
    names: list[str],
    beta: float,
    record: list | None = None,
) -> torch.Tensor:
    """Wang et al.'s rule on the P-dimensional rows (float64); updates ``targets`` in place.

    ``record`` collects (cos(g_i', g_j) after a correction, the target it had to reach)."""
    jac = jac.double()
    out = torch.zeros(jac.shape[1], dtype=torch.float64)
    for i in range(jac.shape[0]):
        g = jac[i].clone()
        for j in orders[i]:
            j = int(j)
            if j == i or g.norm() == 0 or jac[j].norm() == 0:
                continue
            phi = float(g @ jac[j] / (g.norm() * jac[j].norm()))
            hat = targets.get(names[i], {}).get(names[j], 0.0)
            if phi < hat and 1 - hat * hat > 1e-24:
                a = (
                    g.norm()
                    * (hat * math.sqrt(1 - phi * phi) - phi * math.sqrt(1 - hat * hat))
                    / (jac[j].norm() * math.sqrt(1 - hat * hat))
                )
                g = g + a * jac[j]
                if record is not None:
                    record.append((float(g @ jac[j] / (g.norm() * jac[j].norm())), hat))
            targets.setdefault(names[i], {})[names[j]] = (1 - beta) * hat + beta * phi
        out += g
    return out


def test_first_step_is_pcgrad() -> None:
    """Targets start at 0, so the first call projects exactly the conflicting pairs."""
    for case, jac in jacobian_cases():
        d = GradVac(seed=4).aggregate(jac)
        p = PCGrad(seed=4).aggregate(jac)
        tol = 1e-9 if jac.dtype == torch.float64 else 1e-4
        assert (d - p).double().norm() <= tol * max(
            float(p.double().norm()), float(jac.double().norm())
        ), case


def test_matches_the_p_dimensional_reference_over_steps() -> None:
    """Five consecutive steps (targets evolving) with named tasks, every K; the Gramian
    implementation reproduces the reference rule on the rows, targets included."""
    for k in K_VALUES:
        names = [f"t{i}" for i in range(k)]
        losses = {t: torch.tensor(1.0) for t in names}
        method = GradVac(beta=0.3, seed=9)
        gen = torch.Generator().manual_seed(9)
        targets: dict = {}
        for step in range(5):
            jac = random_jacobian(k, 3 * k, seed=step) + 0.8 * random_jacobian(
                1, 3 * k, seed=50
            )  # partly aligned
            d = method.aggregate(jac, losses)
            ref = reference_gradvac(jac, random_orders(k, gen), targets, names, 0.3)
            assert (d - ref).norm() <= 1e-9 * ref.norm(), (k, step)
        state = method.state_dict()["targets"]
        for a in names:
            for b in names:
                if a != b:
                    assert math.isclose(state[a][b], targets[a][b], rel_tol=1e-9, abs_tol=1e-12), (
                        k,
                        a,
                        b,
                    )


def test_a_correction_reaches_its_target_cosine() -> None:
    """After a correction cos(g_i', g_j) equals the target φ̂_ij, on the vectors: K = 2
    straight from the Gramian coefficients (one correction per task), K = 3, 10 along the
    reference rule (which the implementation matches, test above)."""
    jac = random_jacobian(2, 40, seed=3)
    targets = np.full((2, 2), 0.4)
    coeff, after = gradvac_coefficients((jac @ jac.T).numpy(), random_orders(2), targets, 0.01)
    for i, j in ((0, 1), (1, 0)):
        g = torch.from_numpy(coeff[i]) @ jac
        assert math.isclose(float(g @ jac[j] / (g.norm() * jac[j].norm())), 0.4, abs_tol=1e-12)
    cos = float(jac[0] @ jac[1] / (jac[0].norm() * jac[1].norm()))  # before the correction
    assert cos < 0.4
    assert np.allclose(after[[0, 1], [1, 0]], 0.99 * 0.4 + 0.01 * cos, rtol=1e-12)
    for k in (3, 10):
        names = [f"t{i}" for i in range(k)]
        start = {a: {b: 0.4 for b in names if b != a} for a in names}
        record: list = []
        reference_gradvac(
            random_jacobian(k, 40, seed=k),
            random_orders(k, torch.Generator().manual_seed(2)),
            start,
            names,
            0.01,
            record,
        )
        assert len(record) >= k, k
        for cos, target in record:
            assert math.isclose(cos, target, abs_tol=1e-9), (k, cos, target)


def test_targets_follow_the_ema_and_task_names() -> None:
    """φ̂ ← (1 − β) φ̂ + β φ per ordered pair; a batch without task c leaves c's targets
    alone. Non-conflicting rows with targets 0: no correction, targets move to β · cos."""
    jac = non_conflicting_jacobian(3, seed=1)
    cos = (jac @ jac.T) / (jac.norm(dim=1)[:, None] * jac.norm(dim=1)[None, :])
    method = GradVac(beta=0.25, seed=0)
    d = method.aggregate(
        jac, {"a": torch.tensor(1.0), "b": torch.tensor(1.0), "c": torch.tensor(1.0)}
    )
    assert torch.allclose(d, jac.sum(0), rtol=1e-12)
    t = method.state_dict()["targets"]
    for i, a in enumerate("abc"):
        for j, b in enumerate("abc"):
            if i != j:
                assert math.isclose(t[a][b], 0.25 * float(cos[i, j]), rel_tol=1e-12)
    method.aggregate(jac[:2], {"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    t2 = method.state_dict()["targets"]
    assert t2["c"] == t["c"] and t2["a"]["c"] == t["a"]["c"]
    assert math.isclose(t2["a"]["b"], 0.75 * t["a"]["b"] + 0.25 * float(cos[0, 1]), rel_tol=1e-12)


def test_beta_zero_keeps_targets_at_zero_so_it_stays_pcgrad() -> None:
    jac_seq = [random_jacobian(5, 12, seed=s) for s in range(4)]
    vac, pc = GradVac(beta=0.0, seed=1), PCGrad(seed=1)
    for jac in jac_seq:
        assert torch.allclose(vac.aggregate(jac), pc.aggregate(jac), rtol=1e-12)


def test_state_is_validated() -> None:
    method = GradVac()
    method.load_state_dict({"targets": {"a": {"b": 0.5}}})
    assert method.state_dict()["targets"] == {"a": {"b": 0.5}}
    with pytest.raises(ValueError, match="not a cosine"):
        method.load_state_dict({"targets": {"a": {"b": 1.5}}})
