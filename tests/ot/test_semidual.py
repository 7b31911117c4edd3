"""The semi-dual L-BFGS solver against Sinkhorn, POT and the exact assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from tunesift.ot import sinkhorn, solve_semidual, squared_euclidean
from tunesift.ot.semidual import lbfgs

from otfixtures import centered, clouds, pot_reference


def test_agrees_with_pot_and_sinkhorn():
    x, y, a, b = clouds(seed=10)
    eps = 0.5
    plan, f_pot, g_pot, _ = pot_reference(x, y, a, b, eps)
    result = solve_semidual(x, y, a, b, epsilon=eps, threshold=1e-10)
    reference = sinkhorn(x, y, a, b, epsilon=eps, threshold=1e-10)
    assert result.converged and result.method == "semidual"
    assert result.errors[-1] <= 1e-10
    torch.testing.assert_close(result.plan(x, y), plan, atol=1e-9, rtol=1e-6)
    for u, v in zip(centered(result.f, result.g), centered(f_pot, g_pot)):
        torch.testing.assert_close(u, v, atol=1e-7, rtol=0)
    assert result.cost == pytest.approx(reference.cost, rel=1e-9)
    assert result.transport_cost == pytest.approx(reference.transport_cost, rel=1e-8)


def test_first_potential_is_the_closed_form_of_the_second():
    x, y, a, b = clouds(n=25, m=15, seed=11)
    result = solve_semidual(x, y, a, b, epsilon=0.2, threshold=1e-3)
    cost = squared_euclidean(x, y)
    closed = result.epsilon * (a.log() - torch.logsumexp((result.g[None, :] - cost) / result.epsilon, dim=1))
    torch.testing.assert_close(result.f, closed, atol=1e-10, rtol=0)
    torch.testing.assert_close(result.plan(x, y).sum(1), a, atol=1e-12, rtol=0)  # first marginal exact


def test_small_epsilon_recovers_exact_assignment():
    # independent random clouds: plain Sinkhorn needs thousands of iterations here
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    cost = squared_euclidean(x, y).numpy()
    rows, cols = linear_sum_assignment(cost)
    permutation = np.zeros((8, 8))
    permutation[rows, cols] = 1.0
    result = solve_semidual(x, y, epsilon=1e-3, threshold=1e-7, max_iter=500)
    assert result.converged and result.n_iter < 200
    np.testing.assert_allclose(result.plan(x, y).numpy() * 8, permutation, atol=1e-3)
    assert result.transport_cost == pytest.approx(cost[rows, cols].sum() / 8, abs=1e-5)


@pytest.mark.parametrize("block_size, budget", [(1, 0), (9, 0), (9, 10**8)])
def test_block_size_and_stored_cost_do_not_change_the_result(block_size, budget):
    x, y, a, b = clouds(n=30, m=12, d=5, seed=12, dtype=torch.float32)
    reference = solve_semidual(x, y, a, b, epsilon=0.3, threshold=1e-4)
    result = solve_semidual(x, y, a, b, epsilon=0.3, threshold=1e-4, block_size=block_size, cost_memory_budget=budget)
    assert result.n_passes == reference.n_passes
    torch.testing.assert_close(result.g, reference.g, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.f, reference.f, atol=1e-5, rtol=0)


def test_warm_start_and_warning():
    x, y, a, b = clouds(seed=13)
    start = sinkhorn(x, y, a, b, epsilon=0.1, threshold=1e-2, warn=False)
    cold = solve_semidual(x, y, a, b, epsilon=0.1, threshold=1e-9)
    warm = solve_semidual(x, y, a, b, epsilon=0.1, threshold=1e-9, g_init=start.g)
    assert warm.converged and warm.n_passes < cold.n_passes
    for u, v in zip(centered(warm.f, warm.g), centered(cold.f, cold.g)):
        torch.testing.assert_close(u, v, atol=1e-7, rtol=0)
    with pytest.warns(RuntimeWarning, match=r"epsilon.*threshold|threshold.*epsilon"):
        result = solve_semidual(x, y, a, b, epsilon=0.01, threshold=1e-12, max_iter=2)
    assert not result.converged
    with pytest.raises(ValueError, match="g_init"):
        solve_semidual(x, y, a, b, g_init=torch.zeros(3))
    with pytest.raises(ValueError, match="history_size"):
        solve_semidual(x, y, a, b, history_size=0)


def test_lbfgs_minimises_a_quadratic():
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(20, 20, generator=gen, dtype=torch.float64)
    hessian = basis @ basis.T / 20 + 0.1 * torch.eye(20, dtype=torch.float64)
    target = torch.randn(20, generator=gen, dtype=torch.float64)

    def objective(h):
        residual = h - target
        gradient = hessian @ residual
        return float(0.5 * residual @ gradient), gradient, float(gradient.abs().sum())

    iterations = lbfgs(objective, torch.zeros(20, dtype=torch.float64), threshold=1e-10, max_iter=200)
    assert iterations < 100
