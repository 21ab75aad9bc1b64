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

All work is done in float64 on the CPU, with numpy (the systems are tiny — a torch call on
a 2 × 2 matrix costs several times the arithmetic in dispatch, and that host time is a
step's whole cost on a GPU at small K — and an active set needs data-dependent control
flow anyway; :mod:`._gramian` states the precision policy that hands the Gramian over).
The entry points take and return float64 CPU tensors; everything below them works on
arrays. The Gramian is divided by its largest diagonal entry,
so the weights do not depend on the scale of J. The dual-cone programme is solved in
Jacobi-scaled variables (unit diagonal), so rows whose norms differ by orders of magnitude
are held to the same relative accuracy. A Gramian that rounding left slightly indefinite
(one formed in float32, say) has its negative eigenvalues clipped to 0, and the stopping
rule is then measured in the input's unit roundoff rather than float64's.

**What is returned is certified.** The promise of UPGrad and DualProj is an update that
conflicts with no task; an active-set method that stops short of the KKT conditions
(rounding on a Gramian that is singular to working precision) can miss it by far — on
``J = [[1, 1e-8], [−1, 1e-8], [0, −1]]``, whose dual cone is {0}, it returned an update at
cosine −1 with the third task. So every projection is checked on the Gramian itself
(:func:`projection_kkt`) and, where the check fails, solved again by fallbacks: the
active set on the Gramian with its rounding-level eigenvalues set to 0, then dual
coordinate descent (Hildreth 1957), which needs no linear solve (:func:`_certified_projection`);
a projection no solver certifies is replaced by 0, a point of the cone, with a warning.
Two rules then keep rounding from posing as a direction: a projection that is a large
cancelling combination of the rows gets a margin of its own rounding error
(:func:`_with_margin`), and an update the Gramian does not tell apart from 0
(:func:`resolved`: ``|d|²`` within the rounding of ``wᵀGw``) is 0 — the exact answer at a
stationary point, where the rounding noise would otherwise have a direction that
conflicts with some task. MGDA's min-norm point is polished on its support by Wolfe's
method and is 0 under the same conditions (:func:`min_norm_weights`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from ._gramian import canonical_order

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)
#: KKT tolerance in units of K · eps · (|H|·|x| + |c|), the rounding error of one gradient
_TOL_FACTOR = 8.0
#: a result is accepted as optimal within this many tolerances (Lawson–Hanson stops at one:
#: candidates whose freeing fails by rounding are skipped, which can leave a gradient of
#: about one tolerance)
_ACCEPT = 4.0
#: |d|² below this many √K · eps · (Σ_k |w_k| |g_k|)² is rounding noise (:func:`resolved`)
_RESOLVE = 128.0
#: a projection whose terms cancel (Σ_k |v_k| |g_k| above this many |d|) gets a margin
_MARGIN_TRIGGER = 64.0
#: the margin: ⟨g_k, d⟩ ≥ this many √K · eps · |g_k| · Σ_j |v_j| |g_j| (:func:`_with_margin`)
_MARGIN = 2.0
#: sweeps per coordinate of the coordinate-descent fallback (:func:`_coordinate_descent`)
_SWEEPS = 200

Array = NDArray[np.float64]


def _array(x: ArrayLike | Tensor) -> Array:
    """``x`` as a float64 array (a float64 CPU tensor is shared, not copied)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


def _tensor(x: Array) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def _each_row(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(B,) whether every entry of each row of a (B, K) mask holds."""
    return np.asarray(mask.all(axis=1), dtype=np.bool_)


