"""The one Gramian path (``balancing._gramian``), its precision policy, the GramianWeighting
template, and the shared helpers of ``balancing._state`` / ``balancing._options``.

Policy: G accumulated in float32 or better (float64 rows: float64; float32: float32; bf16 and
fp16 rows upcast to float32 before the product), solved in float64 with the tolerance of the
accumulation dtype, the weights applied in J's dtype; ``aggregate()`` and ``backward()`` take
the same path, so they give the same update.
"""

from __future__ import annotations

import pickle
from typing import Mapping

import pytest
import torch
from jacobians import random_jacobian, structured_jacobian
from torch import Tensor

from polytask import balancing
from polytask.balancing import _gramian
from polytask.balancing._state import check_state_keys
from polytask.balancing.base import GramianWeighting
from polytask.balancing.mgda import MGDA
from polytask.errors import OptionError

GRAMIAN_METHODS = sorted(
    n for n in balancing.available() if isinstance(balancing.make(n), GramianWeighting)
)
EPS32, EPS64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps


class Spy(GramianWeighting):
    """The smallest Gramian method: the template does the rest. Records what ``_solve`` gets."""

    name = "spy"

    def __init__(self) -> None:
        self.calls: list[tuple[torch.dtype, str, float, list[str]]] = []

    def _solve(
        self, gramian: Tensor, eps: float, names: list[str], losses: Mapping[str, Tensor] | None
    ) -> Tensor:
        self.calls.append((gramian.dtype, str(gramian.device), eps, names))
        return torch.full((len(names),), 1.0 / len(names), dtype=torch.float64)


# ------------------------------------------------------------------ the precision policy
@pytest.mark.parametrize(
    "dtype, acc, eps",
    [
        (torch.float64, torch.float64, EPS64),
        (torch.float32, torch.float32, EPS32),
        (torch.bfloat16, torch.float32, EPS32),
        (torch.float16, torch.float32, EPS32),
    ],
)
def test_accumulation_dtype_and_what_the_solver_is_given(dtype, acc, eps) -> None:
    jac = random_jacobian(3, 7, seed=1).to(dtype)
    assert _gramian.accumulation_dtype(dtype) == acc
    g = _gramian.gramian([jac[:, :4], jac[:, 4:]])
    assert g.dtype == acc and not g.requires_grad
    spy = Spy()
    d = spy.aggregate(jac, {"a": torch.tensor(1.0), "b": torch.tensor(1.0), "c": torch.tensor(1.0)})
    assert d.dtype == dtype  # applied in J's dtype
    # solved in float64 on the CPU, with the unit roundoff of the accumulation dtype
    assert spy.calls == [(torch.float64, "cpu", eps, ["a", "b", "c"])]


def test_bf16_rows_are_upcast_before_the_product() -> None:
    """Near-parallel bf16 rows g1 = (16, 1), g2 = (16, −2): their bf16 Gramian rounds
    G11 = 257 to 256 and MGDA's weights from it are (3/4, 1/4), d = (16, 1/4). The policy
    forms G in float32 (bf16 products are exact there) and finds the min-norm point
    d = (16, 0), w = (2/3, 1/3), on both paths."""
    jac = torch.tensor([[16.0, 1.0], [16.0, -2.0]], dtype=torch.bfloat16)
    lost = MGDA().weights(jac @ jac.T)  # a Gramian formed in bf16 loses the answer:
    # its entries are known to bf16's 8 bits, which resolve no update (MGDA returns 0;
    # exact arithmetic on the rounded entries would give (3/4, 1/4))
    assert not torch.allclose(lost.float(), torch.tensor([2 / 3, 1 / 3]), atol=0.05)
    g = _gramian.gramian([jac])
    assert torch.equal(g, torch.tensor([[257.0, 254.0], [254.0, 260.0]]))
    torch.testing.assert_close(
        MGDA().weights(g), torch.tensor([2 / 3, 1 / 3]), rtol=1e-6, atol=1e-7
    )
    assert torch.equal(MGDA().aggregate(jac).float(), torch.tensor([16.0, 0.0]))
    x = torch.zeros(2, dtype=torch.bfloat16, requires_grad=True)
    balancing.backward(
        {"a": jac[0] @ x, "b": jac[1] @ x}, method=MGDA(), shared=[x], level="params"
    )
    assert x.grad is not None and torch.equal(x.grad.float(), torch.tensor([16.0, 0.0]))


