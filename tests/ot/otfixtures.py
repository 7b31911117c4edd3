"""Shared helpers of the OT tests: random weighted clouds and the POT reference solution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesift.ot import squared_euclidean


def clouds(n=40, m=30, d=4, seed=0, dtype=torch.float64, shift=0.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = torch.randn(m, d, generator=gen, dtype=dtype) + shift
    a = torch.rand(n, generator=gen, dtype=dtype) + 0.5
    b = torch.rand(m, generator=gen, dtype=dtype) + 0.5
    return x, y, a / a.sum(), b / b.sum()


def centered(f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the (f + c, g - c) ambiguity of the dual potentials."""
    shift = f.mean()
    return f - shift, g + shift


def pot_reference(x, y, a, b, eps):
    """POT's log-domain Sinkhorn, converged tightly: (plan, f, g, cost matrix)."""
    ot = pytest.importorskip("ot")
    cost = squared_euclidean(x, y).numpy()
    plan, log = ot.sinkhorn(a.numpy(), b.numpy(), cost, eps, method="sinkhorn_log", log=True,
                            stopThr=1e-13, numItermax=100_000)
    # POT's sinkhorn_log: P = diag(u) K diag(v) with K = exp(-C/reg), the same plan as ott-jax's
    # exp((f + g - C)/eps) with f = reg log u, g = reg log v.
    return torch.as_tensor(plan), reg_times(log["log_u"], eps), reg_times(log["log_v"], eps), cost


def reg_times(log_scaling, eps):
    return eps * torch.as_tensor(np.asarray(log_scaling))
