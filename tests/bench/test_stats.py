import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from tunesift.bench import stats
from tunesift.bench.stats import (
    Comparison,
    Estimate,
    PairedDifference,
    bootstrap_mean,
    compare_methods,
    markdown,
    paired_difference,
    significant_differences,
)

# ---------------------------------------------------------------------------------------------------
# Oracles: an explicit Python loop over bootstrap draws, on the same Generator stream
# ---------------------------------------------------------------------------------------------------


def _loop_draws(n, n_boot, seed, chunk):
    """The resamples, one at a time: the same chunks as the module draws, then a loop over rows."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        for row in rng.integers(0, n, size=(size, n)):
            yield row
        done += size


def _percentile(sorted_values, q):
    """Linear-interpolation quantile written out (numpy's default method)."""
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def _loop_paired(a, b, n_boot, confidence, seed, chunk, per_seed=False):
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    n = a.shape[1]
    if per_seed:  # mean over seeds of each seed's mean over the resampled examples
        diff = np.mean([a[s].mean() for s in range(len(a))]) - np.mean([b[s].mean() for s in range(len(b))])
        draws = [np.mean([a[s][r].mean() for s in range(len(a))]) - np.mean([b[s][r].mean() for s in range(len(b))])
                 for r in _loop_draws(n, n_boot, seed, chunk)]
    else:  # one seed each
        d = a[0] - b[0]
        diff = d.mean()
        draws = [d[r].mean() for r in _loop_draws(n, n_boot, seed, chunk)]
    srt = sorted(draws)
    alpha = 1 - confidence
    extreme = sum(abs(x - diff) >= abs(diff) for x in draws)
    return {
        "diff": diff,
        "low": _percentile(srt, alpha / 2),
        "high": _percentile(srt, 1 - alpha / 2),
        "se": float(np.std(draws, ddof=1)),
        "p_value": (1 + extreme) / (n_boot + 1),
    }


def _loop_mean(values, n_boot, confidence, seed, chunk):
    x = np.atleast_2d(values)
    draws = [np.mean([x[s][r].mean() for s in range(len(x))]) for r in _loop_draws(x.shape[1], n_boot, seed, chunk)]
    srt = sorted(draws)
    alpha = 1 - confidence
    return {"mean": x.mean(), "low": _percentile(srt, alpha / 2), "high": _percentile(srt, 1 - alpha / 2),
            "se": float(np.std(draws, ddof=1))}


# ---------------------------------------------------------------------------------------------------
# Against the plain loop
# ---------------------------------------------------------------------------------------------------


def test_paired_difference_matches_plain_loop_one_seed():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=60), rng.normal(0.2, 1.0, size=60)
    got = paired_difference(a, b, n_boot=300, confidence=0.9, seed=7, chunk_size=128)
    want = _loop_paired(a, b, 300, 0.9, 7, 128)
    assert got.diff == want["diff"]
    assert got.p_value == want["p_value"]
    assert got.low == pytest.approx(want["low"], rel=1e-12, abs=1e-15)
    assert got.high == pytest.approx(want["high"], rel=1e-12, abs=1e-15)
    assert got.se == pytest.approx(want["se"], rel=1e-12)
    assert (got.n_examples, got.n_seeds_a, got.n_seeds_b, got.n_boot) == (60, 1, 1, 300)


def test_paired_difference_matches_plain_loop_pooled_seeds():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 40)), rng.normal(0.3, 1.0, size=(2, 40))
    got = paired_difference(a, b, n_boot=200, seed=3, chunk_size=64)
    want = _loop_paired(a, b, 200, 0.95, 3, 64, per_seed=True)
    for k in ("diff", "low", "high", "se"):
        assert getattr(got, k) == pytest.approx(want[k], rel=1e-12, abs=1e-15), k
    assert got.p_value == want["p_value"]


