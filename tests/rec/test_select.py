import math

import numpy as np
import pytest

from tunesift.rec.select import (
    assign_strata,
    combine_scores,
    greedy_top,
    min_max_normalize,
    random_subset,
    stratified_sample,
)


def _prune_py(scores, n, k, hard_prune):
    """DEALRec's prune.py written with plain lists: returns (stratum members, per-step quota)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    order = order[math.floor(hard_prune * len(scores)):]
    kept = [scores[i] for i in order]
    s_min, s_max = min(kept), max(kept)
    interval = (s_max - s_min) / k
    split = [min(s_min + interval * j, s_max) for j in range(1, k + 1)]
    split[-1] = s_max  # the code's last edge can round below the maximum, leaving it in no stratum
    strata = [[] for _ in range(k)]
    for i in order:
        for j, ref in enumerate(split):
            if scores[i] <= ref:
                strata[j].append(i)
                break
    quotas = {}
    groups = [(j, s) for j, s in enumerate(strata)]
    m = n
    while groups:
        groups = sorted([g for g in groups if g[1]], key=lambda g: (len(g[1]), g[0]))
        if not groups:
            break
        j, fewest = groups[0]
        take = min(len(fewest), m // len(groups))
        quotas[j] = take
        m -= take
        groups = groups[1:]
    return strata, quotas


@pytest.mark.parametrize("seed,n,k,beta", [(0, 50, 10, 0.1), (1, 7, 50, 0.0), (2, 200, 5, 0.3), (3, 1, 3, 0.1)])
def test_stratified_matches_dealrec_prune_py(seed, n, k, beta):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0, 1, 300), rng.exponential(3, 100)])  # skewed: uneven strata
    sel = stratified_sample(scores, n, n_strata=k, hard_prune=beta, rng=np.random.default_rng(seed))
    strata, quotas = _prune_py(list(scores), n, k, beta)
    assert sel.indices.size == n and np.unique(sel.indices).size == n
    for j, members in enumerate(strata):
        assert set(np.flatnonzero(sel.strata == j)) == set(members)
        picked = [i for i in sel.indices if sel.strata[i] == j]
        assert len(picked) == quotas.get(j, 0) == sel.quotas[j]
    pruned = np.argsort(-scores, kind="stable")[: math.floor(beta * scores.size)]
    assert (sel.strata[pruned] == -1).all() and not np.isin(sel.indices, pruned).any()


def test_stratified_is_deterministic_under_seed_and_varies_with_it():
    scores = np.random.default_rng(0).random(500)
    a = stratified_sample(scores, 40, 8, 0.1, np.random.default_rng(1))
    b = stratified_sample(scores, 40, 8, 0.1, np.random.default_rng(1))
    c = stratified_sample(scores, 40, 8, 0.1, np.random.default_rng(2))
    assert np.array_equal(a.indices, b.indices) and not np.array_equal(np.sort(a.indices), np.sort(c.indices))
    assert a.quotas == c.quotas  # quotas depend on the scores only


def test_stratified_edge_cases():
    equal = np.ones(20)
    sel = stratified_sample(equal, 5, 10, 0.0, np.random.default_rng(0))
    assert sel.indices.size == 5 and (sel.strata == 0).all()  # all-equal: one stratum
    # empty strata in the middle (two clusters), a budget taking everything that is left
    two = np.array([0.0] * 5 + [10.0] * 5)
    sel = stratified_sample(two, 10, 4, 0.0, np.random.default_rng(0))
    assert sorted(sel.indices) == list(range(10)) and sel.quotas == [5, 0, 0, 5]
    with pytest.raises(ValueError, match="larger than the 10"):
        stratified_sample(two, 11, 4, 0.0)
    with pytest.raises(ValueError, match="after hard-pruning 5"):
        stratified_sample(two, 6, 4, 0.5)
    with pytest.raises(ValueError, match="hard_prune"):
        stratified_sample(two, 2, 4, 1.0)
    with pytest.raises(TypeError, match="integer"):
        stratified_sample(two, 2.0, 4)
    with pytest.raises(ValueError, match="NaN"):
        stratified_sample(np.array([1.0, np.nan]), 1, 2, 0.0)


def test_assign_strata_equal_width_right_closed():
    x = np.array([0.0, 0.25, 0.26, 0.5, 0.74, 0.75, 1.0])
    assert assign_strata(x, 4).tolist() == [0, 0, 1, 1, 2, 2, 3]


def test_min_max_and_combined_score():
    np.testing.assert_allclose(min_max_normalize(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert min_max_normalize(np.array([3.0, 3.0])).tolist() == [0.0, 0.0]
    combined = combine_scores(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]), lam=0.3)
    np.testing.assert_allclose(combined, [0.0, 0.5 + 0.3, 1.0 + 0.15])
    np.testing.assert_allclose(combine_scores(np.array([1.0, 3.0]), None, 1.0), [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        min_max_normalize(np.array([0.0, np.inf]))


def test_greedy_and_random():
    scores = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    assert greedy_top(scores, 3).indices.tolist() == [1, 3, 4]
    r = random_subset(5, 3, np.random.default_rng(0))
    assert r.indices.size == 3 and np.unique(r.indices).size == 3
    with pytest.raises(ValueError, match="at least 1"):
        greedy_top(scores, 0)
