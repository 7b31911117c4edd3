"""The pool side of kNN's searches, here or split over an executor's workers.

kNN (:mod:`tunesift.pool.knn`) asks the pool two things: the neighbour lists of some target rows
(every pool row at or above a per-target threshold estimated on every 16th pool row, sorted, cut at k)
and, where a list came out short, an exact top-k. Both are sums over pool rows, so a pool split into
contiguous parts answers them part by part: the threshold is the j-th largest similarity over every
part's sample rows (the same global rows 0, 16, 32, ...), each part keeps its rows above it, and the
driver merges the parts' lists by (similarity descending, row ascending) — the single pass's order.
The per-pool-row nearest target is each part's own.

:class:`LocalIndex` is the whole pool in this process (one part: exactly the single pass);
:class:`PartsIndex` holds :class:`KnnPart` workers placed by an executor
(:meth:`tunesift.executor.Executor.place`), e.g. one per Ray actor, each reading its rows of the
memory-mapped embeddings. A memory-mapped pool of more than :data:`STREAM_BYTES` (as float32) searched in
one process goes through :class:`StreamedParts`: the same parts, built one after another from the file for
each search and dropped after it, so kNN's memory is one part's rows (plus O(N) per-row results)
whatever N, at the price of reading the file once more per search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from tunesift.pool.neighbours import (SAMPLE_STRIDE, NeighbourLists, list_thresholds, neighbour_lists_blocks, prepare,
                                      search_blocks)


class LocalIndex:
    """The prepared (N, dim) pool in this process."""

    def __init__(self, pool: "torch.Tensor", metric: str, block_size: int):
        self.pool, self.metric, self.block_size = pool, metric, block_size
        self.n = pool.shape[0]

    def lists(self, queries: "torch.Tensor", k: int, with_nearest_target: bool = True) -> NeighbourLists:
        return neighbour_lists_blocks(self.pool, queries, k, self.metric, self.block_size, with_nearest_target)

    def exact(self, queries: "torch.Tensor", k: int) -> list[np.ndarray]:
        found = search_blocks(self.pool, queries, k, self.metric, self.block_size, with_nearest_target=False)
        return list(found.indices.cpu().numpy())


class KnnPart:
    """Rows ``offset .. offset + n`` of the prepared pool (a worker of :class:`PartsIndex`)."""

    def __init__(self, rows: "torch.Tensor", offset: int, n_total: int, metric: str, block_size: int):
        self.rows, self.offset, self.n_total = rows, offset, n_total
        self.metric, self.block_size = metric, block_size

    def sample_top(self, queries: "torch.Tensor", j: int) -> np.ndarray:
        """(q, ≤j) the largest similarities to this part's rows among the global rows 0, 16, 32, ..."""
        first = (-self.offset) % SAMPLE_STRIDE
        sample = self.rows[first::SAMPLE_STRIDE]
        if sample.shape[0] == 0:
            return np.zeros((queries.shape[0], 0), dtype=np.float32)
        found = search_blocks(sample, queries.to(self.rows.device), j, self.metric, self.block_size,
                        with_nearest_target=False)
        return found.similarities.cpu().numpy()

    def above(self, queries: "torch.Tensor", k: int, threshold: "torch.Tensor",
              with_nearest_target: bool) -> NeighbourLists:
        """This part's lists (global rows) at ``threshold``, and the nearest target of each of its rows."""
        lists = neighbour_lists_blocks(self.rows, queries.to(self.rows.device), k, self.metric, self.block_size,
                                 with_nearest_target, threshold=threshold.to(self.rows.device), n_total=self.n_total)
        lists.indices += self.offset
        return lists

    def exact(self, queries: "torch.Tensor", k: int) -> tuple[np.ndarray, np.ndarray]:
        found = search_blocks(self.rows, queries.to(self.rows.device), k, self.metric, self.block_size,
                        with_nearest_target=False)
        return found.similarities.cpu().numpy(), found.indices.cpu().numpy() + self.offset


@dataclass(frozen=True)
class KnnPartFactory:
    """Builds the :class:`KnnPart` of rows ``start:stop`` where it runs (picklable): from ``path`` (a
    memory-mapped ``.npy``) or ``array``; checks them and prepares them for ``metric``."""

    start: int
    stop: int
    n_total: int
    metric: str
    block_size: int
    path: str | None = None
    array: np.ndarray | None = None
    device: str = "cpu"

    def __call__(self) -> KnnPart:
        import torch

        rows = np.load(self.path, mmap_mode="r")[self.start:self.stop] if self.path else self.array
        x = torch.from_numpy(np.array(rows, dtype=np.float32)).to(self.device)
        del rows  # the file's mapping goes with it: its pages leave the process before the rows are prepared
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"pool embeddings contain NaN or infinite values (rows {self.start}..{self.stop - 1})")
        return KnnPart(prepare(x, self.metric, inplace=True), self.start, self.n_total, self.metric, self.block_size)