def test_fp16_rows_do_not_overflow() -> None:
    """An fp16 Gramian overflows past 65504 (inf, then NaN weights); the policy's float32
    Gramian does not, and the update is the float64 one rounded to fp16."""
    jac = torch.tensor([[300.0, 200.0], [250.0, -100.0]], dtype=torch.float16)
    assert bool(torch.isinf(jac @ jac.T).any())
    assert bool(torch.isnan(MGDA().weights(jac @ jac.T)).all())
    torch.testing.assert_close(
        MGDA().aggregate(jac), MGDA().aggregate(jac.double()).half(), rtol=2e-3, atol=0.1
    )


def test_a_block_that_must_be_upcast_is_upcast_in_chunks(monkeypatch) -> None:
    jac = random_jacobian(4, 300, seed=3).to(torch.bfloat16)
    whole = _gramian.gramian([jac[:, :120], jac[:, 120:]])
    monkeypatch.setattr(_gramian, "CHUNK_BYTES", 4 * 4 * 16)  # 16 columns at a time
    torch.testing.assert_close(
        _gramian.gramian([jac[:, :120], jac[:, 120:]]), whole, rtol=1e-6, atol=1e-5
    )
    exact = jac.double() @ jac.double().T
    torch.testing.assert_close(whole.double(), exact, rtol=1e-6, atol=1e-4)


def test_float32_rows_keep_a_float32_gramian() -> None:
    """The documented trade-off: float32 rows are accumulated in float32 (float64 would cost
    ~20 % of a feature-level step at K = 40), so on an ill-conditioned J the answer is exact
    for the float32 Gramian, not for the float64 one."""
    jac = structured_jacobian(10, seed=310, dtype=torch.float32)
    g = _gramian.gramian([jac])
    assert g.dtype == torch.float32
    torch.testing.assert_close(MGDA().aggregate(jac), MGDA().weights(g) @ jac)


# ------------------------------------------------------------ one path: aggregate() == backward()
def _fresh(name: str) -> GramianWeighting:
    method = balancing.make(name)
    method.bind(["a", "b", "c", "d"])
    assert isinstance(method, GramianWeighting)
    return method


def _losses_and_params(dtype: torch.dtype, blocks: int):
    """Four losses of ``blocks`` shared tensors, and their Jacobian [J_1 … J_B] by hand."""
    gen = torch.Generator().manual_seed(7)
    shared = [
        torch.randn(5 + b, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
        for b in range(blocks)
    ]
    targets = torch.randn(4, generator=gen, dtype=torch.float64).to(dtype)

    def losses() -> dict[str, Tensor]:
        out = {}
        for i, t in enumerate("abcd"):
            s = sum(((i + 1) * p.sin() * p.roll(i)).sum() for p in shared)
            out[t] = (s - targets[i]) ** 2
        return out

    values = losses()
    rows = [
        torch.stack([torch.autograd.grad(v, p, retain_graph=True)[0] for v in values.values()])
        for p in shared
    ]
    return losses, shared, rows


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_aggregate_and_backward_give_the_same_update(name: str, dtype, tol) -> None:
    """One shared tensor: backward()'s .grad is aggregate(J); two: it is aggregate([J_1 J_2])
    split (the engine sums the blocks' Gramians instead of concatenating J)."""
    for blocks in (1, 2):
        losses, shared, rows = _losses_and_params(dtype, blocks)
        values = losses()
        detached = {t: v.detach() for t, v in values.items()}
        torch.manual_seed(0)
        expected = _fresh(name).aggregate(torch.cat(rows, dim=1), detached)
        torch.manual_seed(0)
        balancing.backward(values, method=_fresh(name), shared=shared, level="params")
        got = torch.cat([p.grad for p in shared])
        assert got.dtype == dtype
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol * float(expected.abs().max()))


