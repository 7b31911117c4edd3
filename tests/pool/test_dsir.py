import json
import random
from pathlib import Path

import numpy as np
import pytest

from tunesift.io.tables import TextSet
from tunesift.pool import Context, order_by_score, select_from_pool
from tunesift.pool.dsir import DSIRSelection, hash_bucket, hashed_ngram_features, sampling_order, tokenize

TRICKY = [
    "Hello, world! Hello again...",
    "",
    "   \n\t ",
    "Ünïcödé café — naïve 3.14 e-mail@x.com",
    "<< Leukotriene D4 >> acts through [[ CysLT₁ R ]]-mediated amyloid-β (½ dose, x²)",
    "a b c d e f a b c a b",
    "one",
    "xxxxx y's :-) ;; __init__ 2024-01-01",
    "control\x1cseparators\x1fhere and NBSP\u00a0here",
    "combining e\u0301 and zero\u200dwidth joiner",
]

SCIENCE = "protein enzyme binding inhibitor receptor cell gene expression kinase pathway assay molecule".split()
REVIEWS = "movie film plot actor great boring funny scene director story awful brilliant".split()
COMMON = "the a of and is in to with this that".split()


def _corpus(rng: random.Random, n: int, topical: list[str], share: float) -> list[str]:
    """Texts of 5..30 words: each word topical with probability ``share``, else common."""
    return [
        " ".join(rng.choice(topical) if rng.random() < share else rng.choice(COMMON)
                 for _ in range(rng.randint(5, 30))) + rng.choice([".", "!", " ?", ""])
        for _ in range(n)
    ]


def _ctx(seed=0, budget=5):
    return Context(rng=np.random.default_rng(seed), budget=budget)


def test_tokenize_matches_nltk_wordpunct():
    wpt = pytest.importorskip("nltk.tokenize").WordPunctTokenizer()
    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + list("₁²½éβ\u0301\u200d\u00a0\u2028ⅫⒶ—")
    texts = TRICKY + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)]
    for text in texts:
        assert tokenize(text) == wpt.tokenize(text.lower()), repr(text)


def test_tokenizer_flavours_differ_only_where_documented():
    assert tokenize("CysLT₁ R", "wordpunct-re") == ["cyslt₁", "r"]
    assert tokenize("CysLT₁ R", "wordpunct") == ["cyslt", "₁", "r"]
    assert tokenize("Plain ASCII, text!", "wordpunct-re") == tokenize("Plain ASCII, text!", "wordpunct")


@pytest.mark.parametrize("ngrams", [1, 2, 3])
@pytest.mark.parametrize("num_buckets", [1, 13, 10_000])
def test_features_match_package_get_ngram_counts(ngrams, num_buckets):
    hashed = pytest.importorskip("data_selection.hashed_ngram_dsir")
    texts = TRICKY + _corpus(random.Random(1), 30, SCIENCE, 0.5) + TRICKY
    expected = np.stack([hashed.get_ngram_counts(t, n=ngrams, num_buckets=num_buckets) for t in texts])
    for gram in ("the", "of the", "café β", ""):
        assert hash_bucket(gram, num_buckets) == hashed.hash_buckets(gram, num_buckets)
    for chunk_size in (1, 7, 1000):  # the bigram cache is shared across chunks
        features = hashed_ngram_features(texts, num_buckets, ngrams, chunk_size=chunk_size)
        assert features.counts.shape == (len(texts), num_buckets)
        np.testing.assert_array_equal(features.counts.toarray(), expected)
        np.testing.assert_array_equal(features.lengths, [len(tokenize(t)) for t in texts])


