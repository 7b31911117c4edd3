import math

import numpy as np
import pytest
import torch

from tunesift.finetune.metrics import metrics_from_ranks, top_k_from_distances, truth_ranks_from_distances

L3 = 1 / math.log2(3)  # discount at rank 1
L4 = 1 / math.log2(4)  # discount at rank 2


def evaluate(dist, truth, ks, ties="index"):
    return metrics_from_ranks(truth_ranks_from_distances(torch.tensor(dist), truth, ties), ks)


def test_single_ground_truth_item():
    # order by distance: 1, 2, 0, 3 -> item 2 at rank 1
    m = evaluate([[0.5, 0.1, 0.3, 0.9]], [[2]], [1, 2, 3])
    assert m.recall == {1: 0.0, 2: 1.0, 3: 1.0}
    assert m.ndcg[1] == 0.0
    assert m.ndcg[2] == pytest.approx(L3) and m.ndcg[3] == pytest.approx(L3)


def test_several_ground_truth_items_and_k_beyond_catalogue():
    # order: 1, 0, 3, 2 -> items 0 and 3 at ranks 1 and 2
    m = evaluate([[0.2, 0.1, 0.4, 0.3]], [[0, 3]], [1, 2, 3, 10])
    assert m.recall == {1: 0.0, 2: 0.5, 3: 1.0, 10: 1.0}
    assert m.ndcg[2] == pytest.approx(L3 / (1 + L3))
    assert m.ndcg[3] == pytest.approx((L3 + L4) / (1 + L3))
    # K = 10 > 4 items: the ideal DCG still has min(|G|, K) = 2 terms
    assert m.ndcg[10] == pytest.approx((L3 + L4) / (1 + L3))


def test_ideal_ranking_scores_one_and_duplicates_count_once():
    m = evaluate([[0.0, 0.1, 0.2, 0.3]], [[1, 0, 0]], [1, 2, 4])
    assert m.recall == {1: 0.5, 2: 1.0, 4: 1.0}
    assert m.ndcg[1] == pytest.approx(1.0) and m.ndcg[2] == pytest.approx(1.0)


def test_ties():
    dist = [[0.1, 0.1, 0.1, 0.5]]
    assert truth_ranks_from_distances(torch.tensor(dist), [[1]], "index")[0].tolist() == [1]
    assert truth_ranks_from_distances(torch.tensor(dist), [[1]], "pessimistic")[0].tolist() == [2]
    assert truth_ranks_from_distances(torch.tensor(dist), [[1]], "optimistic")[0].tolist() == [0]
    assert evaluate(dist, [[1]], [1], "index").recall[1] == 0.0
    assert evaluate(dist, [[1]], [1], "optimistic").recall[1] == 1.0
    # stable top-k agrees with the "index" tie rule
    assert top_k_from_distances(torch.tensor(dist), 3)[0].tolist() == [0, 1, 2]


def test_mean_over_users_and_against_sort_oracle():
    rng = np.random.default_rng(0)
    dist = rng.integers(0, 5, size=(7, 12)).astype(np.float32)  # many ties
    truth = [rng.choice(12, size=rng.integers(1, 5), replace=False).tolist() for _ in range(7)]
    ranks = truth_ranks_from_distances(torch.tensor(dist), truth)
    for u in range(7):  # oracle: position in a stable argsort
        order = np.argsort(dist[u], kind="stable").tolist()
        assert ranks[u].tolist() == [order.index(i) for i in sorted(truth[u])]
    m = metrics_from_ranks(ranks, [3, 20])
    assert m.recall[3] == pytest.approx(m.per_user_recall[:, 0].mean())
    assert m.recall[20] == 1.0
    assert m.as_dict().keys() == {"recall@3", "recall@20", "ndcg@3", "ndcg@20"}


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate([[0.1, 0.2]], [[]], [1])
    with pytest.raises(ValueError, match="outside"):
        evaluate([[0.1, 0.2]], [[2]], [1])
    with pytest.raises(ValueError, match="positive integer"):
        evaluate([[0.1, 0.2]], [[0]], [0])
    with pytest.raises(ValueError, match="ties"):
        evaluate([[0.1, 0.2]], [[0]], [1], ties="random")


def test_metrics_from_top_k_equal_the_full_ranking():
    """Top-K lists (what TIGER returns) give the metrics of the full ranking they start (ties by index)."""
    import torch

    from tunesift.finetune.ground import top_items_by_distance
    from tunesift.finetune.metrics import metrics_from_top_k

    rng = np.random.default_rng(3)
    dist = np.round(rng.random((40, 30)), 1)  # many ties
    truth = [sorted(set(rng.integers(0, 30, size=rng.integers(1, 4)).tolist())) for _ in range(40)]
    full = metrics_from_ranks(truth_ranks_from_distances(torch.as_tensor(dist), truth), [5, 10])
    top = np.argsort(dist, axis=1, kind="stable")[:, :10]
    fromk = metrics_from_top_k(top, truth, [5, 10])
    np.testing.assert_allclose(fromk.per_user_recall, full.per_user_recall)
    np.testing.assert_allclose(fromk.per_user_ndcg, full.per_user_ndcg)
    with pytest.raises(ValueError, match="cannot answer K = 20"):
        metrics_from_top_k(top, truth, [20])
    assert metrics_from_top_k(top, truth, [20], n_items=10).recall[20] <= 1.0  # a whole (tiny) catalogue
    states, items = rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    expected = np.argsort(((states[:, None, :] - items[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(top_items_by_distance(states, items, 10, chunk_size=3), expected)
