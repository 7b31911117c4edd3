"""Turning scores into a selection of exactly n samples: min-max normalisation, DEALRec's combined
score, coverage-enhanced stratified sampling (CCS, Zheng et al. ICLR 2023) and greedy top-n.

Stratified sampling, as DEALRec's ``prune.py``: optionally drop the top ``hard_prune`` fraction of
scores; split the remaining score range into K equal-width strata (stratum k holds scores in
(min + k·w, min + (k+1)·w], the first also the minimum); then repeatedly take the non-empty stratum with
the fewest samples and draw ``min(|stratum|, ⌊remaining / strata left⌋)`` of them uniformly without
replacement. The last stratum absorbs the rest, so exactly ``budget`` samples are chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def min_max_normalize(scores: np.ndarray) -> np.ndarray:
    """(x − min) / (max − min); all zeros when every score is equal. NaN/inf are rejected."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"scores contain NaN or inf (first at index {int(np.flatnonzero(~np.isfinite(x))[0])})")
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()
    return np.zeros_like(x) if hi == lo else (x - lo) / (hi - lo)


def combine_scores(influence: np.ndarray, effort: np.ndarray | None, lam: float) -> np.ndarray:
    """DEALRec's score: infl_norm + λ · effort_norm (effort None: influence alone)."""
    score = min_max_normalize(influence)
    if effort is None:
        return score
    effort_norm = min_max_normalize(effort)
    if effort_norm.shape != score.shape:
        raise ValueError(f"influence has {score.size} scores, effort {effort_norm.size}")
    return score + lam * effort_norm


@dataclass
class Selection:
    """Which samples were chosen.

    Attributes:
        indices: (budget,) chosen positions, in the order they were drawn.
        strata: (N,) each sample's stratum (0 = lowest scores); -1 = hard-pruned; all 0 for greedy.
        quotas: per stratum (by stratum id), how many were drawn from it.
        info: settings and stratum sizes for the manifest.
    """

    indices: np.ndarray
    strata: np.ndarray
    quotas: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _check_budget(budget: int, n: int, what: str = "samples") -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if budget > n:
        raise ValueError(f"budget {budget} is larger than the {n} {what} available")


def assign_strata(scores: np.ndarray, n_strata: int) -> np.ndarray:
    """(N,) stratum of each score: K equal-width bins over [min, max], right-closed, the first also
    holding the minimum (DEALRec's ``s <= min + k·w`` rule). Equal scores all fall in stratum 0."""
    x = np.asarray(scores, dtype=np.float64)
    if n_strata < 1:
        raise ValueError(f"n_strata must be at least 1, got {n_strata}")
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = x.min(), x.max()
    width = (hi - lo) / n_strata
    edges = np.minimum(lo + width * np.arange(1, n_strata + 1), hi)  # upper edges; the last is hi
    return np.minimum(np.searchsorted(edges, x, side="left"), n_strata - 1).astype(np.int64)


def stratified_sample(scores: np.ndarray, budget: int, n_strata: int = 50, hard_prune: float = 0.1,
                      rng: np.random.Generator | None = None) -> Selection:
    """Coverage-enhanced selection of exactly ``budget`` samples.

    Args:
        scores: (N,) higher = more important (the top ``hard_prune`` fraction is dropped first).
        n_strata: K, the number of equal-width strata.
        hard_prune: fraction β of the highest scores removed before stratifying (DEALRec's code: 0.1;
            the paper does not mention it; 0 keeps everything).
        rng: the only source of randomness (required for reproducibility; a fixed seed 0 if None).
    """
    x = np.asarray(scores, dtype=np.float64)
    n = x.size
    if not 0 <= hard_prune < 1:
        raise ValueError(f"hard_prune must be in [0, 1), got {hard_prune}")
    if n_strata < 1:
        raise ValueError(f"n_strata must be at least 1, got {n_strata}")
    _check_budget(budget, n)
    if not np.isfinite(x).all():
        raise ValueError("scores contain NaN or inf")
    rng = rng if rng is not None else np.random.default_rng(0)
    n_pruned = math.floor(hard_prune * n)
    order = np.argsort(-x, kind="stable")  # highest first; ties by index
    kept = np.sort(order[n_pruned:])
    if budget > kept.size:
        raise ValueError(f"budget {budget} is larger than the {kept.size} samples left after hard-pruning "
                         f"{n_pruned} of {n} (hard_prune={hard_prune}); lower hard_prune or the budget")
    strata = np.full(n, -1, dtype=np.int64)
    strata[kept] = assign_strata(x[kept], n_strata)
    members = [kept[strata[kept] == k] for k in range(n_strata)]
    pending = [k for k in range(n_strata) if members[k].size]
    quotas = [0] * n_strata
    chosen = []
    remaining = int(budget)
    while pending:
        pending.sort(key=lambda k: (members[k].size, k))  # fewest first; ties by stratum id
        k = pending.pop(0)
        take = min(members[k].size, remaining // (len(pending) + 1))
        if take:
            chosen.append(rng.choice(members[k], size=take, replace=False))
        quotas[k] = take
        remaining -= take
    indices = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    if indices.size != budget:  # cannot happen: the smallest-first order guarantees it
        raise RuntimeError(f"stratified sampling drew {indices.size} samples, expected {budget}")
    info = {"n_strata": n_strata, "hard_prune": hard_prune, "n_pruned": n_pruned,
            "stratum_sizes": [int(m.size) for m in members], "quotas": quotas,
            "score_range": [float(x[kept].min()), float(x[kept].max())]}
    return Selection(indices=indices.astype(np.int64), strata=strata, quotas=quotas, info=info)


def greedy_top(scores: np.ndarray, budget: int) -> Selection:
    """The ``budget`` highest scores (ties by index)."""
    x = np.asarray(scores, dtype=np.float64)
    _check_budget(budget, x.size)
    if not np.isfinite(x).all():
        raise ValueError("scores contain NaN or inf")
    indices = np.argsort(-x, kind="stable")[:budget]
    return Selection(indices=indices.astype(np.int64), strata=np.zeros(x.size, dtype=np.int64),
                     quotas=[int(budget)], info={"rule": "top scores"})


def random_subset(n: int, budget: int, rng: np.random.Generator) -> Selection:
    """``budget`` of ``n`` uniformly without replacement."""
    _check_budget(budget, n)
    return Selection(indices=rng.choice(n, size=budget, replace=False).astype(np.int64),
                     strata=np.zeros(n, dtype=np.int64), quotas=[int(budget)], info={"rule": "uniform"})
