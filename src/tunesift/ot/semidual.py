"""Entropic OT through its semi-dual, maximised over g alone by L-BFGS.

With f in closed form (the soft c-transform ``f_i(g) = eps log a_i - eps LSE_j((g_j - C_ij)/eps)``),
the dual becomes a smooth concave function of the M potentials of the second measure
(Cuturi & Peyre, SIAM J. Imaging Sci. 2016; Genevay et al., NeurIPS 2016)::

    S(g) = <a, f(g)> + <b, g> - eps <a, log a> - eps <b, log b>,     grad S(g) = b - P(g)^T 1,

where ``P(g)_ij = exp((f_i(g) + g_j - C_ij)/eps)`` meets the first marginal exactly. One objective
and gradient evaluation is one blockwise pass over the pool (the same sweep as a Sinkhorn
iteration), so the pool can be streamed; the optimiser state is O(M). Convergence: the L1 norm of
the gradient, i.e. the second marginal's error.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from tunesift.ot.cost import BlockCost
from tunesift.ot.problem import check_positive, make_problem
from tunesift.ot.result import OTResult
from tunesift.ot.sinkhorn import expect_convergence, finish, warn_not_converged
from tunesift.ot.sweeps import row_sweep


def lbfgs(objective: Callable[[torch.Tensor], tuple[float, torch.Tensor, float]], h: torch.Tensor, *,
          threshold: float, max_iter: int, history_size: int = 20, max_line_search: int = 20) -> int:
    """Minimise a smooth convex function by L-BFGS; stop when its error reaches ``threshold``.

    The line search looks for a zero of the directional derivative (secant steps inside a bracket)
    and accepts Hager-Zhang's approximate Wolfe conditions, which rely on derivatives rather than on
    differences of function values: near the optimum those fall below float precision, where a
    classic Armijo test stalls.

    Args:
        objective: ``h -> (value, gradient, error)``.
        h: starting point (not modified).
        threshold: stop at the first evaluated point whose error is at most this.
        max_iter: at most this many iterations.

    Returns:
        The number of iterations run.
    """
    c1, c2 = 1e-4, 0.9
    value, grad, error = objective(h)
    if error <= threshold or not math.isfinite(error):
        return 0
    steps: list[torch.Tensor] = []
    changes: list[torch.Tensor] = []
    curvatures: list[torch.Tensor] = []
    for iteration in range(1, max_iter + 1):
        # two-loop recursion: direction = -H grad
        q = grad.clone()
        alphas = []
        for s, y, rho in zip(reversed(steps), reversed(changes), reversed(curvatures)):
            alpha = rho * torch.dot(s, q)
            q -= alpha * y
            alphas.append(alpha)
        if steps:
            q *= torch.dot(steps[-1], changes[-1]) / torch.dot(changes[-1], changes[-1])
        for (s, y, rho), alpha in zip(zip(steps, changes, curvatures), reversed(alphas)):
            q += (alpha - rho * torch.dot(y, q)) * s
        direction = -q
        slope0 = float(torch.dot(grad, direction))
        if not slope0 < 0:  # not a descent direction: restart from the gradient
            steps.clear(), changes.clear(), curvatures.clear()
            direction, slope0 = -grad, -float(torch.dot(grad, grad))
        # line search on t: bracket [lo, hi] of the directional derivative's sign change
        lo, slope_lo, hi, slope_hi = 0.0, slope0, math.inf, math.nan
        t = 1.0
        for _ in range(max_line_search):
            value_t, grad_t, error = objective(h + t * direction)
            if error <= threshold or not math.isfinite(error):
                return iteration
            slope_t = float(torch.dot(grad_t, direction))
            armijo = value_t <= value + c1 * t * slope0
            approx_wolfe = (2 * c1 - 1) * slope0 >= slope_t and value_t <= value + 1e-6 * abs(value)
            if slope_t >= c2 * slope0 and (armijo or approx_wolfe):
                break
            if slope_t < c2 * slope0 and armijo:  # still descending steeply: look further
                lo, slope_lo = t, slope_t
                t = 2.0 * t if math.isinf(hi) else 0.5 * (t + hi)
            else:  # overshot: the minimum lies in [lo, t]
                hi, slope_hi = t, slope_t
            if not math.isinf(hi):
                # secant step on the derivative, kept inside the middle 80% of the bracket
                secant = lo - slope_lo * (hi - lo) / (slope_hi - slope_lo) if slope_hi > slope_lo else 0.5 * (lo + hi)
                t = min(max(secant, lo + 0.1 * (hi - lo)), hi - 0.1 * (hi - lo))
        step = t * direction
        change = grad_t - grad
        curvature = float(torch.dot(step, change))
        h, value, grad = h + step, value_t, grad_t
        if curvature > 0:
            steps.append(step)
            changes.append(change)
            curvatures.append(torch.tensor(1.0 / curvature, dtype=h.dtype, device=h.device))
            if len(steps) > history_size:
                steps.pop(0), changes.pop(0), curvatures.pop(0)
    return max_iter


def solve_semidual(x: Any, y: Any, a: Any = None, b: Any = None, *, epsilon: float = 0.1,
                   relative_epsilon: bool = False, threshold: float = 1e-3, max_iter: int = 1000,
                   block_size: int = 2048, cost_memory_budget: int = 0, history_size: int = 20,
                   g_init: Any = None, warn: bool = True, progress: bool = False) -> OTResult:
    """Entropic OT potentials by L-BFGS on the semi-dual (M variables, f in closed form).

    Args:
        x, y, a, b, epsilon, relative_epsilon, block_size, cost_memory_budget, warn, progress: as
            :func:`tunesift.ot.sinkhorn`.
        threshold: stop when ``||P^T 1 - b||_1 <= threshold`` (the first marginal is exact).
        max_iter: at most this many L-BFGS iterations (each takes one or a few passes).
        history_size: L-BFGS memory.
        g_init: (M,) starting potential (e.g. from a few Sinkhorn iterations), default zeros.

    Returns:
        :class:`OTResult` with ``method="semidual"``; ``f`` is the closed form of the returned ``g``.
    """
    problem = make_problem(x, y, a, b, epsilon=epsilon, relative_epsilon=relative_epsilon)
    check_positive(threshold, "threshold")
    check_positive(max_iter, "max_iter", integer=True)
    check_positive(block_size, "block_size", integer=True)
    check_positive(cost_memory_budget, "cost_memory_budget", integer=True, allow_zero=True)
    check_positive(history_size, "history_size", integer=True)
    eps = problem.epsilon
    cost = BlockCost(problem.x, problem.y, eps, int(block_size), int(cost_memory_budget))
    dtype, device = problem.x.dtype, problem.x.device
    a_, b_, log_a = problem.a, problem.b, problem.log_a
    if g_init is None:
        g0 = torch.zeros(cost.m, dtype=dtype, device=device)
    else:
        g0 = torch.as_tensor(g_init).to(device=device, dtype=dtype)
        if g0.shape != (cost.m,) or not bool(torch.isfinite(g0).all()):
            raise ValueError(f"g_init must be a finite vector of shape ({cost.m},), got shape {tuple(g0.shape)}")

    # precondition: the semi-dual's Hessian is at most diag(b)/eps, so optimise h = g * sqrt(b/eps)
    scale = torch.sqrt(eps / b_)  # (M,), g = scale * h
    f_buf = torch.empty(cost.n, dtype=dtype, device=device)
    constant = eps * problem.neg_entropy
    errors: list[float] = []
    best: dict[str, Any] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="semi-dual", unit="pass")

    def objective(h: torch.Tensor) -> tuple[float, torch.Tensor, float]:
        """(-S, its gradient in h, marginal error) at g = scale * h; remembers the best point."""
        g = scale * h
        measure = expect_convergence(errors, threshold)
        sweep = row_sweep(cost, g, log_a, a_, f_buf, measure=measure)
        col = sweep.column_sums()
        value = float((a_.double() * f_buf.double()).sum() + (b_.double() * g.double()).sum()) - constant
        error = float((col - b_).abs().sum())
        errors.append(error)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(error=f"{error:.3g}")
        if not best or error < best["error"]:
            # the first marginal is exact, so the mass is 1 and the objective is the dual cost
            transport = float(sweep.transport_cost) if measure else None
            best.update(g=g, f=f_buf.clone(), error=error, value=value, transport=transport)
        return -value, scale * (col - b_), error

    n_iter = lbfgs(objective, g0 / scale, threshold=float(threshold), max_iter=int(max_iter),
                   history_size=int(history_size))
    if bar is not None:
        bar.close()
    n_passes = len(errors)
    f, g = best["f"], best["g"]
    if errors[-1] != best["error"]:
        errors.append(best["error"])  # the last entry is the error of the returned potentials
    error = best["error"]
    if best["transport"] is not None:
        reg_cost, transport = best["value"], best["transport"]
    else:
        error, reg_cost, transport = finish(problem, cost, f, g)
        n_passes += 1
    converged = error <= threshold
    if not converged and warn:
        warn_not_converged("solve_semidual", error, threshold, max_iter, eps)
    return OTResult(f=f, g=g, cost=reg_cost, transport_cost=transport, converged=converged, errors=errors,
                    n_iter=n_iter, epsilon=eps, method="semidual", n_passes=n_passes, cost_stored=cost.is_stored)
