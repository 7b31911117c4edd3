"""TSDS (tunesift.pool.tsds) against a dense brute force, a linear program and the authors' walk."""

import heapq
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tunesift.io.tables import TextSet
from tunesift.pool import select_from_pool
from tunesift.pool.tsds import TSDS, draw_order, tsds_distribution


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: thread start-up costs more than the work on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clustered(seed, n=300, m=15, dim=8, spread=0.25, duplicates=0):
    """Points around 6 unit directions (the target around 3 of them); the last ``duplicates`` pool rows
    are near-copies (1e-3 apart) of the first ones."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, 6, n)] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)
    if duplicates:
        x[-duplicates:] = x[:duplicates] + 1e-3 * rng.normal(size=(duplicates, dim))
    y = centers[rng.integers(0, 3, m)] + spread * rng.normal(size=(m, dim)) / np.sqrt(dim)
    return x.astype(np.float32), y.astype(np.float32)


def _texts(n, prefix="p"):
    return TextSet.from_texts([f"{prefix}{i}" for i in range(n)])


def _select(x, y, budget, seed=0, **settings):
    return select_from_pool(_texts(len(x)), _texts(len(y), "t"), budget, method="tsds", seed=seed,
                            pool_embeddings=x, target_embeddings=y, cache_dir=None, device="cpu", progress=False,
                            **settings)


# ---------------------------------------------------------------------------------------- references


class Dense:
    """The problem written out densely in float64: distances, K-neighbour lists, densities, γ by loops."""

    def __init__(self, x, y, alpha, c, sigma, k=5000, kde_k=1000):
        self.x, self.y = x.astype(np.float64), y.astype(np.float64)
        self.n, self.m = len(x), len(y)
        self.alpha, self.c = alpha, c
        self.K = min(self.n, k, max(self.n // 10, 2))
        kde_k = min(self.n, kde_k, max(self.n // 10, 1))
        self.dist = np.sqrt(((self.y[:, None, :] - self.x[None, :, :]) ** 2).sum(-1))  # (M, N)
        self.lists = [list(np.argsort(self.dist[j], kind="stable")[:self.K]) for j in range(self.m)]
        union = sorted({i for row in self.lists for i in row})
        self.rho = {}
        for i in union:
            if sigma == 0:
                self.rho[i] = 1.0
                continue
            kernel = [max(0.0, 1.0 - ((self.x[i] - self.x[u]) ** 2).sum() / sigma ** 2) for u in union]
            self.rho[i] = sum(sorted(kernel, reverse=True)[:kde_k])

    def plan(self, s):
        """γ (M, N) at cap λ = 1/(M s): each target example fills its neighbours nearest first."""
        gamma, cap = np.zeros((self.m, self.n)), 1.0 / (self.m * s)
        for j in range(self.m):
            left = 1.0 / self.m
            for i in self.lists[j]:
                gamma[j, i] = min(cap / self.rho[i], left)
                left -= gamma[j, i]
            assert left < 1e-12, "infeasible level"
        return gamma

    def objective(self, gamma):
        worst = max(gamma[j, i] * self.rho[i] for j in range(self.m) for i in self.lists[j])
        return self.alpha / self.c * (gamma * self.dist).sum() + (1 - self.alpha) * self.m * worst

    def solve(self):
        """The best of every feasible level where some example's first k+1 neighbours are exactly full
        (the objective is piecewise linear between them), the smallest s among equals."""
        sums = [np.cumsum([1.0 / self.rho[i] for i in row]) for row in self.lists]
        lowest_cap = min(s[self.K - 1] for s in sums)
        levels = sorted({s[k] for s in sums for k in range(self.K - 1) if s[k] <= lowest_cap} | {lowest_cap})
        values = [self.objective(self.plan(s)) for s in levels]
        best = min(values)
        level = next(s for s, v in zip(levels, values) if v <= best + 1e-12 * abs(best))
        return level, self.plan(level).sum(axis=0), best

    def linear_program(self):
        """The objective's optimum by a generic LP solver (variables γ_jk on the lists and the max t)."""
        from scipy.optimize import linprog

        m, K = self.m, self.K
        cost = np.zeros(m * K + 1)
        equal = np.zeros((m, m * K + 1))
        below = np.zeros((m * K, m * K + 1))
        for j in range(m):
            for k, i in enumerate(self.lists[j]):
                v = j * K + k
                cost[v] = self.alpha / self.c * self.dist[j, i]
                equal[j, v] = 1.0
                below[v, v], below[v, -1] = self.rho[i], -1.0
        cost[-1] = (1 - self.alpha) * m
        out = linprog(cost, A_ub=below, b_ub=np.zeros(m * K), A_eq=equal, b_eq=np.full(m, 1.0 / m),
                      bounds=(0, None), method="highs")
        assert out.status == 0, out.message
        return out.fun