def test_bootstrap_mean_matches_plain_loop():
    rng = np.random.default_rng(3)
    x = rng.random(size=(2, 50))
    got = bootstrap_mean(x, n_boot=250, seed=11, chunk_size=100)
    want = _loop_mean(x, 250, 0.95, 11, 100)
    for k in ("mean", "low", "high", "se"):
        assert getattr(got, k) == pytest.approx(want[k], rel=1e-12), k
    assert (got.n_examples, got.n_seeds, got.confidence) == (50, 2, 0.95)


def test_results_do_not_depend_on_chunk_size():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 37)), rng.normal(size=37)
    runs = [paired_difference(a, b, n_boot=150, seed=5, chunk_size=c) for c in (1, 7, 150, 1000, None)]
    assert all(r == runs[0] for r in runs)
    ests = [bootstrap_mean(a, n_boot=150, seed=5, chunk_size=c) for c in (3, None)]
    assert ests[0] == ests[1]


def test_seed_determines_the_resamples():
    x = np.random.default_rng(5).normal(size=80)
    assert bootstrap_mean(x, n_boot=200, seed=1) == bootstrap_mean(x, n_boot=200, seed=1)
    assert bootstrap_mean(x, n_boot=200, seed=1) != bootstrap_mean(x, n_boot=200, seed=2)


def test_default_chunk_keeps_memory_bounded():
    chunk = stats._chunk(10000, 10000, None)
    assert 1 <= chunk < 10000 and chunk * 10000 <= 2**22
    assert stats._chunk(50, 300, None) == 300


# ---------------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------------


def test_interval_se_and_mde_match_the_normal_closed_form():
    rng = np.random.default_rng(6)
    n, mu, sigma = 20000, 0.05, 2.0
    base = rng.normal(size=n) * 5.0  # shared per-example level: cancels in the paired difference
    d = rng.normal(mu, sigma, size=n)
    r = paired_difference(base + d, base, n_boot=4000, seed=0)
    mean, se_cf = d.mean(), d.std(ddof=1) / math.sqrt(n)
    assert r.diff == pytest.approx(mean, rel=1e-9)
    assert r.se == pytest.approx(se_cf, rel=0.04)
    assert r.diff - r.low == pytest.approx(1.96 * se_cf, rel=0.06)
    assert r.high - r.diff == pytest.approx(1.96 * se_cf, rel=0.06)
    assert r.mde == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * r.se, rel=1e-12)
    assert r.mde == pytest.approx(2.80 * se_cf, rel=0.04)
    est = bootstrap_mean(d, n_boot=1000, seed=1)
    assert est.mean == pytest.approx(mean, rel=1e-12)
    assert est.se == pytest.approx(se_cf, rel=0.08)


def test_mde_follows_confidence_and_power():
    x = np.random.default_rng(7).normal(size=200)
    r = paired_difference(x, np.zeros(200), n_boot=200, confidence=0.9, power=0.5, seed=0)
    assert r.mde == pytest.approx((norm.ppf(0.95) + norm.ppf(0.5)) * r.se, rel=1e-12)
    assert (r.confidence, r.power) == (0.9, 0.5)


def test_p_value_is_roughly_uniform_under_no_difference():
    rng = np.random.default_rng(8)
    ps = []
    for i in range(200):
        a, b = rng.normal(size=40), rng.normal(size=40)
        ps.append(paired_difference(a, b, n_boot=500, seed=i).p_value)
    ps = np.array(ps)
    assert 0.01 <= np.mean(ps < 0.05) <= 0.10
    assert 0.4 <= ps.mean() <= 0.6
    assert all(1 / 501 <= p <= 1.0 for p in ps)


def test_large_difference_has_the_smallest_p_value():
    rng = np.random.default_rng(9)
    r = paired_difference(rng.normal(1.0, 1.0, size=1000), np.zeros(1000), n_boot=500, seed=0)
    assert r.p_value == 1 / 501
    assert r.significant and r.low > 0.8


