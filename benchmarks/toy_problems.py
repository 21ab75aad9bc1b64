"""Two reusable toy problems for balancing methods (torch and polytask only), used by the
benchmarks (``benchmarks/balancing/toy.py``) and by the tests of the methods they come from
(``tests/conftest.py`` puts ``benchmarks/`` on the path).

* The GradNorm synthetic regression (Chen et al., ICML 2018, §4): T regression tasks
  ``f_i(x) = σ_i tanh((B + ε_i) x)`` that share ``B`` and differ in scale σ_i, learned by a
  shared 4 × 100 ReLU trunk with one linear head per task. :func:`gradnorm_problem` builds
  data and :meth:`GradNormProblem.model` the network, both from fixed seeds.
* The two-objective problem in R² used by CAGrad (Liu et al., NeurIPS 2021), Nash-MTL
  (Navon et al., ICML 2022) and FAMO (Liu et al., NeurIPS 2023), as their official codes
  define it: :func:`toy_losses` (and its closed-form Jacobian), the start points,
  :func:`toy_pareto_front` and :func:`toy_trajectory` (Adam on θ with any polytask
  balancing method).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from polytask.balancing.base import Balancer, GradientAggregator, LossWeighting

# --------------------------------------------------------------------------------------
# (a) GradNorm synthetic regression


def spread_sigmas(t: int, low: float = 1.0, high: float = 100.0) -> tuple[float, ...]:
    """T output scales spread geometrically from ``low`` to ``high`` (the paper's "widely
    spread σ_i" for T = 10 does not list them; this is polytask's fixed choice)."""
    if t < 1:
        raise ValueError(f"spread_sigmas: T = {t} must be ≥ 1")
    if t == 1:
        return (float(low),)
    return tuple(float(low * (high / low) ** (i / (t - 1))) for i in range(t))


class GradNormNet(nn.Module):
    """Shared trunk of ``layers`` fully connected ReLU layers of ``hidden`` units, then one
    affine head per task (Chen et al. 2018, §4). ``forward(x)`` returns the shared features
    (the trunk's output) and a dict task -> prediction."""

    def __init__(
        self,
        tasks: Sequence[str],
        input_dim: int = 250,
        output_dim: int = 100,
        hidden: int = 100,
        layers: int = 4,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(input_dim if i == 0 else hidden, hidden), nn.ReLU()]
        self.trunk = nn.Sequential(*blocks)
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, output_dim) for t in tasks})

    @property
    def last_shared(self) -> nn.Linear:
        """The last shared layer (GradNorm's W in the paper)."""
        return [m for m in self.trunk if isinstance(m, nn.Linear)][-1]

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        h = self.trunk(x)
        return h, {t: head(h) for t, head in self.heads.items()}