def _authors_walk(dense):
    """The authors' probability assignment (ZifanL/TSDS tsds.py, lines 66-98) restated as a plain loop:
    a heap of each example's running sum of 1/ρ; pop the smallest, stop when α/C · Σ cost ≥ (1 − α)·M."""
    m, K, lists, rho, dist = dense.m, dense.K, dense.lists, dense.rho, dense.dist
    r = [[rho[i] for i in row] for row in lists]
    d = [[dist[j, i] for i in row] for j, row in enumerate(lists)]
    heap = [(1.0 / r[j][0], 0, j) for j in range(m)]
    heapq.heapify(heap)
    last, weighted, cost, total, level = [0] * m, [d[j][0] / r[j][0] for j in range(m)], [0.0] * m, 0.0, None
    while heap:
        level, k, j = heapq.heappop(heap)
        total -= cost[j]
        cost[j] = d[j][k + 1] * level - weighted[j]
        total += cost[j]
        if dense.alpha / dense.c * total >= (1 - dense.alpha) * m:
            break
        last[j] = k
        if k < K - 2:
            heapq.heappush(heap, (level + 1.0 / r[j][k + 1], k + 1, j))
            weighted[j] += d[j][k + 1] / r[j][k + 1]
    p = np.zeros(dense.n)
    for j in range(m):
        given = 0.0
        for k in range(last[j] + 1):
            p[lists[j][k]] += 1.0 / (m * level * r[j][k])
            given += 1.0 / (m * level * r[j][k])
        p[lists[j][last[j] + 1]] += max(1.0 / m - given, 0.0)
    return level, p


# ------------------------------------------------------------------------------------------- oracle

CASES = [  # (alpha, C, sigma, kde_k): the authors' defaults, interior optima, both ends, truncated densities
    (0.5, 5.0, 0.75, 1000), (0.5, 0.2, 0.3, 1000), (0.3, 0.1, 0.0, 1000), (0.9, 1.0, 0.5, 1000),
    (0.7, 0.05, 0.75, 3), (1.0, 5.0, 0.75, 1000), (0.0, 5.0, 0.75, 1000),
]


@pytest.mark.parametrize("alpha,c,sigma,kde_k", CASES)
@pytest.mark.parametrize("seed,duplicates", [(0, 0), (1, 40)])
def test_probabilities_equal_the_dense_brute_force_and_the_linear_program(alpha, c, sigma, kde_k, seed, duplicates):
    x, y = _clustered(seed, duplicates=duplicates)
    dense = Dense(x, y, alpha, c, sigma, kde_k=kde_k)
    level, p, best = dense.solve()
    ours = tsds_distribution(x, y, alpha=alpha, c=c, sigma=sigma, kde_k=kde_k, first_depth=2, block_size=64)
    np.testing.assert_allclose(ours.probability, p, rtol=1e-9, atol=1e-12)
    assert ours.info["level_s"] == pytest.approx(level, rel=1e-12)
    assert ours.probability.sum() == pytest.approx(1.0, abs=1e-12)
    assert ours.info["objective"] == pytest.approx(best, rel=1e-6)  # our distances are float32
    reached = np.isfinite(ours.density)
    np.testing.assert_allclose(ours.density[reached], [dense.rho[i] for i in np.flatnonzero(reached)], rtol=1e-12)
    assert (ours.probability[~reached] == 0).all()
    # the brute force's best level is the optimum of the stated objective over every plan (a generic LP;
    # its plan is not compared: at α = 0, or where two neighbours are 1e-7 apart, others are as good)
    assert dense.linear_program() == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_both_stops_occur_in_the_cases():
    """The cases above reach the first-order optimum inside the lists and the boundary both."""
    stops = {tsds_distribution(*_clustered(0), alpha=a, c=c, sigma=s, kde_k=kk).info["stop"] for a, c, s, kk in CASES}
    assert stops == {"optimum", "boundary"}


