"""kNN (TAPT/c): the pool examples nearest the target examples in an embedding space.

Gururangan et al. *Don't Stop Pretraining*, ACL 2020, §5 ("curated TAPT": embed the task data and a
large pool, take the k nearest pool neighbours of every task example); GOT-D (Kang et al., ICLR 2024)
uses it as the baseline "TAPT/c".

Ranking. With ``strategy="round_robin"`` (the default, TAPT/c's curation) the target examples take
turns, each adding its nearest pool neighbour not picked yet, so a budget of B gives every target
example about B / M neighbours. Lists of depth d per target example give the exact round robin only
until some example has used all d of its neighbours; the depth d starts at ``max(k, ⌈2B / M⌉)`` and
doubles until the exact round robin over depth-d lists covers the budget, and the ranking is that
whole exact prefix (up to the first turn whose example has used its first d neighbours), then the
other positions ordered by score. With ``strategy="max"`` the whole pool is ordered by score. Either
way the first B positions do not depend on B: selections of different budgets are prefixes of one
ranking.

Lists are fetched only as deep as the turns need (many target examples can share neighbours, so
some need lists far deeper than B / M). The pass over the pool that finds every pool row's nearest
target example also fetches the first d neighbours of every target example (more, up to
FIRST_FETCH_ENTRIES in all); when an example has used a list shorter than d, the round robin pauses,
looks ahead for the other examples about to run out, and fetches deeper lists for those only. Deep
lists come from a threshold per target example estimated on every 16th pool row and a sort of the
rows above it, not from a top-k over every block. The result is the round robin over depth-d lists
of every example, with the same d, at a fraction of the cost.

Output columns (scores.parquet): ``similarity``, each pool row's similarity to its nearest target
example, ``max_j cos(x, t_j)`` for ``metric="cosine"`` and ``-min_j ‖x − t_j‖₂`` for ``metric="l2"``;
``nearest_target``, that example's row in the target; ``picked_for`` (round robin), the target row
whose turn picked the row, -1 for rows the round robin did not reach (ordered after it by
similarity). ``score`` says only the order (1 for the first pick down to 0): with the round robin a
row can be picked before a more similar one.

Similarities are computed block by block with torch on the device of the inputs, keeping the rows
above the threshold per target example and a running maximum per pool row: memory
O((N + M)·dim + M·d + block²), never N × M.
"""

from __future__ import annotations

import logging
import math
from array import array
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from tunesift.io.tables import TextSet
from tunesift.pool.base import Context, PoolMethod, Ranking, order_by_score, scores_from_order
from tunesift.registry import POOL_METHODS

log = logging.getLogger(__name__)

METRICS = ("cosine", "l2")
STRATEGIES = ("round_robin", "max")


@dataclass
class NeighbourSearch:
    """What :func:`nearest_neighbours` returns (tensors on the inputs' device).

    Attributes:
        indices: (M, k) int64 pool rows nearest each target example, nearest first; among exactly
            equal similarities the lower row comes first (which of several tied rows makes the
            cut at depth k is not specified).
        similarities: (M, k) their similarities.
        best_similarity: (N,) the similarity of each pool row to its nearest target example.
        best_target: (N,) int64 that target example (the lowest index among ties).
    """

    indices: "torch.Tensor"
    similarities: "torch.Tensor"
    best_similarity: "torch.Tensor"
    best_target: "torch.Tensor"


def prepare(embeddings: "torch.Tensor", metric: str, inplace: bool = False) -> "torch.Tensor":
    """(n, dim) float32 embeddings ready for :func:`similarity`: unit rows for cosine (zero rows stay zero);
    ``inplace``: a float32 input is divided in place (the same values, no second copy)."""
    import torch

    x = embeddings.to(torch.float32)
    if metric == "cosine":
        norms = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x.div_(norms) if inplace else x / norms
    if metric == "l2":
        return x
    raise ValueError(f"`metric` must be one of {', '.join(METRICS)}, got {metric!r}")


def similarity(queries: "torch.Tensor", keys: "torch.Tensor", metric: str) -> "torch.Tensor":
    """(q, k) similarities of prepared rows: dot products of unit rows, or minus Euclidean distances."""
    if metric == "cosine":
        return queries @ keys.T
    squared = (queries * queries).sum(1, keepdim=True) + (keys * keys).sum(1)[None, :] - 2.0 * (queries @ keys.T)
    return -squared.clamp_min(0.0).sqrt()


