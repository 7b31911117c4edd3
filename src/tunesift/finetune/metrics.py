"""Top-K metrics over the whole catalogue: Recall@K and NDCG@K for users with several ground-truth items.

As in BIGRec / DEALRec's ``evaluate.py``, every item is ranked for every user (no sampled negatives) and
a user's ground truth is the full set of their test items. For a user u with ground-truth set G_u and
0-based rank r(i) of item i (0 = best):

    Recall@K(u) = |{i in G_u : r(i) < K}| / |G_u|
    NDCG@K(u)   = sum_{i in G_u, r(i) < K} 1 / log2(r(i) + 2)  /  sum_{j < min(|G_u|, K)} 1 / log2(j + 2)

and both are averaged over users. Differences from the authors' script: a ground-truth item listed twice
for a user counts once (G_u is a set), and ties in the ranking are broken explicitly (see ``ties``)
rather than by whatever order ``argsort`` happens to return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

TIES = ("index", "pessimistic", "optimistic")


@dataclass
class RankingMetrics:
    """Recall@K and NDCG@K averaged over users.

    Attributes:
        ks: the cut-offs, as given.
        recall, ndcg: K -> mean over users.
        per_user_recall, per_user_ndcg: (n_users, len(ks)) values per user.
    """

    ks: list[int]
    recall: dict[int, float]
    ndcg: dict[int, float]
    n_users: int
    per_user_recall: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    per_user_ndcg: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    def as_dict(self) -> dict[str, float]:
        """Flat ``{"recall@10": ..., "ndcg@10": ...}``."""
        out = {f"recall@{k}": self.recall[k] for k in self.ks}
        out.update({f"ndcg@{k}": self.ndcg[k] for k in self.ks})
        return out


def check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ValueError("ks must list at least one cut-off K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every K in ks must be a positive integer, got {k!r}")
    return [int(k) for k in ks]


def metrics_from_ranks(truth_ranks: Sequence[np.ndarray], ks: Sequence[int]) -> RankingMetrics:
    """Recall@K and NDCG@K from the 0-based ranks of each user's ground-truth items.

    Args:
        truth_ranks: one 1-D integer array per user, the ranks of that user's distinct ground-truth
            items among all items (0 = recommended first). Every user needs at least one item.
        ks: cut-offs; a K larger than the catalogue is allowed (every item is then within the top K).
    """
    ks = check_ks(ks)
    n_users = len(truth_ranks)
    if n_users == 0:
        raise ValueError("truth_ranks is empty: there are no users to evaluate")
    kmax = max(ks)
    # discount[j] = 1/log2(j+2); cumulative sums give the ideal DCG for min(|G|, K) hits
    discount = 1.0 / np.log2(np.arange(kmax) + 2.0)
    ideal = np.cumsum(discount)
    recall = np.zeros((n_users, len(ks)))
    ndcg = np.zeros((n_users, len(ks)))
    for u, ranks in enumerate(truth_ranks):
        ranks = np.asarray(ranks)
        if ranks.ndim != 1 or ranks.size == 0:
            raise ValueError(f"user {u} has no ground-truth items (truth_ranks[{u}] has shape {ranks.shape})")
        if not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 0:
            raise ValueError(f"truth_ranks[{u}] must hold non-negative integer ranks, got {ranks!r}")
        gains = 1.0 / np.log2(ranks + 2.0)
        for j, k in enumerate(ks):
            hit = ranks < k
            recall[u, j] = hit.sum() / ranks.size
            ndcg[u, j] = gains[hit].sum() / ideal[min(ranks.size, k) - 1]
    return RankingMetrics(
        ks=ks,
        recall={k: float(recall[:, j].mean()) for j, k in enumerate(ks)},
        ndcg={k: float(ndcg[:, j].mean()) for j, k in enumerate(ks)},
        n_users=n_users,
        per_user_recall=recall,
        per_user_ndcg=ndcg,
    )


def truth_ranks_from_distances(distances, truth: Sequence[Sequence[int]], ties: str = "index") -> list[np.ndarray]:
    """The 0-based rank of each ground-truth item when a user's items are sorted by increasing distance.

    Args:
        distances: (n_users, n_items) tensor or array; smaller = recommended earlier.
        truth: per user, the item columns (0-based) of their ground-truth items; duplicates count once.
        ties: how items at exactly the same distance are ordered —
            ``"index"``: by item column (stable sort; the default, deterministic),
            ``"pessimistic"``: every tied item ranks ahead of the ground-truth item,
            ``"optimistic"``: no tied item ranks ahead of it.

    Returns:
        one int64 array per user, in the order of ``sorted(set(truth[u]))``.
    """
    import torch

    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    dist = torch.as_tensor(distances)
    if dist.ndim != 2:
        raise ValueError(f"distances must be 2-D (n_users, n_items), got shape {tuple(dist.shape)}")
    n_users, n_items = dist.shape
    if len(truth) != n_users:
        raise ValueError(f"truth has {len(truth)} users but distances has {n_users} rows")
    out = []
    cols = torch.arange(n_items, device=dist.device)
    for u in range(n_users):
        items = sorted({int(i) for i in truth[u]})
        if not items:
            raise ValueError(f"user {u} has no ground-truth items")
        if items[0] < 0 or items[-1] >= n_items:
            raise ValueError(f"user {u}: ground-truth item column {items[-1] if items[-1] >= n_items else items[0]} "
                             f"is outside 0..{n_items - 1}")
        idx = torch.tensor(items, device=dist.device)
        row = dist[u]
        d = row[idx].unsqueeze(1)  # (g, 1)
        smaller = (row.unsqueeze(0) < d).sum(1)  # (g,)
        if ties == "optimistic":
            rank = smaller
        else:
            equal = row.unsqueeze(0) == d  # (g, n_items), includes the item itself
            if ties == "index":
                rank = smaller + (equal & (cols.unsqueeze(0) < idx.unsqueeze(1))).sum(1)
            else:
                rank = smaller + equal.sum(1) - 1
        out.append(rank.cpu().numpy().astype(np.int64))
    return out


def top_k_from_distances(distances, k: int):
    """(n_users, min(k, n_items)) item columns with the smallest distances, ties by column (stable)."""
    import torch

    dist = torch.as_tensor(distances)
    k = min(int(k), dist.shape[1])
    return torch.sort(dist, dim=1, stable=True).indices[:, :k]


def metrics_from_top_k(top_items, truth: Sequence[Sequence[int]], ks: Sequence[int],
                       n_items: int | None = None) -> RankingMetrics:
    """Recall@K and NDCG@K from each user's top-K list (what a generative recommender returns).

    Args:
        top_items: (n_users, L) item ids, best first, with L >= max(ks) (or the whole catalogue); ids
            outside the ground truth, or padding, simply do not hit. An id listed twice counts once.
        truth: per user, the ground-truth item ids (the same id space); duplicates count once.
        n_items: the catalogue size: lists that hold it whole may be shorter than max(ks).

    Equal to :func:`metrics_from_ranks` on the full ranking whose first L items are ``top_items``.
    """
    ks = check_ks(ks)
    top = np.asarray(top_items)
    if top.ndim != 2 or top.shape[0] != len(truth):
        raise ValueError(f"top_items must be (n_users, L) with n_users = len(truth) = {len(truth)}, "
                         f"got shape {top.shape}")
    depth = top.shape[1]
    ranks = []
    for u, row in enumerate(top):
        items = sorted({int(i) for i in truth[u]})
        if not items:
            raise ValueError(f"user {u} has no ground-truth items")
        first: dict[int, int] = {}
        for pos, item in enumerate(row.tolist()):
            first.setdefault(int(item), pos)
        # an item outside the list ranks at `depth` or later: beyond every K the list can answer
        ranks.append(np.array([first.get(i, depth + 10 ** 9) for i in items], dtype=np.int64))
    if max(ks) > depth and (n_items is None or depth < n_items):
        raise ValueError(f"top_items has {depth} items per user; it cannot answer K = {max(ks)}")
    return metrics_from_ranks(ranks, ks)
