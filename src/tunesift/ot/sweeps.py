"""One pass over the cost, block by block: the work unit of both solvers.

The main sweep (:func:`row_sweep`) evaluates each block of ``-C/epsilon`` once and uses it twice:
for the f-update of its rows (a row-wise log-sum-exp) and, from the same exponentials, for the
column sums of the new plan, which give both the marginal error and the following g-update. A
log-domain Sinkhorn iteration therefore costs one matrix product per block (ott-jax's online
geometry needs two, plus one for the error every ``inner_iterations``), and its error is free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tunesift.ot.cost import BlockCost


def exp_floor(dtype: torch.dtype) -> float:
    """``log`` of the smallest normal float: below it ``exp`` underflows (and runs much slower)."""
    return math.log(torch.finfo(dtype).tiny)


@dataclass
class RowSweep:
    """What :func:`row_sweep` returns, all about the pair ``(f_out, g)``.

    Attributes:
        row_error: 0-d tensor, ``||P 1 - a||_1`` (0 without over-relaxation: the f-update meets the
            first marginal exactly).
        col_acc: (M,) column sums ``P^T 1`` divided by ``exp(col_scale)``.
        col_scale: 0-d tensor, the common log-scale of ``col_acc`` (its largest row weight is 1).
        mass: 0-d float64 tensor, ``sum_ij P_ij``, or None if not measured.
        transport_cost: 0-d float64 tensor, ``<P, C>``, or None if not measured.
    """

    row_error: torch.Tensor
    col_acc: torch.Tensor
    col_scale: torch.Tensor
    mass: torch.Tensor | None = None
    transport_cost: torch.Tensor | None = None

    def column_sums(self) -> torch.Tensor:
        """(M,) column sums of the plan (entries below the float range become 0)."""
        return self.col_acc * torch.exp(self.col_scale)


def row_sweep(cost: BlockCost, g: torch.Tensor, log_a: torch.Tensor, a: torch.Tensor, f_out: torch.Tensor,
              f_old: torch.Tensor | None = None, momentum: float = 1.0, measure: bool = False) -> RowSweep:
    """f-update ``f_i = eps log a_i - eps LSE_j((g_j - C_ij)/eps)`` for every row, and the new plan's sums.

    Args:
        cost: the blockwise ``-C/epsilon``.
        g: (M,) current second potential.
        log_a: (N,) ``log a``; a: (N,) ``a``.
        f_out: (N,) written with the new f, over-relaxed against ``f_old`` if given.
        f_old: (N,) previous f (needed for over-relaxation only).
        momentum: over-relaxation weight w, ``f_out = (1 - w) f_old + w f_new``.
        measure: also accumulate the total mass and ``<P, C>``, from the same block: two
            matrix-vector products more per block instead of a separate sweep (a matrix product online).

    Returns:
        Row error, column sums (scaled) and, if asked, mass and transport cost of ``P(f_out, g)``.
    """
    eps = cost.epsilon
    g_over_eps = g / eps
    floor = exp_floor(g.dtype)
    clamp = cost.row_spread_bound(g_over_eps) > -floor
    relax = f_old is not None and momentum != 1.0
    col_acc = torch.zeros(cost.m, dtype=g.dtype, device=g.device)
    col_scale = torch.full((), float("-inf"), dtype=g.dtype, device=g.device)
    row_error = torch.zeros((), dtype=g.dtype, device=g.device)
    mass = transport = None
    if measure:
        mass = torch.zeros((), dtype=torch.float64, device=g.device)
        transport = torch.zeros((), dtype=torch.float64, device=g.device)
    for start, stop in cost.blocks():
        scores, row_const = cost.row_scores(start, stop, g_over_eps)  # (B, M)
        row_max = scores.amax(1, keepdim=True)  # (B, 1)
        # measuring needs the scores after exponentiating them: then exponentiate into the scratch
        exps = torch.sub(scores, row_max, out=cost.scratch(stop - start)) if measure else scores.sub_(row_max)
        if clamp:
            exps.clamp_min_(floor)  # the entries below exp's range: at most `tiny` instead of 0
        exps.exp_()  # (B, M) = E, each row's largest entry is 1
        sums = exps.sum(1)  # (B,)
        log_sums = sums.log()
        lse = row_max.squeeze(1) + log_sums
        if row_const is not None:
            lse = lse - row_const
        f_new = eps * (log_a[start:stop] - lse)
        if relax:
            previous = f_old[start:stop]
            relaxed = previous + momentum * (f_new - previous)
            f_out[start:stop] = relaxed
            # the row marginal of (f_out, g) is a_i exp((f_out_i - f_new_i)/eps)
            log_marginal = log_a[start:stop] + (relaxed - f_new) / eps
            row_error += (a[start:stop] * torch.expm1(log_marginal - log_a[start:stop]).abs()).sum()
        else:
            f_out[start:stop] = f_new
            log_marginal = log_a[start:stop]
        # P(f_out, g)_ij = exp(log_weights_i) E_ij
        log_weights = log_marginal - log_sums
        if measure:
            # sum_j E_ij C_ij = E g + eps row_const s - eps sum_j E_ij scores_ij  (C = g + eps row_const - eps scores)
            weighted_cost = exps @ g - eps * torch.linalg.vecdot(exps, scores)
            if row_const is not None:
                weighted_cost += eps * row_const * sums
            mass += log_marginal.exp().double().sum()
            transport += (log_weights.exp() * weighted_cost).double().sum()
        # column sums at a common scale across blocks
        block_scale = log_weights.max()
        part = torch.exp(log_weights - block_scale) @ exps  # (M,)
        new_scale = torch.maximum(col_scale, block_scale)
        col_acc.mul_(torch.exp(col_scale - new_scale)).add_(part.mul_(torch.exp(block_scale - new_scale)))
        col_scale = new_scale
    return RowSweep(row_error=row_error, col_acc=col_acc, col_scale=col_scale, mass=mass, transport_cost=transport)


def column_lse_sweep(cost: BlockCost, f: torch.Tensor) -> torch.Tensor:
    """``LSE_i((f_i - C_ij)/eps)`` for every column, (M,), with a running maximum across blocks.

    The exact (two-exponential) column pass, used when the column sums of :func:`row_sweep` fall
    below the float range (very small epsilon, far from convergence).
    """
    f_over_eps = f / cost.epsilon
    floor = exp_floor(f.dtype)
    run_max = torch.full((cost.m,), float("-inf"), dtype=f.dtype, device=f.device)
    run_sum = torch.zeros(cost.m, dtype=f.dtype, device=f.device)
    for start, stop in cost.blocks():
        scores = cost.neg_cost(start, stop).add_(f_over_eps[start:stop, None])  # (B, M)
        block_max = scores.amax(0)  # (M,)
        block_sum = scores.sub_(block_max).clamp_min_(floor).exp_().sum(0)
        new_max = torch.maximum(run_max, block_max)
        run_sum = run_sum * torch.exp(run_max - new_max) + block_sum * torch.exp(block_max - new_max)
        run_max = new_max
    return run_max + run_sum.log()


@dataclass
class Measure:
    """Marginals and costs of the plan of given potentials (see :func:`measure_sweep`)."""

    row_sums: torch.Tensor  # (N,)
    col_sums: torch.Tensor  # (M,)
    mass: float  # sum_ij P_ij
    transport_cost: float  # <P, C>


def measure_sweep(cost: BlockCost, f: torch.Tensor, g: torch.Tensor) -> Measure:
    """Row and column sums, total mass and ``<P, C>`` of ``P_ij = exp((f_i + g_j - C_ij)/eps)``."""
    eps = cost.epsilon
    f_over_eps, g_over_eps = f / eps, g / eps
    floor = exp_floor(f.dtype)
    row_sums = torch.empty(cost.n, dtype=f.dtype, device=f.device)
    col_sums = torch.zeros(cost.m, dtype=f.dtype, device=f.device)
    transport = torch.zeros((), dtype=torch.float64, device=f.device)
    for start, stop in cost.blocks():
        neg_cost = cost.neg_cost(start, stop)  # (B, M) = -C/eps
        plan = (neg_cost + f_over_eps[start:stop, None] + g_over_eps[None, :]).clamp_min_(floor).exp_()
        row_sums[start:stop] = plan.sum(1)
        col_sums += plan.sum(0)
        transport -= eps * torch.dot(plan.view(-1), neg_cost.reshape(-1)).double()
    mass = float(row_sums.double().sum())
    return Measure(row_sums=row_sums, col_sums=col_sums, mass=mass, transport_cost=float(transport))
