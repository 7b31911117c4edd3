"""Exact nearest-neighbour search of target points among pool points, block by block: the search kNN
(TAPT/c) and TSDS run, here or on the parts of a pool split over an executor's workers
(:mod:`tunesift.pool.knn_parts`).

``search_blocks`` and ``neighbour_lists_blocks`` are the block loops both drivers share; the public
``nearest_neighbours`` and ``neighbour_lists`` check their inputs first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

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
    return search_blocks(prepare(pool, metric), prepare(target, metric), k, metric, block_size)


def search_blocks(pool: "torch.Tensor", target: "torch.Tensor", k: int, metric: str, block_size: int,
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
    return neighbour_lists_blocks(prepare(pool, metric), prepare(target, metric), k, metric, block_size,
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


def neighbour_lists_blocks(pool: "torch.Tensor", target: "torch.Tensor", k: int, metric: str, block_size: int,
                     with_nearest_target: bool = True, threshold: "torch.Tensor | None" = None,
                     n_total: int | None = None) -> NeighbourLists:
    """:func:`neighbour_lists` of prepared rows. ``threshold``: (M,) given (pool rows that are a part of
    a larger pool of ``n_total`` rows, whose threshold was estimated over all of it), else estimated here."""
    import torch

    n, m, device = pool.shape[0], target.shape[0], pool.device
    k = max(0, min(int(k), n_total or n))
    if threshold is None:
        threshold = list_thresholds(k, n, m, lambda j: search_blocks(pool[::SAMPLE_STRIDE], target, j, metric, block_size,
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
