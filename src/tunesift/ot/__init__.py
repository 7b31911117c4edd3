"""Entropic optimal transport between point clouds (squared-Euclidean cost), in PyTorch.

Two solvers share one result type and ott-jax's conventions (``P_ij = exp((f_i + g_j - C_ij)/eps)``):

- :func:`sinkhorn`: log-domain Sinkhorn with over-relaxation, one blockwise pass per iteration.
- :func:`solve_semidual`: L-BFGS on the semi-dual (M variables), f in closed form.

Both follow the device and dtype of ``x`` and never hold the (N, M) cost unless a memory budget
allows it.
"""

from tunesift.ot.cost import mean_cost, squared_euclidean
from tunesift.ot.result import OTResult
from tunesift.ot.semidual import solve_semidual
from tunesift.ot.sinkhorn import sinkhorn

__all__ = ["OTResult", "sinkhorn", "solve_semidual", "squared_euclidean", "mean_cost"]
