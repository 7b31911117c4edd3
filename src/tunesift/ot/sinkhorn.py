"""Log-domain Sinkhorn between two point clouds with squared-Euclidean cost, in row blocks.

Solves the entropic OT problem (Cuturi, NeurIPS 2013) in ott-jax's conventions::

    min_P <P, C> + eps KL(P || a b^T)  s.t.  P 1 = a, P^T 1 = b,   C_ij = ||x_i - y_j||^2,

through its dual potentials, ``P_ij = exp((f_i + g_j - C_ij)/eps)``, with the alternating updates

    f_i = eps log a_i - eps LSE_j((g_j - C_ij)/eps),   then   g_j = eps log b_j - eps LSE_i((f_i - C_ij)/eps),

each over-relaxed by ``momentum`` w (``f <- (1 - w) f_old + w f_new``, as ott-jax's ``Momentum``).
One iteration is one pass over the cost (see :mod:`tunesift.ot.sweeps`); memory is
O((N + M) d + block_size M) unless ``cost_memory_budget`` lets the (N, M) cost be stored.

The error is checked on the pair ``(f, g)`` right after each f-update (where, without momentum, the
first marginal is exact and the error is the second marginal's, as in ott-jax, whose loop ends with
its own f-update), so the returned potentials are the ones whose error was measured.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from tunesift.ot.cost import BlockCost
from tunesift.ot.parts import InProcess, Parts, RowPart, combine_lse, combine_sweeps
from tunesift.ot.problem import Problem, check_positive, make_problem
from tunesift.ot.result import OTResult
from tunesift.ot.sweeps import measure_sweep


def dual_cost(problem: Problem, f: torch.Tensor, g: torch.Tensor, mass: float) -> float:
    """ott-jax's ``reg_ot_cost``: ``<a, f - eps log a> + <b, g - eps log b> + eps (1 - mass)``."""
    dual = float((problem.a.double() * f.double()).sum() + (problem.b.double() * g.double()).sum())
    eps = problem.epsilon
    return dual - eps * problem.neg_entropy + eps * (1.0 - mass)


def finish(problem: Problem, cost: BlockCost, f: torch.Tensor, g: torch.Tensor) -> tuple[float, float, float]:
    """Measure potentials in one sweep: (marginal L1 error, ott-jax reg_ot_cost, <P, C>)."""
    measure = measure_sweep(cost, f, g)
    error = float((measure.row_sums - problem.a).abs().sum() + (measure.col_sums - problem.b).abs().sum())
    return error, dual_cost(problem, f, g, measure.mass), measure.transport_cost


def expect_convergence(errors: list[float], threshold: float) -> bool:
    """Whether the next check will likely meet the threshold (geometric extrapolation of the errors).

    Then the sweep also measures the cost of the state it checks, which spares a final sweep (a
    whole matrix product online) for two matrix-vector products per block.
    """
    if len(errors) < 2:
        return True
    rate = min(1.0, errors[-1] / errors[-2]) if errors[-2] > 0 else 1.0
    return errors[-1] * rate <= 3.0 * threshold


def warn_not_converged(method: str, error: float, threshold: float, max_iter: int, epsilon: float) -> None:
    if not error < float("inf"):
        warnings.warn(f"{method} diverged (non-finite marginal error) with epsilon={epsilon:.4g}; lower the "
                      "momentum or raise epsilon", RuntimeWarning, stacklevel=3)
        return
    warnings.warn(
        f"{method} did not converge: marginal L1 error {error:.3g} > threshold={threshold:g} after "
        f"max_iter={max_iter} iterations (epsilon={epsilon:.4g}); raise max_iter or epsilon, or loosen threshold",
        RuntimeWarning,
        stacklevel=3,
    )


def sinkhorn(x: Any, y: Any, a: Any = None, b: Any = None, *, epsilon: float = 0.1, relative_epsilon: bool = False,
             momentum: float = 1.0, threshold: float = 1e-3, max_iter: int = 1000, block_size: int = 2048,
             cost_memory_budget: int = 0, check_every: int = 1, warn: bool = True,
             progress: bool = False) -> OTResult:
    """Entropic OT potentials between ``x`` and ``y`` by log-domain Sinkhorn.

    Args:
        x: (N, d) first point cloud (tensor or array); its device and dtype are used throughout.
        y: (M, d) second point cloud, same device.
        a: (N,) positive masses summing to 1, default uniform.
        b: (M,) likewise.
        epsilon: regularisation, absolute (ott-jax's ``epsilon``) unless ``relative_epsilon``.
        relative_epsilon: multiply ``epsilon`` by the mean cost (computed in closed form).
        momentum: over-relaxation weight in (0, 2); 1 is plain Sinkhorn, 1.3 is GOT-D's setting.
            Over-relaxation pays off when plain Sinkhorn is slow (small epsilon); on sentence
            embeddings at epsilon 0.1 plain Sinkhorn already converges in a handful of sweeps and
            1.3 needs about twice as many.
        threshold: stop when ``||P 1 - a||_1 + ||P^T 1 - b||_1 <= threshold``.
        max_iter: at most this many iterations (an f-update and, unless it stops, a g-update).
        block_size: rows of the cost evaluated at once (memory block_size x M). On a GPU larger
            blocks (16k-64k rows) are faster.
        cost_memory_budget: bytes allowed for storing the (N, M) cost; when N M x itemsize fits, it is
            stored once and every iteration skips the matrix product. 0: always online.
        check_every: check the error (a device synchronisation) every this many iterations.
        warn: emit a RuntimeWarning when ``max_iter`` is reached without convergence.
        progress: show a tqdm progress bar.

    Returns:
        :class:`OTResult` with ``method="sinkhorn"``; ``n_iter`` counts f-updates (g was updated one
        time fewer). The error is measured on the returned potentials.
    """
    problem = make_problem(x, y, a, b, epsilon=epsilon, relative_epsilon=relative_epsilon)
    check_positive(block_size, "block_size", integer=True)
    check_positive(cost_memory_budget, "cost_memory_budget", integer=True, allow_zero=True)
    part = RowPart(problem.x, problem.y, problem.a, int(block_size), int(cost_memory_budget))
    return sinkhorn_parts(InProcess([part]), problem.b, problem.epsilon, problem.x.shape[0], momentum=momentum,
                          threshold=threshold, max_iter=max_iter, check_every=check_every, warn=warn,
                          progress=progress)