@pytest.mark.parametrize("alpha,c,sigma", [(0.5, 0.2, 0.3), (0.3, 0.1, 0.0), (0.7, 0.05, 0.75), (1.0, 5.0, 0.0)])
def test_equal_to_the_authors_walk_where_it_stops_inside_the_lists(alpha, c, sigma):
    x, y = _clustered(0)
    dense = Dense(x, y, alpha, c, sigma)
    ours = tsds_distribution(x, y, alpha=alpha, c=c, sigma=sigma)
    assert ours.info["stop"] == "optimum"
    level, p = _authors_walk(dense)
    assert ours.info["level_s"] == pytest.approx(level, rel=1e-12)
    np.testing.assert_allclose(ours.probability, p, rtol=1e-9, atol=1e-12)


def test_at_the_boundary_we_keep_the_cap_where_the_authors_walk_does_not():
    """With the authors' defaults on a small pool (K = N/10 = 30) the optimum is at the boundary: the
    example with the smallest Σ 1/ρ over its K neighbours spreads its mass over all of them. Their walk
    goes on past it, and the examples it passes give their farthest neighbour more than the cap."""
    x, y = _clustered(0)
    dense = Dense(x, y, 0.5, 5.0, 0.75)
    ours = tsds_distribution(x, y)
    assert ours.info["stop"] == "boundary"
    level, p = _authors_walk(dense)
    assert level > ours.info["level_s"]
    cap = 1.0 / (dense.m * ours.info["level_s"])
    gamma = dense.plan(ours.info["level_s"])
    assert max(gamma[j, i] * dense.rho[i] for j in range(dense.m) for i in dense.lists[j]) <= cap * (1 + 1e-12)
    farthest = [row[-1] for row in dense.lists]
    authors_cap = 1.0 / (dense.m * level)
    assert max(p[i] * dense.rho[i] for i in farthest) > 1.5 * authors_cap


def test_at_alpha_one_the_examples_not_reached_keep_their_mass():
    """α = 1 with densities: the authors' walk stops at the first kink, s = min_j 1/ρ_j0, and gives every
    other example 1/(M·s·ρ_j0) > 1/M on its nearest candidate (the check on their line 97 fails); the
    cap does not bind there, so each gives its 1/M."""
    x, y = _clustered(0)
    dense = Dense(x, y, 1.0, 5.0, 0.75)
    level, p = _authors_walk(dense)
    assert p.sum() > 1.05  # more than the target's mass
    ours = tsds_distribution(x, y, alpha=1.0)
    assert ours.info["level_s"] == pytest.approx(level, rel=1e-12)
    nearest = [row[0] for row in dense.lists]
    np.testing.assert_allclose(ours.probability, np.bincount(nearest, minlength=len(x)) / len(y), atol=1e-15)


def test_closed_forms_at_both_ends():
    """α = 1: every target example sends its mass to its nearest candidate. α = 0 without densities: the
    mass spread evenly over every K-neighbourhood (KNN-Uniform)."""
    x, y = _clustered(2)
    dense = Dense(x, y, 1.0, 5.0, 0.0)
    nearest = [row[0] for row in dense.lists]
    ours = tsds_distribution(x, y, alpha=1.0)
    np.testing.assert_allclose(ours.probability, np.bincount(nearest, minlength=len(x)) / len(y), atol=1e-15)
    uniform = tsds_distribution(x, y, alpha=0.0, sigma=0.0)
    expected = np.bincount(np.concatenate(dense.lists), minlength=len(x)) / (len(y) * dense.K)
    np.testing.assert_allclose(uniform.probability, expected, atol=1e-15)
    assert uniform.info["stop"] == "boundary" and uniform.info["level_s"] == dense.K