# ---------------------------------------------------------------------------------------------------
# Pairing, seeds, ties
# ---------------------------------------------------------------------------------------------------


def test_pairing_narrows_the_interval():
    rng = np.random.default_rng(10)
    n = 500
    a = rng.normal(0.0, 1.0, size=n)  # large between-example variance
    b = a + 0.01 + rng.normal(0.0, 0.001, size=n)
    paired = paired_difference(b, a, n_boot=1000, seed=0)
    # unpaired: each mean bootstrapped on its own, independent resamples
    ea, eb = bootstrap_mean(a, n_boot=1000, seed=1), bootstrap_mean(b, n_boot=1000, seed=2)
    se_unpaired = math.hypot(ea.se, eb.se)
    assert paired.significant and paired.low > 0.009
    assert paired.high - paired.low < (2 * 1.96 * se_unpaired) / 100
    assert abs(eb.mean - ea.mean) < 1.96 * se_unpaired  # unpaired, the same data shows nothing


def test_pooled_seeds_point_estimate():
    rng = np.random.default_rng(11)
    a, b = rng.random(size=(3, 90)), rng.random(size=(1, 90))
    r = paired_difference(a, b, n_boot=200, seed=0)
    assert r.diff == pytest.approx(np.mean((a[0] + a[1] + a[2]) / 3 - b[0]), rel=1e-12)
    assert (r.n_seeds_a, r.n_seeds_b, r.n_examples) == (3, 1, 90)
    est = bootstrap_mean(a, n_boot=200, seed=0)
    assert est.mean == pytest.approx(a.mean(), rel=1e-12) and est.n_seeds == 3
    # resampling the same examples for every seed = resampling the per-example seed means
    one = bootstrap_mean(a.mean(axis=0), n_boot=200, seed=0)
    assert (one.mean, one.low, one.high, one.se) == (est.mean, est.low, est.high, est.se)
    # a 1-D array is one seed
    assert paired_difference(b[0], a, n_boot=200) == paired_difference(b, a, n_boot=200)


def test_exactly_equal_methods_give_p_one_and_a_zero_interval():
    vals = np.random.default_rng(12).integers(0, 11, size=100) / 10  # 0.0, 0.1, ..., 1.0
    for a, b in [(vals, vals.copy()), (np.tile(vals, (3, 1)), vals[None, :])]:  # 0.1 x 3 / 3 != 0.1
        r = paired_difference(a, b, n_boot=300, seed=0)
        assert (r.diff, r.low, r.high, r.se, r.mde, r.p_value) == (0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        assert not r.significant
    e = bootstrap_mean(np.full(50, 0.1), n_boot=100)
    assert e.low == e.mean == e.high == pytest.approx(0.1, rel=1e-15) and e.se == 0.0


def test_results_serialise():
    r = paired_difference(np.arange(10.0), np.zeros(10), n_boot=100)
    d = r.to_dict()
    assert d["significant"] is True and d["diff"] == 4.5
    json.dumps(d)
    assert set(bootstrap_mean(np.arange(10.0), n_boot=100).to_dict()) == {
        "mean", "low", "high", "se", "n_examples", "n_seeds", "confidence", "n_boot"}


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------

_X = np.zeros((2, 10))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bootstrap_mean(np.array([0.1, np.nan, 0.3])), "`values` must be finite.*seed 0, example 1"),
        (lambda: paired_difference(_X, np.array([1.0, np.inf] * 5)), "`b` must be finite"),
        (lambda: paired_difference(_X, np.zeros(9)), "`b` has 9 examples.*`a` has 10"),
        (lambda: bootstrap_mean(np.zeros((0, 5))), "`values` is empty"),
        (lambda: bootstrap_mean([]), "`values` is empty"),
        (lambda: bootstrap_mean([1.0]), "at least two examples"),
        (lambda: bootstrap_mean(np.zeros((2, 3, 4))), r"shape \(S, N\)"),
        (lambda: bootstrap_mean(_X, n_boot=99), "`n_boot` must be an integer >= 100"),
        (lambda: bootstrap_mean(_X, n_boot=1000.0), "`n_boot`"),
        (lambda: bootstrap_mean(_X, confidence=0.0), "`confidence` must be .* between 0 and 1"),
        (lambda: bootstrap_mean(_X, confidence=1.0), "`confidence`"),
        (lambda: paired_difference(_X, _X, confidence=95), "`confidence`"),
        (lambda: paired_difference(_X, _X, power=1.0), "`power`"),
        (lambda: bootstrap_mean(_X, seed=-1), "`seed`"),
        (lambda: bootstrap_mean(_X, chunk_size=0), "`chunk_size`"),
        (lambda: compare_methods({"a": _X, "b": np.zeros(8)}, ["a"]), r"per_example\['b'\]. has 8 examples"),
        (lambda: compare_methods({"a": _X, "b": np.full(10, np.nan)}, ["a"]), r"per_example\['b'\]. must be finite"),
        (lambda: compare_methods({}, ["a"]), "`per_example` must be a non-empty mapping"),
    ],
)
def test_invalid_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_numeric_input_raises_type_error():
    with pytest.raises(TypeError, match="`a` must be a numeric array"):
        paired_difference(["x", "y"], [1.0, 2.0])
    with pytest.raises(TypeError, match="`references`"):
        compare_methods({"a": _X}, [1])


