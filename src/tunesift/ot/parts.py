"""Sinkhorn over parts of the first point cloud: each part holds its rows and their potentials.

One Sinkhorn iteration is a sweep over the rows of the cost (:func:`tunesift.ot.sweeps.row_sweep`):
the f-update of each row needs only that row and the (M,) target potential g, and the g-update needs
only the (M,) column sums of the plan, a sum over rows. So the rows can be split into contiguous parts
that each keep their rows and their part of f; per iteration the driver sends g to every part, each
part updates its f and returns its (M,) column sums (scaled, as ``row_sweep`` accumulates them), and the
driver combines them and updates g. The solver takes any
:class:`Parts` — an object whose ``call(method, *args)`` runs a method on every part and returns the
results in order — and knows nothing of where they live: :class:`InProcess` holds them here
(:func:`tunesift.ot.sinkhorn` is one such part), and the executor side
(:func:`tunesift.executor.drivers.sinkhorn_on`) places one part per Ray actor, each reading its rows of a
memory-mapped embedding file, so the pool is never gathered in one process.

The parts compute the same sums as one sweep over all rows, grouped differently: the potentials agree
to floating-point rounding (tested against the single-part solve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from tunesift.ot.cost import BlockCost, HostRows
from tunesift.ot.sweeps import RowSweep, column_lse_sweep, measure_sweep, row_sweep


class Parts(Protocol):
    """What a solver over parts needs: ``call(method, *args)`` runs ``part.method(*args)`` on every part
    and returns the results in part order."""

    def call(self, method: str, *args: Any) -> list[Any]: ...


class InProcess:
    """:class:`Parts` held in this process, called one after the other (nothing copied)."""

    def __init__(self, parts: Sequence[Any]):
        self.parts = list(parts)

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(part, method)(*args) for part in self.parts]


class RowPart:
    """Rows ``x`` of the first cloud with their masses, the second cloud ``y`` and this part's f.

    ``prepare(epsilon)`` builds the blockwise cost (after ``moments`` gave the driver what a relative
    epsilon needs); then each ``sweep`` is one f-update of these rows.

    Args:
        x: (n, d) this part's rows (tensor or :class:`HostRows`).
        y: (M, d) the second cloud, same dtype and device.
        a: (n,) this part's masses (of the whole problem: they sum to the part's share of 1).
        block_size, cost_memory_budget: as :func:`tunesift.ot.sinkhorn`.
        to_host: return tensors on the CPU (for a driver in another process).
    """

    def __init__(self, x: torch.Tensor | HostRows, y: torch.Tensor, a: torch.Tensor, block_size: int = 2048,
                 cost_memory_budget: int = 0, to_host: bool = False):
        self.x, self.y, self.a, self.log_a = x, y, a, a.log()
        self.block_size, self.cost_memory_budget, self.to_host = block_size, cost_memory_budget, to_host
        self.cost: BlockCost | None = None
        self.f = torch.zeros(x.shape[0], dtype=y.dtype, device=y.device)
        self.f_next = torch.empty_like(self.f)

    def _out(self, value: Any) -> Any:
        if self.to_host and isinstance(value, torch.Tensor):
            return value.cpu()
        return value

    def moments(self) -> tuple[float, np.ndarray, int]:
        """(sum of ||x_i||^2, sum of x_i (d,), rows) in float64: a relative epsilon's mean cost."""
        squares, total = 0.0, np.zeros(self.x.shape[1])
        for start in range(0, self.x.shape[0], 4096):
            block = self.x[start:start + 4096].double()
            squares += float((block * block).sum())
            total += block.sum(0).cpu().numpy()
        return squares, total, int(self.x.shape[0])

    def prepare(self, epsilon: float) -> bool:
        """Build the cost at ``epsilon``; whether it is stored (within ``cost_memory_budget``)."""
        self.cost = BlockCost(self.x, self.y, epsilon, self.block_size, self.cost_memory_budget)
        return self.cost.is_stored

    def entropy(self) -> float:
        """``<a, log a>`` of this part, float64."""
        return float((self.a.double() * self.log_a.double()).sum())

    def dual_f(self) -> float:
        """``<a, f>`` of this part, float64."""
        return float((self.a.double() * self.f.double()).sum())

    def sweep(self, g: torch.Tensor, momentum: float, measure: bool) -> RowSweep:
        """One f-update (over-relaxed by ``momentum``) of these rows against ``g``, and the plan's sums."""
        g = g.to(self.f.device)
        out = row_sweep(self.cost, g, self.log_a, self.a, self.f_next, f_old=self.f, momentum=momentum,
                        measure=measure)
        self.f, self.f_next = self.f_next, self.f
        if not self.to_host:
            return out
        return RowSweep(**{k: self._out(v) for k, v in vars(out).items()})

    def column_lse(self) -> torch.Tensor:
        """(M,) ``LSE_i((f_i - C_ij)/eps)`` over these rows."""
        return self._out(column_lse_sweep(self.cost, self.f))

    def measure(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """(||P 1 - a||_1 over these rows, (M,) column sums, mass, <P, C>) of ``P(f, g)``."""
        m = measure_sweep(self.cost, self.f, g.to(self.f.device))
        return self._out((m.row_sums - self.a).abs().sum()), self._out(m.col_sums), m.mass, m.transport_cost

    def potentials(self) -> torch.Tensor:
        return self._out(self.f)


def combine_sweeps(sweeps: Sequence[RowSweep]) -> RowSweep:
    """The sweep of all rows from the parts' sweeps (column sums brought to one scale)."""
    if len(sweeps) == 1:
        return sweeps[0]
    scale = torch.stack([s.col_scale for s in sweeps]).amax()
    acc = torch.zeros_like(sweeps[0].col_acc)
    if torch.isfinite(scale):
        for s in sweeps:
            acc += s.col_acc * torch.exp(s.col_scale - scale)
    measured = sweeps[0].mass is not None
    return RowSweep(row_error=sum(s.row_error for s in sweeps[1:]) + sweeps[0].row_error, col_acc=acc,
                    col_scale=scale,
                    mass=sum(s.mass for s in sweeps[1:]) + sweeps[0].mass if measured else None,
                    transport_cost=sum(s.transport_cost for s in sweeps[1:]) + sweeps[0].transport_cost
                    if measured else None)


def combine_lse(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """(M,) log-sum-exp over all rows from the parts' column log-sum-exps."""
    return parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(list(parts)), 0)


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering 0..n, sizes differing by at most one."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    parts = min(parts, n)
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class RowPartFactory:
    """Builds the :class:`RowPart` of rows ``start:stop`` where it runs (picklable for Ray actors).

    The rows come from ``path`` (an ``.npy``, memory-mapped and read block by block: a worker holds its
    rows on disk, not in memory) or, for a pool that is not on disk, from ``array`` (shipped with the
    factory). Masses are uniform, ``1/n_total``.
    """

    start: int
    stop: int
    n_total: int
    y: np.ndarray
    path: str | None = None
    array: np.ndarray | None = None
    device: str = "cpu"
    block_size: int = 2048
    cost_memory_budget: int = 0
    to_host: bool = True

    def __call__(self) -> RowPart:
        from tunesift.ot.problem import all_finite

        if self.path is not None:
            rows = np.load(self.path, mmap_mode="r")[self.start:self.stop]
            x = HostRows(rows, torch.float32, self.device)
        else:
            x = torch.from_numpy(np.array(self.array, dtype=np.float32)).to(self.device)
        if not all_finite(x):
            where = self.path or "the pool's embeddings"
            raise ValueError(f"{where}: rows {self.start}..{self.stop - 1} contain non-finite values (nan or inf)")
        y = torch.from_numpy(np.array(self.y, dtype=np.float32)).to(self.device)
        a = torch.full((self.stop - self.start,), 1.0 / self.n_total, dtype=torch.float32, device=self.device)
        return RowPart(x, y, a, self.block_size, self.cost_memory_budget, to_host=self.to_host)


def split_sources(x: np.ndarray, parts: int) -> list[tuple[int, int, str | None, np.ndarray | None]]:
    """``(start, stop, path, rows)`` of each of ``parts`` contiguous parts of ``x``: a worker reads its rows
    from ``path`` when ``x`` is a whole memory-mapped ``.npy`` (then ``rows`` is None), else gets ``rows``."""
    path = whole_npy_file(x)
    return [(start, stop, path, None if path else np.asarray(x[start:stop]))
            for start, stop in split_rows(len(x), parts)]


def solver_points(x: np.ndarray, device: str):
    """``x`` as an OT solver takes it: a memory map stays on the host, read block by block
    (:class:`HostRows`); an array becomes a float32 tensor on ``device`` (a copy: inputs may be read-only)."""
    if isinstance(x, np.memmap):
        return HostRows(x, torch.float32, device)
    return torch.from_numpy(np.array(x, dtype=np.float32)).to(device)


def whole_npy_file(x: Any) -> str | None:
    """The ``.npy`` path behind ``x`` if ``x`` is that whole file, memory-mapped read-only, else None."""
    if not isinstance(x, np.memmap) or getattr(x, "_mmap", None) is None or not x.filename or x.mode != "r":
        return None
    try:
        full = np.load(x.filename, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return str(x.filename) if full.shape == x.shape and full.dtype == x.dtype and x.flags.c_contiguous else None
