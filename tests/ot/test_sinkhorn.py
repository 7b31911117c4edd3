"""Sinkhorn against POT, the exact assignment, and itself across execution modes."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from tunesift.ot import OTResult, mean_cost, sinkhorn, squared_euclidean

from otfixtures import centered, clouds, pot_reference


@pytest.mark.parametrize("momentum", [1.0, 1.5])
def test_potentials_and_plan_match_pot(momentum):
    x, y, a, b = clouds()
    eps = 0.5
    plan, f_ref, g_ref, cost = pot_reference(x, y, a, b, eps)
    result = sinkhorn(x, y, a, b, epsilon=eps, momentum=momentum, threshold=1e-11, max_iter=5000)
    assert isinstance(result, OTResult) and result.converged and result.method == "sinkhorn"
    assert result.errors[-1] <= 1e-11
    torch.testing.assert_close(result.plan(x, y), plan, atol=1e-10, rtol=1e-7)
    f, g = centered(result.f, result.g)
    f_pot, g_pot = centered(f_ref, g_ref)
    torch.testing.assert_close(f, f_pot, atol=1e-8, rtol=0)
    torch.testing.assert_close(g, g_pot, atol=1e-8, rtol=0)
    # costs: <P, C> and ott-jax's reg_ot_cost = <P, C> + eps KL(P || a b^T) at the optimum
    p = plan.numpy()
    transport = float((p * cost).sum())
    kl = float((p * np.log(p / np.outer(a.numpy(), b.numpy()))).sum())
    assert result.transport_cost == pytest.approx(transport, rel=1e-9)
    assert result.cost == pytest.approx(transport + eps * kl, rel=1e-9)


@pytest.mark.slow  # importing and compiling jax takes ~15 s here; the POT test checks the same formula
def test_cost_is_ott_reg_ot_cost():
    pytest.importorskip("ott")  # the benchmark extra; skipped where absent
    import jax

    jax.config.update("jax_enable_x64", True)
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    x, y, a, b = clouds(n=20, m=15)
    geom = pointcloud.PointCloud(jax.numpy.asarray(x.numpy()), jax.numpy.asarray(y.numpy()), epsilon=0.3)
    out = ott_sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=5_000)(
        linear_problem.LinearProblem(geom, a=jax.numpy.asarray(a.numpy()), b=jax.numpy.asarray(b.numpy())))
    result = sinkhorn(x, y, a, b, epsilon=0.3, threshold=1e-12, max_iter=5_000)
    assert result.cost == pytest.approx(float(out.reg_ot_cost), rel=1e-10)
    f_ott = torch.as_tensor(np.array(out.f))
    torch.testing.assert_close(result.f - result.f.mean(), f_ott - f_ott.mean(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("seed", [0, 5])
def test_small_epsilon_recovers_exact_assignment(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 12
    x = 2.0 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = x[torch.randperm(n, generator=gen)] + 0.3 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    cost = squared_euclidean(x, y).numpy()
    rows, cols = linear_sum_assignment(cost)
    permutation = np.zeros((n, n))
    permutation[rows, cols] = 1.0
    result = sinkhorn(x, y, epsilon=0.01, momentum=1.5, threshold=1e-5, max_iter=5000)
    assert result.converged
    np.testing.assert_allclose(result.plan(x, y).numpy() * n, permutation, atol=1e-3)
    assert result.transport_cost == pytest.approx(cost[rows, cols].sum() / n, abs=1e-4)


@pytest.mark.parametrize("block_size, budget", [(1, 0), (7, 0), (64, 0), (7, 10**9), (2048, 10**9)])
def test_block_size_and_stored_cost_give_identical_results(block_size, budget):
    x, y, a, b = clouds(n=30, m=23, d=6, seed=1, dtype=torch.float32)
    reference = sinkhorn(x, y, a, b, epsilon=0.5, momentum=1.3, threshold=1e-4, block_size=30)
    result = sinkhorn(x, y, a, b, epsilon=0.5, momentum=1.3, threshold=1e-4, block_size=block_size,
                      cost_memory_budget=budget)
    assert result.cost_stored == (budget > 0)
    assert result.n_iter == reference.n_iter
    torch.testing.assert_close(result.f, reference.f, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.g, reference.g, atol=1e-5, rtol=0)
    assert result.cost == pytest.approx(reference.cost, abs=1e-5)


def test_momentum_reaches_the_same_potentials_in_fewer_iterations():
    x, y, a, b = clouds(n=60, m=50, seed=2)
    plain = sinkhorn(x, y, a, b, epsilon=0.05, momentum=1.0, threshold=1e-8, max_iter=20_000)
    fast = sinkhorn(x, y, a, b, epsilon=0.05, momentum=1.6, threshold=1e-8, max_iter=20_000)
    assert plain.converged and fast.converged
    assert fast.n_iter < 0.7 * plain.n_iter
    for u, v in zip(centered(plain.f, plain.g), centered(fast.f, fast.g)):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=0)


def test_relative_epsilon_scales_by_the_mean_cost():
    x, y, a, b = clouds(seed=4)
    dense_mean = float(squared_euclidean(x, y).mean())
    assert mean_cost(x, y) == pytest.approx(dense_mean, rel=1e-12)
    relative = sinkhorn(x, y, a, b, epsilon=0.05, relative_epsilon=True, threshold=1e-9)
    absolute = sinkhorn(x, y, a, b, epsilon=0.05 * dense_mean, threshold=1e-9)
    assert relative.epsilon == pytest.approx(0.05 * dense_mean, rel=1e-12)
    torch.testing.assert_close(relative.f, absolute.f, atol=1e-10, rtol=0)


def test_warns_when_it_does_not_converge():
    x, y, a, b = clouds(seed=5)
    with pytest.warns(RuntimeWarning, match=r"(?s)epsilon.*threshold|threshold.*epsilon") as record:
        result = sinkhorn(x, y, a, b, epsilon=0.01, threshold=1e-12, max_iter=3)
    assert "max_iter=3" in str(record[0].message)
    assert not result.converged and result.n_iter == 3
    assert result.errors[-1] > 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(x, y, a, b, epsilon=0.01, threshold=1e-12, max_iter=3, warn=False)


def test_reported_error_and_costs_are_those_of_the_returned_potentials():
    x, y, a, b = clouds(n=30, m=20, seed=6)
    cost = squared_euclidean(x, y)
    # converged at a check that measured in passing, and stopped at max_iter (final sweep)
    for result in (sinkhorn(x, y, a, b, epsilon=0.3, threshold=1e-3),
                   sinkhorn(x, y, a, b, epsilon=0.3, momentum=1.2, threshold=1e-14, max_iter=4, warn=False)):
        assert result.n_passes == result.n_iter  # no sweep beyond the one that checked the result
        plan = result.plan(x, y)
        error = float((plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum())
        assert result.errors[-1] == pytest.approx(error, rel=1e-6, abs=1e-13)
        assert result.transport_cost == pytest.approx(float((plan * cost).sum()), rel=1e-10)
        dual = float(a @ result.f + b @ result.g - result.epsilon * (a @ a.log() + b @ b.log()))
        assert result.cost == pytest.approx(dual + result.epsilon * (1 - float(plan.sum())), rel=1e-10)


def test_column_fallback_keeps_tiny_epsilon_exact(monkeypatch):
    sinkhorn_module = sys.modules["tunesift.ot.parts"]  # where the parts run the exact column pass
    calls = []
    original = sinkhorn_module.column_lse_sweep
    monkeypatch.setattr(sinkhorn_module, "column_lse_sweep", lambda *args: calls.append(1) or original(*args))
    x, y, _, _ = clouds(n=30, m=20, d=2, seed=7, dtype=torch.float32, shift=3.0)
    # costs up to ~80 with epsilon 0.05: exp(-C/eps) is far below float32's range
    result = sinkhorn(x, y, epsilon=0.05, threshold=1e-4, max_iter=5000)
    reference = sinkhorn(x.double(), y.double(), epsilon=0.05, threshold=1e-9, max_iter=5000)
    assert calls, "the exact column pass should have been needed"
    assert result.converged and bool(torch.isfinite(result.f).all())
    for u, v in zip(centered(result.f.double(), result.g.double()), centered(reference.f, reference.g)):
        torch.testing.assert_close(u, v, atol=2e-3, rtol=0)


def test_float64_and_float32_follow_x():
    x, y, a, b = clouds(n=20, m=10)
    r64 = sinkhorn(x, y, a, b, epsilon=0.5, threshold=1e-10)
    r32 = sinkhorn(x.float(), y.float(), a.float(), b.float(), epsilon=0.5, threshold=1e-5)
    assert r64.f.dtype == r64.g.dtype == torch.float64
    assert r32.f.dtype == r32.g.dtype == torch.float32
    torch.testing.assert_close(r32.f.double(), r64.f, atol=1e-3, rtol=0)
    # numpy float32 input works too, and integer input is promoted to float32
    assert sinkhorn(x.float().numpy(), y.float().numpy(), epsilon=0.5).f.dtype == torch.float32
    assert sinkhorn(torch.ones(3, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64)).f.dtype == torch.float32
    # inputs that require grad are detached (the potentials carry no autograd graph)
    detached = sinkhorn(x.clone().requires_grad_(), y, a, b, epsilon=0.5, threshold=1e-10)
    assert not detached.f.requires_grad
    torch.testing.assert_close(detached.f, r64.f)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(a=np.full(39, 1 / 39)), r"\ba\b.*shape"),
        (dict(a=np.r_[-0.1, np.full(39, 1.1 / 39)]), r"\ba\b.*positive"),
        (dict(b=np.full(30, 1 / 29)), r"\bb\b.*sum to 1"),
        (dict(b=np.r_[np.nan, np.full(29, 1 / 29)]), r"\bb\b.*non-finite"),
        (dict(x=np.r_[np.full((1, 4), np.inf), np.zeros((39, 4))]), r"\bx\b.*non-finite"),
        (dict(y=np.zeros((30, 3))), r"\by\b.*dimension"),
        (dict(x=np.zeros(40)), r"\bx\b.*2-D"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=float("nan")), "epsilon"),
        (dict(momentum=2.5), "momentum"),
        (dict(threshold=-1.0), "threshold"),
        (dict(max_iter=0), "max_iter"),
        (dict(block_size=2.5), "block_size"),
        (dict(cost_memory_budget=-1), "cost_memory_budget"),
        (dict(check_every=0), "check_every"),
    ],
)
def test_input_validation_names_the_argument(change, match):
    x, y, a, b = clouds(n=40, m=30)
    kwargs = dict(x=x.numpy(), y=y.numpy(), a=a.numpy(), b=b.numpy())
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        sinkhorn(**kwargs)


def test_plan_checks_shapes():
    x, y, a, b = clouds(n=10, m=8)
    result = sinkhorn(x, y, a, b, epsilon=1.0)
    with pytest.raises(ValueError, match="y"):
        result.plan(x, y[:5])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y, a, b = clouds(n=300, m=200, d=16, seed=8, dtype=torch.float32)
    cpu = sinkhorn(x, y, a, b, epsilon=0.5, momentum=1.3, threshold=1e-5, block_size=64)
    gpu = sinkhorn(x.cuda(), y.cuda(), a.cuda(), b.cuda(), epsilon=0.5, momentum=1.3, threshold=1e-5, block_size=64)
    assert gpu.f.is_cuda and gpu.g.is_cuda and gpu.converged
    torch.testing.assert_close(gpu.f.cpu(), cpu.f, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.g.cpu(), cpu.g, atol=1e-4, rtol=0)
    stored = sinkhorn(x.cuda(), y.cuda(), a.cuda(), b.cuda(), epsilon=0.5, momentum=1.3, threshold=1e-5,
                      cost_memory_budget=10**8)
    assert stored.cost_stored
    torch.testing.assert_close(stored.f.cpu(), cpu.f, atol=1e-4, rtol=0)