@pytest.mark.parametrize("first_depth", [1, 3, 1000])
def test_densities_computed_lazily_give_the_eager_result(first_depth):
    """Densities are computed only as deep as the walk needs, doubling: the result does not depend on
    the first depth, and far fewer rows than the neighbourhoods hold need one."""
    x, y = _clustered(3, n=2000, m=10, duplicates=200)
    eager = tsds_distribution(x, y, alpha=0.5, c=0.01, first_depth=10**6)
    lazy = tsds_distribution(x, y, alpha=0.5, c=0.01, first_depth=first_depth)
    np.testing.assert_allclose(lazy.probability, eager.probability, rtol=1e-12, atol=0)  # other float64 batches
    assert lazy.info["stop"] == "optimum" and lazy.info["level_s"] == pytest.approx(eager.info["level_s"], rel=1e-12)
    if first_depth < 10:
        assert lazy.info["density_rows"] < eager.info["density_rows"] == eager.info["neighbourhood_rows"]


def test_a_memory_mapped_pool_read_part_by_part_gives_the_in_memory_result(tmp_path, monkeypatch):
    from tunesift.pool import knn_parts

    x, y = _clustered(4, n=1200, m=12, duplicates=100)
    np.save(tmp_path / "pool.npy", x)
    local = _select(x, y, 50, block_size=64)
    monkeypatch.setattr(knn_parts, "STREAM_BYTES", 100 * 4 * x.shape[1])  # parts of 100 rows
    calls = []
    call = knn_parts.StreamedParts.call
    monkeypatch.setattr(knn_parts.StreamedParts, "call",
                        lambda self, *a: calls.append(len(self.factories)) or call(self, *a))
    mapped = np.load(tmp_path / "pool.npy", mmap_mode="r")
    streamed = _select(mapped, y, 50, block_size=64)
    assert calls and set(calls) == {12}  # the file was searched in 12 parts
    np.testing.assert_array_equal(streamed.ranking.order, local.ranking.order)
    np.testing.assert_array_equal(streamed.ranking.columns["probability"], local.ranking.columns["probability"])


def test_lists_the_sampled_threshold_cuts_short_come_from_an_exact_search(misleading_sample):
    """Every 16th pool row points along the target: kNN's sampled threshold keeps too few rows, and those
    lists are completed by an exact search; the result is still the brute force's."""
    x, y = misleading_sample
    dense = Dense(x, y, 0.5, 0.05, 0.75)
    _, p, _ = dense.solve()
    np.testing.assert_allclose(tsds_distribution(x, y, alpha=0.5, c=0.05).probability, p, rtol=1e-9, atol=1e-12)


def test_a_pool_split_over_an_executor_gives_the_local_result(split_executor):
    x, y = _clustered(11, n=700, m=9, duplicates=50)
    local = _select(x, y, 40, seed=2)
    split = select_from_pool(_texts(len(x)), _texts(len(y), "t"), 40, method="tsds", seed=2, pool_embeddings=x,
                             target_embeddings=y, cache_dir=None, device="cpu", progress=False,
                             executor=split_executor(3))
    np.testing.assert_array_equal(split.ranking.order, local.ranking.order)
    np.testing.assert_array_equal(split.ranking.columns["probability"], local.ranking.columns["probability"])


# ---------------------------------------------------------------------------------------- behaviour