# ---------------------------------------------------------------------------------------------------
# compare_methods and the table
# ---------------------------------------------------------------------------------------------------


def _bench(n=300):
    rng = np.random.default_rng(13)
    level = rng.random(size=n)  # how hard each test example is, shared by every method
    def noisy(shift, seeds):
        return np.clip(level + shift + rng.normal(0.0, 0.02, size=(seeds, n)), 0.0, None)
    return {"random": noisy(0.0, 3), "good": noisy(0.1, 3), "same": noisy(0.0, 2), "full": noisy(0.3, 1)}


def test_compare_methods_equals_the_single_calls():
    data = _bench()
    comps = compare_methods(data, ["random", "full", "none"], n_boot=200, seed=4)
    assert [c.method for c in comps] == ["random", "good", "same", "full"]
    for c in comps:
        assert c.estimate == bootstrap_mean(data[c.method], n_boot=200, seed=4)
        want_refs = [r for r in ("random", "full") if r != c.method]
        assert list(c.differences) == want_refs
        for r, d in c.differences.items():
            assert d == paired_difference(data[c.method], data[r], n_boot=200, seed=4)
    good = comps[1]
    assert good.differences["random"].significant and good.differences["random"].diff > 0
    assert good.differences["full"].significant and good.differences["full"].diff < 0
    assert not comps[2].differences["random"].significant
    assert compare_methods(data, "random", n_boot=200, seed=4)[1].differences.keys() == {"random"}
    json.dumps([c.to_dict() for c in comps])


def test_markdown_marks_only_significant_rows_and_is_deterministic():
    data = _bench()
    comps = compare_methods(data, ["random"], n_boot=300, seed=0)
    text = markdown(comps, metric="R@10")
    assert text == markdown(compare_methods(data, ["random"], n_boot=300, seed=0), metric="R@10")
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"method", "random", "good", "same", "full"}
    assert "R@10 [95% CI]" in rows["method"] and "Δ vs random [95% CI]" in rows["method"]
    assert "**" in rows["good"] and "**" in rows["full"]
    assert "**" not in rows["same"] and "**" not in rows["random"]
    assert rows["random"].endswith("| — |")
    assert "Smallest detectable difference (two-sided 5%, 80% power): vs random " in text


