"""A batched exact Newton solver for ``LinearSVC``'s problem, warm-started along the costs.

The problem (liblinear's L2-regularised squared-hinge SVM with a regularised bias,
``intercept_scaling=1``, the one :mod:`pipeline.evaluate.classify.svm` solves with
``sklearn.svm.LinearSVC``)::

    min_w  0.5 ||w||^2 + sum_i c_i max(0, 1 - y_i w . x_i)^2

over rows ``x_i`` augmented with a constant 1 (the bias), labels ``y_i`` in {1, -1} and
per-row costs ``c_i = C * class_weight[y_i]``. It is strictly convex and piecewise
quadratic, so the finite Newton method (Keerthi and DeCoste, JMLR 2005, "L2-SVM-MFN")
solves it exactly: with A the rows of margin ``y_i w . x_i < 1``, the minimiser of the
quadratic on A is one linear solve; an exact line search along the step keeps the method
globally convergent, and it stops when the active set no longer changes after a full
step, or when the gradient is below ``TOL`` relative to its value at w = 0. A handful of
steps suffice.

Everything is in the dual (Gram) form: w = sum_i beta_i x_i, outputs o = G beta, and a
step solves ``(G_AA + diag(1 / 2c_A)) beta_A = y_A`` with G the Gram matrix of the
augmented rows, computed once per training set. A batch of problems (classes x CV folds,
each a subset of the rows with its own labels and costs; rows outside a problem's
training set have cost 0) shares G, so the outputs on the held-out rows come for free
and the batch's conjugate-gradient products are one matrix product. Each step's system is
solved per problem by whichever is cheaper:

- conjugate gradients preconditioned with P = diag(1 / 2c_A) + Z_A Z_A^T, Z a rank-k
  Nystrom factor of G (:func:`nystrom`; G = Z Z^T + R, R PSD, so the preconditioned
  condition number is at most 1 + ||R|| * 2 max(c_A): small for small costs, where the
  active set is nearly every row), batched over the problems; or
- a Cholesky factorisation of the |A|-square system (large costs, small active sets).

CG that misses its tolerance falls back to Cholesky. Costs are visited from the smallest
up, each warm-started from the previous solution. float64 torch on the device of G (the
CPU, or a GPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

DTYPE = torch.float64
MAX_ITER = 50  # Newton steps per problem and cost; a handful are used in practice
TOL = 1e-9  # converged when ||grad f(w)|| <= TOL * ||grad f(0)|| (or the active set is stable)
CG_TOL = 1e-12  # relative residual of a conjugate-gradient Newton step
RANK = 128  # rank of the Nystrom preconditioner
MAX_GRAM_BYTES = 4 * 2**30  # the N x N float64 Gram matrix must fit in this


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def augment(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, D) rows -> (N, D + 1) float64 rows with the constant bias feature 1."""
    t = torch.as_tensor(np.asarray(x), dtype=DTYPE).to(device)  # (N, D)
    return torch.cat([t, torch.ones(len(t), 1, dtype=DTYPE, device=device)], dim=1)


def gram(xa: torch.Tensor) -> torch.Tensor:
    """(N, N) Gram matrix of augmented rows; a clear error when it would not fit."""
    n = len(xa)
    if n * n * 8 > MAX_GRAM_BYTES:
        raise ValueError(
            f"the Newton SVM solver needs the {n} x {n} Gram matrix "
            f"({n * n * 8 / 2**30:.1f} GiB > {MAX_GRAM_BYTES / 2**30:.0f} GiB); "
            "use solver 'sklearn' (classify.solver: sklearn) for this many rows"
        )
    return xa @ xa.T


@dataclass
class Basis:
    """A Nystrom factor of a Gram matrix: G = Z Z^T + R with R positive semi-definite and
    ||R|| about ``residual``. The rows of Z of any subset of rows split that sub-block of
    G the same way (R's principal sub-blocks are PSD with no larger norm)."""

    z: torch.Tensor  # (N, k)
    residual: float