def _duplicate_topics(seed=5, topics=20, copies=8, distinct=8, dim=32):
    """Each topic: a cluster of ``copies`` near-identical rows (1e-3 apart) 0.05 from the topic's centre,
    nearest its three target examples (0.1 from the centre), and ``distinct`` rows 0.3 from the centre,
    about 0.4 apart. ``group``: one id per cluster of copies, one per distinct row."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:topics]

    def around(center, radius, count):
        return center + radius * rng.normal(size=(count, dim)) / np.sqrt(dim)

    rows, group = [], []
    for t, center in enumerate(centers):
        base = around(center, 0.05, 1)[0]
        rows += [around(base, 1e-3, copies), around(center, 0.3, distinct)]
        group += [f"c{t}"] * copies + [f"d{t}.{i}" for i in range(distinct)]
    target = np.concatenate([around(center, 0.1, 3) for center in centers])
    return np.concatenate(rows).astype(np.float32), target.astype(np.float32), np.asarray(group)


def _repeats(groups):
    """Picks that share a near-duplicate cluster with an earlier pick."""
    return len(groups) - len(set(groups))


def test_the_density_term_spreads_the_picks_over_near_duplicates():
    """Near-duplicates nearest the target: with the diversity weight at 0 (α = 1) the picks are copies
    of the same few clusters; TSDS's density-weighted cap spreads them over distinct rows. Without the
    density (σ = 0, KNN-Uniform) each copy counts as a distinct row and the copies are still picked."""
    x, y, group = _duplicate_topics()
    budget = 40
    repeats = {}
    for label, settings in {"alignment only": dict(alpha=1.0), "no density": dict(sigma=0.0),
                            "tsds": dict(sigma=0.2)}.items():
        counts = [_repeats(group[_select(x, y, budget, seed=seed, c=0.5, **settings).indices]) for seed in range(3)]
        repeats[label] = np.mean(counts)
    assert repeats["alignment only"] >= 15, repeats
    assert repeats["tsds"] <= 1 and repeats["tsds"] < repeats["no density"], repeats


def _cats_and_dogs(rng, n_cat, n_dog, dim=16, spread=0.25):
    center = np.zeros((2, dim))
    center[0, 0] = center[1, 1] = 1.0
    labels = np.array([0] * n_cat + [1] * n_dog)
    x = center[labels] + spread * rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_alignment_only_matches_the_target_mixture_where_gotd_picks_what_the_pool_lacks():
    """GOT-D's Figure 3 setting (pool 99% cat / 1% dog, target 50/50): at α = 1 TSDS aligns the selection
    with the target (half the probability on dogs, picks about half dogs); GOT-D picks dogs only."""
    rng = np.random.default_rng(0)
    x, labels = _cats_and_dogs(rng, 1980, 20)
    y, _ = _cats_and_dogs(rng, 100, 100)
    budget = 20
    dogs, mass = [], []
    for seed in range(5):
        res = _select(x, y, budget, seed=seed, alpha=1.0)
        dogs.append(labels[res.indices].mean())
        mass.append(res.ranking.columns["probability"][labels == 1].sum())
    assert np.allclose(mass, 0.5)
    assert 0.3 <= np.mean(dogs) <= 0.7, dogs
    gotd = select_from_pool(_texts(len(x)), _texts(len(y), "t"), budget, method="gotd", pool_embeddings=x,
                            target_embeddings=y, cache_dir=None, device="cpu", progress=False)
    assert labels[gotd.indices].mean() >= 0.9


# ------------------------------------------------------------------------------- ranking and settings


def test_same_seed_same_selection_other_seed_other_draw_and_budgets_are_prefixes():
    x, y = _clustered(6, n=400, m=20)
    a, b = _select(x, y, 30, seed=3), _select(x, y, 30, seed=3)
    np.testing.assert_array_equal(a.ranking.order, b.ranking.order)
    np.testing.assert_array_equal(a.ranking.scores, b.ranking.scores)
    assert len(a.indices) == 30 and len(set(a.indices.tolist())) == 30
    other = _select(x, y, 30, seed=4)
    assert list(other.indices) != list(a.indices)
    np.testing.assert_array_equal(other.ranking.columns["probability"], a.ranking.columns["probability"])
    np.testing.assert_array_equal(_select(x, y, 12, seed=3).indices, a.indices[:12])
    ranking = a.ranking
    assert sorted(ranking.order.tolist()) == list(range(len(x)))
    assert np.all(np.diff(ranking.scores[ranking.order]) < 0)  # `score` says the order
    p = ranking.columns["probability"]
    support = int((p > 0).sum())
    assert (p[ranking.order[:support]] > 0).all() and (p[ranking.order[support:]] == 0).all()
    tail = ranking.order[support:]
    assert np.all(np.diff(ranking.columns["nearest_distance"][tail]) >= 0)  # the rest nearest first
    top = _select(x, y, 30, draw="top")
    assert np.all(np.diff(p[top.ranking.order[:support]]) <= 0)


def test_sampling_follows_the_probabilities():
    """The first draw is row i with probability p_i (the first of an i.i.d. sequence from p)."""
    x, y = _clustered(7, n=200, m=8)
    p = tsds_distribution(x, y, alpha=0.5, c=0.05, sigma=0.5).probability
    assert 5 < (p > 0).sum() < 100
    rng = np.random.default_rng(0)
    first = np.bincount([draw_order(p, np.zeros(len(p)), "sample", rng)[0] for _ in range(20000)], minlength=len(p))
    assert np.abs(first / 20000 - p).max() < 0.015


def test_a_budget_above_the_support_is_filled_by_the_rows_nearest_the_target():
    x, y = _clustered(8, n=300, m=5)
    res = _select(x, y, 200, alpha=1.0)
    info = res.ranking.info
    assert info["support"] <= 5 and info["filled_by_nearest"] == 200 - info["support"]
    assert info["selected_probability_mass"] == pytest.approx(1.0)
    assert 0 < info["expected_distinct_with_replacement"] <= info["support"]


@pytest.mark.parametrize("field,value", [("alpha", -0.1), ("alpha", 1.5), ("alpha", float("nan")), ("c", 0),
                                         ("c", -1.0), ("c", float("inf")), ("sigma", -0.5), ("k", 0), ("k", 2.5),
                                         ("kde_k", 0), ("block_size", 0), ("draw", "gumbel"), ("alpha", True)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        TSDS(**{field: value})


def test_mismatched_dimensions_are_refused():
    x, y = _clustered(9, n=100, m=5)
    with pytest.raises(ValueError, match="dimension"):
        _select(x, y[:, :4], 10)


# --------------------------------------------------------------------------------------------- CLI


def test_tsds_through_the_command_line(tmp_path, capsys):
    from tunesift.cli import main

    x, y = _clustered(10, n=60, m=8)
    pool, target = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    pool.write_text("".join(json.dumps({"doc": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(len(x))))
    target.write_text("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(len(y))))
    np.save(tmp_path / "pool.npy", x)
    np.save(tmp_path / "target.npy", y)
    common = ["--pool", str(pool), "--target", str(target), "--budget", "7", "--id-field", "doc",
              "--pool-embeddings", str(tmp_path / "pool.npy"), "--target-embeddings", str(tmp_path / "target.npy"),
              "--no-progress", "--cache-dir", "none", "--device", "cpu", "--seed", "5"]
    out = tmp_path / "out"
    assert main(["gotd", *common, "--out", str(out), "--method", "tsds", "--tsds-alpha", "0.7",
                 "--tsds-sigma", "0.5", "--tsds-c", "0.1"]) == 0
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert {"id", "score", "rank", "selected", "probability", "density", "nearest_distance"} <= set(table)
    assert sum(table["selected"]) == 7 and sum(table["probability"]) == pytest.approx(1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "tsds" and manifest["settings"]["alpha"] == 0.7 and manifest["settings"]["c"] == 0.1
    assert manifest["method_info"]["stop"] in ("optimum", "boundary") and "tsds_neighbours" in manifest["timings_s"]
    selected = [json.loads(line)["doc"] for line in (out / "selected.jsonl").read_text().splitlines()]
    api = _select(x, y, 7, seed=5, alpha=0.7, sigma=0.5, c=0.1)
    assert selected == [f"d{i}" for i in api.indices]
    again = tmp_path / "again"
    main(["gotd", *common, "--out", str(again), "--method", "tsds", "--tsds-alpha", "0.7", "--tsds-sigma", "0.5",
          "--tsds-c", "0.1"])
    assert (again / "selected.jsonl").read_bytes() == (out / "selected.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["gotd", *common, "--out", str(tmp_path / "wrong"), "--method", "gotd", "--tsds-alpha", "0.7"]) == 2
    assert "--tsds-alpha applies to tsds only" in capsys.readouterr().err
    assert main(["gotd", *common, "--out", str(tmp_path / "bad"), "--method", "tsds", "--tsds-alpha", "2"]) == 2
    assert "`alpha` must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_the_help_lists_tsds_and_its_flags():
    out = subprocess.run([sys.executable, "-m", "tunesift", "gotd", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("tsds", "--tsds-alpha", "--tsds-c", "--tsds-sigma", "--tsds-k", "--tsds-kde-k", "--tsds-draw"):
        assert name in out.stdout