def test_markdown_golden():
    est = Estimate(mean=0.0181, low=0.0170, high=0.0193, se=0.0006, n_examples=8696, n_seeds=3,
                   confidence=0.95, n_boot=10000)
    ref = Estimate(mean=0.0163, low=0.0151, high=0.0175, se=0.0006, n_examples=8696, n_seeds=1,
                   confidence=0.95, n_boot=10000)

    def diff(d, low, high, p, mde):
        return PairedDifference(diff=d, low=low, high=high, se=mde / 2.8, p_value=p, mde=mde, n_examples=8696,
                                n_seeds_a=3, n_seeds_b=1, confidence=0.95, power=0.8, n_boot=10000)

    comps = [
        Comparison("random", ref),
        Comparison("dealrec", est, {"random": diff(0.0018, 0.0004, 0.0032, 0.0123, 0.0020)}),
        Comparison("a|b", est, {"random": diff(0.0002, -0.0010, 0.0014, 0.7, 0.0030)}),
    ]
    assert markdown(comps, metric="R@10") == (
        "| method | seeds | R@10 [95% CI] | Δ vs random [95% CI] |\n"
        "|---|---|---|---|\n"
        "| random | 1 | 0.0163 [0.0151, 0.0175] | — |\n"
        "| dealrec | 3 | 0.0181 [0.0170, 0.0193] | **+0.0018 [+0.0004, +0.0032]** p=0.012 |\n"
        "| a\\|b | 3 | 0.0181 [0.0170, 0.0193] | +0.0002 [-0.0010, +0.0014] p=0.700 |\n"
        "\n"
        "Bootstrap over 8696 test examples (10000 resamples, seeds averaged per example); "
        "Δ = method − reference, paired; **bold**: the paired 95% CI excludes 0.\n"
        "Smallest detectable difference (two-sided 5%, 80% power): "
        "vs random 0.0025 (median over methods; max 0.0030).\n"
    )
    assert markdown([]) == "(no methods)\n"
    assert significant_differences(comps) == ["dealrec vs random +0.0018 (p=0.012)"]
    assert significant_differences(comps[:1]) == []
    with pytest.raises(ValueError, match="`digits`"):
        significant_differences(comps, digits=-1)


# ---------------------------------------------------------------------------------------------------
# Run to run: a paired t-interval over seeds
# ---------------------------------------------------------------------------------------------------


def test_seed_paired_difference_equals_scipy_ttest_rel_and_the_closed_form():
    from scipy.stats import t, ttest_rel

    rng = np.random.default_rng(3)
    a = {s: float(v) for s, v in enumerate(rng.normal(0.30, 0.05, size=5))}
    b = {s: float(v) for s, v in enumerate(rng.normal(0.25, 0.05, size=5))}
    b[7] = 0.9  # a seed only b ran is not paired
    d = stats.seed_paired_difference(a, b, confidence=0.9)
    xa, xb = [a[s] for s in range(5)], [b[s] for s in range(5)]
    oracle = ttest_rel(xa, xb)
    assert d.seeds == (0, 1, 2, 3, 4)
    assert d.p_value == pytest.approx(oracle.pvalue, rel=1e-12)
    low, high = oracle.confidence_interval(confidence_level=0.9)
    assert (d.low, d.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    # plain loop: mean, sample sd, t quantile
    diffs = [x - y for x, y in zip(xa, xb)]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 4)
    assert d.diff == pytest.approx(mean, rel=1e-12) and d.se == pytest.approx(sd / math.sqrt(5), rel=1e-12)
    assert d.high - d.diff == pytest.approx(t.ppf(0.95, 4) * sd / math.sqrt(5), rel=1e-12)
    assert d.differences == pytest.approx(tuple(diffs), rel=1e-12)