def nystrom(
    g: torch.Tensor, rank: int | None = None, seed: int = 0, power: int = 2
) -> Basis | None:
    """A rank-``rank`` (default ``RANK``) Nystrom factor of the Gram matrix ``g`` by
    randomised subspace iteration (``power`` passes), with a (generous) estimate of its
    residual's norm. None when ``g`` is too small for a low-rank factor to pay."""
    rank = RANK if rank is None else rank
    n = len(g)
    if rank <= 0 or n <= 2 * rank:
        return None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(n, rank, generator=gen, dtype=DTYPE).to(g.device)  # (N, k)
    for _ in range(power):
        q = torch.linalg.qr(g @ q).Q  # (N, k)
    gq = g @ q  # (N, k)
    core = q.T @ gq  # (k, k)
    core = 0.5 * (core + core.T)
    core.diagonal().add_(1e-12 * float(core.diagonal().max()))
    chol, info = torch.linalg.cholesky_ex(core)
    if int(info) != 0:
        return None
    z = torch.linalg.solve_triangular(chol, gq.T, upper=False).T  # (N, k): ZZ^T = GQ(Q^TGQ)^-1Q^TG
    v = torch.randn(n, generator=gen, dtype=DTYPE).to(g.device)  # power iteration on R
    lam = 0.0
    for _ in range(30):
        v = v / v.norm()
        rv = g @ v - z @ (z.T @ v)  # (N,)
        lam = float(v @ rv)
        v = rv
    return Basis(z, 2.0 * max(lam, 0.0))  # the power iteration approaches ||R|| from below


@dataclass
class Solution:
    """A batch of solved problems: ``beta`` (B, N) with w_b = sum_i beta_bi x_i (zero off
    each problem's training rows), ``outputs`` (B, N) = w_b . x_i on every row (training
    or not), Newton ``steps`` and ``converged`` per problem."""

    beta: torch.Tensor
    outputs: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor

    def weights(self, xa: torch.Tensor) -> torch.Tensor:
        """(B, D + 1) w of each problem (bias last) from the augmented rows ``xa``."""
        return self.beta @ xa


