"""Entropic optimal transport between point clouds (squared-Euclidean cost), in PyTorch.

Two solvers share one result type and ott-jax's conventions (``P_ij = exp((f_i + g_j - C_ij)/eps)``):

- :func:`sinkhorn`: log-domain Sinkhorn with over-relaxation, one blockwise pass per iteration.
- :func:`solve_semidual`: L-BFGS on the semi-dual (M variables), f in closed form.

Both follow the device and dtype of ``x`` and never hold the (N, M) cost unless a memory budget
allows it; ``x`` may stay on the host as :class:`HostRows` (a memory-mapped ``.npy`` is wrapped
automatically), read one block of rows per step.
"""

from tunesift.ot.cost import HostRows, mean_cost, squared_euclidean
from tunesift.ot.result import OTResult
from tunesift.ot.semidual import solve_semidual
from tunesift.ot.sinkhorn import sinkhorn

__all__ = ["HostRows", "OTResult", "sinkhorn", "solve_semidual", "squared_euclidean", "mean_cost"]