def test_seed_paired_difference_edge_cases():
    same = stats.seed_paired_difference({0: 0.1, 1: 0.2}, {0: 0.1, 1: 0.2})
    assert (same.diff, same.low, same.high, same.p_value, same.significant) == (0.0, 0.0, 0.0, 1.0, False)
    shifted = stats.seed_paired_difference({0: 0.5, 1: 0.75}, {0: 0.25, 1: 0.5})  # +0.25 on every seed
    assert shifted.diff == 0.25 and shifted.low == shifted.high == 0.25 and shifted.p_value == 0.0
    assert shifted.significant
    with pytest.raises(ValueError, match="at least two seeds run by both"):
        stats.seed_paired_difference({0: 0.1, 1: 0.2}, {1: 0.3, 2: 0.4})
    with pytest.raises(ValueError, match=r"`a`\[1\] must be a finite number"):
        stats.seed_paired_difference({0: 0.1, 1: float("nan")}, {0: 0.3, 1: 0.4})
    with pytest.raises(TypeError, match="seed '0' that is not an integer"):
        stats.seed_paired_difference({"0": 0.1, 1: 0.2}, {0: 0.3, 1: 0.4})


def test_run_means_are_row_means_keyed_by_seed():
    values = {"random": np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]), "none": np.array([0.0, 1.0])}
    assert stats.run_means(values, {"random": [2, 5], "none": [0]}) == {"random": {2: 0.5, 5: 0.75}, "none": {0: 0.5}}
    with pytest.raises(ValueError, match=r"seeds\['random'\]"):
        stats.run_means(values, {"random": [2], "none": [0]})
    with pytest.raises(ValueError, match=r"seeds\['random'\]"):
        stats.run_means(values, {"random": [2, 2], "none": [0]})


def test_seed_markdown_pairs_only_shared_seeds_and_bolds_significant_rows():
    runs = {"gotd": {0: 0.80, 1: 0.81, 2: 0.82}, "dsir": {0: 0.70, 1: 0.74, 2: 0.69},
            "knn": {0: 0.71}, "random": {0: 0.70, 1: 0.71, 2: 0.72}}
    md, numbers = stats.seed_markdown(runs, ["random"], metric="accuracy", digits=3)
    lines = md.splitlines()
    assert lines[0] == "| method | Δ accuracy vs random over seeds [95% t-interval] |"
    gotd = next(x for x in lines if x.startswith("| gotd |"))
    dsir = next(x for x in lines if x.startswith("| dsir |"))
    assert "**+0.100 [+0.100, +0.100]** p<0.001 (Holm p<0.001), 3 seeds (+0.100, +0.100, +0.100)" in gotd
    assert "**" not in dsir and "3 seeds" in dsir
    # Holm over the two methods compared to random: the larger p stays, the smaller doubles (capped by it)
    p_dsir = numbers["dsir"]["random"]["p_value"]
    assert numbers["dsir"]["random"]["p_holm"] == pytest.approx(max(p_dsir, 2 * numbers["gotd"]["random"]["p_value"]))
    assert numbers["gotd"]["random"]["p_holm"] == pytest.approx(2 * numbers["gotd"]["random"]["p_value"])
    assert f"(Holm p={p_dsir:.3f})" in dsir
    assert not any(x.startswith("| knn |") for x in lines)  # one seed: no spread to estimate
    assert set(numbers) == {"gotd", "dsir"} and numbers["dsir"]["random"]["seeds"] == [0, 1, 2]
    assert stats.seed_markdown({"knn": {0: 0.7}, "random": {0: 0.7}}, ["random"]) == ("", {})


def test_holm_equals_the_step_down_loop_and_a_worked_example():
    from tunesift.bench.stats import holm

    # worked example (Holm 1979 style): m = 4, sorted p 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06, 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 9):
        p = rng.uniform(0, 0.3, size=m).tolist()
        ranked = sorted(range(m), key=lambda i: p[i])
        loop, running = [0.0] * m, 0.0
        for j, i in enumerate(ranked):
            running = max(running, min(1.0, (m - j) * p[i]))
            loop[i] = running
        assert holm(p) == pytest.approx(loop)
        assert all(a >= b for a, b in zip(holm(p), p))  # never below the raw p
    assert holm([]) == []
    with pytest.raises(ValueError, match="p_values"):
        holm([0.2, 1.5])
