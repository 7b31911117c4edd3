"""Squared-Euclidean costs, evaluated in row blocks so that memory never grows with N x M.

``C_ij = ||x_i - y_j||^2`` is computed as ``||x_i||^2 + ||y_j||^2 - 2 x_i . y_j`` (one matrix product
per block of rows, the same formula as ott-jax's ``PointCloud``). A :class:`BlockCost` hands the
solvers ``-C/epsilon`` one block of rows at a time, either recomputed on the fly (memory
O((N + M) d + block_size M)) or read from a stored copy when a memory budget allows it (faster: no
matrix product per iteration).

The first point cloud may also stay on the host as :class:`HostRows` (e.g. a memory-mapped ``.npy``
of the pool's embeddings): every pass then reads it one block of rows at a time, converted to the
solver's dtype and device per block, so memory is O(M d + block_size (d + M)) whatever N is.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from tunesift.io.mapped import PageRelease

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


class HostRows:
    """An (N, d) array kept on the host and handed to the solvers one block of rows at a time.

    Slicing rows (``rows[start:stop]``) returns a new (stop - start, d) tensor of ``dtype`` on
    ``device``, copied from the array; nothing else of it is converted or held. For a read-only
    memory map (``np.load(path, mmap_mode="r")``) the pages of the rows just copied are released from
    the process again (``madvise(MADV_DONTNEED)``; they stay in the page cache), so a sweep over a
    matrix larger than memory keeps the resident memory at one block.

    Args:
        array: (N, d) floating-point numpy array or memmap.
        dtype: the tensors' dtype (default: float64 for a float64 array, else float32).
        device: the tensors' device.
    """

    def __init__(self, array: np.ndarray, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise ValueError(f"HostRows needs a 2-D numpy array (n, d), got {type(array).__name__} of shape "
                             f"{getattr(array, 'shape', None)}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"HostRows needs floats, got dtype {array.dtype}")
        if dtype is None:
            dtype = torch.float64 if array.dtype == np.float64 else torch.float32
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"HostRows dtype must be a float dtype, got {dtype}")
        self.array = array
        self.dtype = dtype
        self.device = torch.empty(0, device=device).device  # "cuda" -> "cuda:0", as tensors report it
        self.shape = torch.Size(array.shape)
        self._pages = PageRelease(array)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 2

    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("HostRows is read by contiguous row slices only (rows[start:stop])")
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(start, stop)
        block = torch.empty((stop - start, self.shape[1]), dtype=self.dtype)  # torch's allocator: aligned like x
        np.copyto(block.numpy(), self.array[start:stop], casting="same_kind")
        self._release(start, stop)
        return block if self.device.type == "cpu" else block.to(self.device)

    def _release(self, start: int, stop: int) -> None:
        self._pages.release(start, stop)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense cost matrix ``C_ij = ||x_i - y_j||^2``, (N, M). For small problems and tests."""
    cost = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return cost.clamp_min_(0.0)


def squared_norms(points: torch.Tensor | HostRows, rows: int = 4096) -> torch.Tensor:
    """``||p_i||^2`` for every row, (n,), in row blocks (no (n, d) temporary)."""
    n = points.shape[0]
    # One output written in place: a list of small per-block results, allocated between the large
    # blocks, fragments the heap so that every block takes new memory (RSS grew to the matrix's size).
    out = torch.empty(n, dtype=points.dtype, device=points.device)
    for start in range(0, n, rows):
        block = points[start:start + rows]
        out[start:start + block.shape[0]] = (block * block).sum(1)
    return out


