"""The execution seam: the local and the Ray executor run a stage over chunks and agree.

Ray starts once for the module (``ray_instance``, 2 CPUs); tests that need it are skipped where the
``ray`` extra is not installed. Classes and functions of this file reach the Ray workers by value
(``register_pickle_by_value``): the workers cannot import a test module.
"""

import json
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from tunesift.bench.gotd import HashingEmbedder
from tunesift.cli import main
from tunesift.embed import cached_embed
from tunesift.executor import ChunkError, LocalExecutor, Stage, make_executor


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


class Tagged:
    """A worker factory whose workers return (chunk, pid, calls so far): shows which process ran what."""

    def __call__(self):
        calls = [0]

        def work(chunk):
            calls[0] += 1
            time.sleep(0.2 if chunk % 2 == 0 else 0.0)  # even chunks finish after the odd ones
            return chunk, os.getpid(), calls[0]

        return work


class FailingEmbedder(HashingEmbedder):
    """The hashing embedder (same model id, so the same cache key) that fails on one text."""

    def __init__(self, bad_text, dim=32):
        super().__init__(dim)
        self.bad_text = bad_text

    def embed(self, texts):
        if self.bad_text in texts:
            raise ValueError(f"cannot embed {self.bad_text!r}")
        return super().embed(texts)


def test_local_executor_is_a_plain_loop_with_one_worker_per_key():
    built = []

    def factory():
        built.append(1)
        return lambda chunk: chunk * 10

    with LocalExecutor() as ex:
        stage = Stage("times ten", "x10", factory)
        assert list(ex.map(stage, [(2, 1), (0, 2), (1, 3)])) == [(2, 10), (0, 20), (1, 30)]
        assert list(ex.map(stage, [(0, 4)])) == [(0, 40)] and len(built) == 1  # worker kept for the key
    def interrupted(chunk):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # exceptions propagate unchanged
        list(LocalExecutor().map(Stage("interrupted", "i", lambda: interrupted), [(0, 1)]))
    with pytest.raises(ValueError, match="--ray-workers applies with --ray only"):
        make_executor(None, 2)


def test_dsir_features_per_shard_equal_one_pass_over_all_texts():
    from tunesift.io.tables import TextSet
    from tunesift.pool.dsir import NgramCounter, hashed_ngram_features, shard_features

    texts = [f"the gene binds protein {i % 5} , and the cell {i % 3} !" for i in range(30)]
    sharded = TextSet.from_texts(texts, name="pool")
    sharded.extra = {"shards": [{"rows": 12}, {"rows": 0}, {"rows": 18}]}
    one = hashed_ngram_features(texts, 64, 3)
    split = shard_features(sharded, NgramCounter(64, 3, "wordpunct"))
    assert (split.counts != one.counts).nnz == 0 and np.array_equal(split.lengths, one.lengths)
    assert np.array_equal(split.counts.indices, one.counts.indices)  # the same CSR, entry by entry


def test_ray_executor_returns_results_in_input_order_and_builds_each_worker_once(ray_instance):
    with make_executor("local", 2) as ex:
        out = list(ex.map(Stage("tagged", "tagged", Tagged()), ((k, k) for k in range(8))))
        again = list(ex.map(Stage("tagged", "tagged", Tagged()), [(8, 8), (9, 9)]))  # same key: same actors
    assert [k for k, _ in out] == list(range(8)) and [r[0] for _, r in out] == list(range(8))
    pids = {r[1] for _, r in out + again}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    for pid in pids:  # one worker per actor, built once: its call count runs 1, 2, 3, … over both maps
        calls = [r[2] for _, r in out + again if r[1] == pid]
        assert calls == list(range(1, len(calls) + 1))
    assert ray_instance.is_initialized()  # an instance it did not start is left running


def test_a_failed_chunk_is_named_and_the_rerun_resumes_to_the_local_embeddings(ray_instance, tmp_path, caplog):
    texts = [f"text number {i} on topic {i % 7}" for i in range(45)]
    local = cached_embed(HashingEmbedder(32), texts, tmp_path / "local", chunk_rows=10)
    with make_executor("local", 2) as ex:
        with pytest.raises(ChunkError, match=r"chunk 3 failed in a Ray worker: ValueError: cannot embed "
                                             r"'text number 33 on topic 5'") as info:
            cached_embed(FailingEmbedder(texts[33]), texts, tmp_path / "ray", chunk_rows=10, executor=ex)
        assert info.value.index == 3
        saved = sorted(p.name for p in (tmp_path / "ray" / "embeddings").glob("*.chunks-10/*.npy"))
        assert saved == ["00000.npy", "00001.npy", "00002.npy"]  # every chunk before the failed one
        with caplog.at_level("INFO", logger="tunesift"):
            arr = cached_embed(HashingEmbedder(32), texts, tmp_path / "ray", chunk_rows=10, executor=ex)
        assert "3 of 5 chunks (10 texts each) already in the cache; resuming at chunk 3" in caplog.text
        assert np.array_equal(arr, local)  # bitwise
        plain = cached_embed(HashingEmbedder(32), texts, None, chunk_rows=10, executor=ex)  # no cache
        assert np.array_equal(plain, local)


