"""kNN over parts of the pool (tunesift.pool.knn_parts) against the single pass over the whole pool."""

import numpy as np
import pytest
import torch

from tunesift.io.tables import TextSet
from tunesift.pool import knn, select_from_pool
from tunesift.pool.knn_parts import knn_index


def _select(pool, target, budget, executor=None, **settings):
    return select_from_pool(TextSet.from_texts([f"p{i}" for i in range(len(pool))]),
                            TextSet.from_texts([f"t{i}" for i in range(len(target))]), budget, method="knn",
                            pool_embeddings=pool, target_embeddings=target, cache_dir=None, device="cpu",
                            progress=False, executor=executor, **settings)


def _shared(seed=9, n=403, clustered=9, spread=3, dim=6):
    """Most target examples in one tight cluster (they share neighbours: deeper lists are fetched)."""
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(n, dim)).astype(np.float32)
    center = rng.normal(size=dim)
    target = np.concatenate([center + 0.05 * rng.normal(size=(clustered, dim)), rng.normal(size=(spread, dim))])
    return pool, target.astype(np.float32)


@pytest.mark.parametrize("parts", [2, 3, 7])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("k", [0, 1, 5, 40, 403])
def test_parts_give_the_lists_of_the_single_pass(split_executor, parts, metric, k):
    torch.set_num_threads(1)
    pool, target = _shared()
    queries = knn.prepare(torch.tensor(target), metric)
    with knn_index(pool, metric, 64, "cpu") as one, knn_index(pool, metric, 64, "cpu", split_executor(parts)) as split:
        a, b = one.lists(queries, k), split.lists(queries, k)
        np.testing.assert_array_equal(b.offsets, a.offsets)
        np.testing.assert_array_equal(b.indices, a.indices)
        np.testing.assert_allclose(b.similarities, a.similarities, atol=1e-6)
        np.testing.assert_array_equal(b.best_target, a.best_target)
        np.testing.assert_allclose(b.best_similarity, a.best_similarity, atol=1e-6)
        for x, y in zip(split.exact(queries[:4], 17), one.exact(queries[:4], 17)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("strategy", ["round_robin", "max"])
@pytest.mark.parametrize("budget", [10, 60, 200])
def test_knn_selection_over_parts_equals_the_local_selection(split_executor, monkeypatch, strategy, budget):
    monkeypatch.setattr(knn, "FIRST_FETCH_ENTRIES", 1)  # short first lists: the round robin fetches deeper ones
    pool, target = _shared()
    local = _select(pool, target, budget, k=1, strategy=strategy, block_size=64)
    split = _select(pool, target, budget, executor=split_executor(3), k=1, strategy=strategy, block_size=64)
    np.testing.assert_array_equal(split.ranking.order, local.ranking.order)
    np.testing.assert_allclose(split.ranking.columns["similarity"], local.ranking.columns["similarity"], atol=1e-6)  # products of other shapes
    counts = ("depth", "round_robin_rows", "searches", "requeried_targets")
    assert {k: split.ranking.info.get(k) for k in counts} == {k: local.ranking.info.get(k) for k in counts}
    assert strategy == "max" or local.ranking.info["searches"] > 2


def test_parts_fall_back_to_an_exact_search_when_the_sample_misleads(split_executor, misleading_sample):
    pool, target = misleading_sample
    target = knn.prepare(torch.tensor(target), "cosine")
    with knn_index(pool, "cosine", 64, "cpu") as one, knn_index(pool, "cosine", 64, "cpu", split_executor(3)) as split:
        assert min(len(row) for row in split.lists(target, 30, with_nearest_target=False)) < 30
        for x, y in zip(knn._fetch(split, target, np.array([2, 0]), 30), knn._fetch(one, target, np.array([2, 0]), 30)):
            np.testing.assert_array_equal(x, y)


def test_non_finite_pool_rows_are_named_in_parts(split_executor):
    pool, target = _shared()
    pool[300, 2] = np.inf
    with pytest.raises(ValueError, match="rows 269..402"):
        _select(pool, target, 10, executor=split_executor(3))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_memory_mapped_pool_is_searched_part_by_part_with_the_lists_of_the_single_pass(tmp_path, metric):
    from tunesift.pool.knn_parts import PartsIndex, StreamedParts

    torch.set_num_threads(1)
    pool, target = _shared()
    np.save(tmp_path / "pool.npy", pool)
    mapped = np.load(tmp_path / "pool.npy", mmap_mode="r")
    queries = knn.prepare(torch.tensor(target), metric)
    with knn_index(pool, metric, 64, "cpu") as one, knn_index(mapped, metric, 64, "cpu", stream_rows=100) as streamed:
        assert isinstance(streamed, PartsIndex) and isinstance(streamed.placed, StreamedParts)
        assert len(streamed.placed.factories) == 5  # ⌈403 / 100⌉ parts, read from the file for each search
        for k in (0, 5, 403):
            a, b = one.lists(queries, k), streamed.lists(queries, k)
            np.testing.assert_array_equal(b.offsets, a.offsets)
            np.testing.assert_array_equal(b.indices, a.indices)
            np.testing.assert_array_equal(b.best_target, a.best_target)
            np.testing.assert_allclose(b.best_similarity, a.best_similarity, atol=1e-6)
        for x, y in zip(streamed.exact(queries[:4], 17), one.exact(queries[:4], 17)):
            np.testing.assert_array_equal(x, y)
    with knn_index(mapped, metric, 64, "cpu", stream_rows=403) as whole:  # fits one part: held as before
        assert not isinstance(whole, PartsIndex)


def test_knn_selection_on_a_memory_mapped_pool_equals_the_in_memory_one(tmp_path, monkeypatch):
    from tunesift.pool import knn_parts

    monkeypatch.setattr(knn, "FIRST_FETCH_ENTRIES", 1)  # deeper lists fetched: more searches over the parts
    pool, target = _shared()
    np.save(tmp_path / "pool.npy", pool)
    local = _select(pool, target, 60, k=1, block_size=64)
    monkeypatch.setattr(knn_parts, "STREAM_BYTES", 90 * 4 * pool.shape[1])  # parts of 90 rows
    calls = []
    call = knn_parts.StreamedParts.call
    monkeypatch.setattr(knn_parts.StreamedParts, "call", lambda self, *a: calls.append(a[0]) or call(self, *a))
    streamed = _select(np.load(tmp_path / "pool.npy", mmap_mode="r"), target, 60, k=1, block_size=64)
    np.testing.assert_array_equal(streamed.ranking.order, local.ranking.order)
    np.testing.assert_allclose(streamed.ranking.columns["similarity"], local.ranking.columns["similarity"], atol=1e-6)
    assert streamed.ranking.info["searches"] == local.ranking.info["searches"] > 2
    assert calls.count("above") == streamed.ranking.info["searches"]  # every search read the file's parts
