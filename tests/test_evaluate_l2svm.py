"""The batched Newton solver of LinearSVC's problem: optimality, its parts, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.svm import LinearSVC

from pipeline.evaluate.classify import l2svm


def problem(n: int, d: int, seed: int, noise: float = 1.0):
    """Rows (N, D), labels in {1, -1} with a linear trend plus noise (not separable)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.where(x @ rng.normal(size=d) + noise * rng.normal(size=n) > 0.5, 1.0, -1.0)
    return x, y


def solve_one(x, y, cost_rows, basis=False, start=None):
    xa = l2svm.augment(x, torch.device("cpu"))  # (N, D+1)
    g = l2svm.gram(xa)
    b = l2svm.nystrom(g, rank=8) if basis else None
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)[None]  # noqa: E731
    sol = l2svm.solve(g, b, t(y), t(cost_rows), start)
    return sol, sol.weights(xa)[0].numpy()


def objective_grad(x, y, c, w):
    """Gradient of 0.5 |w|^2 + sum c max(0, 1 - y w.x)^2 over augmented rows (numpy)."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    m = np.maximum(0, 1 - y * (xa @ w))
    return w - 2 * xa.T @ (c * y * m)


@pytest.mark.parametrize("cost", [0.01, 1.0, 100.0])
def test_solution_is_the_exact_optimum_and_equals_a_tight_liblinear(cost):
    x, y = problem(80, 12, seed=1)
    c = cost * np.where(y == 1, 2.0, 1.0)  # class_weight {1: 2, -1: 1}
    sol, w = solve_one(x, y, c)
    assert bool(sol.converged[0]) and int(sol.steps[0]) <= 15
    g0 = np.linalg.norm(objective_grad(x, y, c, np.zeros(13)))
    assert np.linalg.norm(objective_grad(x, y, c, w)) <= 1e-8 * g0
    ref = LinearSVC(C=cost, class_weight={1: 2, -1: 1}, tol=1e-12, max_iter=1_000_000)
    ref.fit(x, y)
    w_ref = np.r_[ref.coef_[0], ref.intercept_]
    np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6 * np.abs(w_ref).max())


def test_outputs_are_decisions_on_every_row_and_zero_cost_rows_are_left_out():
    x, y = problem(90, 10, seed=2)
    c = np.ones(90)
    c[60:] = 0.0  # rows 60.. are a held-out fold
    sol, w = solve_one(x, y, c)
    xa = np.hstack([x, np.ones((90, 1))])
    np.testing.assert_allclose(sol.outputs[0].numpy(), xa @ w, atol=1e-9)
    assert np.all(sol.beta[0, 60:].numpy() == 0)
    _, w_sub = solve_one(x[:60], y[:60], c[:60])  # the same problem without those rows
    np.testing.assert_allclose(w, w_sub, atol=1e-9)


def test_batched_problems_equal_their_single_solutions():
    x, y = problem(120, 15, seed=3)
    rng = np.random.default_rng(0)
    ys = np.stack([y, -y, np.where(rng.random(120) < 0.3, 1.0, -1.0)])  # (3, N)
    costs = np.stack([np.full(120, 0.1), np.full(120, 10.0), np.where(rng.random(120) < 0.6, 1, 0)])
    xa = l2svm.augment(x, torch.device("cpu"))
    g = l2svm.gram(xa)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    batch = l2svm.solve(g, l2svm.nystrom(g, rank=8), t(ys), t(costs)).weights(xa).numpy()
    for b in range(3):
        _, w = solve_one(x, ys[b], costs[b])
        np.testing.assert_allclose(batch[b], w, atol=1e-8)


def test_warm_start_and_cost_path_give_the_cold_solutions():
    x, y = problem(100, 20, seed=4)
    xa = l2svm.augment(x, torch.device("cpu"))
    g = l2svm.gram(xa)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)[None]  # noqa: E731
    costs = (100.0, 0.1, 1.0)  # any order: solved from the smallest up
    path = l2svm.solve_path(g, None, t(y), t(np.ones(100)), costs)
    for cost, sol in zip(costs, path, strict=True):
        cold = l2svm.solve(g, None, t(y), t(np.full(100, cost)))
        np.testing.assert_allclose(sol.weights(xa), cold.weights(xa), atol=1e-8)


def test_conjugate_gradient_step_equals_the_direct_solve():
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=(300, 40)))  # non-negative: one dominant direction, as features
    xa = l2svm.augment(x, torch.device("cpu"))
    g = l2svm.gram(xa)
    basis = l2svm.nystrom(g, rank=16)
    act = torch.as_tensor(rng.random((2, 300)) < 0.8)  # (2, N) active sets
    e = torch.as_tensor(rng.uniform(0.5, 2.0, (2, 300)))
    rhs = torch.as_tensor(np.where(rng.random((2, 300)) < 0.5, 1.0, -1.0))
    x_cg, ok = l2svm._pcg(g, basis.z, e, act, rhs, torch.zeros(2, 300, dtype=torch.float64), 200)
    assert ok.all()
    for b in range(2):
        idx = torch.nonzero(act[b]).squeeze(1)
        m = g[idx][:, idx] + torch.diag(e[b, idx])
        np.testing.assert_allclose(x_cg[b, idx], torch.linalg.solve(m, rhs[b, idx]), atol=1e-9)
        assert torch.all(x_cg[b, ~act[b]] == 0)


def test_nystrom_residual_is_psd_and_bounded():
    rng = np.random.default_rng(6)
    xa = l2svm.augment(np.abs(rng.normal(size=(200, 30))), torch.device("cpu"))
    g = l2svm.gram(xa)
    basis = l2svm.nystrom(g, rank=10)
    eig = torch.linalg.eigvalsh(g - basis.z @ basis.z.T)
    assert float(eig.min()) > -1e-8 * float(g.diagonal().sum())
    assert float(eig.max()) <= basis.residual
    assert l2svm.nystrom(g[:15, :15], rank=10) is None  # too small to pay


def test_line_search_finds_the_exact_minimiser():
    rng = np.random.default_rng(7)
    n = 50
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    o, delta, c = rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)
    ww, wd, dd = 3.0, -4.0, 2.5  # |w|^2, <w, d> < 0 (descent), |d|^2

    def phi(t):
        return 0.5 * (ww + 2 * t * wd + t * t * dd) + np.sum(
            c * np.maximum(0, 1 - y * (o + t * delta)) ** 2
        )

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)[None]  # noqa: E731
    got = float(l2svm.line_search(t(o), t(delta), t(wd), t(dd), t(y), t(c))[0])
    best = minimize_scalar(phi, bounds=(0, 50), method="bounded", options={"xatol": 1e-12})
    assert got == pytest.approx(best.x, abs=1e-6)
    assert phi(got) <= best.fun + 1e-12


def test_gram_too_large_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(l2svm, "MAX_GRAM_BYTES", 1000)
    with pytest.raises(ValueError, match="sklearn"):
        l2svm.gram(torch.zeros(20, 3, dtype=torch.float64))


def test_torch_threads_restored():
    before = torch.get_num_threads()
    with l2svm.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