def test_gotd_with_ray_local_selects_as_the_local_run(ray_instance, encoder, tmp_path):
    rng = np.random.default_rng(0)
    with open(tmp_path / "pool.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"id": f"p{i}", "text": " ".join(f"w{j}" for j in rng.integers(0, 40, 6))}) + "\n")
    with open(tmp_path / "target.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"text": " ".join(f"w{j}" for j in rng.integers(0, 10, 6))}) + "\n")
    args = ["gotd", "--pool", str(tmp_path / "pool.jsonl"), "--target", str(tmp_path / "target.jsonl"),
            "--budget", "10", "--id-field", "id", "--embedder", str(encoder), "--device", "cpu", "--no-progress",
            "--threads", "1", "--embed-chunk", "16"]
    assert main([*args, "--out", str(tmp_path / "local"), "--cache-dir", str(tmp_path / "cache-local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--cache-dir", str(tmp_path / "cache-ray"),
                 "--ray", "local", "--ray-workers", "2"]) == 0
    files = sorted(p.name for p in (tmp_path / "cache-local" / "embeddings").glob("*.npy"))
    assert len(files) == 2 and files == sorted(p.name for p in (tmp_path / "cache-ray" / "embeddings").glob("*.npy"))
    for name in files:  # pool (4 chunks over 2 actors) and target: the same embeddings
        a = np.load(tmp_path / "cache-local" / "embeddings" / name)
        b = np.load(tmp_path / "cache-ray" / "embeddings" / name)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-6
    local = pq.read_table(tmp_path / "local" / "scores.parquet").to_pydict()
    ray = pq.read_table(tmp_path / "ray" / "scores.parquet").to_pydict()
    assert ray["rank"] == local["rank"] and np.allclose(ray["gradient"], local["gradient"], atol=1e-6)
    assert (tmp_path / "ray" / "selected.jsonl").read_bytes() == (tmp_path / "local" / "selected.jsonl").read_bytes()
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["executor"] == {"name": "ray", "address": "local", "workers": 2}
    assert "executor" not in json.loads((tmp_path / "local" / "manifest.json").read_text())


def test_ray_flags_without_the_ray_extra_are_a_clear_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(5)))
    args = ["gotd", "--pool", str(tmp_path / "pool.jsonl"), "--target", str(tmp_path / "pool.jsonl"), "--budget",
            "2", "--method", "random", "--out", str(tmp_path / "o"), "--cache-dir", "none", "--no-progress"]
    assert main([*args, "--ray-workers", "2"]) == 2
    assert "--ray-workers applies with --ray only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert main([*args, "--ray", "local"]) == 2
    assert "--ray needs the ray extra: pip install 'tunesift[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_dsir_on_ray_counts_saved_chunks_as_one_local_pass(ray_instance, tmp_path):
    rng = np.random.default_rng(1)
    words = ["gene", "protein", "cell", "film", "plot", "actor", "the", "a", "binds", "was"]
    lines = [json.dumps({"text": " ".join(rng.choice(words, 8))}) + "\n" for _ in range(50)]
    (tmp_path / "pool.jsonl").write_text("".join(lines))
    (tmp_path / "shards").mkdir()
    for k, (lo, hi) in enumerate([(0, 20), (20, 35), (35, 50)]):
        (tmp_path / "shards" / f"part-{k}.jsonl").write_text("".join(lines[lo:hi]))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps({"text": f"gene protein cell binds {i}"}) + "\n"
                                                   for i in range(5)))
    common = ["--target", str(tmp_path / "target.jsonl"), "--budget", "10", "--method", "dsir", "--seed", "3",
              "--no-progress"]
    assert main(["gotd", "--pool", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "local"), *common,
                 "--cache-dir", "none"]) == 0  # one chunk, in memory
    assert main(["gotd", "--pool", str(tmp_path / "shards"), "--out", str(tmp_path / "ray"), *common,
                 "--cache-dir", str(tmp_path / "cache"), "--embed-chunk", "15", "--ray", "local",
                 "--ray-workers", "2"]) == 0  # 4 chunks on 2 actors, each saved
    assert len(list((tmp_path / "cache" / "dsir").glob("*.chunks-15/*.npz"))) == 4
    local = pq.read_table(tmp_path / "local" / "scores.parquet").to_pydict()
    ray = pq.read_table(tmp_path / "ray" / "scores.parquet").to_pydict()
    assert ray["log_importance"] == local["log_importance"] and ray["rank"] == local["rank"]  # bitwise
    assert (tmp_path / "ray" / "selected.jsonl").read_bytes() == (tmp_path / "local" / "selected.jsonl").read_bytes()