def _any_in_row(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(B,) whether some entry of each row of a (B, K) mask holds."""
    return np.asarray(mask.any(axis=1), dtype=np.bool_)


def prepare_gramian(g: Tensor) -> tuple[Tensor, float]:
    """A symmetric float64 CPU Gramian (:func:`._gramian.for_solver`) divided by its largest
    diagonal entry.

    Returns ``(G / max_k G_kk, max_k G_kk)``; the scale is 0 for an all-zero Gramian (then the
    returned matrix is the zero matrix) and NaN when the Gramian has non-finite entries.
    """
    a = _array(g)
    if a.size == 0:
        return g.clone(), 0.0
    if not np.isfinite(a).all():
        return g.clone(), float("nan")
    scale = float(np.diagonal(a).max())
    if scale <= 0.0:
        return torch.zeros_like(g), 0.0
    return _tensor(a / scale), scale


def _positive_semidefinite(h: Array) -> Array:
    """``h`` (max diagonal ≈ 1), or the nearest positive semi-definite matrix where it is not
    PSD to float64 rounding.

    A Gramian formed in float32 (or from rounded gradients) can be indefinite by ~1e-7, and
    a quadratic programme on it unbounded along a direction of negative curvature: clip the
    negative eigenvalues to 0, a change within the input's own error. One Cholesky of
    ``h + 4 K eps I`` tells whether it is needed.
    """
    k = h.shape[0]
    try:
        np.linalg.cholesky(h + (4 * k * _EPS) * np.eye(k))
        return h
    except np.linalg.LinAlgError:
        pass
    lam, q = np.linalg.eigh(h)
    h = (q * np.maximum(lam, 0.0)) @ q.T
    return 0.5 * (h + h.T)


def _solve_free(h: Array, eye: Array, neg_c: Array, free: NDArray[np.bool_]) -> Array:
    """For each row b: the minimiser of ½ xᵀHx + c_bᵀx over x supported on ``free[b]``.

    Solves ``H_FF x_F = −c_F`` (coordinates outside F are 0) as one batched K × K system
    with identity rows outside F: LU with partial pivoting (backward stable on the positive
    definite blocks as on the others), then minimum-norm least squares for the rows where
    the free block is singular (the solve fails or gives non-finite values).
    """
    m = np.where(free[:, :, None] & free[:, None, :], h, eye)
    rhs = np.where(free, neg_c, 0.0)[:, :, None]
    try:
        z = np.linalg.solve(m, rhs)[:, :, 0]
        bad = ~np.isfinite(z).all(axis=1)
    except np.linalg.LinAlgError:  # some block is exactly singular: row by row
        z = np.zeros(rhs.shape[:2])
        bad = np.zeros(len(z), dtype=bool)
        for b in range(len(z)):
            try:
                z[b] = np.linalg.solve(m[b], rhs[b])[:, 0]
            except np.linalg.LinAlgError:
                bad[b] = True
        bad |= ~np.isfinite(z).all(axis=1)
    for row in np.flatnonzero(bad):
        z[row] = np.linalg.lstsq(m[row], rhs[row], rcond=None)[0][:, 0]
    return np.where(free, z, 0.0)


class _NNQP:
    """``min_{x ≥ 0} ½ xᵀHx + c_bᵀx`` for the rows c_b of c, and its rounding tolerance."""

    def __init__(self, h: Array, c: Array, eps: float) -> None:
        self.h, self.c, self.neg_c = h, c, -c
        self.k = h.shape[0]
        self.eye = np.eye(self.k)
        unit = _TOL_FACTOR * self.k * eps
        self.tol_h = unit * float(np.abs(h).max())
        self.tol_c = unit * np.abs(c).max(axis=1, keepdims=True)

    def solve_free(self, free: NDArray[np.bool_]) -> Array:
        return _solve_free(self.h, self.eye, self.neg_c, free)

    def gradient(self, x: Array) -> Array:
        grad: Array = x @ self.h + self.c
        return grad

    def tolerance(self, x: Array) -> Array:
        """(B, 1) rounding error of the gradient H x_b + c_b: 8 K eps (max|H| max|x_b| + max|c_b|),
        with eps the unit roundoff of the input (float64's, or float32's for a float32 Gramian)."""
        tol: Array = self.tol_c + self.tol_h * np.abs(x).max(axis=1, keepdims=True)
        return tol

    def kkt(self, x: Array, slack: float = _ACCEPT) -> NDArray[np.bool_]:
        """(B,) whether x ≥ 0 is optimal to rounding: ∇ ≥ −tol, and |∇| ≤ tol where x > 0."""
        grad = self.gradient(x)
        tol = slack * self.tolerance(x)
        return _each_row((grad >= -tol) & ((x <= 0) | (grad <= tol)))

    def rows(self, rows: NDArray[np.intp]) -> _NNQP:
        sub = _NNQP.__new__(_NNQP)
        sub.__dict__.update(self.__dict__)
        sub.c, sub.neg_c, sub.tol_c = self.c[rows], self.neg_c[rows], self.tol_c[rows]
        return sub


def _block_pivoting(p: _NNQP, free: NDArray[np.bool_], max_iter: int) -> Array:
    """Block principal pivoting (Júdice & Pires 1994; Kim & Park 2011), all rows at once.

    From the guess ``free`` of the free set F: solve it exactly (x_F = −H_FF⁻¹ c_F, 0
    elsewhere), and exchange every infeasible coordinate — a negative free value leaves F,
    a negative gradient at a fixed one enters — in one go; usually a handful of iterations
    whatever K. It can cycle when H is not an M-matrix: a row whose number of infeasible
    coordinates has not decreased for three exchanges is given up. Returns the last iterate
    of every row, clipped to x ≥ 0 (the caller checks optimality).
    """
    b, k = p.c.shape
    x = np.zeros((b, k))
    free = free.copy()
    active = _any_in_row(free)
    best = np.full(b, k + 1)
    patience = np.full(b, 3)
    for _ in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        if rows.size == b:
            z = p.solve_free(free)
        else:  # solve only the rows still at work
            z = np.zeros((b, k))
            z[rows] = p.rows(rows).solve_free(free[rows])
        wrong = np.where(free, z, p.gradient(z)) < -p.tolerance(z)
        n_wrong = wrong.sum(axis=1)
        x = np.where(active[:, None], z, x)
        patience = np.where(n_wrong < best, 3, patience - 1)
        best = np.minimum(n_wrong, best)
        active = active & (n_wrong > 0) & (patience >= 0)
        free = free ^ (wrong & active[:, None])
    return np.maximum(x, 0.0)


def _lawson_hanson(p: _NNQP, x0: Array, max_iter: int) -> tuple[Array, NDArray[np.bool_]]:
    """Lawson–Hanson active set from a feasible start x0 ≥ 0, all rows at once; ``(x, ok)``.

    First settle: with the free set {x0 > 0}, move from x0 towards the exact minimiser on
    that set until it is reached or a coordinate hits 0 (then fix it and repeat). Then
    repeatedly free the coordinate with the most negative gradient and settle again. The
    objective decreases strictly at every step, so no free set repeats and the method
    terminates. A coordinate whose freeing does not increase it (possible only by rounding)
    is blocked until the next successful step, which rules out cycling.
    """
    b, k = p.c.shape
    x = x0.copy()
    free = x > 0
    blocked = np.zeros((b, k), dtype=bool)
    rows = np.arange(b)
    fr, xr, sub = free.copy(), x.copy(), p
    z = sub.solve_free(fr)
    for it in range(max_iter):
        if it > 0:
            masked = np.where(free | blocked, -np.inf, -p.gradient(x))
            t, best = masked.argmax(axis=1), masked.max(axis=1)
            rows = np.flatnonzero(best > p.tolerance(x)[:, 0])
            if rows.size == 0:
                break
            tr = t[rows]
            n = np.arange(rows.size)
            fr = free[rows]
            fr[n, tr] = True
            xr, sub = x[rows], p.rows(rows)
            z = sub.solve_free(fr)
            # freeing t must increase x_t (it does in exact arithmetic since ∂f/∂x_t < 0)
            degenerate = z[n, tr] <= 0
            if degenerate.any():
                blocked[rows[degenerate], tr[degenerate]] = True
                keep = np.flatnonzero(~degenerate)
                if keep.size == 0:
                    continue
                rows, fr, xr, z, sub = rows[keep], fr[keep], xr[keep], z[keep], sub.rows(keep)
        for _ in range(k + 1):
            leaving = fr & (z <= 0)
            moving = _any_in_row(leaving)
            if not moving.any():
                break
            # largest step towards z that keeps x ≥ 0; the coordinate that hits 0 is fixed
            ratio = np.where(leaving, xr / np.maximum(xr - z, _TINY), np.inf)
            j, alpha = ratio.argmin(axis=1), ratio.min(axis=1)
            alpha = np.where(moving, np.clip(alpha, 0.0, 1.0), 0.0)
            xr = xr + alpha[:, None] * (z - xr)
            mi = np.flatnonzero(moving)
            xr[mi, j[mi]] = 0.0
            fr = fr & ~(moving[:, None] & (xr <= 0))
            xr = np.maximum(xr, 0.0)
            z = sub.solve_free(fr)
        x[rows] = np.maximum(z, 0.0)
        free[rows] = fr & (z > 0)
        blocked[rows] = False
    return x, p.kkt(x)


def nonneg_qp(
    h: ArrayLike | Tensor,
    c: ArrayLike | Tensor,
    free: ArrayLike | Tensor | None = None,
    eps: float = _EPS,
) -> tuple[Array, bool]:
    """Solve ``min_{x ≥ 0} ½ xᵀ H x + c_bᵀ x`` for every row ``c_b`` of ``c``.

    ``h``: (K, K) symmetric positive semi-definite; ``c``: (B, K) (the B problems share H
    and are solved together); arrays or CPU tensors, taken in float64. Returns
    ``(x, converged)`` with x a (B, K) float64 array, ``x ≥ 0``, and on convergence, for
    every b and k::

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
    h, c = _array(h), _array(c)
    b, k = c.shape
    if k == 0 or b == 0:
        return np.zeros((b, k)), True
    p = _NNQP(h, c, eps)
    start = c < -p.tolerance(np.zeros((1, k))) if free is None else _array(free) > 0
    x = _block_pivoting(p, start, max_iter=2 * k + 10)
    ok = p.kkt(x)
    # rows left unsolved: Lawson–Hanson from the last iterate, then (rounding can stall a
    # warm start on a singular H) from x = 0 as the textbook method does
    for warm in (True, False):
        if ok.all():
            break
        rows = np.flatnonzero(~ok)
        begin = x[rows] if warm else np.zeros((rows.size, k))
        x_lh, ok_lh = _lawson_hanson(p.rows(rows), begin, max_iter=6 * k + 20)
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


def resolved(
    g: ArrayLike | Tensor, w: ArrayLike | Tensor, eps: float = _EPS, scale: float = 0.0
) -> bool:
    """Whether the Gramian tells ``d = Jᵀw`` apart from 0, with a direction that can be
    certified.

    ``g``: a (K, K) float64 Gramian (any scale), ``w``: (K,) float64 weights. The Gramian's
    entries are known to ``eps · |g_i| |g_j|`` at best (``eps``: the unit roundoff it was
    accumulated in), so ``|d|² = wᵀGw`` is known to ``eps · S²`` with ``S = Σ_k |w_k| |g_k|``,
    the size of the terms that cancel in d (float64's own rounding of ``wᵀGw`` grows like
    ``√K eps S²``), and each cosine of d with a row to about ``eps S / |d|``. A margin of that
    size (:func:`_with_margin`) fits only in a cone wider than it, so the direction can be
    kept non-conflicting only while ``(S / |d|)² eps`` stays well below 1. Returns False when
    ``|d|² ≤ 128 √K eps S²`` (``S / |d| ≳ 4·10⁶`` in float64, ``≳ 170`` in float32 at K = 5;
    the constant is where ~10⁴ near-stationary test Jacobians stopped producing conflicts):
    then d is rounding noise or too close to it, and the exact update — at a stationary
    point to working precision — is 0. In float32 and float64 a d whose terms do not cancel
    (``|d| ≥ S / √K`` when the weighted rows are orthogonal) is always resolved; a Gramian
    held in bf16 resolves nothing. ``scale``: a lower bound on S where w came out of a
    computation on larger terms (a projection of a combination of that size).
    """
    g, w = _array(g), _array(w)
    k = g.shape[0]
    if k == 0:
        return False
    s = max(float(np.abs(w) @ np.sqrt(np.maximum(np.diagonal(g), 0.0))), scale)
    d2 = float(w @ g @ w)
    return math.isfinite(d2) and s > 0 and d2 > _RESOLVE * math.sqrt(k) * eps * s * s


def min_norm_weights(g: Tensor, eps: float = _EPS) -> Tensor:
    """Weights w of the min-norm point of the rows' convex hull, for a normalised Gramian.

    ``g``: (K, K) float64 from :func:`prepare_gramian` (max diagonal 1). Returns w ≥ 0 with
    ``Σ w = 1`` minimising ``wᵀ g w``, polished on its support (:func:`_refine_min_norm`)
    where the active set's answer misses the certificate by more than rounding.

    Or w = 0, where the result tells d = Jᵀw from 0 no better than rounding: where some
    ``⟨g_k, d⟩ = (gw)_k < 0`` (the certificate ``⟨g_k, d⟩ ≥ |d|² − tol`` then puts ``|d|²``
    within the solver's tolerance: 0 is in the hull to working precision, and the
    computed d, rounding noise, would conflict with that task), or where the Gramian does
    not resolve d (:func:`resolved`).
    """
    ga = _array(g)
    k = ga.shape[0]
    h = _positive_semidefinite(ga) + 1.0
    u, ok = nonneg_qp(h, -np.ones((1, k)), eps=eps)
    if not ok:
        _warn_unconverged("MGDA")
    w = u[0] / u[0].sum()
    if not resolved(ga, w, eps):
        return torch.zeros(k, dtype=torch.float64)
    if (_min_norm_violation(ga, w) > 1.0).any():
        w = _refine_min_norm(ga, w)
    if (ga @ w < 0).any() or not resolved(ga, w, eps):
        return torch.zeros(k, dtype=torch.float64)
    return _tensor(w)


def _bordered_solve(g: Array, free: NDArray[np.bool_]) -> Array | None:
    """The minimiser of ``wᵀgw`` over ``{w : 1ᵀw = 1, w = 0 off free}``, from the bordered
    system ``[G_FF 1; 1ᵀ 0] [w_F; −|d|²] = [0; 1]``; None where it is singular."""
    idx = np.flatnonzero(free)
    f = idx.size
    m = np.zeros((f + 1, f + 1))
    m[:f, :f] = g[np.ix_(idx, idx)]
    m[:f, f] = 1.0
    m[f, :f] = 1.0
    rhs = np.zeros(f + 1)
    rhs[f] = 1.0
    try:
        sol = np.linalg.solve(m, rhs)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(sol).all():
        return None
    z = np.zeros(g.shape[0])
    z[idx] = sol[:f]
    return z


def _min_norm_violation(g: Array, w: Array) -> Array:
    """(K,) how far each ``⟨g_k, d⟩`` falls short of ``|d|²``, in units of its rounding error."""
    k = g.shape[0]
    gw = g @ w
    d2 = float(w @ gw)
    err = _TOL_FACTOR * k * _EPS * (np.abs(g) @ np.abs(w) + d2)
    out: Array = (d2 - gw) / np.maximum(err, _TINY)
    return out


def _refine_min_norm(g: Array, w: Array) -> Array:
    """The min-norm weights polished by Wolfe's method from the active set's answer.

    The programme's stopping rule is absolute (``⟨g_k, d⟩ ≥ |d|² − tol`` with tol ~1e-14 of
    the largest squared row norm: the reduction's ``11ᵀ`` term is only known to that), so a
    small min-norm point comes out with inaccurate weights or support. Wolfe's method
    (Wolfe, "Finding the nearest point in a polytope", Mathematical Programming, 1976)
    works on the support F without that term: solve the bordered system on F exactly
    (:func:`_bordered_solve`); if the solution leaves the simplex, move towards it until a
    weight reaches 0 and drop it; else add the row whose ``⟨g_k, d⟩`` falls furthest below
    ``|d|²`` beyond the rounding of that product, until none does. The polished weights are
    kept only where they violate the certificate less.
    """
    k = g.shape[0]
    x = w.copy()
    free = x > 0
    for _ in range(4 * k + 10):
        z = _bordered_solve(g, free)
        if z is None:
            break
        if (z[free] > 0).all():
            x = z
            viol = np.where(free, -np.inf, _min_norm_violation(g, x))
            j = int(np.argmax(viol))
            if not float(viol[j]) > 1.0:
                break
            free[j] = True
            continue
        # move towards z until the first weight reaches 0, and drop it
        leaving = free & (z <= 0)
        ratio = np.where(leaving, x / np.maximum(x - z, _TINY), 2.0)
        j = int(np.argmin(ratio))
        x = np.maximum(x + float(np.clip(ratio[j], 0.0, 1.0)) * (z - x), 0.0)
        x[j] = 0.0
        free = x > 0
        if not free.any():
            return w
    if not (x >= 0).all() or not abs(float(x.sum()) - 1.0) <= 1e-12:
        return w
    x = x / x.sum()
    better = float(_min_norm_violation(g, x).max()) < float(_min_norm_violation(g, w).max())
    return x if better else w


def _numerical_rank_psd(h: Array, eps: float) -> Array:
    """``h`` with every eigenvalue at or below ``8 K eps · λ_max`` set to 0: the nearest PSD
    matrix whose null directions are exact, dropping only curvature within the rounding of
    a Gramian held to ``eps`` (Weyl: a perturbation of the entries by ``eps`` moves each
    eigenvalue by at most ``K eps``)."""
    k = h.shape[0]
    lam, q = np.linalg.eigh(h)
    top = float(lam[-1]) if k else 0.0
    lam = np.where(lam > _TOL_FACTOR * k * eps * max(top, 0.0), lam, 0.0)
    h = (q * lam) @ q.T
    return 0.5 * (h + h.T)


def _coordinate_descent(p: _NNQP, x0: Array, max_sweeps: int) -> tuple[Array, NDArray[np.bool_]]:
    """Dual coordinate descent from ``x0 ≥ 0``, all rows at once; ``(x, ok)``.

    Hildreth's method (Hildreth, "A quadratic programming procedure", Naval Research
    Logistics Quarterly, 1957): minimise ``½ xᵀHx + cᵀx`` over one coordinate at a time,
    exactly, ``x_k ← max(0, x_k − (Hx + c)_k / H_kk)``. For a PSD H whose objective is bounded
    below on ``x ≥ 0`` it converges to a minimiser at a linear rate (Luo & Tseng, "On the
    convergence of the coordinate descent method for convex differentiable minimization",
    JOTA 1992), without the linear solves that an active-set method can lose to rounding.
    The KKT conditions of :meth:`_NNQP.kkt` are checked every K sweeps.
    """
    h = p.h
    x = x0.copy()
    grad = x @ h + p.c
    diag = np.diag(h)
    k = h.shape[0]
    for sweep in range(max_sweeps):
        for j in range(k):
            if diag[j] <= 0:
                continue
            new = np.maximum(x[:, j] - grad[:, j] / diag[j], 0.0)
            step = new - x[:, j]
            x[:, j] = new
            grad += step[:, None] * h[j]
        if sweep % k == k - 1 or sweep == max_sweeps - 1:
            ok = p.kkt(x)
            if ok.all():
                return x, ok
    return x, p.kkt(x)


def projection_kkt(
    h: ArrayLike | Tensor, a: ArrayLike | Tensor, y: ArrayLike | Tensor, eps: float = _EPS
) -> NDArray[np.bool_]:
    """(B,) the certificate of a dual-cone projection: whether ``y ≥ 0`` minimises
    ``½ (a_b + y)ᵀ h (a_b + y)`` to rounding.

    With ``v = a_b + y`` and the gradient ``∇ = v h`` (``⟨g_k, d⟩ / |g_k|`` in Jacobi-scaled
    variables): ``∇ ≥ −tol`` (the projection conflicts with no row) and ``∇ ≤ tol`` where
    ``y > 0`` (complementary slackness), with ``tol = 32 K eps max|h| Σ_j (|a_bj| + |y_j|)``:
    four times the rounding error of ∇ (as :func:`nonneg_qp` accepts), a sum of K terms as
    large as ``|v_j| |h_jk|`` that cancel on the rows the projection lies on (v itself the
    sum of a and y, which cancel where the projection is ~0), with entries of h known to
    ``eps`` (the input's unit roundoff).
    """
    h, a, y = _array(h), _array(a), _array(y)
    k = h.shape[0]
    v = a + y
    grad = v @ h
    unit = _ACCEPT * _TOL_FACTOR * k * eps * float(np.abs(h).max())
    tol = unit * (np.abs(a) + np.abs(y)).sum(axis=1, keepdims=True)
    return _each_row((y >= 0) & (grad >= -tol) & ((y <= 0) | (grad <= tol)))


def _certified_projection(
    h: ArrayLike | Tensor, a: ArrayLike | Tensor, eps: float
) -> tuple[Array, NDArray[np.bool_]]:
    """``y ≥ 0`` minimising ``½ (a_b + y)ᵀ h (a_b + y)`` for every row ``a_b``, and whether the
    result is certified (:func:`projection_kkt`: the KKT conditions to rounding on ``h``
    itself).

    Solvers in turn, each on the rows the previous ones left uncertified:

    1. the active-set method of :func:`nonneg_qp` on ``h`` (PSD-clipped where rounding left
       it indefinite);
    2. the same on ``h`` with its rounding-level eigenvalues set to 0 (a Gramian that
       rounding left barely positive definite can make the optimum run off along a
       direction of curvature ~eps; with exact null directions it is finite);
    3. dual coordinate descent (:func:`_coordinate_descent`) from the last active-set
       iterate, which needs no linear solve.
    """
    h, a = _array(h), _array(a)
    y = np.zeros_like(a)
    ok = np.zeros(a.shape[0], dtype=bool)
    h_psd = _positive_semidefinite(h)
    h_rank: Array | None = None
    for kind in ("psd", "rank", "descent"):
        rows = np.flatnonzero(~ok)
        if rows.size == 0:
            break
        ar = a[rows]
        if kind == "psd":
            yr, _ = nonneg_qp(h_psd, ar @ h_psd, eps=eps)
        else:
            h_rank = _numerical_rank_psd(h, eps) if h_rank is None else h_rank
            if kind == "rank":
                yr, _ = nonneg_qp(h_rank, ar @ h_rank, eps=eps)
            else:
                p = _NNQP(h_rank, ar @ h_rank, eps)
                yr, _ = _coordinate_descent(p, y[rows], max_sweeps=_SWEEPS * h.shape[0])
        yr = _array(yr)
        good = projection_kkt(h, ar, yr, eps)
        # the latest active-set iterate starts the coordinate descent where none is certified
        take = good | (kind != "descent")
        y[rows[take]] = yr[take]
        ok[rows[good]] = True
    return y, ok


def _with_margin(h: Array, a: Array, y: Array, ok: NDArray[np.bool_], eps: float) -> Array:
    """Certified projections re-solved with a margin where their rounding can conflict.

    ``d_b = Jᵀ(a_b + y_b)`` (scaled variables) is a sum whose terms have total size
    ``S_b = Σ_k |a_bk + y_bk|`` (``Σ_k |v_k| |g_k|`` unscaled); the Gramian and the evaluation
    of d are exact to about ``K eps S_b`` in each ``⟨g_k, d⟩ / |g_k|``. On a binding row the
    exact value is 0, so where ``S_b > 64 |d_b|`` (a thin cone: the projection is a large
    cancelling combination of the rows) rounding alone can make it conflict by far more
    than ``eps |g_k| |d|``. Such rows are solved again with every constraint tightened to
    ``⟨g_k, d⟩ / |g_k| ≥ μ_b = 2 √K eps S_b`` (the linear term shifted by ``−μ_b``), which moves
    d by about its own rounding error and puts binding rows on the safe side of it. The
    tightened solution is kept only where it is certified, stays as large (``S`` at most
    doubled) and conflicts with no row on h; where the tightened set is empty (rows that
    every point of the cone is orthogonal to) the plain projection stays.
    """
    k = h.shape[0]
    v = a + y
    s = np.abs(v).sum(axis=1)
    dn = np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", v, h, v), 0.0))
    # a projection the Gramian does not resolve is rounding noise: no margin can help it
    noise = dn * dn <= _RESOLVE * math.sqrt(k) * eps * s * s
    need = ok & (s > _MARGIN_TRIGGER * dn) & (s > 0) & ~noise
    rows = np.flatnonzero(need)
    if rows.size == 0:
        return y
    mu = (_MARGIN * math.sqrt(k) * eps * s[rows])[:, None]
    ar = a[rows]
    hh = _positive_semidefinite(h)
    ym, _ = nonneg_qp(hh, ar @ hh - mu, eps=eps)
    vm = ar + ym
    accept = (
        projection_kkt(h, ar, ym, eps)
        & (np.abs(vm).sum(axis=1) <= 2 * s[rows])
        & (vm @ h >= 0).all(axis=1)
    )
    y = y.copy()
    y[rows[accept]] = ym[accept]
    return y


def dual_cone_weights(g: Tensor, u: ArrayLike | Tensor, eps: float = _EPS) -> Tensor:
    """Weights ``v_b`` with ``Jᵀv_b`` the projection of ``Jᵀu_b`` onto ``{x : J x ≥ 0}``.

    ``g``: (K, K) normalised Gramian of J; ``u``: (B, K) weights of the vectors to project.
    Returns ``u + λ*`` (B, K), where ``λ* ≥ 0`` minimises ``(u + λ)ᵀ g (u + λ)``
    (Quinton & Rey 2024, Prop. 1); then ``g (u + λ*) ≥ 0``: the projection conflicts with
    no row of J. The programme is solved in the variables ``|g_k| λ_k`` (Jacobi scaling), so
    the stopping rule bounds ``⟨g_k, d⟩ / |g_k|`` and rows of very different norms are
    treated alike.

    Every projection is **certified** before it is returned (:func:`_certified_projection`:
    KKT conditions to rounding on g itself, after up to three solvers). A projection that no
    solver certifies is replaced by 0 — a point of the cone, so the result still conflicts
    with no task — with a ``RuntimeWarning``: the Gramian does not determine it to working
    precision.
    """
    ga, ua = _array(g), _array(u)
    if (ua @ ga >= 0).all():  # Jᵀu_b conflicts with no row: it is its own projection
        return _tensor(ua.copy())
    norms = np.sqrt(np.diagonal(ga))
    norms = np.where(norms > 0, norms, 1.0)
    h = ga / (norms[:, None] * norms[None, :])
    a = ua * norms
    y, ok = _certified_projection(h, a, eps)
    y = _with_margin(h, a, y, ok, eps)
    v = ua + y / norms
    if not ok.all():
        warnings.warn(
            "dual-cone projection: no solver met the KKT conditions to rounding on this "
            "Gramian (it does not determine the projection to working precision); the "
            f"projection of {int((~ok).sum())} of {ok.size} vector(s) is replaced by 0, "
            "which conflicts with no task",
            RuntimeWarning,
            stacklevel=3,
        )
        v[~ok] = 0.0
    return _tensor(v)


def conflict_free_part(gramian: Tensor, alpha: Tensor, eps: float) -> Tensor:
    """Weights of the projection of ``d = Jᵀα`` onto the dual cone ``{x : Jx ≥ 0}``, or 0 where
    the Gramian does not tell that projection from 0 (:func:`resolved`); ``gramian``: the
    (K, K) float64 Gramian, ``alpha``: (K,) float64 weights.

    For weights that do not solve Nash-MTL's or FairGrad's power equation — no solution
    exists at a Pareto-stationary point, where Newton's iterate or its ridge-regularised
    substitute conflicts with some task — this keeps the part of their direction that hurts
    no task: the update of DualProj with preference α (:func:`dual_cone_weights`,
    certified), 0 at a strongly stationary J. α is first reduced to the numerical range of
    G (eigenvalues above ``8 K eps λ_max``): the weights that Newton grew along a direction
    v ≥ 0 with Jᵀv ≈ 0 move d by rounding only, and would otherwise swamp it. Computed in
    :func:`._gramian.canonical_order`, so it does not depend on the order of the rows.
    """
    gt, scale = prepare_gramian(gramian)
    if not scale > 0:
        return torch.zeros_like(alpha)
    g, al = _array(gt), _array(alpha)
    k = g.shape[0]
    order = canonical_order(g)  # the same rounding in any row order
    g, al = g[np.ix_(order, order)], al[order]
    lam, q = np.linalg.eigh(g)
    basis = q[:, lam > 8 * k * eps * float(lam[-1])]
    a = basis @ (basis.T @ al)
    v = _array(dual_cone_weights(_tensor(g), _tensor(a[None, :]), eps))[0]
    size = float(np.abs(a) @ np.sqrt(np.maximum(np.diagonal(g), 0.0)))
    out = np.zeros_like(v)
    if resolved(g, v, eps, scale=size):
        out[order] = v
    return _tensor(out)