@pytest.mark.parametrize("num_buckets,ngrams", [(10_000, 2), (64, 2), (500, 3)])
def test_log_importance_matches_hashed_ngram_dsir(tmp_path, num_buckets, ngrams):
    """End-to-end oracle: the package fit on JSONL files vs our method on the same texts."""
    data_selection = pytest.importorskip("data_selection")
    rng = random.Random(2)
    pool_texts = _corpus(rng, 60, SCIENCE, 0.4) + _corpus(rng, 60, REVIEWS, 0.4) + TRICKY
    target_texts = _corpus(rng, 15, SCIENCE, 0.6)
    for name, texts in (("pool", pool_texts), ("target", target_texts)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    reference = data_selection.HashedNgramDSIR(
        raw_datasets=[str(tmp_path / "pool.jsonl")], target_datasets=[str(tmp_path / "target.jsonl")],
        cache_dir=str(tmp_path / "cache"), num_proc=1, ngrams=ngrams, num_buckets=num_buckets,
        min_example_length=0)
    reference.fit_importance_estimator(num_tokens_to_fit="all")
    reference.compute_importance_weights()
    expected = np.load(tmp_path / "cache" / "log_importance_weights" / "0.npy")

    method = DSIRSelection(num_buckets=num_buckets, ngrams=ngrams)
    ranking = method.rank(TextSet.from_texts(pool_texts), TextSet.from_texts(target_texts), _ctx())
    np.testing.assert_allclose(ranking.columns["log_importance"], expected, rtol=1e-10, atol=1e-9)
    assert np.all(np.diff(ranking.scores[ranking.order]) < 0)  # `score` says the order, the weight has its column
    # the package's distributions, to the last bit of their definition
    ours = hashed_ngram_features(pool_texts, num_buckets, ngrams).counts.sum(axis=0).A1
    np.testing.assert_allclose(ours / ours.sum(), reference.raw_probs, rtol=1e-12)
    # the science pool texts resemble the science target: they get the larger weights
    assert ranking.columns["log_importance"][:60].mean() > ranking.columns["log_importance"][60:120].mean() + 5


def test_gumbel_top_k_first_pick_and_inclusion_probabilities():
    """Sampling frequencies over many seeds vs the exact without-replacement probabilities."""
    weights = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    p = weights / weights.sum()
    runs = 20_000
    first = np.zeros(len(p))
    in_two = np.zeros(len(p))
    rng = np.random.default_rng(0)
    for _ in range(runs):
        order = sampling_order(np.log(weights), rng)
        first[order[0]] += 1
        in_two[order[:2]] += 1
    # P(i first) = p_i;  P(i among two draws) = p_i + Σ_{j≠i} p_j p_i / (1 − p_j)
    exact_two = np.array([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(len(p)) if j != i)
                          for i in range(len(p))])
    tolerance = 4 * np.sqrt(0.25 / runs)  # four standard errors of a frequency
    np.testing.assert_allclose(first / runs, p, atol=tolerance)
    np.testing.assert_allclose(in_two / runs, exact_two, atol=tolerance)


def test_sampling_order_without_noise_and_ranked_last():
    log_w = np.array([0.5, 3.0, -1.0, 3.0, 2.0])
    np.testing.assert_array_equal(sampling_order(log_w, None), order_by_score(log_w))
    last = np.array([False, True, False, False, False])
    np.testing.assert_array_equal(sampling_order(log_w, None, ranked_last=last), [3, 4, 0, 2, 1])
    order = sampling_order(log_w, np.random.default_rng(0), ranked_last=last)
    assert order[-1] == 1 and sorted(order) == list(range(5))