@dataclass
class GradNormProblem:
    """Data of the GradNorm synthetic regression (see :func:`gradnorm_problem`).

    ``y_train`` / ``y_test`` are (T, n, output_dim): row i holds task i's targets.
    """

    sigmas: tuple[float, ...]
    B: Tensor
    eps: Tensor
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    seed: int
    _b64: Tensor = field(default=None, repr=False)  # type: ignore[assignment]
    _eps64: Tensor = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def tasks(self) -> list[str]:
        return [f"task{i}" for i in range(len(self.sigmas))]

    def model(self, seed: int | None = None, hidden: int = 100, layers: int = 4) -> GradNormNet:
        """A fresh network, initialised from ``seed`` (default: the problem's seed)."""
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(self.seed if seed is None else seed)
            net = GradNormNet(self.tasks, self.B.shape[1], self.B.shape[0], hidden, layers)
        finally:
            torch.random.set_rng_state(state)
        return net.to(self.x_train.dtype)

    def losses(self, model: GradNormNet, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Mean squared error of every task (mean over examples and outputs)."""
        _, out = model(x)
        return {t: (out[t] - y[i]).pow(2).mean() for i, t in enumerate(self.tasks)}

    def batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``size`` examples of the fixed training set, drawn with replacement by ``generator``."""
        idx = torch.randint(self.x_train.shape[0], (size,), generator=generator)
        return self.x_train[idx], self.y_train[:, idx]

    def sample(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``size`` fresh examples (x, y): x with i.i.d. U(−1, 1) entries rescaled to unit norm,
        ``y[i] = σ_i tanh((B + ε_i) x)``; computed in float64, returned in the problem's dtype."""
        b, eps = self._b64, self._eps64
        x = torch.rand(size, b.shape[1], generator=generator, dtype=torch.float64) * 2 - 1
        x = x / x.norm(dim=1, keepdim=True)
        sig = torch.tensor(self.sigmas, dtype=torch.float64).view(-1, 1, 1)
        y = sig * torch.tanh(torch.einsum("toi,ni->tno", b.unsqueeze(0) + eps, x))
        return x.to(self.B.dtype), y.to(self.B.dtype)


def gradnorm_problem(
    sigmas: Sequence[float] = (1.0, 100.0),
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
    input_dim: int = 250,
    output_dim: int = 100,
    b_std: float = 10.0,
    eps_std: float = 3.5,
    dtype: torch.dtype = torch.float32,
) -> GradNormProblem:
    r"""The GradNorm synthetic regression (Chen et al., ICML 2018, §4).

    Targets :math:`f_i(x) = σ_i \tanh((B + ε_i) x)` with B (output_dim × input_dim) and
    every ε_i drawn once with i.i.d. entries :math:`\mathcal N(0, 10^2)` and
    :math:`\mathcal N(0, 3.5^2)` (``b_std``, ``eps_std``: the second parameter of the
    paper's N(0; 10), N(0; 3.5) read as the standard deviation, as public implementations
    do). Inputs (polytask's choice, the paper does not state it): i.i.d. U(−1, 1) entries,
    each x rescaled to unit Euclidean norm, so every entry of :math:`(B + ε_i) x` is about
    :math:`\mathcal N(0, 10^2 + 3.5^2)` whatever the input dimension. B, the ε_i and the
    fixed train/test sets come from one ``torch.Generator`` seeded with ``seed`` (float64,
    then cast to ``dtype``); :meth:`GradNormProblem.sample` draws fresh examples. With
    arguments of size ~10 the tanh is mostly saturated: the losses fall slowly (a few
    percent per thousand Adam steps at lr 3e-3) and a fixed training set of a few thousand
    examples is soon overfitted, so the tests train on fresh samples.
    """
    if not sigmas:
        raise ValueError("gradnorm_problem: give at least one σ")
    g = torch.Generator().manual_seed(seed)
    t = len(sigmas)
    b = torch.randn(output_dim, input_dim, generator=g, dtype=torch.float64) * b_std
    eps = torch.randn(t, output_dim, input_dim, generator=g, dtype=torch.float64) * eps_std
    empty = torch.empty(0, dtype=dtype)
    problem = GradNormProblem(
        tuple(float(s) for s in sigmas),
        b.to(dtype),
        eps.to(dtype),
        empty,
        empty,
        empty,
        empty,
        seed=seed,
        _b64=b,
        _eps64=eps,
    )
    problem.x_train, problem.y_train = problem.sample(n_train, g)
    problem.x_test, problem.y_test = problem.sample(n_test, g)
    return problem


# --------------------------------------------------------------------------------------
# (b) the two-objective toy problem of CAGrad / Nash-MTL / FAMO

TOY_EPS = 5e-6
#: start points of the Nash-MTL and FAMO codes (CAGrad uses these plus CAGRAD_EXTRA_START_POINTS)
TOY_START_POINTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)
CAGRAD_EXTRA_START_POINTS: tuple[tuple[float, float], ...] = ((-8.5, 5.0), (10.0, -8.0))
#: the papers draw the Pareto front at x2 = TOY_PARETO_X2, x1 ∈ [−7, 7]
TOY_PARETO_X2 = -8.3552
TOY_TASKS = ("f1", "f2")


def toy_losses(theta: Tensor, l1_scale: float = 0.1) -> Tensor:
    r"""The two objectives at θ = (x1, x2) (shape (..., 2) -> (..., 2)).

    With ε = 5·10⁻⁶:

    .. math::

        f_1 &= \log\max(|0.5(-x_1 - 7) - \tanh(-x_2)|, ε) + 6, \\
        f_2 &= \log\max(|0.5(-x_1 + 3) + \tanh(-x_2) + 2|, ε) + 6, \\
        g_1 &= ((-x_1 + 7)^2 + 0.1(-x_2 - 8)^2) / 10 - 20, \\
        g_2 &= ((-x_1 - 7)^2 + 0.1(-x_2 - 8)^2) / 10 - 20, \\
        c_1 &= \max(\tanh(0.5 x_2), 0), \quad c_2 = \max(\tanh(-0.5 x_2), 0), \\
        L_1 &= s\,(c_1 f_1 + c_2 g_1), \quad L_2 = c_1 f_2 + c_2 g_2 .

    ``f_2`` has "+ tanh(−x2)" as in all three official codes (the papers print "−").
    ``l1_scale`` s: 0.1 as in the Nash-MTL and FAMO codes (default), 1 as in CAGrad's.
    """
    x1, x2 = theta[..., 0], theta[..., 1]
    f1 = torch.log(torch.clamp(torch.abs(0.5 * (-x1 - 7) - torch.tanh(-x2)), min=TOY_EPS)) + 6
    f2 = torch.log(torch.clamp(torch.abs(0.5 * (-x1 + 3) + torch.tanh(-x2) + 2), min=TOY_EPS)) + 6
    g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c1 = torch.clamp(torch.tanh(0.5 * x2), min=0)
    c2 = torch.clamp(torch.tanh(-0.5 * x2), min=0)
    return torch.stack([l1_scale * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2], dim=-1)


def toy_losses_and_jacobian(theta: Tensor, l1_scale: float = 0.1) -> tuple[Tensor, Tensor]:
    """The two losses at θ (shape (..., 2)) and their Jacobian (..., 2, 2), row i = ∇_θ L_i,
    in closed form (no autograd: the toy runs tens of thousands of steps). Where the
    objectives are not differentiable (the max with ε, the kinks of c1 and c2 at x2 = 0)
    it picks the same one-sided derivatives as torch's autograd of :func:`toy_losses`."""
    x1, x2 = theta[..., 0], theta[..., 1]
    th = torch.tanh(x2)
    sech2 = 1 - th * th
    u1 = -0.5 * x1 - 3.5 + th  # 0.5(−x1 − 7) − tanh(−x2)
    u2 = -0.5 * x1 + 3.5 - th  # 0.5(−x1 + 3) + tanh(−x2) + 2
    a1, a2 = torch.abs(u1), torch.abs(u2)
    f1 = torch.log(torch.clamp(a1, min=TOY_EPS)) + 6
    f2 = torch.log(torch.clamp(a2, min=TOY_EPS)) + 6
    # d log max(|u|, ε) = sign(u) / |u| du where |u| ≥ ε, else 0
    k1 = torch.where(
        a1 >= TOY_EPS, torch.sign(u1) / torch.clamp(a1, min=TOY_EPS), torch.zeros_like(u1)
    )
    k2 = torch.where(
        a2 >= TOY_EPS, torch.sign(u2) / torch.clamp(a2, min=TOY_EPS), torch.zeros_like(u2)
    )
    df1 = (-0.5 * k1, sech2 * k1)
    df2 = (-0.5 * k2, -sech2 * k2)
    g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    dg1 = (0.2 * (x1 - 7), 0.02 * (x2 + 8))
    dg2 = (0.2 * (x1 + 7), 0.02 * (x2 + 8))
    t1, t2 = torch.tanh(0.5 * x2), torch.tanh(-0.5 * x2)
    c1, c2 = torch.clamp(t1, min=0), torch.clamp(t2, min=0)
    dc1 = torch.where(
        t1 >= 0, 0.5 * (1 - t1 * t1), torch.zeros_like(t1)
    )  # clamp passes the boundary
    dc2 = torch.where(t2 >= 0, -0.5 * (1 - t2 * t2), torch.zeros_like(t2))
    l1 = l1_scale * (c1 * f1 + c2 * g1)
    l2 = c1 * f2 + c2 * g2
    j1 = torch.stack(
        [
            l1_scale * (c1 * df1[0] + c2 * dg1[0]),
            l1_scale * (dc1 * f1 + c1 * df1[1] + dc2 * g1 + c2 * dg1[1]),
        ],
        dim=-1,
    )
    j2 = torch.stack(
        [c1 * df2[0] + c2 * dg2[0], dc1 * f2 + c1 * df2[1] + dc2 * g2 + c2 * dg2[1]], dim=-1
    )
    return torch.stack([l1, l2], dim=-1), torch.stack([j1, j2], dim=-2)


def toy_pareto_front(
    n: int = 101, l1_scale: float = 0.1, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """``n`` points θ on the drawn Pareto front (x1 ∈ [−7, 7], x2 = −8.3552) and their losses."""
    x1 = torch.linspace(-7, 7, n, dtype=dtype)
    theta = torch.stack([x1, torch.full_like(x1, TOY_PARETO_X2)], dim=-1)
    return theta, toy_losses(theta, l1_scale)


def toy_trajectory(
    method: Balancer,
    start: Sequence[float],
    steps: int = 35_000,
    lr: float = 1e-3,
    l1_scale: float = 0.1,
    every: int = 1,
    betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
) -> Tensor:
    """Optimise θ from ``start`` with Adam(``lr``, ``betas``, ``adam_eps``) on the two toy
    losses balanced by ``method``; returns θ every ``every`` steps, shape
    (steps // every + 1, 2), float64.

    The loop is the Trainer's, in miniature: the method is bound to tasks ``("f1", "f2")``;
    a :class:`LossWeighting` gives ``∇_θ combine(losses) = Σ_i (∂combine/∂L_i) ∇_θ L_i``
    (exact, since combine depends on θ only through the losses), a
    :class:`GradientAggregator` gets the 2 × 2 Jacobian and the losses; the method's own
    parameters are optimised by a second Adam with the same settings; ``after_step``
    receives each step's (pre-step) losses and the step hook (the losses at the new θ), as
    from the Trainer. The Jacobian comes from
    :func:`toy_losses_and_jacobian`, so a step costs one method call plus a few tiny ops.
    """
    method.bind(list(TOY_TASKS))
    extra = list(method.parameters())
    opt = torch.optim.Adam(extra, lr=lr, betas=betas, eps=adam_eps) if extra else None
    theta = torch.tensor([float(start[0]), float(start[1])], dtype=torch.float64)
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    b1, b2 = betas
    out = [theta.clone()]
    for step in range(1, steps + 1):
        values, jac = toy_losses_and_jacobian(theta, l1_scale)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        if isinstance(method, LossWeighting):
            leaf = values.clone().requires_grad_(True)
            method.combine({t: leaf[i] for i, t in enumerate(TOY_TASKS)}).backward()
            grad = leaf.grad @ jac
        elif isinstance(method, GradientAggregator):
            grad = method.aggregate(jac, {t: values[i] for i, t in enumerate(TOY_TASKS)}).to(
                torch.float64
            )
        else:  # pragma: no cover - every Balancer is one of the two
            raise TypeError(
                f"toy_trajectory: {type(method).__name__} is neither a LossWeighting nor a "
                "GradientAggregator"
            )
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        theta = theta - lr * (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + adam_eps)
        if opt is not None:
            opt.step()
        after = toy_losses_and_jacobian(theta, l1_scale)[0]  # the step hook: losses at the new θ
        method.after_step(
            {t: values[i] for i, t in enumerate(TOY_TASKS)},
            lambda after=after: {t: after[i] for i, t in enumerate(TOY_TASKS)},
        )
        if step % every == 0:
            out.append(theta.clone())
    return torch.stack(out)
