import json

import numpy as np
import pytest
import torch

from tunesift.io.tables import TextSet
from tunesift.pool import Context, order_by_score, select_from_pool
from tunesift.pool import knn
from tunesift.pool.knn import (KNNSelection, deepening_round_robin, nearest_neighbours, neighbour_lists,
                               round_robin)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: thread start-up costs more than the work on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _similarity_matrix(pool, target, metric):
    """(M, N) brute force in float64."""
    pool, target = pool.astype(np.float64), target.astype(np.float64)
    if metric == "cosine":
        pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)
        target = target / np.linalg.norm(target, axis=1, keepdims=True)
        return target @ pool.T
    return -np.sqrt(((target[:, None, :] - pool[None, :, :]) ** 2).sum(-1))


def _reference_round_robin(pool, target, metric):
    """The round robin over full neighbour lists, as a plain loop: the whole ranking."""
    sim = _similarity_matrix(pool, target, metric)
    lists = [list(np.argsort(-row, kind="stable")) for row in sim]
    picked, order = set(), []
    while len(order) < pool.shape[0]:
        for row in lists:
            candidate = next(i for i in row if i not in picked)
            picked.add(candidate)
            order.append(candidate)
            if len(order) == pool.shape[0]:
                break
    return np.array(order)


def _data(seed=0, n=60, m=7, dim=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.normal(size=(m, dim)).astype(np.float32)


def _select(pool, target, budget, **settings):
    return select_from_pool(TextSet.from_texts([f"p{i}" for i in range(len(pool))]),
                            TextSet.from_texts([f"t{i}" for i in range(len(target))]), budget, method="knn",
                            pool_embeddings=pool, target_embeddings=target, cache_dir=None, device="cpu",
                            progress=False, **settings)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("k", [0, 1, 4, 60, 500])
def test_nearest_neighbours_match_brute_force(metric, k):
    pool, target = _data()
    search = nearest_neighbours(torch.tensor(pool), torch.tensor(target), k, metric, block_size=16)
    sim = _similarity_matrix(pool, target, metric)
    depth = min(k, len(pool))
    expected = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
    np.testing.assert_array_equal(search.indices.numpy(), expected)
    np.testing.assert_allclose(search.similarities.numpy(), np.take_along_axis(sim, expected, 1), atol=1e-5)
    np.testing.assert_allclose(search.best_similarity.numpy(), sim.max(axis=0), atol=1e-5)
    np.testing.assert_array_equal(search.best_target.numpy(), sim.argmax(axis=0))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_block_size_does_not_change_the_result(metric):
    pool, target = _data(seed=1, n=50, m=11)
    results = [nearest_neighbours(torch.tensor(pool), torch.tensor(target), 9, metric, block_size=b)
               for b in (2, 7, 32, 4096)]
    for r in results[1:]:
        np.testing.assert_array_equal(r.indices.numpy(), results[0].indices.numpy())
        np.testing.assert_array_equal(r.best_target.numpy(), results[0].best_target.numpy())
        np.testing.assert_allclose(r.similarities.numpy(), results[0].similarities.numpy(), atol=1e-5)
        np.testing.assert_allclose(r.best_similarity.numpy(), results[0].best_similarity.numpy(), atol=1e-5)
    orders = [_select(pool, target, 30, k=2, block_size=b).ranking.order for b in (5, 4096)]
    for order in orders[1:]:
        np.testing.assert_array_equal(order, orders[0])


def test_round_robin_stops_where_a_list_runs_out():
    # target 0's list is [0, 1]; target 1 takes 1 first, so target 0 runs out in its second turn
    turns = round_robin(np.array([[0, 1], [1, 2]]), num_pool=4)
    np.testing.assert_array_equal(turns.order, [0, 1])
    np.testing.assert_array_equal(turns.picked_for, [0, 1])
    assert turns.exhausted
    full = round_robin(np.array([[0, 1, 2], [2, 1, 0]]), num_pool=3)
    np.testing.assert_array_equal(full.order, [0, 2, 1])
    assert not full.exhausted


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("budget", [1, 7, 20, 45, 60])
def test_round_robin_ranking_matches_the_plain_loop(metric, budget):
    pool, target = _data(seed=2)
    expected = _reference_round_robin(pool, target, metric)
    result = _select(pool, target, budget, k=1, metric=metric, block_size=8)  # k=1 forces deeper passes
    ranking = result.ranking
    np.testing.assert_array_equal(result.indices, expected[:budget])
    np.testing.assert_array_equal(ranking.order[:ranking.info["round_robin_rows"]],
                                  expected[:ranking.info["round_robin_rows"]])
    assert ranking.info["round_robin_rows"] >= budget
    assert sorted(ranking.order.tolist()) == list(range(len(pool)))
    tail = ranking.order[ranking.info["round_robin_rows"]:]
    assert np.all(np.diff(ranking.columns["similarity"][tail]) <= 0)  # the rest by similarity
    sim = _similarity_matrix(pool, target, metric)
    np.testing.assert_allclose(ranking.columns["similarity"], sim.max(axis=0), atol=1e-5)
    assert np.all(np.diff(ranking.scores[ranking.order]) < 0)  # `score` says the round robin's order
    np.testing.assert_array_equal(ranking.columns["nearest_target"], sim.argmax(axis=0))
    # every target example has had its turn before any has a second one
    first_round = ranking.columns["picked_for"][expected[:min(budget, len(target))]]
    np.testing.assert_array_equal(first_round, np.arange(min(budget, len(target))))


def test_max_strategy_orders_by_nearest_target_similarity():
    pool, target = _data(seed=3)
    result = _select(pool, target, 10, strategy="max")
    sim = _similarity_matrix(pool, target, "cosine")
    np.testing.assert_array_equal(result.ranking.order, order_by_score(sim.max(axis=0)))
    assert "picked_for" not in result.ranking.columns


@pytest.mark.parametrize("strategy", ["round_robin", "max"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_picks_the_cluster_that_resembles_the_target(strategy, metric):
    rng = np.random.default_rng(4)
    centers = 3.0 * np.eye(3, 8)
    labels = np.repeat([0, 1, 2], 100)
    pool = (centers[labels] + 0.3 * rng.normal(size=(300, 8))).astype(np.float32)
    target = (centers[[1] * 20] + 0.3 * rng.normal(size=(20, 8))).astype(np.float32)
    result = _select(pool, target, 60, strategy=strategy, metric=metric)
    assert np.all(labels[result.indices] == 1)
    assert result.manifest["method_info"]["selected_mean_score"] > result.manifest["method_info"]["pool_mean_score"]


@pytest.mark.parametrize("field,value", [("k", 0), ("k", 1.5), ("block_size", 0), ("metric", "dot"),
                                         ("strategy", "best")])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        KNNSelection(**{field: value})


def test_bad_embeddings_are_errors():
    pool, target = _data()
    with pytest.raises(ValueError, match="same dim"):
        nearest_neighbours(torch.tensor(pool), torch.tensor(target[:, :3]), 2)
    bad = pool.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _select(bad, target, 5)
    with pytest.raises(ValueError, match="needs embeddings"):
        KNNSelection().rank(TextSet.from_texts(["a"]), TextSet.from_texts(["b"]),
                            Context(rng=np.random.default_rng(0), budget=1))


def test_cli_with_precomputed_embeddings(tmp_path):
    from tunesift.cli import main

    pool, target = _data(seed=5, n=40, m=4)
    for name, rows in (("pool", len(pool)), ("target", len(target))):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": f"{name} {i}"}) + "\n" for i in range(rows))
    np.save(tmp_path / "pool.npy", pool)
    np.save(tmp_path / "target.npy", target)
    out = tmp_path / "out"
    rc = main(["gotd", "--method", "knn", "--pool", str(tmp_path / "pool.jsonl"), "--target",
               str(tmp_path / "target.jsonl"), "--budget", "9", "--out", str(out), "--pool-embeddings",
               str(tmp_path / "pool.npy"), "--target-embeddings", str(tmp_path / "target.npy"), "--knn-k", "2",
               "--knn-metric", "l2", "--cache-dir", "none", "--device", "cpu", "--no-progress"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"] == {"k": 2, "metric": "l2", "strategy": "round_robin", "block_size": 4096}
    selected = [json.loads(line)["text"] for line in open(out / "selected.jsonl")]
    expected = _reference_round_robin(pool, target, "l2")[:9]
    assert selected == [f"pool {i}" for i in expected]
    assert main(["gotd", "--method", "knn", "--pool", str(tmp_path / "pool.jsonl"), "--target",
                 str(tmp_path / "target.jsonl"), "--budget", "9", "--out", str(out), "--pool-embeddings",
                 str(tmp_path / "pool.npy"), "--target-embeddings", str(tmp_path / "target.npy"),
                 "--knn-metric", "dot"]) == 2


def _full_lists(pool, target, metric):
    """(M, N) every pool row for every target row, nearest first (ties: lower row first), float64."""
    return np.argsort(-_similarity_matrix(pool, target, metric), axis=1, kind="stable")


def _doubling_round_robin(full, budget, depth):
    """The round robin over depth-d lists, d doubling until it covers the budget (the fixed-list loop)."""
    n = full.shape[1]
    depth = min(depth, n)
    while True:
        turns = round_robin(full[:, :depth], n)
        if len(turns.order) >= budget or depth == n:
            return turns, depth
        depth = min(n, 2 * depth)


def _shared_neighbourhood(seed=9, n=400, clustered=9, spread=3, dim=6):
    """Most target examples in one tight cluster (nearly the same neighbours), a few spread out."""
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(n, dim)).astype(np.float32)
    center = rng.normal(size=dim)
    target = np.concatenate([center + 0.05 * rng.normal(size=(clustered, dim)), rng.normal(size=(spread, dim))])
    return pool, target[rng.permutation(len(target))].astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("k", [0, 1, 5, 40, 500])
@pytest.mark.parametrize("block_size", [13, 4096])
def test_neighbour_lists_are_exact_prefixes(metric, k, block_size):
    pool, target = _data(seed=7, n=400, m=9)  # 400 rows: the thresholds come from a sample for k ≤ 40
    found = neighbour_lists(torch.tensor(pool), torch.tensor(target), k, metric, block_size=block_size)
    full = _full_lists(pool, target, metric)
    assert len(found) == len(target) and found.offsets[0] == 0
    for j, row in enumerate(found):
        assert len(row) == min(k, len(pool))
        np.testing.assert_array_equal(row, full[j, :len(row)])
    sim = _similarity_matrix(pool, target, metric)
    np.testing.assert_allclose(found.best_similarity, sim.max(axis=0), atol=1e-5)
    np.testing.assert_array_equal(found.best_target, sim.argmax(axis=0))


def test_fetch_falls_back_to_an_exact_search_when_the_sample_misleads(misleading_sample):
    pool, target = misleading_sample
    prepared_pool, prepared_target = knn.prepare(torch.tensor(pool), "cosine"), knn.prepare(torch.tensor(target), "cosine")
    sampled = knn.neighbour_lists_blocks(prepared_pool, prepared_target, 30, "cosine", 64, with_nearest_target=False)
    assert min(len(row) for row in sampled) < 30  # the situation under test
    lists = knn._fetch(prepared_pool, prepared_target, np.array([2, 0]), 30, "cosine", 64)
    full = _full_lists(pool, target, "cosine")
    for row, j in zip(lists, [2, 0]):
        np.testing.assert_array_equal(row, full[j, :30])


@pytest.mark.parametrize("first_depth", [1, 3])
@pytest.mark.parametrize("budget", [12, 40, 150, 400])
def test_deepening_round_robin_equals_the_round_robin_over_doubling_depths(first_depth, budget):
    pool, target = _shared_neighbourhood()
    full = _full_lists(pool, target, "cosine")
    expected, depth = _doubling_round_robin(full, budget, first_depth)
    requests = []

    def fetch(rows, k):
        requests.append((rows.copy(), k))
        return [full[j, :k] for j in rows]

    # ragged first lists, some shorter than the first depth
    first = [full[j, :first_depth + j % 3 - 1] for j in range(len(target))]
    turns = deepening_round_robin(first, len(pool), budget, first_depth, fetch)
    np.testing.assert_array_equal(turns.order, expected.order)
    np.testing.assert_array_equal(turns.picked_for, expected.picked_for)
    assert turns.exhausted == expected.exhausted and turns.depth == depth
    assert turns.searches == len(requests) > 0 and turns.requeried == sum(len(rows) for rows, _ in requests)
    # only lists that ran out are fetched again, never deeper than twice the current depth needs
    assert all(k <= max(2 * depth, len(pool)) for _, k in requests)
    assert turns.requeried < len(requests) * len(target)  # not every list at every search


def test_deepening_round_robin_rejects_a_short_fetch():
    with pytest.raises(ValueError, match="fetch"):
        deepening_round_robin([[0], [0]], 5, 4, 1, lambda rows, k: [np.arange(k - 1) for _ in rows])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("budget", [10, 60, 200])
def test_heavy_sharing_needs_several_fetches_and_matches_the_plain_loop(monkeypatch, metric, budget):
    monkeypatch.setattr(knn, "FIRST_FETCH_ENTRIES", 1)  # the first pass fetches only the first depth
    pool, target = _shared_neighbourhood()
    result = _select(pool, target, budget, k=1, metric=metric, block_size=64)
    info = result.ranking.info
    assert info["searches"] > 2  # the first lists ran out more than once
    assert info["requeried_targets"] < (info["searches"] - 1) * len(target)  # not every list each time
    expected_turns, depth = _doubling_round_robin(_full_lists(pool, target, metric), budget,
                                                  max(1, -(-2 * budget // len(target))))
    rows = info["round_robin_rows"]
    assert (rows, info["depth"]) == (len(expected_turns.order), depth)
    np.testing.assert_array_equal(result.ranking.order[:rows], expected_turns.order)
    np.testing.assert_array_equal(result.ranking.order[:rows], _reference_round_robin(pool, target, metric)[:rows])
    np.testing.assert_array_equal(result.ranking.columns["picked_for"][expected_turns.order], expected_turns.picked_for)
    unmonkeyed = _select(pool, target, budget, k=1, metric=metric, block_size=64)
    np.testing.assert_array_equal(unmonkeyed.ranking.order, result.ranking.order)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pool, target = _data(seed=6, n=500, m=20, dim=16)
    cpu = nearest_neighbours(torch.tensor(pool), torch.tensor(target), 10, block_size=64)
    gpu = nearest_neighbours(torch.tensor(pool).cuda(), torch.tensor(target).cuda(), 10, block_size=64)
    assert gpu.indices.is_cuda
    np.testing.assert_array_equal(gpu.indices.cpu().numpy(), cpu.indices.numpy())
    np.testing.assert_allclose(gpu.best_similarity.cpu().numpy(), cpu.best_similarity.numpy(), atol=1e-5)
    cpu_lists = neighbour_lists(torch.tensor(pool), torch.tensor(target), 40, block_size=64)
    gpu_lists = neighbour_lists(torch.tensor(pool).cuda(), torch.tensor(target).cuda(), 40, block_size=64)
    for cpu_row, gpu_row in zip(cpu_lists, gpu_lists):
        np.testing.assert_array_equal(gpu_row, cpu_row)
