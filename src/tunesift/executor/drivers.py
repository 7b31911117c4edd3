"""The partitioned drivers: a solver's parts placed on an executor's workers.

The solvers (:mod:`tunesift.ot`) take their parts as any object with ``call(method, *args)``
(:class:`tunesift.ot.parts.Parts`) and import no executor; this module builds the parts of a job where the
executor puts them (:meth:`tunesift.executor.Executor.place`) and hands them to the solver.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tunesift.ot.parts import RowPartFactory, solver_points, split_sources


def parts_for(executor: Any, n: int) -> int:
    """Parts a job over ``n`` rows is split into: the executor's parallelism (1 without one), at most n."""
    return 1 if executor is None else max(1, min(executor.parallelism(), n))


def worker_gpus(device: str) -> float:
    """GPUs a placed worker asks for: one on a CUDA device, else none."""
    return 1.0 if str(device).startswith("cuda") else 0.0


def sinkhorn_on(executor: Any, x: np.ndarray, y: np.ndarray, *, epsilon: float = 0.1, relative_epsilon: bool = False,
                momentum: float = 1.0, threshold: float = 1e-3, max_iter: int = 1000, block_size: int = 2048,
                cost_memory_budget: int = 0, device: str = "cpu", progress: bool = False, warn: bool = True):
    """:func:`tunesift.ot.sinkhorn` of the (N, d) pool ``x`` against ``y`` (uniform masses), its rows split
    over the executor's workers (:meth:`~tunesift.executor.Executor.parallelism` parts; one part: the
    solve runs here, exactly as :func:`~tunesift.ot.sinkhorn`).

    A memory-mapped ``.npy`` (the embedding cache) is read by each worker from the file, its own rows
    only; an in-memory array is sent to the workers part by part.
    """
    from tunesift.ot.problem import check_positive
    from tunesift.ot.sinkhorn import sinkhorn, sinkhorn_parts

    parts = parts_for(executor, x.shape[0])
    if parts == 1:
        yt = torch.from_numpy(np.array(y, dtype=np.float32)).to(device)
        return sinkhorn(solver_points(x, device), yt, epsilon=epsilon, relative_epsilon=relative_epsilon,
                        momentum=momentum, threshold=threshold, max_iter=max_iter, block_size=block_size,
                        cost_memory_budget=cost_memory_budget, progress=progress, warn=warn)
    check_positive(epsilon, "epsilon")
    check_positive(block_size, "block_size", integer=True)
    y32 = np.ascontiguousarray(y, dtype=np.float32)
    if y32.ndim != 2 or y32.shape[1] != x.shape[1] or not np.isfinite(y32).all():
        raise ValueError(f"y must be finite (M, {x.shape[1]}) points, got shape {y32.shape}")
    n = x.shape[0]
    factories = [RowPartFactory(start, stop, n, y32, path=path, array=rows, device=device,
                                block_size=int(min(block_size, stop - start)),
                                cost_memory_budget=cost_memory_budget // parts)
                 for start, stop, path, rows in split_sources(x, parts)]
    with executor.place("sinkhorn", factories, gpus=worker_gpus(device)) as placed:
        eps = float(epsilon)
        if relative_epsilon:
            moments = placed.call("moments")
            x_sq = sum(m[0] for m in moments) / n
            x_mean = sum(m[1] for m in moments) / n
            y64 = y32.astype(np.float64)
            scale = x_sq + float((y64 * y64).sum(1).mean()) - 2.0 * float(x_mean @ y64.mean(0))
            if not scale > 0:
                raise ValueError("relative_epsilon needs a positive mean cost, but x and y coincide (mean cost 0)")
            eps *= scale
        b = torch.full((y32.shape[0],), 1.0 / y32.shape[0], dtype=torch.float32)
        return sinkhorn_parts(placed, b / b.sum(), eps, n, momentum=momentum, threshold=threshold,
                              max_iter=max_iter, progress=progress, warn=warn)
