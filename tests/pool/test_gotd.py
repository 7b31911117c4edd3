import numpy as np
import pytest

from tunesift.io.tables import TextSet
from tunesift.pool import select_from_pool
from tunesift.pool.gotd import GOTD, calibrated_gradient


def _clusters(rng, n_a, n_b, dim=16, spread=0.25):
    """Unit-norm points around two orthogonal directions: 'cat' (axis 0) and 'dog' (axis 1)."""
    center = np.zeros((2, dim))
    center[0, 0] = center[1, 1] = 1.0
    labels = np.array([0] * n_a + [1] * n_b)
    x = center[labels] + spread * rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_calibrated_gradient_closed_form():
    f = np.array([1.0, -2.0, 0.5, 3.0])
    loop = np.array([f[i] - sum(f[k] for k in range(4) if k != i) / 3 for i in range(4)])
    assert np.allclose(calibrated_gradient(f), loop)
    assert np.allclose(calibrated_gradient(f + 7.0), loop)  # blind to the constant of the dual


def test_figure3_gotd_picks_what_the_pool_lacks():
    """Paper Fig. 3: pool 99% cat / 1% dog, target 50/50 -> GOT-D picks dogs, kNN does not."""
    rng = np.random.default_rng(0)
    x, labels = _clusters(rng, 1980, 20)
    y, _ = _clusters(rng, 100, 100)
    pool = TextSet.from_texts([f"{'cat' if l == 0 else 'dog'} {i}" for i, l in enumerate(labels)])
    target = TextSet.from_texts([f"t{i}" for i in range(len(y))])
    budget = 20
    picks = {}
    for method in ("gotd", "knn", "random"):
        res = select_from_pool(pool, target, budget, method=method, seed=0, pool_embeddings=x,
                               target_embeddings=y, cache_dir=None, device="cpu", progress=False)
        picks[method] = labels[res.indices].mean()
    assert picks["gotd"] >= 0.9, picks
    assert picks["knn"] <= 0.7, picks
    assert picks["gotd"] - picks["knn"] >= 0.3, picks


def test_gotd_gradient_matches_pot_potentials():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(1)
    x, _ = _clusters(rng, 60, 20)
    y, _ = _clusters(rng, 15, 15)
    pool = TextSet.from_texts([str(i) for i in range(len(x))])
    target = TextSet.from_texts([str(i) for i in range(len(y))])
    m = GOTD(epsilon=0.05, momentum=1.0, threshold=1e-5, max_iter=5000)
    res = select_from_pool(pool, target, 10, method=m, pool_embeddings=x, target_embeddings=y,
                           cache_dir=None, device="cpu", progress=False)
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    C = ((x[:, None, :].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1)
    _, log = ot.sinkhorn(a, b, C, 0.05, method="sinkhorn_log", log=True, numItermax=20000, stopThr=1e-12)
    expected = calibrated_gradient(0.05 * log["log_u"])
    assert np.allclose(res.ranking.columns["gradient"], expected, atol=2e-4)
    assert res.manifest["method_info"]["solver"]["converged"]
    assert list(res.indices) == list(np.argsort(expected, kind="stable")[:10])


def test_contrast_picks_the_largest_gradients():
    rng = np.random.default_rng(2)
    x, labels = _clusters(rng, 150, 50)
    y, _ = _clusters(rng, 0, 40)  # target: dogs only
    pool = TextSet.from_texts([str(i) for i in range(len(x))])
    target = TextSet.from_texts([str(i) for i in range(len(y))])
    kw = dict(pool_embeddings=x, target_embeddings=y, cache_dir=None, device="cpu", progress=False)
    near = select_from_pool(pool, target, 20, method=GOTD(), **kw)
    away = select_from_pool(pool, target, 20, method=GOTD(contrast=True), **kw)
    g = near.ranking.columns["gradient"]
    assert labels[near.indices].mean() == 1.0 and labels[away.indices].mean() == 0.0
    assert g[away.indices].min() >= np.sort(g)[-20] - 1e-12


def test_domain_prefilter_keeps_the_closest_domains():
    rng = np.random.default_rng(3)
    x, labels = _clusters(rng, 300, 100)
    y, _ = _clusters(rng, 0, 50)
    far = rng.standard_normal((100, x.shape[1])).astype(np.float32)
    far[:, :2] = 0
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    x = np.concatenate([x, far])
    domains = ["cat"] * 300 + ["dog"] * 100 + ["noise"] * 100
    pool = TextSet.from_texts([str(i) for i in range(len(x))], records=[{"text": str(i), "domain": d} for i, d in enumerate(domains)])
    target = TextSet.from_texts([str(i) for i in range(len(y))])
    res = select_from_pool(pool, target, 50, method=GOTD(domain_field="domain", domains_keep=1, domain_sample=50),
                           pool_embeddings=x, target_embeddings=y, cache_dir=None, device="cpu", progress=False)
    pre = res.manifest["method_info"]["prefilter"]
    assert pre["kept"] == ["dog"] and pre["distances"]["dog"] < min(pre["distances"]["cat"], pre["distances"]["noise"])
    kept = res.ranking.columns["kept_domain"]
    assert kept.sum() == 100 and np.isnan(res.ranking.columns["gradient"][~kept]).all()
    assert all(domains[i] == "dog" for i in res.indices)
    with pytest.raises(ValueError, match="fewer than the budget"):
        select_from_pool(pool, target, 150, method=GOTD(domain_field="domain", domains_keep=1, domain_sample=50),
                         pool_embeddings=x, target_embeddings=y, cache_dir=None, device="cpu", progress=False)


@pytest.mark.parametrize("kw, msg", [({"epsilon": 0}, "epsilon"), ({"momentum": 2.5}, "momentum"),
                                     ({"solver": "exact"}, "solver"), ({"domains_keep": 2}, "domain_field"),
                                     ({"domains_keep": 0, "domain_field": "domain"}, "at least 1")])
def test_bad_settings_name_the_field(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GOTD(**kw)
