"""examples/cat_dog.py: the paper's Figure 3 (99% cat / 1% dog pool, 50/50 target) as an oracle."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cat_dog(repo_script):
    pytest.importorskip("torch")
    return repo_script("examples/cat_dog.py")


def test_pool_and_target_are_built_as_described(cat_dog):
    pool, target, pool_x, target_x, is_dog = cat_dog.build(n_pool=1000, seed=1)
    assert len(pool) == 1000 and pool_x.shape == (1000, 2) and is_dog.sum() == 10
    assert target_x.shape == (200, 2) and len(target) == 200
    assert all(("dog" == r["animal"]) == d for r, d in zip(pool.records, is_dog))
    dog_texts = sum(any(w in cat_dog.DOG_WORDS for w in t.split()) for t in target.texts)
    assert dog_texts == 100


def test_gotd_picks_the_dogs_the_pool_lacks(cat_dog, tmp_path):
    from tunesift.registry import POOL_METHODS

    if "gotd" not in POOL_METHODS:
        import tunesift.pool  # noqa: F401
    shares = cat_dog.main(["--out", str(tmp_path / "cat_dog.png"), "--seed", "0"])
    assert shares["random"] <= 0.1
    assert shares["gotd"] >= 0.9
    if "knn" in shares:
        assert shares["knn"] <= shares["gotd"] - 0.2  # distribution matching: about half cats
    assert (tmp_path / "cat_dog.png").stat().st_size > 5000