# ------------------------------------------------------------------ the template
def test_template_checks_once_and_keeps_the_contract() -> None:
    spy = Spy()
    with pytest.raises(ValueError, match=r"spy: the Gramian must be \(K, K\)"):
        spy.weights(torch.ones(2, 3))
    with pytest.raises(ValueError, match="3 gradient rows but 2 losses"):
        spy.weights(torch.eye(3), {"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    assert spy.weights(torch.zeros(0, 0)).shape == (0,) and spy.calls == []  # K = 0: no solve
    w = spy.weights(torch.eye(2, dtype=torch.float32))
    assert w.dtype == torch.float32 and spy.calls[-1][3] == ["0", "1"]

    class Incomplete(GramianWeighting):
        name = "incomplete"

    with pytest.raises(TypeError, match="_solve"):
        Incomplete()  # type: ignore[abstract]


# ------------------------------------------------------------------ helpers: state keys, options
def test_state_keys_helper() -> None:
    check_state_keys("m", {"a": 1}, {"a", "b"})
    with pytest.raises(
        ValueError,
        match=r"balancing method 'm': unknown state keys \['x', 'y'\]; "
        r"fix: load a state saved by 'm' \(known keys: \['a', 'b'\]\)",
    ):
        check_state_keys("m", {"a": 1, "y": 2, "x": 3}, ["b", "a"])


@pytest.mark.parametrize("name", balancing.available())
def test_every_method_refuses_unknown_state_keys(name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'.*(unknown state keys|has no state)"):
        balancing.make(name).load_state_dict({"bogus": 1})


@pytest.mark.parametrize(
    "name, options, option, problem",
    [
        ("cagrad", {"c": 2}, "c", "2 is not in [0, 1)"),
        ("nash_mtl", {"update_every": 0}, "update_every", "0 is not an integer ≥ 1"),
        ("famo", {"lr": -1}, "lr", "-1 must be a finite number > 0"),
        (
            "fixed",
            {"weights": {"a": -1.0}},
            "weights.a",
            "-1.0 is not a finite non-negative number",
        ),
        (
            "upgrad",
            {"pref_vector": [1.0, -1.0]},
            "pref_vector[1]",
            "-1.0 is not a finite number ≥ 0",
        ),
        (
            "pcgrad",
            {"seed": 1, "generator": torch.Generator()},
            "seed",
            "give a seed or a generator, not both",
        ),
    ],
)
def test_option_errors_carry_fields(name, options, option, problem) -> None:
    """Library code names the option itself; the config layer adds ``balancing.``."""
    with pytest.raises(OptionError) as info:
        balancing.make(name, **options)
    err = info.value
    assert (err.option, err.problem) == (option, problem) and err.fix
    assert str(err) == f"{option}: {problem}; fix: {err.fix}"
    located = err.at("balancing")
    assert (located.option, located.problem, located.fix) == (
        f"balancing.{option}",
        problem,
        err.fix,
    )
    assert pickle.loads(pickle.dumps(err)).option == option


@pytest.mark.parametrize(
    "balancing_section, line",
    [
        (
            {"method": "cagrad", "c": 2},
            "balancing.c: 2 is not in [0, 1); fix: give the ball radius factor, e.g. 0.4 "
            "(0 gives the mean; CAGrad's convergence result needs c < 1)",
        ),
        (
            {"method": "fixed", "default": -1},
            "balancing.default: -1 is not a finite non-negative number; fix: give "
            "each task a weight ≥ 0",
        ),
        (
            {"method": "uw", "kind": {"zz": "regression"}},
            "balancing.kind: unknown task(s) ['zz']; fix: use task names from ['sentiment']",
        ),
    ],
)
def test_the_config_layer_locates_the_option(tmp_path, balancing_section, line) -> None:
    """The one-line message users see (``error: <this line>``) is the one they saw when the
    library wrote ``balancing.c`` itself."""
    import json

    from polytask.config import ConfigError, Experiment, validate

    rows = [{"tokens": ["a"], "sentiment": label} for label in ("pos", "neg")]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    raw = {
        "tasks": {"sentiment": {"kind": "classification"}},
        "data": {
            "sources": {
                "rows": {
                    "format": "jsonl",
                    "train": "rows.jsonl",
                    "tasks": {"sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 4, "channels": [4]}},
        "balancing": balancing_section,
    }
    with pytest.raises(ConfigError) as info:
        Experiment(validate(raw), tmp_path).build_method()
    assert str(info.value) == line