def test_sinkhorn_on_ray_actors_holding_parts_of_the_pool_equals_the_local_solve(ray_instance, tmp_path):
    import torch

    from tunesift.executor.drivers import sinkhorn_on

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x[:40] + 0.1 * rng.normal(size=(40, 16)).astype(np.float32)
    np.save(tmp_path / "pool.npy", x)
    local = sinkhorn_on(None, x, y, epsilon=0.1, threshold=1e-6)
    with make_executor("local", workers=2) as executor:
        assert executor.parallelism() == 2
        for pool in (np.load(tmp_path / "pool.npy", mmap_mode="r"), x):  # rows read by the actors / sent to them
            on_ray = sinkhorn_on(executor, pool, y, epsilon=0.1, threshold=1e-6)
            assert on_ray.n_iter == local.n_iter and on_ray.converged
            torch.testing.assert_close(on_ray.f, local.f, rtol=0, atol=1e-5)
            assert list(np.argsort(on_ray.f.numpy())[:100]) == list(np.argsort(local.f.numpy())[:100])


@pytest.mark.parametrize("backbone", ["bigrec", "tiger"])
def test_dealrec_effort_on_ray_actors_gives_the_local_scores(ray_instance, tmp_path, backbone):
    """Each actor builds the backbone's effort model once and scores whole chunks of users; the chunks come
    back in order and are cached as they arrive: the same scores and picks as the local run."""
    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "rec")))
    from recfixtures import build_tiny_lm, write_dealrec_folder

    write_dealrec_folder(tmp_path / "games", n_users=24, n_items=20, seed=2)
    common = ["dealrec", "--data", str(tmp_path / "games"), "--budget", "5", "--backbone", backbone,
              "--surrogate-epochs", "2", "--hidden-size", "16", "--max-len", "8", "--lissa-depth", "20",
              "--device", "cpu", "--no-progress", "--no-plot", "--threads", "1"]
    if backbone == "bigrec":
        common += ["--llm", str(build_tiny_lm(tmp_path / "lm")), "--effort-batch-size", "4", "--effort-chunk", "8"]
    else:
        np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
        common += ["--tiger-item-embeddings", str(tmp_path / "emb.npy"), "--tiger-d-model", "16", "--tiger-d-kv", "4",
                   "--tiger-heads", "2", "--tiger-d-ff", "32", "--tiger-encoder-layers", "1",
                   "--tiger-decoder-layers", "1", "--tiger-rqvae-codebook-size", "4", "--tiger-rqvae-hidden", "16",
                   "--tiger-rqvae-epochs", "5", "--tiger-effort-chunk", "8"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "local", "--ray-workers", "2"]) == 0
    local = pq.read_table(tmp_path / "local" / "scores.parquet").to_pydict()
    ray = pq.read_table(tmp_path / "ray" / "scores.parquet").to_pydict()
    np.testing.assert_allclose(ray["effort"], local["effort"], rtol=1e-6)
    assert ray["rank"] == local["rank"] and ray["selected"] == local["selected"]
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["executor"]["name"] == "ray" and "executor" not in json.loads(
        (tmp_path / "local" / "manifest.json").read_text())


def test_knn_on_ray_actors_holding_parts_of_the_pool_equals_the_local_search(ray_instance, tmp_path):
    import torch

    from tunesift.pool import knn
    from tunesift.pool.knn_parts import knn_index

    rng = np.random.default_rng(1)
    pool = rng.normal(size=(700, 12)).astype(np.float32)
    np.save(tmp_path / "pool.npy", pool)
    queries = knn.prepare(torch.tensor(rng.normal(size=(9, 12)).astype(np.float32)), "cosine")
    with knn_index(pool, "cosine", 128, "cpu") as local:
        expected = local.lists(queries, 50)
        expected_exact = local.exact(queries, 20)
    with make_executor("local", workers=2) as executor:
        for rows in (np.load(tmp_path / "pool.npy", mmap_mode="r"), pool):
            with knn_index(rows, "cosine", 128, "cpu", executor) as index:
                found = index.lists(queries, 50)
                np.testing.assert_array_equal(found.indices, expected.indices)
                np.testing.assert_array_equal(found.best_target, expected.best_target)
                for a, b in zip(index.exact(queries, 20), expected_exact):
                    np.testing.assert_array_equal(a, b)
