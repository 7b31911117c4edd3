"""The typed result shared by every entropic OT solver."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesift.ot.cost import squared_euclidean


@dataclass
class OTResult:
    """Dual potentials of an entropic OT problem and how the solve went.

    Conventions (ott-jax's): cost ``C_ij = ||x_i - y_j||^2``, plan
    ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``. The pair ``(f, g)`` is defined up to
    ``(f + c, g - c)``; no centring is applied.

    Attributes:
        f: (N,) dual potential of the first measure (points ``x``, masses ``a``).
        g: (M,) dual potential of the second measure (points ``y``, masses ``b``).
        cost: entropic OT cost, the dual objective at ``(f, g)`` (ott-jax's ``reg_ot_cost``):
            ``<a, f - eps log a> + <b, g - eps log b> + eps (1 - sum_ij P_ij)``. At the optimum it
            equals ``<P, C> + eps KL(P || a b^T)``.
        transport_cost: ``<P, C>`` for the returned potentials (computed blockwise).
        converged: whether the marginal error reached ``threshold``.
        errors: marginal L1 error ``||P 1 - a||_1 + ||P^T 1 - b||_1``, one entry per check; the
            last entry is the error of the returned potentials.
        n_iter: iterations run (Sinkhorn: pairs of f- and g-updates; semi-dual: L-BFGS iterations).
        epsilon: absolute epsilon actually used.
        method: ``"sinkhorn"`` or ``"semidual"``.
        n_passes: sweeps over the (N, M) cost, the unit of work (one per Sinkhorn iteration, one per
            semi-dual objective evaluation, plus the final sweep that measures the result).
        cost_stored: whether the cost matrix was stored (else recomputed in blocks each sweep).
    """

    f: torch.Tensor
    g: torch.Tensor
    cost: float
    transport_cost: float
    converged: bool
    errors: list[float]
    n_iter: int
    epsilon: float
    method: str
    n_passes: int = 0
    cost_stored: bool = False

    def plan(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Dense transport plan ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``, (N, M).

        Args:
            x: (N, d) the points the potentials were computed for.
            y: (M, d) likewise.
        """
        x = torch.as_tensor(x, dtype=self.f.dtype, device=self.f.device)
        y = torch.as_tensor(y, dtype=self.f.dtype, device=self.f.device)
        if x.ndim != 2 or x.shape[0] != self.f.shape[0]:
            raise ValueError(f"x must have shape ({self.f.shape[0]}, d), got {tuple(x.shape)}")
        if y.ndim != 2 or y.shape[0] != self.g.shape[0] or y.shape[1] != x.shape[1]:
            raise ValueError(f"y must have shape ({self.g.shape[0]}, {x.shape[1]}), got {tuple(y.shape)}")
        cost = squared_euclidean(x, y)
        return torch.exp((self.f[:, None] + self.g[None, :] - cost) / self.epsilon)