def nearest_neighbours(pool: "torch.Tensor", target: "torch.Tensor", k: int, metric: str = "cosine",
                       block_size: int = 4096) -> NeighbourSearch:
    """The k nearest pool rows of every target row, and the nearest target row of every pool row.

    Args:
        pool: (N, dim) embeddings.
        target: (M, dim) embeddings, same device.
        k: neighbours per target row (0: only the per-pool-row maximum; more than N: N).
        metric: "cosine" or "l2".
        block_size: pool rows per block; target rows per block are chosen so that one block of
            similarities plus the candidates being merged hold at most about block_size² values.
    """
    if pool.ndim != 2 or target.ndim != 2 or pool.shape[1] != target.shape[1]:
        raise ValueError(f"pool embeddings {tuple(pool.shape)} and target embeddings {tuple(target.shape)} "
                         "must be (N, dim) and (M, dim) with the same dim")
    if block_size < 1:
        raise ValueError(f"`block_size` must be at least 1, got {block_size}")
    return _search(prepare(pool, metric), prepare(target, metric), k, metric, block_size)


def _search(pool: "torch.Tensor", target: "torch.Tensor", k: int, metric: str, block_size: int,
            with_nearest_target: bool = True) -> NeighbourSearch:
    """:func:`nearest_neighbours` of prepared (N, dim) and (M, dim) rows; without ``with_nearest_target``
    ``best_similarity`` and ``best_target`` are left empty (shape (0,))."""
    import torch

    n, m, device = pool.shape[0], target.shape[0], pool.device
    k = min(int(k), n)
    target_block = max(1, min(block_size, block_size * block_size // (k + block_size)))
    # equal target blocks: BLAS computes a product of very few rows along another path, with other
    # rounding, and the lists must not depend on how the target rows were split
    target_block = -(-m // max(1, -(-m // target_block))) if m else 1
    top_values = torch.full((m, k), -math.inf, device=device)
    top_indices = torch.full((m, k), -1, dtype=torch.int64, device=device)
    size = n if with_nearest_target else 0
    best_similarity = torch.full((size,), -math.inf, device=device)
    best_target = torch.zeros(size, dtype=torch.int64, device=device)
    for p0 in range(0, n, block_size):
        keys = pool[p0:p0 + block_size]
        for t0 in range(0, m, target_block):
            block = similarity(target[t0:t0 + target_block], keys, metric)  # (bt, bp)
            if with_nearest_target:
                # first maximum = the lowest target index in this block; a row-wise max of the transposed
                # copy is several times faster on CPU than a column-wise max
                values, rows = block.T.contiguous().max(dim=1)
                better = values > best_similarity[p0:p0 + len(keys)]  # strict: earlier blocks win ties
                best_similarity[p0:p0 + len(keys)] = torch.where(better, values, best_similarity[p0:p0 + len(keys)])
                best_target[p0:p0 + len(keys)] = torch.where(better, rows + t0, best_target[p0:p0 + len(keys)])
            if k == 0:
                continue
            block_values, block_indices = block.topk(min(k, len(keys)), dim=1)  # (bt, ≤k)
            merged_values = torch.cat([top_values[t0:t0 + target_block], block_values], dim=1)
            merged_indices = torch.cat([top_indices[t0:t0 + target_block], block_indices + p0], dim=1)
            keep = merged_values.topk(k, dim=1).indices
            top_values[t0:t0 + target_block] = merged_values.gather(1, keep)
            top_indices[t0:t0 + target_block] = merged_indices.gather(1, keep)
    # canonical order within each list: similarity descending, then row ascending
    by_row = top_indices.argsort(dim=1, stable=True)
    top_values, top_indices = top_values.gather(1, by_row), top_indices.gather(1, by_row)
    by_value = top_values.argsort(dim=1, descending=True, stable=True)
    return NeighbourSearch(indices=top_indices.gather(1, by_value), similarities=top_values.gather(1, by_value),
                           best_similarity=best_similarity, best_target=best_target)


@dataclass
class NeighbourLists:
    """What :func:`neighbour_lists` returns (numpy arrays on the CPU).

    Attributes:
        indices: (total,) int64 the lists one after another: list j is
            ``indices[offsets[j]:offsets[j + 1]]``, the pool rows nearest target row j, nearest first,
            among exactly equal similarities the lower row first. Every list is an exact prefix of the
            full order of the pool for its target row.
        offsets: (M + 1,) int64.
        best_similarity: (N,) float32 the similarity of each pool row to its nearest target row (empty
            without ``with_nearest_target``).
        best_target: (N,) int64 that target row (the lowest index among ties).
    """

    indices: np.ndarray
    offsets: np.ndarray
    best_similarity: np.ndarray
    best_target: np.ndarray
    similarities: np.ndarray | None = None  # (total,) float32 aligned with ``indices``

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, j: int) -> np.ndarray:
        return self.indices[self.offsets[j]:self.offsets[j + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[j] for j in range(len(self)))


def neighbour_lists(pool: "torch.Tensor", target: "torch.Tensor", k: int, metric: str = "cosine",
                    block_size: int = 4096, with_nearest_target: bool = True) -> NeighbourLists:
    """About the k nearest pool rows of every target row, without a top-k over every block.

    A first pass over every 16th pool row estimates for each target row a similarity that about
    1.25·k + 256 pool rows reach (all of them when N is not larger); the second pass over the whole
    pool keeps the rows at or above it and sorts them. A list is cut at k rows, and is shorter where the
    estimate kept fewer than k rows (each is still an exact prefix; with the margin that is rare).
    This is much faster than :func:`nearest_neighbours` for a large k: the work besides the
    products is a comparison per similarity and a sort of the rows kept.

    Args:
        pool: (N, dim) embeddings.
        target: (M, dim) embeddings, same device.
        k: rows per target row (at most N).
        metric: "cosine" or "l2".
        block_size: pool rows per block of similarities (at most about block_size² at once).
        with_nearest_target: also find the nearest target row of every pool row.
    """
    if pool.ndim != 2 or target.ndim != 2 or pool.shape[1] != target.shape[1]:
        raise ValueError(f"pool embeddings {tuple(pool.shape)} and target embeddings {tuple(target.shape)} "
                         "must be (N, dim) and (M, dim) with the same dim")
    if block_size < 1:
        raise ValueError(f"`block_size` must be at least 1, got {block_size}")
    return _neighbour_lists(prepare(pool, metric), prepare(target, metric), k, metric, block_size,
                            with_nearest_target)


SAMPLE_STRIDE = 16  # the threshold of a list is estimated on every 16th pool row


def list_thresholds(k: int, n: int, m: int, jth: Callable[[int], "torch.Tensor"], device=None) -> "torch.Tensor":
    """(M,) the similarity a target row's list keeps pool rows down to: a little below ``jth(j)``, the
    j-th largest similarity over every 16th pool row, which about 16·j ≈ 1.25·k + 256 pool rows reach
    (products of other shapes can round differently in the second pass); +inf for k = 0 (keep none),
    -inf when the sample has fewer than j rows (keep every row)."""
    import torch

    if k == 0:
        return torch.full((m,), math.inf, device=device)
    j = math.ceil(1.25 * k / SAMPLE_STRIDE) + 16
    if j > (n + SAMPLE_STRIDE - 1) // SAMPLE_STRIDE:
        return torch.full((m,), -math.inf, device=device)
    found = jth(j)
    return found - 1e-5 * found.abs().clamp_min(1.0)


def _neighbour_lists(pool: "torch.Tensor", target: "torch.Tensor", k: int, metric: str, block_size: int,
                     with_nearest_target: bool = True, threshold: "torch.Tensor | None" = None,
                     n_total: int | None = None) -> NeighbourLists:
    """:func:`neighbour_lists` of prepared rows. ``threshold``: (M,) given (pool rows that are a part of
    a larger pool of ``n_total`` rows, whose threshold was estimated over all of it), else estimated here."""
    import torch

    n, m, device = pool.shape[0], target.shape[0], pool.device
    k = max(0, min(int(k), n_total or n))
    if threshold is None:
        threshold = list_thresholds(k, n, m, lambda j: _search(pool[::SAMPLE_STRIDE], target, j, metric, block_size,
                                                               with_nearest_target=False).similarities[:, j - 1],
                                    device)
    k = min(k, n)
    # target rows per block: their similarities to a pool block and the rows they keep about block_size²
    expected = min(n, math.ceil(1.25 * k) + 256) if k else 0
    target_block = max(1, min(block_size, block_size * block_size // (expected + block_size)))
    target_block = -(-m // max(1, -(-m // target_block))) if m else 1  # equal blocks, as in _search
    size = n if with_nearest_target else 0
    best_similarity = torch.full((size,), -math.inf, device=device)
    best_target = torch.zeros(size, dtype=torch.int64, device=device)
    indices, lengths, similarities = [], [], []
    for t0 in range(0, m, target_block):
        queries = target[t0:t0 + target_block]
        bt = len(queries)
        kept_at, kept_rows, kept_values = [], [], []
        filled = torch.zeros(bt, dtype=torch.int64, device=device)
        for p0 in range(0, n, block_size):
            keys = pool[p0:p0 + block_size]
            block = similarity(queries, keys, metric)  # (bt, bp)
            if with_nearest_target:
                values, rows = block.T.contiguous().max(dim=1)  # see _search
                better = values > best_similarity[p0:p0 + len(keys)]  # strict: earlier target blocks win ties
                best_similarity[p0:p0 + len(keys)] = torch.where(better, values, best_similarity[p0:p0 + len(keys)])
                best_target[p0:p0 + len(keys)] = torch.where(better, rows + t0, best_target[p0:p0 + len(keys)])
            if k == 0:
                continue
            # row-major: the rows each target row keeps come in ascending order
            t, r = (block >= threshold[t0:t0 + bt, None]).nonzero(as_tuple=True)
            counts = torch.bincount(t, minlength=bt)
            position = torch.arange(len(t), device=device) - (torch.cumsum(counts, 0) - counts)[t] + filled[t]
            filled += counts
            kept_at.append(t * n + position)  # (target row, position) as one index into a (bt, n) table
            kept_rows.append(r + p0)
            kept_values.append(block[t, r])
        if k == 0:
            continue
        width = max(1, int(filled.max()))
        at = torch.cat(kept_at)
        at = at // n * width + at % n
        values = torch.full((bt * width,), -math.inf, device=device)
        values[at] = torch.cat(kept_values)
        rows = torch.zeros(bt * width, dtype=torch.int64, device=device)
        rows[at] = torch.cat(kept_rows)
        del kept_at, kept_rows, kept_values, at
        # similarity descending; the stable sort keeps ascending rows among equal similarities
        depth = min(k, width)
        by_value = values.view(bt, width).sort(dim=1, descending=True, stable=True).indices[:, :depth]
        rows = rows.view(bt, width).gather(1, by_value)
        length = filled.clamp_max(k)
        within = torch.arange(depth, device=device)[None, :] < length[:, None]
        indices.append(rows[within].cpu())
        similarities.append(values.view(bt, width).gather(1, by_value)[within].cpu())
        lengths.append(length.cpu())
    offsets = np.zeros(m + 1, dtype=np.int64)
    if lengths:
        np.cumsum(torch.cat(lengths).numpy(), out=offsets[1:])
    flat = torch.cat(indices).numpy() if indices else np.zeros(0, dtype=np.int64)
    sims = torch.cat(similarities).numpy() if similarities else np.zeros(0, dtype=np.float32)
    return NeighbourLists(indices=flat, offsets=offsets, best_similarity=best_similarity.cpu().numpy(),
                          best_target=best_target.cpu().numpy(), similarities=sims)


@dataclass
class RoundRobin:
    """What :func:`round_robin` and :func:`deepening_round_robin` return.

    Attributes:
        order: (L,) int64 pool rows in the order the target examples picked them.
        picked_for: (L,) int64 the target example whose turn picked each.
        exhausted: True when it stopped because a target example had used its whole list (later
            positions would need deeper lists); False when it picked every pool row.
        depth: the list depth d whose exact round robin this is.
        searches: neighbour searches run for deeper lists.
        requeried: target rows in those searches, counted once per search.
    """

    order: np.ndarray
    picked_for: np.ndarray
    exhausted: bool
    depth: int = 0
    searches: int = 0
    requeried: int = 0


def round_robin(neighbours: np.ndarray, num_pool: int) -> RoundRobin:
    """Target examples take turns, each picking its nearest pool row not picked yet.

    The result is the exact prefix of the round robin over full (depth N) neighbour lists: it stops
    at the first turn whose target example has no unpicked row left in its list.

    Args:
        neighbours: (M, d) pool rows nearest each target example, nearest first.
        num_pool: N, the number of pool rows.
    """
    lists = np.asarray(neighbours, dtype=np.int64).tolist()
    depth = len(lists[0]) if lists else 0
    pointer = [0] * len(lists)
    picked = bytearray(num_pool)
    order: list[int] = []
    picked_for: list[int] = []
    exhausted = (depth == 0 or not lists) and num_pool > 0
    while not exhausted and len(order) < num_pool:
        for t, row in enumerate(lists):
            p = pointer[t]
            while p < depth and picked[row[p]]:
                p += 1
            if p == depth:
                exhausted = True
                break
            picked[row[p]] = 1
            order.append(row[p])
            picked_for.append(t)
            pointer[t] = p + 1
            if len(order) == num_pool:
                break
    return RoundRobin(order=np.asarray(order, dtype=np.int64), picked_for=np.asarray(picked_for, dtype=np.int64),
                      exhausted=exhausted, depth=depth)


def deepening_round_robin(neighbours: Sequence[Sequence[int]], num_pool: int, budget: int, depth: int,
                          fetch: Callable[[np.ndarray, int], Sequence[Sequence[int]]]) -> RoundRobin:
    """The round robin over depth-d lists for the first d in depth, 2·depth, 4·depth, ... (at most N)
    whose exact prefix covers ``budget``: :func:`round_robin` of :func:`nearest_neighbours` at that
    depth, with lists fetched only as deep as the turns need.

    A target example that has used every row of its list pauses the round robin. When its list is
    shorter than d, a look-ahead (the round robin continued on a copy, up to one round past the
    budget, skipping the turns of examples out of rows) collects every example about to run out, and
    ``fetch`` gives all of them deeper lists (d rows, or twice their rows when that is more). When
    its list has d rows, the round robin stops if it has covered the budget, and otherwise d doubles.

    Args:
        neighbours: M lists, any lengths: the pool rows nearest each target example, nearest first,
            each an exact prefix of the order of the whole pool for that example.
        num_pool: N, the number of pool rows.
        budget: positions the exact prefix must cover.
        depth: the first depth d tried.
        fetch: ``fetch(target_rows, k)`` → for each of those target examples its k nearest pool rows
            (N when k > N), as exact prefixes of the same orders as ``neighbours``.
    """
    m, n = len(neighbours), int(num_pool)
    lists = [_compact(row, n) for row in neighbours]
    views = [np.frombuffer(row, dtype=row.typecode) for row in lists]
    depth = min(int(depth), n)
    pointer = [0] * m
    picked = bytearray(n)
    picked_view = np.frombuffer(picked, dtype=np.uint8)
    order: list[int] = []
    picked_for: list[int] = []
    searches = requeried = 0
    if m == 0 or depth < 1:
        return RoundRobin(order=np.zeros(0, dtype=np.int64), picked_for=np.zeros(0, dtype=np.int64),
                          exhausted=n > 0, depth=max(depth, 0))
    t, exhausted = 0, False
    while len(order) < n:
        row, p = lists[t], pointer[t]
        limit = min(len(row), depth)
        if p < limit and picked[row[p]]:
            p = _next_unpicked(views[t], p + 1, limit, picked_view)
        pointer[t] = p
        if p == limit:
            if limit == depth:  # t has used its first d rows: the depth-d round robin ends here
                if len(order) >= budget:
                    exhausted = True
                    break
                depth = min(n, 2 * depth)
                continue
            running_out = _running_out(lists, views, pointer, picked, t, depth,
                                       max(budget, len(order)) + m - len(order))
            k = min(n, max(depth, 2 * max(len(lists[s]) for s in running_out)))
            deeper = fetch(np.asarray(running_out, dtype=np.int64), k)
            searches, requeried = searches + 1, requeried + len(running_out)
            for s, new in zip(running_out, deeper):
                if len(new) != k:
                    raise ValueError(f"`fetch` returned {len(new)} neighbours for target example {s}; asked for {k}")
                # rescanned from the start: the new list may order rows tied at the old cut otherwise
                lists[s], pointer[s] = _compact(new, n), 0
                views[s] = np.frombuffer(lists[s], dtype=lists[s].typecode)
            continue
        picked[row[p]] = 1
        order.append(row[p])
        picked_for.append(t)
        pointer[t] = p + 1
        t = t + 1 if t + 1 < m else 0
    return RoundRobin(order=np.asarray(order, dtype=np.int64), picked_for=np.asarray(picked_for, dtype=np.int64),
                      exhausted=exhausted, depth=depth, searches=searches, requeried=requeried)


def _compact(row: Sequence[int], num_pool: int) -> array:
    """A list of pool rows as 4-byte (8-byte for a pool of 2³¹ rows) integers that index fast from Python."""
    compact = array("i" if num_pool < 2**31 else "q")
    compact.frombytes(np.ascontiguousarray(row, dtype=np.int32 if compact.typecode == "i" else np.int64).tobytes())
    return compact


def _next_unpicked(row: np.ndarray, position: int, limit: int, picked: np.ndarray) -> int:
    """The first position from ``position`` on (below ``limit``) whose pool row is not picked; ``limit``
    when there is none. Looks at growing chunks, so long runs of picked rows cost little."""
    step = 16
    while position < limit:
        end = min(limit, position + step)
        free = np.flatnonzero(picked[row[position:end]] == 0)
        if len(free):
            return position + int(free[0])
        position, step = end, 4 * step
    return limit


def _running_out(lists: list[array], views: list[np.ndarray], pointer: list[int], picked: bytearray, first: int,
                 depth: int, turns: int) -> list[int]:
    """Target examples, ``first`` among them, whose lists (shorter than ``depth``) run out within the
    next ``turns`` turns of the round robin starting at ``first``'s turn, skipping the turns of those
    already out (their picks are unknown, so this can miss some; the caller looks again later)."""
    m = len(lists)
    picked, pointer = bytearray(picked), list(pointer)
    picked_view = np.frombuffer(picked, dtype=np.uint8)
    out = {first}
    t = first
    for _ in range(turns - 1):
        t = t + 1 if t + 1 < m else 0
        if t in out:
            continue
        row, p = lists[t], pointer[t]
        limit = min(len(row), depth)
        if p < limit and picked[row[p]]:
            p = _next_unpicked(views[t], p + 1, limit, picked_view)
        if p == limit:
            if limit == depth:  # the round robin may stop or deepen every list here: look no further
                break
            out.add(t)
            continue
        picked[row[p]] = 1
        pointer[t] = p + 1
    return sorted(out)


FIRST_FETCH_ENTRIES = 1 << 24  # list entries (all target examples together) the first pass fetches


def first_fetch(depth: int, num_pool: int, num_target: int) -> int:
    """Rows per target example the first pass fetches: the round robin's first depth doubled while the
    M lists hold at most about FIRST_FETCH_ENTRIES rows (a round robin often needs more than the first
    depth for many examples, and longer lists cost little in the pass that computes every similarity)."""
    fetched = depth
    while 2 * fetched * num_target <= FIRST_FETCH_ENTRIES and fetched < num_pool:
        fetched *= 2
    return min(fetched, num_pool)


def _fetch(pool: Any, target: "torch.Tensor", rows: np.ndarray, k: int, metric: str = "cosine",
           block_size: int = 4096) -> list[np.ndarray]:
    """The k nearest pool rows of the prepared target rows ``rows``, nearest first, as exact prefixes.

    ``pool``: the prepared (N, dim) pool, or an index of it (:mod:`tunesift.pool.knn_parts`)."""
    import torch

    from tunesift.pool.knn_parts import LocalIndex

    index = pool if hasattr(pool, "lists") else LocalIndex(pool, metric, block_size)
    m, k = target.shape[0], min(int(k), index.n)

    def query(selected: np.ndarray) -> "torch.Tensor":
        # at least 16 rows (or M): BLAS may round products of very few rows differently from the
        # first pass's, and the lists must agree
        padded = np.resize(selected, max(len(selected), min(16, m)))
        return target[torch.as_tensor(padded, device=target.device)]

    found = index.lists(query(rows), k, with_nearest_target=False)
    lists = [found[j] for j in range(len(rows))]
    short = [j for j, row in enumerate(lists) if len(row) < k]
    if short:  # the threshold kept too few: an exact top-k for these
        exact = index.exact(query(rows[short]), k)
        for position, j in enumerate(short):
            lists[j] = exact[position]
    return lists


def _as_tensor(array: np.ndarray, device: str) -> "torch.Tensor":
    import torch

    array = np.asarray(array, dtype=np.float32)
    if not array.flags.writeable:  # e.g. a memory-mapped cache; torch wants writable memory
        array = array.copy()
    return torch.as_tensor(array, device=device)


@POOL_METHODS.register("knn")
@dataclass
class KNNSelection(PoolMethod):
    """TAPT/c: nearest pool neighbours of the target examples (see the module docstring)."""

    k: int = 32  # first list depth d of the round robin (raised to ⌈2·budget/M⌉ when larger; doubles as needed)
    metric: str = "cosine"  # as TAPT/c and sentence embeddings; "l2": Euclidean distance
    strategy: str = "round_robin"  # TAPT/c's per-example curation; "max": by similarity to the nearest target
    block_size: int = 4096  # pool rows per block of similarities

    name: ClassVar[str] = "knn"
    uses_embeddings: ClassVar[bool] = True
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {
        "k": ("--knn-k", "kNN: first list depth per target example in the round robin (doubled while the "
              "budget needs more)"),
        "metric": ("--knn-metric", "kNN: cosine or l2"),
        "strategy": ("--knn-strategy", "kNN: round_robin (each target example in turn takes its nearest unpicked "
                     "neighbour) or max (by similarity to the nearest target example)"),
        "block_size": ("--knn-block-size", "kNN: pool rows per block of similarities"),
    }

    def __post_init__(self) -> None:
        for name in ("k", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an integer of at least 1, got {value!r}")
        if self.metric not in METRICS:
            raise ValueError(f"`metric` must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        import torch

        if ctx.embed is None:
            raise ValueError("the knn method needs embeddings; run it through select_from_pool or give "
                             "Context.embed")
        from tunesift.pool.knn_parts import knn_index

        pool_embeddings = ctx.embed(pool, "pool")
        target_embeddings = _as_tensor(ctx.embed(target, "target"), ctx.device)
        if not bool(torch.isfinite(target_embeddings).all()):
            raise ValueError("target embeddings contain NaN or infinite values")
        n, m = pool_embeddings.shape[0], target_embeddings.shape[0]
        budget = min(int(ctx.budget), n)
        depth = 0 if self.strategy == "max" else min(n, max(self.k, math.ceil(2 * budget / m)))
        info = {"metric": self.metric, "strategy": self.strategy}
        # the pool here, or split over the executor's workers (each holds its rows)
        with knn_index(pool_embeddings, self.metric, self.block_size, ctx.device, ctx.executor) as index, \
                ctx.timer.stage("knn_search") if ctx.timer is not None else nullcontext():
            target_embeddings = prepare(target_embeddings, self.metric)
            if self.strategy == "max":
                search = index.lists(target_embeddings, 0)
            else:
                search = index.lists(target_embeddings, first_fetch(depth, n, m))

                def fetch(rows: np.ndarray, k: int) -> list[np.ndarray]:
                    log.info("knn: fetching %d neighbours for %d target examples", k, len(rows))
                    return _fetch(index, target_embeddings, rows, k)

                turns = deepening_round_robin(search, n, budget, depth, fetch)
        scores = search.best_similarity.astype(np.float64)  # to the nearest target example
        columns = {"similarity": scores, "nearest_target": search.best_target}
        if self.strategy == "max":
            order = order_by_score(scores)
        else:
            rest = np.ones(n, dtype=bool)
            rest[turns.order] = False
            tail = np.flatnonzero(rest)
            order = np.concatenate([turns.order, tail[order_by_score(scores[tail])]])
            picked_for = np.full(n, -1, dtype=np.int64)
            picked_for[turns.order] = turns.picked_for
            columns["picked_for"] = picked_for
            info.update(depth=turns.depth, round_robin_rows=int(len(turns.order)), searches=1 + turns.searches,
                        requeried_targets=turns.requeried)
        info["selected_mean_score"] = float(scores[order[:budget]].mean())
        info["pool_mean_score"] = float(scores.mean())
        # the round robin picks by turns, not by similarity: `score` says the order
        return Ranking(scores=scores_from_order(order), order=order.astype(np.int64), columns=columns, info=info)
