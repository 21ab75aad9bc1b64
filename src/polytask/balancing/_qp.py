"""Exact solvers for the small convex quadratic programmes on a K × K Gramian.

Every Gramian-based aggregator here reduces to one of two problems on ``G = J Jᵀ``
(K × K, symmetric positive semi-definite, K ≤ ~100):

* the **min-norm point of the convex hull** of the rows of J (MGDA)::

      min_w  wᵀ G w   s.t.  w ≥ 0,  1ᵀw = 1

* the **projection onto the dual cone** ``{x : J x ≥ 0}`` of the rows of J (UPGrad,
  DualProj). Projecting ``Jᵀu`` onto that cone, ``min_x |x − Jᵀu|²  s.t.  J x ≥ 0``, has the
  Lagrangian dual ``min_{λ ≥ 0} (u + λ)ᵀ G (u + λ)``, and the projection is ``Jᵀ(u + λ*)``
  (Quinton & Rey 2024, Proposition 1: ``min_v vᵀGv  s.t.  v ≥ u``).

Both are solved as a **non-negative quadratic programme** ``min_{x ≥ 0} ½ xᵀHx + cᵀx`` by
active-set methods whose every step solves the system restricted to the free set exactly
(Cholesky; LU, then minimum-norm least squares where the free block is singular): block
principal pivoting (Júdice & Pires 1994; Kim & Park 2011), a handful of solves whatever K,
finished where it cycles by the Lawson–Hanson method (Lawson & Hanson, *Solving Least
Squares Problems*, 1974, ch. 23), which terminates finitely. The result satisfies the KKT
conditions to the rounding error of the gradient itself — not "after 100 Frank–Wolfe steps
with tolerance 1e-3", which can be far from the optimum on ill-conditioned Gramians.

The min-norm-point problem becomes such a programme through the classical reduction of
least-distance programming to NNLS (Lawson & Hanson, ch. 23): with ``H = G + 11ᵀ`` and
``c = −1``, ``f(u) = ½|Jᵀu|² + ½(1ᵀu − 1)² − ½`` is minimised over ``u ≥ 0`` by ``u* = s w*``
with ``s = 1/(1 + |d*|²)``, so ``w* = u*/1ᵀu*`` (for ``u = s w`` with w in the simplex the
two terms separate). At the optimum ``∇f = s (G w − |d|² 1)``, so the stopping rule
``∇f ≥ −tol`` is MGDA's optimality certificate ``⟨g_k, d⟩ ≥ |d|² − tol/s`` itself.

All work is done in float64 on the CPU (the systems are tiny, and an active set needs
data-dependent control flow anyway; :mod:`._gramian` states the precision policy that
hands the Gramian over), on the Gramian divided by its largest diagonal entry,
so the weights do not depend on the scale of J. The dual-cone programme is solved in
Jacobi-scaled variables (unit diagonal), so rows whose norms differ by orders of magnitude
are held to the same relative accuracy. A Gramian that rounding left slightly indefinite
(one formed in float32, say) has its negative eigenvalues clipped to 0, and the stopping
rule is then measured in the input's unit roundoff rather than float64's.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

_EPS = torch.finfo(torch.float64).eps
#: KKT tolerance in units of K · eps · (|H|·|x| + |c|), the rounding error of one gradient
_TOL_FACTOR = 8.0
#: a result is accepted as optimal within this many tolerances (Lawson–Hanson stops at one:
#: candidates whose freeing fails by rounding are skipped, which can leave a gradient of
#: about one tolerance)
_ACCEPT = 4.0


def prepare_gramian(g: Tensor) -> tuple[Tensor, float]:
    """A symmetric float64 CPU Gramian (:func:`._gramian.for_solver`) divided by its largest
    diagonal entry.

    Returns ``(G / max_k G_kk, max_k G_kk)``; the scale is 0 for an all-zero Gramian (then the
    returned matrix is the zero matrix) and NaN when the Gramian has non-finite entries.
    """
    if g.numel() == 0:
        return g.clone(), 0.0
    if not bool(torch.isfinite(g).all()):
        return g.clone(), float("nan")
    scale = float(g.diagonal().max())
    if scale <= 0.0:
        return torch.zeros_like(g), 0.0
    g = g / scale
    return g, scale


def _positive_semidefinite(h: Tensor) -> Tensor:
    """``h`` (max diagonal ≈ 1), or the nearest positive semi-definite matrix where it is not
    PSD to float64 rounding.

    A Gramian formed in float32 (or from rounded gradients) can be indefinite by ~1e-7, and
    a quadratic programme on it unbounded along a direction of negative curvature: clip the
    negative eigenvalues to 0, a change within the input's own error. One Cholesky of
    ``h + 4 K eps I`` tells whether it is needed.
    """
    k = h.shape[0]
    _, info = torch.linalg.cholesky_ex(h + (4 * k * _EPS) * torch.eye(k, dtype=torch.float64))
    if int(info) == 0:
        return h
    lam, q = torch.linalg.eigh(h)
    h = (q * lam.clamp_min(0.0)) @ q.T
    return 0.5 * (h + h.T)


def _solve_free(h: Tensor, eye: Tensor, neg_c: Tensor, free: Tensor) -> Tensor:
    """For each row b: the minimiser of ½ xᵀHx + c_bᵀx over x supported on ``free[b]``.

    Solves ``H_FF x_F = −c_F`` (coordinates outside F are 0) as one batched K × K system
    with identity rows outside F: Cholesky, then LU where the free block is not numerically
    positive definite, then minimum-norm least squares where it is singular.
    """
    m = torch.where(free.unsqueeze(2) & free.unsqueeze(1), h, eye)
    rhs = torch.where(free, neg_c, 0.0).unsqueeze(2)
    chol, info = torch.linalg.cholesky_ex(m)
    if not bool(info.any()):
        return torch.cholesky_solve(rhs, chol).squeeze(2)
    z = torch.cholesky_solve(rhs, chol).squeeze(2)
    bad = info != 0
    zb, info_b = torch.linalg.solve_ex(m[bad], rhs[bad])
    zb = zb.squeeze(2)
    worse = (info_b != 0) | ~torch.isfinite(zb).all(dim=1)
    if bool(worse.any()):
        zb[worse] = torch.linalg.lstsq(
            m[bad][worse], rhs[bad][worse], driver="gelsd"
        ).solution.squeeze(2)
    z[bad] = zb
    return z.masked_fill(~free, 0.0)


class _NNQP:
    """``min_{x ≥ 0} ½ xᵀHx + c_bᵀx`` for the rows c_b of c, and its rounding tolerance."""

    def __init__(self, h: Tensor, c: Tensor, eps: float) -> None:
        self.h, self.c, self.neg_c = h, c, -c
        self.k = h.shape[0]
        self.eye = torch.eye(self.k, dtype=h.dtype)
        unit = _TOL_FACTOR * self.k * eps
        self.tol_h = unit * float(h.abs().max())
        self.tol_c = unit * c.abs().amax(dim=1, keepdim=True)

    def solve_free(self, free: Tensor) -> Tensor:
        return _solve_free(self.h, self.eye, self.neg_c, free)

    def gradient(self, x: Tensor) -> Tensor:
        return torch.addmm(self.c, x, self.h)

    def tolerance(self, x: Tensor) -> Tensor:
        """(B, 1) rounding error of the gradient H x_b + c_b: 8 K eps (max|H| max|x_b| + max|c_b|),
        with eps the unit roundoff of the input (float64's, or float32's for a float32 Gramian)."""
        return torch.add(self.tol_c, x.abs().amax(dim=1, keepdim=True), alpha=self.tol_h)

    def kkt(self, x: Tensor, slack: float = _ACCEPT) -> Tensor:
        """(B,) whether x ≥ 0 is optimal to rounding: ∇ ≥ −tol, and |∇| ≤ tol where x > 0."""
        grad = self.gradient(x)
        tol = slack * self.tolerance(x)
        return ((grad >= -tol) & ((x <= 0) | (grad <= tol))).all(dim=1)

    def rows(self, rows: Tensor) -> _NNQP:
        sub = _NNQP.__new__(_NNQP)
        sub.__dict__.update(self.__dict__)
        sub.c, sub.neg_c, sub.tol_c = self.c[rows], self.neg_c[rows], self.tol_c[rows]
        return sub


def _block_pivoting(p: _NNQP, free: Tensor, max_iter: int) -> Tensor:
    """Block principal pivoting (Júdice & Pires 1994; Kim & Park 2011), all rows at once.

    From the guess ``free`` of the free set F: solve it exactly (x_F = −H_FF⁻¹ c_F, 0
    elsewhere), and exchange every infeasible coordinate — a negative free value leaves F,
    a negative gradient at a fixed one enters — in one go; usually a handful of iterations
    whatever K. It can cycle when H is not an M-matrix: a row whose number of infeasible
    coordinates has not decreased for three exchanges is given up. Returns the last iterate
    of every row, clipped to x ≥ 0 (the caller checks optimality).
    """
    b, k = p.c.shape
    x = torch.zeros(b, k, dtype=torch.float64)
    free = free.clone()
    active = free.any(dim=1)
    best = torch.full((b,), k + 1)
    patience = torch.full((b,), 3)
    for _ in range(max_iter):
        rows = torch.nonzero(active).squeeze(1)
        if rows.numel() == 0:
            break
        if rows.numel() == b:
            z = p.solve_free(free)
        else:  # solve only the rows still at work (a Cholesky per row is the main cost)
            z = torch.zeros(b, k, dtype=torch.float64)
            z[rows] = p.rows(rows).solve_free(free[rows])
        wrong = torch.where(free, z, p.gradient(z)) < -p.tolerance(z)
        n_wrong = wrong.sum(dim=1)
        x = torch.where(active.unsqueeze(1), z, x)
        patience = torch.where(n_wrong < best, 3, patience - 1)
        best = torch.minimum(n_wrong, best)
        active = active & (n_wrong > 0) & (patience >= 0)
        free = free ^ (wrong & active.unsqueeze(1))
    return x.clamp_min(0.0)


def _lawson_hanson(p: _NNQP, x0: Tensor, max_iter: int) -> tuple[Tensor, Tensor]:
    """Lawson–Hanson active set from a feasible start x0 ≥ 0, all rows at once; ``(x, ok)``.

    First settle: with the free set {x0 > 0}, move from x0 towards the exact minimiser on
    that set until it is reached or a coordinate hits 0 (then fix it and repeat). Then
    repeatedly free the coordinate with the most negative gradient and settle again. The
    objective decreases strictly at every step, so no free set repeats and the method
    terminates. A coordinate whose freeing does not increase it (possible only by rounding)
    is blocked until the next successful step, which rules out cycling.
    """
    b, k = p.c.shape
    x = x0.clone()
    free = x > 0
    blocked = torch.zeros(b, k, dtype=torch.bool)
    rows = torch.arange(b)
    fr, xr, sub = free.clone(), x.clone(), p
    z = sub.solve_free(fr)
    for it in range(max_iter):
        if it > 0:
            best, t = (-p.gradient(x)).masked_fill(free | blocked, -torch.inf).max(dim=1)
            rows = torch.nonzero(best > p.tolerance(x).squeeze(1)).squeeze(1)
            if rows.numel() == 0:
                break
            tr = t[rows]
            n = torch.arange(rows.numel())
            fr = free[rows]
            fr[n, tr] = True
            xr, sub = x[rows], p.rows(rows)
            z = sub.solve_free(fr)
            # freeing t must increase x_t (it does in exact arithmetic since ∂f/∂x_t < 0)
            degenerate = z[n, tr] <= 0
            if bool(degenerate.any()):
                blocked[rows[degenerate], tr[degenerate]] = True
                keep = torch.nonzero(~degenerate).squeeze(1)
                if keep.numel() == 0:
                    continue
                rows, fr, xr, z, sub = rows[keep], fr[keep], xr[keep], z[keep], sub.rows(keep)
        for _ in range(k + 1):
            leaving = fr & (z <= 0)
            moving = leaving.any(dim=1)
            if not bool(moving.any()):
                break
            # largest step towards z that keeps x ≥ 0; the coordinate that hits 0 is fixed
            ratio = torch.where(
                leaving, xr / (xr - z).clamp_min(torch.finfo(torch.float64).tiny), torch.inf
            )
            alpha, j = ratio.min(dim=1)
            alpha = torch.where(moving, alpha.clamp(0.0, 1.0), 0.0)
            xr = xr + alpha.unsqueeze(1) * (z - xr)
            mi = torch.nonzero(moving).squeeze(1)
            xr[mi, j[mi]] = 0.0
            fr = fr & ~(moving.unsqueeze(1) & (xr <= 0))
            xr = xr.clamp_min(0.0)
            z = sub.solve_free(fr)
        x[rows] = z.clamp_min(0.0)
        free[rows] = fr & (z > 0)
        blocked[rows] = False
    return x, p.kkt(x)


def nonneg_qp(
    h: Tensor, c: Tensor, free: Tensor | None = None, eps: float = _EPS
) -> tuple[Tensor, bool]:
    """Solve ``min_{x ≥ 0} ½ xᵀ H x + c_bᵀ x`` for every row ``c_b`` of ``c``.

    ``h``: (K, K) symmetric positive semi-definite, float64; ``c``: (B, K) float64 (the B
    problems share H and are solved together). Returns ``(x, converged)`` with x of shape
    (B, K), ``x ≥ 0``, and on convergence, for every b and k::

        (H x_b + c_b)_k ≥ −tol_b,  and  |(H x_b + c_b)_k| ≤ tol_b where x_bk > 0,

    with ``tol_b = 8 K eps (max|H| · max_k x_bk + max_k |c_bk|)``, the rounding error of the
    gradient itself: the KKT conditions to machine precision. The objective must be bounded
    below on x ≥ 0 (true for both uses here). ``free``: (B, K) initial guess of the
    coordinates that are positive at the optimum (default: those with ``c < 0``). ``eps``:
    the unit roundoff of the data (float64's by default; a Gramian formed in float32 is
    not known to better than float32's, and no solver can be asked to do better).

    Block principal pivoting solves almost every problem in a few exact solves; the rows it
    leaves unsolved (it can cycle) are finished by the Lawson–Hanson method, which
    terminates finitely: first from the last iterate, then, where rounding on a singular H
    stalls that, from x = 0.
    """
    b, k = c.shape
    if k == 0 or b == 0:
        return torch.zeros(b, k, dtype=torch.float64), True
    p = _NNQP(h, c, eps)
    if free is None:
        free = c < -p.tolerance(torch.zeros(1, k, dtype=torch.float64))
    x = _block_pivoting(p, free, max_iter=2 * k + 10)
    ok = p.kkt(x)
    # rows left unsolved: Lawson–Hanson from the last iterate, then (rounding can stall a
    # warm start on a singular H) from x = 0 as the textbook method does
    for warm in (True, False):
        if bool(ok.all()):
            break
        rows = torch.nonzero(~ok).squeeze(1)
        start = x[rows] if warm else torch.zeros(rows.numel(), k, dtype=torch.float64)
        x_lh, ok_lh = _lawson_hanson(p.rows(rows), start, max_iter=6 * k + 20)
        if warm:
            x[rows] = x_lh
        else:
            x[rows[ok_lh]] = x_lh[ok_lh]
        ok[rows] = ok_lh
    return x, bool(ok.all())


def _warn_unconverged(what: str) -> None:
    warnings.warn(
        f"{what}: the active-set solver stopped short of the KKT conditions to rounding "
        "(a badly conditioned Gramian); the returned weights are feasible but may be "
        "slightly suboptimal",
        RuntimeWarning,
        stacklevel=3,
    )


def min_norm_weights(g: Tensor, eps: float = _EPS) -> Tensor:
    """Weights w of the min-norm point of the rows' convex hull, for a normalised Gramian.

    ``g``: (K, K) float64 from :func:`prepare_gramian` (max diagonal 1). Returns w ≥ 0 with
    ``Σ w = 1`` minimising ``wᵀ g w``.
    """
    k = g.shape[0]
    ones = torch.ones(k, dtype=torch.float64)
    u, ok = nonneg_qp(_positive_semidefinite(g) + 1.0, -ones.unsqueeze(0), eps=eps)
    if not ok:
        _warn_unconverged("MGDA")
    u = u[0]
    return u / u.sum()


def dual_cone_weights(g: Tensor, u: Tensor, eps: float = _EPS) -> Tensor:
    """Weights ``v_b`` with ``Jᵀv_b`` the projection of ``Jᵀu_b`` onto ``{x : J x ≥ 0}``.

    ``g``: (K, K) normalised Gramian of J; ``u``: (B, K) weights of the vectors to project.
    Returns ``u + λ*`` (B, K), where ``λ* ≥ 0`` minimises ``(u + λ)ᵀ g (u + λ)``
    (Quinton & Rey 2024, Prop. 1); then ``g (u + λ*) ≥ 0``: the projection conflicts with
    no row of J. The programme is solved in the variables ``|g_k| λ_k`` (Jacobi scaling), so
    the stopping rule bounds ``⟨g_k, d⟩ / |g_k|`` and rows of very different norms are
    treated alike.
    """
    if bool((u @ g >= 0).all()):  # Jᵀu_b conflicts with no row: it is its own projection
        return u.clone()
    norms = g.diagonal().sqrt()
    norms = torch.where(norms > 0, norms, 1.0)
    h = _positive_semidefinite(g / (norms.unsqueeze(1) * norms.unsqueeze(0)))
    y, ok = nonneg_qp(h, (u * norms) @ h, eps=eps)
    if not ok:
        _warn_unconverged("dual-cone projection")
    return u + y / norms