def sinkhorn_parts(parts: Parts, b: torch.Tensor, epsilon: float, n: int, *, momentum: float = 1.0,
                   threshold: float = 1e-3, max_iter: int = 1000, check_every: int = 1, warn: bool = True,
                   progress: bool = False) -> OTResult:
    """Log-domain Sinkhorn whose first cloud is split over ``parts`` (:mod:`tunesift.ot.parts`).

    Args:
        parts: placed :class:`~tunesift.ot.parts.RowPart` workers, together all N rows in order; their f
            start at 0 and their costs are built here at ``epsilon``.
        b: (M,) second marginal (dtype and device of the driver's potentials).
        epsilon: absolute regularisation.
        n: N, the number of rows over all parts.
        momentum, threshold, max_iter, check_every, warn, progress: as :func:`sinkhorn`.

    Returns:
        :class:`OTResult` with ``f`` gathered from the parts (on ``b``'s device).
    """
    check_positive(threshold, "threshold")
    check_positive(max_iter, "max_iter", integer=True)
    check_positive(check_every, "check_every", integer=True)
    check_positive(momentum, "momentum")
    if not 0.0 < momentum < 2.0:
        raise ValueError(f"momentum must be in (0, 2) for over-relaxed Sinkhorn to converge, got {momentum}")
    max_iter, check_every, w = int(max_iter), int(check_every), float(momentum)

    eps = float(epsilon)
    stored = all(parts.call("prepare", eps))
    log_b = b.log()
    m = b.shape[0]
    dtype, device = b.dtype, b.device
    finfo = torch.finfo(dtype)
    # below this (relative to the largest weight) the one-exponential column sums may lose accuracy
    safe_column_sum = n * finfo.tiny / finfo.eps

    g = torch.zeros(m, dtype=dtype, device=device)
    errors: list[float] = []
    converged = diverged = False
    measured = None
    n_iter = n_passes = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc="sinkhorn", unit="it")
    try:
        for iteration in range(max_iter):
            last = iteration == max_iter - 1
            checking = last or (iteration + 1) % check_every == 0
            measure = checking and (last or expect_convergence(errors, threshold))
            sweep = combine_sweeps(parts.call("sweep", g, w, measure))
            # the state is now (f, g): f updated `iteration + 1` times, g `iteration`
            n_passes += 1
            n_iter = iteration + 1
            if bar is not None:
                bar.update(1)
            if checking:
                col_error = (sweep.column_sums().to(device) - b).abs().sum()
                error = float(sweep.row_error + col_error)
                errors.append(error)
                if bar is not None:
                    bar.set_postfix(error=f"{error:.3g}")
                if measure:
                    measured = (error, float(sweep.mass), float(sweep.transport_cost))
                if not error < float("inf"):
                    diverged = True
                    break
                if error <= threshold:
                    converged = True
                    break
            if last:
                break
            if bool((sweep.col_acc >= safe_column_sum).all()):
                log_col = (sweep.col_acc.log() + sweep.col_scale).to(device)  # log column sums of P(f, g)
            else:
                log_col = g / eps + combine_lse(parts.call("column_lse")).to(device)
                n_passes += 1
            g_new = g - eps * (log_col - log_b)  # the column marginal of (f, g_new) is b
            g = g + w * (g_new - g)
            measured = None
    finally:
        if bar is not None:
            bar.close()

    f = torch.cat([part_f.to(device) for part_f in parts.call("potentials")])
    neg_entropy = sum(parts.call("entropy")) + float((b.double() * log_b.double()).sum())
    if measured is not None:
        error, mass, transport = measured
    else:  # converged at a check that did not measure
        error = errors[-1]
        sums = parts.call("measure", g)
        mass, transport = sum(s[2] for s in sums), sum(s[3] for s in sums)
        n_passes += 1
    dual = float((b.double() * g.double()).sum()) + sum(parts.call("dual_f"))
    reg_cost = dual - eps * neg_entropy + eps * (1.0 - mass)
    if not converged and warn:
        warn_not_converged("sinkhorn", error, threshold, max_iter, eps)
    return OTResult(f=f, g=g, cost=reg_cost, transport_cost=transport, converged=converged, errors=errors,
                    n_iter=n_iter, epsilon=eps, method="sinkhorn", n_passes=n_passes, cost_stored=stored)