def _merge(values: list[np.ndarray], rows: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of the union, by similarity descending and row ascending."""
    v, r = np.concatenate(values), np.concatenate(rows)
    order = np.lexsort((r, -v.astype(np.float64)))[:k]
    return v[order], r[order]


STREAM_BYTES = 1 << 27  # float32 bytes of a memory-mapped pool read at a time when one process searches it


class StreamedParts:
    """:class:`PartsIndex`'s workers without workers: each call builds every part in turn in this process
    (its rows read from the memory-mapped file), asks it, and drops it before the next one."""

    def __init__(self, factories: list[KnnPartFactory]):
        self.factories = list(factories)

    def call(self, method: str, *args: Any) -> Iterator[Any]:
        """Each part's answer in row order, computed as it is consumed (one part in memory at a time)."""
        return (getattr(factory(), method)(*args) for factory in self.factories)


class PartsIndex:
    """The pool split over placed :class:`KnnPart` workers (their parts in row order)."""

    def __init__(self, placed: Any, n: int):
        self.placed, self.n = placed, n

    def lists(self, queries: "torch.Tensor", k: int, with_nearest_target: bool = True) -> NeighbourLists:
        import torch

        q = queries.cpu()
        k = max(0, min(int(k), self.n))

        def jth(j: int) -> "torch.Tensor":  # the j-th largest over every part's sample rows
            tops = np.concatenate(list(self.placed.call("sample_top", q, j)), axis=1)  # (q, Σ ≤j)
            return torch.from_numpy(np.ascontiguousarray(-np.sort(-tops, axis=1)[:, j - 1]))

        threshold = list_thresholds(k, self.n, q.shape[0], jth)
        # each part's lists merged into the running ones as it arrives (the top k of a union is the top k
        # of the running top k and the new part): memory one part's lists, however many parts
        m = q.shape[0]
        sims = [np.zeros(0, np.float32)] * m
        indices = [np.zeros(0, np.int64)] * m
        best_similarity, best_target = [], []
        for part in self.placed.call("above", q, k, threshold, with_nearest_target):
            for t in range(m):
                sims[t], indices[t] = _merge([sims[t], part.similarities[part.offsets[t]:part.offsets[t + 1]]],
                                             [indices[t], part[t]], k)
            best_similarity.append(part.best_similarity)
            best_target.append(part.best_target)
            del part
        offsets = np.zeros(m + 1, dtype=np.int64)
        np.cumsum([len(r) for r in indices], out=offsets[1:])
        return NeighbourLists(indices=np.concatenate(indices).astype(np.int64) if m else np.zeros(0, np.int64),
                              offsets=offsets, best_similarity=np.concatenate(best_similarity),
                              best_target=np.concatenate(best_target),
                              similarities=np.concatenate(sims) if m else np.zeros(0, np.float32))

    def exact(self, queries: "torch.Tensor", k: int) -> list[np.ndarray]:
        parts = list(self.placed.call("exact", queries.cpu(), k))
        k = min(int(k), self.n)
        return [_merge([v[t] for v, _ in parts], [r[t] for _, r in parts], k)[1] for t in range(queries.shape[0])]


def knn_index(pool: np.ndarray, metric: str, block_size: int, device: str, executor: Any = None,
              stream_rows: int | None = None):
    """The pool as :func:`tunesift.pool.knn` searches it (a context manager: use ``with``): here (None, or
    an executor of parallelism 1) or split over ``executor``'s workers. Here, a whole memory-mapped
    ``.npy`` of more than ``stream_rows`` rows (default: :data:`STREAM_BYTES` of float32 rows) is read part
    by part for each search (:class:`StreamedParts`), never held whole."""
    import contextlib

    import torch

    from tunesift.executor.drivers import parts_for, worker_gpus
    from tunesift.ot.parts import split_rows, split_sources, whole_npy_file

    n = pool.shape[0]
    parts = parts_for(executor, n)
    if stream_rows is None:
        stream_rows = max(1, STREAM_BYTES // (4 * max(1, pool.shape[1])))
    path = whole_npy_file(pool)
    if parts == 1 and path is not None and n > stream_rows:
        count = -(-n // stream_rows)
        factories = [KnnPartFactory(start, stop, n, metric, block_size, path=path, device=device)
                     for start, stop in split_rows(n, count)]
        return contextlib.nullcontext(PartsIndex(StreamedParts(factories), n))
    if parts == 1:
        array = np.asarray(pool, dtype=np.float32)
        if not array.flags.writeable:  # e.g. a memory-mapped cache; torch wants writable memory
            array = array.copy()
        x = torch.as_tensor(array, device=device)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("pool embeddings contain NaN or infinite values")
        return contextlib.nullcontext(LocalIndex(prepare(x, metric), metric, block_size))
    factories = [KnnPartFactory(start, stop, n, metric, block_size, path=path, array=rows, device=device)
                 for start, stop, path, rows in split_sources(pool, parts)]

    @contextlib.contextmanager
    def placed():
        with executor.place("knn", factories, gpus=worker_gpus(device)) as workers:
            yield PartsIndex(workers, n)

    return placed()