def _spd_solve(m: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve m z = rhs for a symmetric positive definite m (Cholesky)."""
    chol, info = torch.linalg.cholesky_ex(m)
    if int(info) != 0:  # not numerically PD (cannot happen with 1/2c > 0 on the diagonal)
        return torch.linalg.solve(m, rhs)
    z = torch.linalg.solve_triangular(chol, rhs[:, None], upper=False)  # (|A|, 1)
    return torch.linalg.solve_triangular(chol.T, z, upper=True)[:, 0]


def _pcg(
    g: torch.Tensor,
    z: torch.Tensor,
    e: torch.Tensor,
    act: torch.Tensor,
    rhs: torch.Tensor,
    x0: torch.Tensor,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched preconditioned CG for (G_AA + diag(e_A)) x_A = rhs_A, one problem a row.

    ``e``, ``rhs``, ``x0`` (R, N) and ``act`` (R, N) bool (A of each row); ``z`` (N, k)
    the Nystrom factor of G, preconditioner diag(e_A) + Z_A Z_A^T applied by Woodbury.
    Returns x (R, N), zero off A, and which rows reached CG_TOL.
    """
    einv = torch.where(act, 1.0 / torch.where(act, e, 1.0), 0.0)  # (R, N)
    core = torch.einsum("nk,rn,nj->rkj", z, einv, z)  # (R, k, k)
    core.diagonal(dim1=1, dim2=2).add_(1.0)
    chol, info = torch.linalg.cholesky_ex(core)  # (R, k, k)
    ok = info == 0

    def op(v: torch.Tensor) -> torch.Tensor:
        return torch.where(act, v @ g + e * v, 0.0)  # (R, N)

    def prec(r: torch.Tensor) -> torch.Tensor:
        t = einv * r  # (R, N)
        u = torch.cholesky_solve((t @ z)[:, :, None], chol)[:, :, 0]  # (R, k)
        return t - einv * (u @ z.T)  # (R, N)

    b = torch.where(act, rhs, 0.0)  # (R, N)
    x = torch.where(act, x0, 0.0)  # (R, N)
    r = b - op(x)
    goal = CG_TOL * b.norm(dim=1)  # (R,)
    done = (r.norm(dim=1) <= goal) | ~ok
    p = prec(r)
    rz = (r * p).sum(dim=1)  # (R,)
    for _ in range(max_iter):
        if bool(done.all()):
            break
        ap = op(p)  # (R, N)
        alpha = torch.where(done, 0.0, rz / torch.where(done, 1.0, (p * ap).sum(dim=1)))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        done = done | (r.norm(dim=1) <= goal)
        zr = prec(r)
        rz_new = (r * zr).sum(dim=1)
        ratio = torch.where(done, 0.0, rz_new / torch.where(done, 1.0, rz))
        p = zr + ratio[:, None] * p
        rz = rz_new
    return x, (r.norm(dim=1) <= goal) & ok


def _targets(
    g: torch.Tensor,
    basis: Basis | None,
    y: torch.Tensor,
    cost: torch.Tensor,
    act: torch.Tensor,
    beta: torch.Tensor,
) -> torch.Tensor:
    """(R, N) minimisers of each problem's quadratic on its active rows ``act``."""
    n = g.shape[0]
    e = torch.where(act, 0.5 / torch.where(act, cost, 1.0), 0.0)  # (R, N)
    out = torch.zeros_like(beta)
    na = act.sum(dim=1).tolist()
    chol_rows: list[int] = []
    pcg_rows: list[int] = []
    its = 0
    if basis is not None:
        emin = torch.where(act, e, math.inf).min(dim=1).values.tolist()
        k = basis.z.shape[1]
        for r, (m, lo) in enumerate(zip(na, emin, strict=True)):
            kappa = 1.0 + basis.residual / lo if m else 1.0
            it = math.ceil(0.5 * math.sqrt(kappa) * math.log(2 / CG_TOL)) + 2
            # CG's products are one batched matrix product (fast); Cholesky needs a gather
            if n * k * k + it * n * n < m**3 / 3:
                pcg_rows.append(r)
                its = max(its, it)
            else:
                chol_rows.append(r)
    else:
        chol_rows = list(range(len(na)))
    if pcg_rows:
        sel = torch.as_tensor(pcg_rows, device=g.device)
        x, ok = _pcg(g, basis.z, e[sel], act[sel], y[sel], beta[sel], 2 * its)
        out[sel[ok]] = x[ok]
        chol_rows += sel[~ok].tolist()
    for r in chol_rows:
        if not na[r]:
            continue
        idx = torch.nonzero(act[r]).squeeze(1)
        m = g.index_select(0, idx).index_select(1, idx)  # (|A|, |A|)
        m.diagonal().add_(e[r, idx])
        out[r, idx] = _spd_solve(m, y[r, idx])
    return out


def line_search(
    o: torch.Tensor,
    delta: torch.Tensor,
    w_dot_d: torch.Tensor,
    d_dot_d: torch.Tensor,
    y: torch.Tensor,
    cost: torch.Tensor,
) -> torch.Tensor:
    """Exact minimisers t >= 0 of f(w + t d) along descent directions d, one per row.

    phi'(t) = <w, d> + t <d, d> - 2 sum_i c_i y_i delta_i max(0, 1 - y_i (o_i + t delta_i)),
    with ``o = X w`` and ``delta = X d`` (R, N): piecewise linear and increasing.
    Safeguarded Newton steps on phi' land on its root in the linear piece that holds it.
    """
    yd = y * delta  # (R, N)
    r = 1 - y * o  # (R, N) margin violation at t = 0
    cyd = cost * yd  # (R, N)
    t = torch.ones_like(w_dot_d)  # (R,)
    lo = torch.zeros_like(t)
    hi = torch.full_like(t, math.inf)
    done = torch.zeros_like(t, dtype=torch.bool)
    for _ in range(100):
        m = r - t[:, None] * yd  # (R, N)
        act = m > 0
        grad = w_dot_d + t * d_dot_d - 2 * torch.where(act, cyd * m, 0.0).sum(dim=1)
        curv = d_dot_d + 2 * torch.where(act, cyd * yd, 0.0).sum(dim=1)
        stop = (grad == 0) | (curv <= 0)
        lo = torch.where(grad < 0, t, lo)
        hi = torch.where(grad > 0, t, hi)
        nxt = t - grad / torch.where(stop, 1.0, curv)
        outside = ~((nxt > lo) & (nxt < hi))
        nxt = torch.where(outside, torch.where(torch.isinf(hi), 2 * t, 0.5 * (lo + hi)), nxt)
        tiny = (nxt - t).abs() <= 1e-15 * torch.clamp(t, min=1.0)
        keep = done | stop
        t = torch.where(keep, t, nxt)
        done = keep | tiny
        if bool(done.all()):
            break
    return t


def solve(
    g: torch.Tensor,
    basis: Basis | None,
    y: torch.Tensor,
    cost: torch.Tensor,
    start: Solution | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> Solution:
    """Solve a batch of problems sharing the Gram matrix ``g`` (N, N).

    ``y`` (B, N) labels in {1, -1}; ``cost`` (B, N) per-row costs, 0 for rows outside a
    problem's training set; ``start`` a previous solution of the same batch (warm start;
    its beta must be zero where ``cost`` is 0).
    """
    train = cost > 0  # (B, N)
    if start is None:
        beta, o = torch.zeros_like(y), torch.zeros_like(y)
    else:
        beta, o = start.beta.clone(), start.outputs.clone()
    v0 = 2 * cost * y  # (B, N): grad f(0) = -X^T v0
    g0 = ((v0 @ g) * v0).sum(dim=1)  # (B,)
    steps = torch.zeros(len(y), dtype=torch.long, device=y.device)
    converged = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    active = train & (y * o < 1)
    run = torch.arange(len(y), device=y.device)
    for _ in range(max_iter):
        if len(run) == 0:
            break
        yr, cr, br, orr, ar = y[run], cost[run], beta[run], o[run], active[run]
        target = _targets(g, basis, yr, cr, ar, br)  # (R, N)
        d = target - br  # (R, N)
        delta = target @ g - orr  # (R, N)
        w_d = (br * delta).sum(dim=1)  # <w, d> = beta^T G d
        d_d = (d * delta).sum(dim=1)
        t = line_search(orr, delta, w_d, d_d, yr, cr)  # (R,)
        t = torch.where(d_d > 0, t, 1.0)
        br = br + t[:, None] * d
        orr = orr + t[:, None] * delta
        now = train[run] & (yr * orr < 1)
        stable = (t == 1.0) & (now == ar).all(dim=1)
        res = br - 2 * cr * yr * torch.clamp(1 - yr * orr, min=0)  # grad f(w) = X^T res
        small = ((res @ g) * res).sum(dim=1) <= tol * tol * g0[run]
        beta[run], o[run], active[run] = br, orr, now
        steps[run] += 1
        done = stable | small
        converged[run[done]] = True
        run = run[~done]
    return Solution(beta, o, steps, converged)


def solve_path(
    g: torch.Tensor,
    basis: Basis | None,
    y: torch.Tensor,
    weight: torch.Tensor,
    costs: Sequence[float],
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> list[Solution]:
    """Solutions of the batch for every cost C of ``costs`` (row costs C * ``weight``,
    ``weight`` (B, N) zero off each problem's training rows), in the order given; solved
    from the smallest cost up, each warm-started from the previous one."""
    out: dict[int, Solution] = {}
    start = None
    for i in sorted(range(len(costs)), key=lambda k: costs[k]):
        start = out[i] = solve(g, basis, y, costs[i] * weight, start, max_iter, tol)
    return [out[i] for i in range(len(costs))]
