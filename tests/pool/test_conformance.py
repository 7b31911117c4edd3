"""What every registered pool method must do, checked over the registry (as scikit-learn's check_estimator
does): the exact budget, prefixes of one ranking, the same bytes under a seed, `score` that says the order,
the three output files with a manifest equal to the in-memory one, and clear errors for bad input."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import tunesift.pool  # noqa: F401  (registers the methods)
from tunesift.cli import main
from tunesift.io.tables import TextSet
from tunesift.pool import select_from_pool
from tunesift.registry import POOL_METHODS

METHODS = POOL_METHODS.names()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    words = ["cats", "dogs", "fish", "birds"]
    pool = TextSet.from_texts([f"a text about {words[i % 4]} number {i} {words[(3 * i) % 4]}" for i in range(80)],
                              name="pool")
    target = TextSet.from_texts([f"dogs and more dogs {i}" for i in range(8)], name="target")
    x = rng.standard_normal((80, 6)).astype(np.float32)
    y = (rng.standard_normal((8, 6)) + 1.5).astype(np.float32)
    return pool, target, x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)


def _select(inputs, method, budget, seed=0, **kw):
    pool, target, x, y = inputs
    return select_from_pool(pool, target, budget, method=method, seed=seed, pool_embeddings=x, target_embeddings=y,
                            cache_dir=None, device="cpu", progress=False, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_budget_is_exact_and_budgets_are_prefixes_of_one_ranking(inputs, method):
    small, large = _select(inputs, method, 7), _select(inputs, method, 30)
    assert len(small.ids) == 7 and len(set(small.ids)) == 7 and len(large.ids) == 30
    assert list(small.indices) == list(large.indices[:7])
    assert sorted(large.ranking.order.tolist()) == list(range(80))


@pytest.mark.parametrize("method", METHODS)
def test_the_same_seed_gives_the_same_bytes(inputs, method, tmp_path):
    a = _select(inputs, method, 10, seed=3, out_dir=tmp_path / "a")
    b = _select(inputs, method, 10, seed=3, out_dir=tmp_path / "b")
    for name in ("scores.parquet", "selected.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert list(a.indices) == list(b.indices)


@pytest.mark.parametrize("method", METHODS)
def test_score_says_the_order_for_every_method(inputs, method, tmp_path):
    _select(inputs, method, 10, out_dir=tmp_path)
    table = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    scores, ranks = np.asarray(table["score"]), np.asarray(table["rank"])
    assert np.all(np.diff(scores[np.argsort(ranks)]) <= 0)  # sorting by score (descending) gives the ranks
    assert np.array_equal(np.asarray(table["selected"]), ranks <= 10)


@pytest.mark.parametrize("method", METHODS)
def test_the_in_memory_manifest_is_the_written_one(inputs, method, tmp_path):
    sel = _select(inputs, method, 10, out_dir=tmp_path)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert sel.manifest == written
    assert {"versions", "n_examples", "written_at", "budget", "seed", "method"} <= set(written)
    assert written["n_examples"] == 80 and written["method"] == method
    quiet = _select(inputs, method, 10)  # nothing written: all of it but the time of writing
    assert {"versions", "n_examples", "budget"} <= set(quiet.manifest) and "written_at" not in quiet.manifest


@pytest.mark.parametrize("method", METHODS)
def test_threads_are_a_setting_of_the_api(inputs, method):
    sel = _select(inputs, method, 5, threads=1)
    assert len(sel.ids) == 5
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        _select(inputs, method, 5, threads=0)


@pytest.mark.parametrize("method", METHODS)
def test_bad_budgets_are_refused_naming_the_pool(inputs, method):
    for budget in (0, 81):
        with pytest.raises(ValueError, match=r"budget must be in 1..80 \(80 rows in the pool"):
            _select(inputs, method, budget)


def test_the_manifest_names_the_embedding_model(tmp_path, encoder):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"w{i % 40} w{(i * 7) % 40}"}) + "\n" for i in range(30)))
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": f"w{i}"}) + "\n" for i in range(4)))
    assert main(["gotd", "--pool", str(pool), "--target", str(target), "--budget", "3", "--out", str(tmp_path / "o"),
                 "--embedder", str(encoder), "--cache-dir", "none", "--device", "cpu", "--no-progress"]) == 0
    info = json.loads((tmp_path / "o" / "manifest.json").read_text())["embeddings"]["pool"]
    assert info["model"] == str(encoder) and info["pooling"] == "attention-masked mean" and info["max_length"] == 256


def test_no_progress_silences_the_libraries_bars(tmp_path, encoder, capfd):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"w{i % 40}"}) + "\n" for i in range(30)))
    args = ["gotd", "--pool", str(pool), "--target", str(pool), "--budget", "3", "--embedder", str(encoder),
            "--cache-dir", "none", "--device", "cpu"]
    import subprocess
    import sys

    run = lambda *extra: subprocess.run([sys.executable, "-m", "tunesift", *args, *extra], capture_output=True,  # noqa: E731
                                        text=True, timeout=300)
    loud = run("--out", str(tmp_path / "loud"))
    quiet = run("--out", str(tmp_path / "quiet"), "--no-progress")
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "it/s" in loud.stderr  # weight loading and embedding draw bars by default
    assert "it/s" not in quiet.stderr and "Loading weights" not in quiet.stderr
