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
from tunesift.pool.neighbours import (  # noqa: F401  (the search, re-exported where it was first defined)
    METRICS, SAMPLE_STRIDE, STRATEGIES, NeighbourLists, NeighbourSearch, list_thresholds, nearest_neighbours,
    neighbour_lists, neighbour_lists_blocks, prepare, search_blocks, similarity)
from tunesift.registry import POOL_METHODS

log = logging.getLogger(__name__)


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