def mean_cost(x: torch.Tensor | HostRows, y: torch.Tensor) -> float:
    """Mean of ``C_ij`` over all pairs, in closed form without forming C.

    ``mean C = mean ||x||^2 + mean ||y||^2 - 2 mean(x) . mean(y)`` (unweighted, like ott-jax's
    ``relative_epsilon="mean"``), accumulated in float64 over row blocks.
    """
    def moments(points: torch.Tensor | HostRows, rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        squares = torch.zeros((), dtype=torch.float64, device=points.device)
        total = torch.zeros(points.shape[1], dtype=torch.float64, device=points.device)
        for start in range(0, points.shape[0], rows):
            block = points[start:start + rows].double()
            squares += (block * block).sum()
            total += block.sum(0)
        return squares / points.shape[0], total / points.shape[0]

    x_squares, x_mean = moments(x)
    y_squares, y_mean = moments(y)
    return float(x_squares + y_squares - 2.0 * (x_mean @ y_mean))


class BlockCost:
    """``-C/epsilon`` in row blocks, online or stored.

    Args:
        x: (N, d) first point cloud, a tensor or :class:`HostRows` (read one block at a time).
        y: (M, d) second point cloud (same dtype and device as ``x``).
        epsilon: absolute entropic regularisation.
        block_size: rows of the cost evaluated at once; the workspace is (block_size, M).
        cost_memory_budget: bytes allowed for a stored copy of the (N, M) cost; 0 = always online.
    """

    def __init__(self, x: torch.Tensor | HostRows, y: torch.Tensor, epsilon: float, block_size: int = 2048,
                 cost_memory_budget: int = 0):
        self.x, self.y = x, y
        self.n, self.m = x.shape[0], y.shape[0]
        self.epsilon = float(epsilon)
        self.block_size = int(min(block_size, self.n))
        self.x_sq_over_eps = squared_norms(x) / self.epsilon  # (N,)
        self.y_sq_over_eps = squared_norms(y) / self.epsilon  # (M,)
        self._yt = y.T  # (d, M) view
        self._work = torch.empty(self.block_size, self.m, dtype=x.dtype, device=x.device)
        self._scratch: torch.Tensor | None = None
        self.stored: torch.Tensor | None = None
        # the spread of -C_ij/eps within a row is at most 4 max||x|| max||y|| / eps (Cauchy-Schwarz)
        # plus the spread of -||y_j||^2/eps
        norms = self.x_sq_over_eps.max().sqrt() * self.y_sq_over_eps.max().sqrt()
        self._row_spread = float(4.0 * norms) + float(self.y_sq_over_eps.max() - self.y_sq_over_eps.min())
        need = self.n * self.m * x.element_size()
        if cost_memory_budget and need <= cost_memory_budget:
            stored = torch.empty(self.n, self.m, dtype=x.dtype, device=x.device)  # (N, M) = -C/eps
            spread = torch.zeros((), dtype=x.dtype, device=x.device)
            for start, stop in self.blocks():
                block = self._neg_cost_online(start, stop, stored[start:stop])
                spread = torch.maximum(spread, (block.amax(1) - block.amin(1)).max())
            self.stored = stored
            self._row_spread = float(spread)

    @property
    def is_stored(self) -> bool:
        return self.stored is not None

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(start, stop) row ranges covering 0..N."""
        for start in range(0, self.n, self.block_size):
            yield start, min(start + self.block_size, self.n)

    def workspace(self, rows: int) -> torch.Tensor:
        """A reusable (rows, M) buffer; its content is overwritten by the next block."""
        return self._work[:rows]

    def row_spread_bound(self, col_shift: torch.Tensor) -> float:
        """An upper bound of ``max_j s_ij - min_j s_ij`` over all rows of ``s = -C/eps + col_shift``.

        The sweeps use it to skip clamping before ``exp`` when no entry can fall below the float
        range (exp is about 30 times slower on inputs that underflow).
        """
        return self._row_spread + float(col_shift.max() - col_shift.min())

    def scratch(self, rows: int) -> torch.Tensor:
        """A second reusable (rows, M) buffer, allocated on first use."""
        if self._scratch is None:
            self._scratch = torch.empty_like(self._work)
        return self._scratch[:rows]

    def _neg_cost_online(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        # (B, M) = 2 x.y/eps - ||y||^2/eps, then the row term - ||x||^2/eps
        torch.addmm(-self.y_sq_over_eps[None, :], self.x[start:stop], self._yt, alpha=2.0 / self.epsilon, out=out)
        out.sub_(self.x_sq_over_eps[start:stop, None])
        return out

    def neg_cost(self, start: int, stop: int) -> torch.Tensor:
        """``-C[start:stop]/epsilon``, (B, M), in the workspace (overwritten by the next call)."""
        out = self.workspace(stop - start)
        if self.stored is not None:
            return out.copy_(self.stored[start:stop])
        return self._neg_cost_online(start, stop, out)

    def row_scores(self, start: int, stop: int, col_shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(g/eps - C/eps)[start:stop]`` up to a per-row constant, for row-wise log-sum-exps.

        Args:
            col_shift: (M,) added to every row (``g/epsilon``).

        Returns:
            ``scores`` (B, M) in the workspace and ``row_const`` (B,) or None, such that the exact value
            is ``scores - row_const[:, None]``. The row constant is kept apart because a row-wise
            log-sum-exp only needs it added at the end, which saves one pass over the block.
        """
        out = self.workspace(stop - start)
        if self.stored is not None:
            torch.add(self.stored[start:stop], col_shift[None, :], out=out)
            return out, None
        torch.addmm((col_shift - self.y_sq_over_eps)[None, :], self.x[start:stop], self._yt,
                    alpha=2.0 / self.epsilon, out=out)
        return out, self.x_sq_over_eps[start:stop]
