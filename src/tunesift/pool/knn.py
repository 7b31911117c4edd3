"""kNN (TAPT/c): the pool examples nearest the target examples in an embedding space.

Gururangan et al. *Don't Stop Pretraining*, ACL 2020, §5 ("curated TAPT": embed the task data and a
large pool, take the k nearest pool neighbours of every task example); GOT-D (Kang et al., ICLR 2024)
uses it as the baseline "TAPT/c".

Ranking. With ``strategy="round_robin"`` (the default, TAPT/c's curation) the target examples take
turns, each adding its nearest pool neighbour not picked yet, so a budget of B gives every target
example about B / M neighbours. A list of depth d per target example is enough for the exact round
robin only until some example has used all d of its neighbours; the depth starts at
``max(k, ⌈2B / M⌉)`` and doubles (one more pass over the pool) until the exact round robin covers the
budget. Positions after that exact prefix are ordered by score. With ``strategy="max"`` the whole pool
is ordered by score. Either way the first B positions do not depend on B: selections of different
budgets are prefixes of one ranking.

Score (higher = keep): the similarity to the nearest target example, ``max_j cos(x, t_j)`` for
``metric="cosine"`` and ``-min_j ‖x − t_j‖₂`` for ``metric="l2"``.

Similarities are computed block by block with torch on the device of the inputs, keeping a running
top-d per target example and a running maximum per pool row: memory O((N + M)·dim + M·d + block²),
never N × M.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tunesift.io.tables import TextSet
from tunesift.pool.base import Context, PoolMethod, Ranking, order_by_score
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


def prepare(embeddings: "torch.Tensor", metric: str) -> "torch.Tensor":
    """(n, dim) float32 embeddings ready for :func:`similarity`: unit rows for cosine (zero rows stay zero)."""
    import torch

    x = embeddings.to(torch.float32)
    if metric == "cosine":
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
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
    import torch

    if pool.ndim != 2 or target.ndim != 2 or pool.shape[1] != target.shape[1]:
        raise ValueError(f"pool embeddings {tuple(pool.shape)} and target embeddings {tuple(target.shape)} "
                         "must be (N, dim) and (M, dim) with the same dim")
    if block_size < 1:
        raise ValueError(f"`block_size` must be at least 1, got {block_size}")
    pool, target = prepare(pool, metric), prepare(target, metric)
    n, m, device = pool.shape[0], target.shape[0], pool.device
    k = min(int(k), n)
    target_block = max(1, min(block_size, block_size * block_size // (k + block_size)))
    top_values = torch.full((m, k), -math.inf, device=device)
    top_indices = torch.full((m, k), -1, dtype=torch.int64, device=device)
    best_similarity = torch.full((n,), -math.inf, device=device)
    best_target = torch.zeros(n, dtype=torch.int64, device=device)
    for p0 in range(0, n, block_size):
        keys = pool[p0:p0 + block_size]
        for t0 in range(0, m, target_block):
            block = similarity(target[t0:t0 + target_block], keys, metric)  # (bt, bp)
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
class RoundRobin:
    """What :func:`round_robin` returns.

    Attributes:
        order: (L,) int64 pool rows in the order the target examples picked them.
        picked_for: (L,) int64 the target example whose turn picked each.
        exhausted: True when it stopped because a target example had used its whole list (later
            positions would need deeper lists); False when it picked every pool row.
    """

    order: np.ndarray
    picked_for: np.ndarray
    exhausted: bool


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
                      exhausted=exhausted)


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

    k: int = 32  # neighbours per target example in the first pass (raised to ⌈2·budget/M⌉ when larger)
    metric: str = "cosine"  # as TAPT/c and sentence embeddings; "l2": Euclidean distance
    strategy: str = "round_robin"  # TAPT/c's per-example curation; "max": by similarity to the nearest target
    block_size: int = 4096  # pool rows per block of similarities

    name: ClassVar[str] = "knn"
    uses_embeddings: ClassVar[bool] = True
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {
        "k": ("--knn-k", "kNN: neighbours fetched per target example in the first pass (more when the "
              "budget needs them)"),
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
        pool_embeddings = _as_tensor(ctx.embed(pool, "pool"), ctx.device)
        target_embeddings = _as_tensor(ctx.embed(target, "target"), ctx.device)
        for role, x in (("pool", pool_embeddings), ("target", target_embeddings)):
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{role} embeddings contain NaN or infinite values")
        n, m = pool_embeddings.shape[0], target_embeddings.shape[0]
        budget = min(int(ctx.budget), n)
        depth = 0 if self.strategy == "max" else min(n, max(self.k, math.ceil(2 * budget / m)))
        passes, info = 0, {"metric": self.metric, "strategy": self.strategy}
        with ctx.timer.stage("knn_search") if ctx.timer is not None else nullcontext():
            while True:
                search = nearest_neighbours(pool_embeddings, target_embeddings, depth, self.metric, self.block_size)
                passes += 1
                if self.strategy == "max":
                    break
                turns = round_robin(search.indices.cpu().numpy(), n)
                if len(turns.order) >= budget or depth == n:
                    break
                log.info("knn: %d neighbours per target example cover %d of the budget %d; fetching %d",
                         depth, len(turns.order), budget, min(n, 2 * depth))
                depth = min(n, 2 * depth)
        scores = search.best_similarity.cpu().numpy().astype(np.float64)
        columns = {"nearest_target": search.best_target.cpu().numpy()}
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
            info.update(depth=depth, passes=passes, round_robin_rows=int(len(turns.order)))
        info["selected_mean_score"] = float(scores[order[:budget]].mean())
        info["pool_mean_score"] = float(scores.mean())
        return Ranking(scores=scores, order=order.astype(np.int64), columns=columns, info=info)