def test_rank_is_deterministic_under_a_seed_and_varies_across_seeds():
    rng = random.Random(3)
    pool = TextSet.from_texts(_corpus(rng, 80, SCIENCE, 0.3) + _corpus(rng, 80, REVIEWS, 0.3))
    target = TextSet.from_texts(_corpus(rng, 10, SCIENCE, 0.6))
    method = DSIRSelection(num_buckets=256)
    a = method.rank(pool, target, _ctx(seed=5))
    b = method.rank(pool, target, _ctx(seed=5))
    c = method.rank(pool, target, _ctx(seed=6))
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.columns["log_importance"], c.columns["log_importance"])  # the weights do not depend on the seed
    assert not np.array_equal(a.order, c.order)
    assert sorted(a.order.tolist()) == list(range(len(pool)))
    top = DSIRSelection(num_buckets=256, gumbel=False)
    np.testing.assert_array_equal(top.rank(pool, target, _ctx(seed=5)).order, order_by_score(a.columns["log_importance"]))
    np.testing.assert_array_equal(top.rank(pool, target, _ctx(seed=6)).order, order_by_score(a.columns["log_importance"]))
    # a sample ∝ w from a pool whose first half resembles the target takes mostly that half
    assert (a.order[:40] < 80).mean() >= 0.7  # against 0.5 for a uniform sample


def test_short_texts_are_ranked_last():
    pool = TextSet.from_texts(["enzyme", "protein kinase binding assay of the cell",
                               "the enzyme inhibitor", "protein gene expression in the cell pathway"])
    target = TextSet.from_texts(["enzyme inhibitor binding", "protein kinase"])
    ranking = DSIRSelection(num_buckets=128, min_length=4).rank(pool, target, _ctx(budget=2))
    assert set(ranking.order[-2:].tolist()) == {0, 2}
    assert ranking.info["short_rows_ranked_last"] == 2


@pytest.mark.parametrize("field,value", [("num_buckets", 0), ("ngrams", 0), ("num_buckets", 2.5),
                                         ("smoothing", 0.0), ("min_length", -1), ("tokenizer", "spacy"),
                                         ("gumbel", "yes")])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DSIRSelection(**{field: value})


def test_empty_target_text_is_an_error():
    with pytest.raises(ValueError, match="no tokens"):
        DSIRSelection().rank(TextSet.from_texts(["a b c"]), TextSet.from_texts(["  ", ""]), _ctx(budget=1))


def test_cli_writes_log_importance_and_settings(tmp_path):
    from tunesift.cli import main

    rng = random.Random(4)
    for name, texts in (("pool", _corpus(rng, 40, SCIENCE, 0.3) + _corpus(rng, 40, REVIEWS, 0.3)),
                        ("target", _corpus(rng, 40, REVIEWS, 0.6))):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    out = tmp_path / "out"
    rc = main(["gotd", "--method", "dsir", "--pool", str(tmp_path / "pool.jsonl"), "--target",
               str(tmp_path / "target.jsonl"), "--budget", "10", "--out", str(out), "--dsir-buckets", "512",
               "--no-dsir-gumbel", "--seed", "3", "--no-progress"])
    assert rc == 0
    import pyarrow.parquet as pq

    table = pq.read_table(out / "scores.parquet").to_pydict()
    ranks = np.asarray(table["rank"])
    assert np.all(np.diff(np.asarray(table["score"])[np.argsort(ranks)]) < 0)  # higher score = picked earlier
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "dsir"
    assert manifest["settings"]["num_buckets"] == 512 and manifest["settings"]["gumbel"] is False
    selected_rows = np.flatnonzero(table["selected"])
    assert (selected_rows >= 40).mean() >= 0.9  # the review half of the pool, like the target
    assert len(open(out / "selected.jsonl").readlines()) == 10
    assert main(["gotd", "--method", "dsir", "--pool", str(tmp_path / "pool.jsonl"), "--target",
                 str(tmp_path / "target.jsonl"), "--budget", "10", "--out", str(out), "--dsir-buckets", "0"]) == 2


def _shared_data() -> Path:
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"


@pytest.mark.slow
def test_real_data_matches_package(tmp_path):
    """ChemProt target vs a ChemProt + SST-2 + AG News pool: the package's weights, to float precision."""
    data_selection = pytest.importorskip("data_selection")
    root = _shared_data()
    if not (root / "chemprot" / "train.jsonl").exists():
        pytest.skip("../shared/data is not available")
    import csv

    chem = [json.loads(line)["text"] for line in open(root / "chemprot" / "train.jsonl")]
    sst = [r[0] for r in list(csv.reader(open(root / "glue" / "SST-2" / "train.tsv"), delimiter="\t",
                                         quoting=csv.QUOTE_NONE))[1:1001]]
    news = [r[1] + " " + r[2] for r in list(csv.reader(open(root / "ag_news" / "test.csv")))[:1000]]
    pool_texts, target_texts = chem[:1000] + sst + news, chem[1000:1500]
    for name, texts in (("pool", pool_texts), ("target", target_texts)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    reference = data_selection.HashedNgramDSIR(
        raw_datasets=[str(tmp_path / "pool.jsonl")], target_datasets=[str(tmp_path / "target.jsonl")],
        cache_dir=str(tmp_path / "cache"), num_proc=1, min_example_length=0)
    reference.fit_importance_estimator(num_tokens_to_fit="all")
    reference.compute_importance_weights()
    expected = np.load(tmp_path / "cache" / "log_importance_weights" / "0.npy")
    result = select_from_pool(TextSet.from_texts(pool_texts), TextSet.from_texts(target_texts), 500,
                              method="dsir", cache_dir=None, progress=False)
    np.testing.assert_allclose(result.ranking.columns["log_importance"], expected, rtol=1e-10, atol=1e-8)
    # per token, ChemProt resembles the target most; whole-text weights also favour short texts
    # (every n-gram unseen in the target costs about log(1e-8)), so the sample itself is mostly SST-2
    per_token = expected / np.maximum(hashed_ngram_features(pool_texts).lengths, 1)
    assert per_token[:1000].mean() > per_token[1000:].mean() + 1.0


def test_features_saved_chunk_by_chunk_give_the_one_pass_weights_and_resume(tmp_path, monkeypatch):
    import tunesift.pool.dsir as dsir

    rng = random.Random(3)
    pool = TextSet.from_texts(_corpus(rng, 40, SCIENCE, 0.3) + _corpus(rng, 40, REVIEWS, 0.3), name="pool")
    target = TextSet.from_texts(_corpus(rng, 15, SCIENCE, 0.6), name="target")
    method = DSIRSelection(num_buckets=97)
    whole = method.rank(pool, target, _ctx(seed=4))  # no cache: one chunk, in memory

    def ctx(**kw):
        return Context(rng=np.random.default_rng(4), budget=5, cache_dir=tmp_path / "cache", chunk_rows=30, **kw)

    real, calls = dsir.hashed_ngram_features, []

    def dying(texts, *args, **kwargs):  # the third of 3 chunks (30, 30, 20 rows) dies
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(dsir, "hashed_ngram_features", dying)
    with pytest.raises(KeyboardInterrupt):
        method.rank(pool, target, ctx())
    saved = sorted((tmp_path / "cache" / "dsir").glob("*.chunks-30/*.npz"))
    assert [p.name for p in saved] == ["00000.npz", "00001.npz"]
    calls.clear()
    monkeypatch.setattr(dsir, "hashed_ngram_features", lambda texts, *a, **k: calls.append(len(texts)) or real(texts, *a, **k))
    resumed = method.rank(pool, target, ctx())
    assert calls == [20, 15]  # the pool's last chunk, then the target
    np.testing.assert_array_equal(resumed.columns["log_importance"], whole.columns["log_importance"])  # the same weights, bit for bit
    np.testing.assert_array_equal(resumed.order, whole.order)
    assert resumed.info == whole.info
    calls.clear()
    assert np.array_equal(method.rank(pool, target, ctx()).order, whole.order) and calls == [15]  # all cached

    other = TextSet.from_texts(pool.texts[:-1] + ["a different last text"], name="pool")
    assert len(list((tmp_path / "cache" / "dsir").glob("*.chunks-30"))) == 1
    method.rank(other, target, ctx())  # other texts: their own chunks
    assert len(list((tmp_path / "cache" / "dsir").glob("*.chunks-30"))) == 2
