"""DSIR: data selection with importance resampling over hashed n-gram features.

Xie, Santurkar, Ma, Liang. *Data Selection for Language Models via Importance Resampling*.
NeurIPS 2023, arXiv 2302.03169; PyPI ``data-selection`` (``HashedNgramDSIR``). GOT-D's baseline.

Each text becomes a vector of hashed unigram + bigram counts (10,000 buckets). Two bag-of-buckets
distributions are fit, ``p_target`` on the target texts and ``p_raw`` on the pool; the log importance
weight of a pool text x is the naive-Bayes log-likelihood ratio

    log w(x) = Σ_b count_b(x) · (log(p_target[b] + ε) − log(p_raw[b] + ε)),   ε = 1e-8,

and the pool is resampled without replacement with probability ∝ w by Gumbel top-k: order by
``log w + G`` with G standard Gumbel noise. Tokenisation (lower-cased ``\\w+|[^\\w\\s]+``, nltk's
``WordPunctTokenizer``, whose regex engine changed across nltk versions: see ``tokenizer``), hashing
(sha256 of the n-gram joined by spaces, modulo the bucket count) and smoothing match the package
exactly; its per-example Python loop is replaced by one vectorised pass that hashes each distinct
n-gram of a chunk once and builds a sparse count matrix.

Differences from the package, all deliberate: the raw distribution is fit on the whole pool (the
package's ``num_tokens_to_fit="auto"`` stops after 100,000 × buckets n-gram counts, 10⁹ by default,
more than any pool that fits in memory); the noise comes from the run's seeded generator, not
numpy's global one; texts shorter than ``min_length`` tokens (the package's default is 100, meant for
Pile documents, so ours is 0) are ranked after all others instead of being dropped, so the ranking
still covers the whole pool.

The pool's features are a map over chunks of rows on the run's executor (:mod:`tunesift.executor`;
``--ray`` counts chunks on Ray actors). Counts are integers and each row's depend on its own text only,
so nothing depends on the split (each chunk hashes its own distinct n-grams again, a little slower than
one pass). With a cache folder each finished chunk is saved (:class:`tunesift.io.chunks.ChunkStore`,
keyed by the pool's texts and the feature settings), so a killed run counts only the chunks it had not
finished, a rerun on the same pool none; the raw distribution is summed chunk by chunk and the weights
are computed from the saved chunks again, so the pool's count matrix is never held whole. Without one,
the chunks stay in memory.

Output columns (scores.parquet): ``log_importance``, log w(x) of every pool row. The picks are a
sample, so a row can be picked before one with a larger weight; ``score`` says only the order (1 for
the first pick down to 0).
"""

from __future__ import annotations

import hashlib
import re
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import chain
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from tunesift.executor import Executor, LocalExecutor, Stage
from tunesift.io.chunks import ChunkStore
from tunesift.io.tables import TextSet
from tunesift.pool.base import Context, PoolMethod, Ranking, scores_from_order
from tunesift.registry import POOL_METHODS

# nltk's WordPunctTokenizer is RegexpTokenizer(WORD_PUNCT) with these flags, applied to text.lower()
WORD_PUNCT = r"\w+|[^\w\s]+"
_FLAGS = re.UNICODE | re.MULTILINE | re.DOTALL
TOKENIZERS = ("wordpunct", "wordpunct-re")


@lru_cache(maxsize=None)
def _word_punct(tokenizer: str):
    """The compiled pattern of one tokenizer flavour.

    "wordpunct" compiles with the third-party ``regex`` engine, as recent nltk does (3.10.4 here, behind
    the installed ``data-selection``); "wordpunct-re" with the standard ``re``, as older nltk did (the
    DSIR paper's era). They differ only on rare characters: ``regex``'s ``\\w`` includes combining marks
    and excludes other-number characters such as subscript digits (``"CysLT₁"`` is one token for
    ``re``, two for ``regex``).
    """
    if tokenizer == "wordpunct-re":
        return re.compile(WORD_PUNCT, _FLAGS)
    if tokenizer == "wordpunct":
        try:
            import regex
        except ImportError:
            raise ImportError("DSIR's default tokenizer needs `pip install regex` (a dependency of nltk and "
                              "transformers); or set tokenizer='wordpunct-re' (--dsir-tokenizer)") from None
        return regex.compile(WORD_PUNCT, _FLAGS)
    raise ValueError(f"`tokenizer` must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")


# On ASCII text the two engines agree except that only ``re`` counts \x1c-\x1f as whitespace.
_RE_ONLY_SPACE = re.compile("[\x1c-\x1f]")


def _tokenizer_function(tokenizer: str):
    """``findall`` of the tokenizer, taking the faster stdlib engine wherever both engines agree."""
    exact = _word_punct(tokenizer).findall
    if tokenizer == "wordpunct-re":
        return exact
    fast = _word_punct("wordpunct-re").findall
    search = _RE_ONLY_SPACE.search
    return lambda text: fast(text) if text.isascii() and search(text) is None else exact(text)


def tokenize(text: str, tokenizer: str = "wordpunct") -> list[str]:
    """The package's tokenisation: lower-case, then runs of word characters or of punctuation."""
    return _tokenizer_function(tokenizer)(text.lower())


def hash_bucket(ngram: str, num_buckets: int) -> int:
    """The package's ``hash_buckets``: ``int(sha256(ngram).hexdigest(), 16) % num_buckets``."""
    return int.from_bytes(hashlib.sha256(ngram.encode("utf-8")).digest(), "big") % num_buckets


@dataclass
class NgramFeatures:
    """Hashed n-gram counts of a list of texts.

    Attributes:
        counts: (N, num_buckets) sparse CSR matrix of int64 counts; row i equals the package's
            ``get_ngram_counts(texts[i], n=ngrams, num_buckets=num_buckets)``.
        lengths: (N,) number of tokens of each text.
    """

    counts: sp.csr_matrix
    lengths: np.ndarray


def _hash_strings(strings: Sequence[str], num_buckets: int) -> np.ndarray:
    """(len(strings),) ``hash_bucket`` of each string."""
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    return np.fromiter((from_bytes(sha256(s.encode("utf-8")).digest(), "big") % num_buckets for s in strings),
                       dtype=np.int64, count=len(strings))


class _BucketCache:
    """Buckets of the n-grams seen so far, keyed by int64, in two sorted arrays (16 bytes a key)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.buckets = np.zeros(0, dtype=np.int64)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buckets of sorted unique ``keys`` (-1 where unknown) and the positions to insert them."""
        position = np.searchsorted(self.keys, keys)
        found = np.full(len(keys), -1, dtype=np.int64)
        if len(self.keys):
            clipped = np.minimum(position, len(self.keys) - 1)
            hit = self.keys[clipped] == keys
            found[hit] = self.buckets[clipped[hit]]
        return found, position

    def insert(self, position: np.ndarray, keys: np.ndarray, buckets: np.ndarray) -> None:
        self.keys = np.insert(self.keys, position, keys)
        self.buckets = np.insert(self.buckets, position, buckets)


def hashed_ngram_features(texts: Sequence[str], num_buckets: int = 10_000, ngrams: int = 2,
                          tokenizer: str = "wordpunct", chunk_size: int = 8192) -> NgramFeatures:
    """Hashed 1..``ngrams``-gram counts of every text, computed chunk by chunk.

    Each distinct token and bigram is hashed once over the whole call (longer n-grams once per
    chunk); counting is done by numpy and scipy.sparse. Memory beyond the result is O(tokens in one
    chunk + distinct tokens and bigrams).

    Args:
        texts: N strings.
        num_buckets: B, the number of hash buckets.
        ngrams: the largest n (2: unigrams and bigrams, as the package's default).
        tokenizer: "wordpunct" (as recent nltk) or "wordpunct-re" (as older nltk); see ``_word_punct``.
        chunk_size: texts per chunk.
    """
    tokenize_one = _tokenizer_function(tokenizer)
    vocab: dict[str, int] = {}  # token -> dense id over the whole call
    words: list[str] = []  # id -> token
    token_buckets = np.zeros(0, dtype=np.int64)  # id -> bucket
    bigram_cache = _BucketCache()  # key id_a * 2**31 + id_b -> bucket
    blocks, lengths = [], np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start:start + chunk_size]
        tokens = [tokenize_one(t.lower()) for t in chunk]
        doc_lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        lengths[start:start + len(chunk)] = doc_lengths
        flat = list(chain.from_iterable(tokens))
        new_words = [w for w in dict.fromkeys(flat) if w not in vocab]
        if new_words:
            vocab.update(zip(new_words, range(len(words), len(words) + len(new_words))))
            words.extend(new_words)
            token_buckets = np.concatenate([token_buckets, _hash_strings(new_words, num_buckets)])
            if len(words) >= 2**31:
                raise ValueError("more than 2**31 distinct tokens; DSIR's features cannot index them")
        ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))  # (T,)
        doc_of_token = np.repeat(np.arange(len(chunk), dtype=np.int64), doc_lengths)  # (T,)
        position = np.arange(len(ids), dtype=np.int64) - np.repeat(np.cumsum(doc_lengths) - doc_lengths, doc_lengths)
        remaining = np.repeat(doc_lengths, doc_lengths) - position  # tokens from here to the end of the text
        rows, cols = [doc_of_token], [token_buckets[ids]]
        # The n-gram of order i starting at p is the pair (its (i-1)-gram at p, the token at p+i-1),
        # and its text is that (i-1)-gram's text, a space and the token: the package's ' '.join(ngram).
        gram_ids, gram_texts = ids, None  # ids of the previous order's n-grams, by start position
        for order in range(2, ngrams + 1):
            starts = np.flatnonzero(remaining >= order)  # (G,)
            if len(starts) == 0:
                break
            last = ids[starts + order - 1]
            if order == 2:
                keys = (gram_ids[starts] << 31) | last
                unique_keys, inverse = np.unique(keys, return_inverse=True)
                buckets, where = bigram_cache.lookup(unique_keys)
                need = buckets < 0 if ngrams == 2 else np.ones(len(unique_keys), dtype=bool)
                left, right = unique_keys[need] >> 31, unique_keys[need] & (2**31 - 1)
                strings = [f"{words[a]} {words[b]}" for a, b in zip(left.tolist(), right.tolist())]
                missing = buckets < 0
                if ngrams == 2:
                    buckets[missing] = _hash_strings(strings, num_buckets)
                else:  # every bigram's text is needed to build the trigrams'
                    buckets[missing] = _hash_strings([s for s, m in zip(strings, missing) if m], num_buckets)
                bigram_cache.insert(where[missing], unique_keys[missing], buckets[missing])
            else:  # previous ids are dense per chunk, so keys stay small
                keys = gram_ids[starts] * len(words) + last
                if (int(gram_ids[starts].max()) + 1) * len(words) >= 2**63:
                    raise ValueError(f"too many distinct {order}-grams to index; use a smaller chunk_size")
                unique_keys, inverse = np.unique(keys, return_inverse=True)
                left, right = np.divmod(unique_keys, len(words))
                strings = [f"{gram_texts[a]} {words[b]}" for a, b in zip(left.tolist(), right.tolist())]
                buckets = _hash_strings(strings, num_buckets)
            rows.append(doc_of_token[starts])
            cols.append(buckets[inverse])
            gram_ids = np.zeros(len(ids), dtype=np.int64)  # positions starting no n-gram are never read
            gram_ids[starts] = inverse
            gram_texts = strings
        r, c = np.concatenate(rows), np.concatenate(cols)
        block = sp.coo_matrix((np.ones(len(r), dtype=np.int64), (r, c)), shape=(len(chunk), num_buckets))
        blocks.append(block.tocsr())  # duplicates summed
    counts = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, num_buckets), dtype=np.int64)
    return NgramFeatures(counts=counts, lengths=lengths)


@dataclass(frozen=True)
class NgramCounter:
    """DSIR's per-chunk stage (a picklable worker factory): texts -> their :class:`NgramFeatures`."""

    num_buckets: int
    ngrams: int
    tokenizer: str

    def __call__(self) -> Callable[[Sequence[str]], NgramFeatures]:
        return partial(hashed_ngram_features, num_buckets=self.num_buckets, ngrams=self.ngrams,
                       tokenizer=self.tokenizer)


def shard_features(ts: TextSet, counter: NgramCounter, executor: Executor | None = None) -> NgramFeatures:
    """:func:`hashed_ngram_features` of ``ts.texts``, one chunk per shard of ``ts`` (one for a single
    file), run on ``executor`` (default: here) and stacked in row order; equal to one call on all texts."""
    executor = LocalExecutor() if executor is None else executor
    stage = Stage(name="dsir features", key=f"dsir:{counter.num_buckets}:{counter.ngrams}:{counter.tokenizer}",
                  factory=counter)
    sizes = [int(s["rows"]) for s in ts.extra.get("shards", [])]
    if sum(sizes) != len(ts):  # not sharded (or a set derived from one): one chunk
        sizes = [len(ts)]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    chunks = ((k, ts.texts[bounds[k]:bounds[k + 1]]) for k in range(len(sizes)))
    parts = [features for _, features in executor.map(stage, chunks)]
    if len(parts) == 1:
        return parts[0]
    return NgramFeatures(counts=sp.vstack([p.counts for p in parts], format="csr"),
                         lengths=np.concatenate([p.lengths for p in parts]))


def _save_features(f, features: NgramFeatures) -> None:
    c = features.counts.tocsr()
    np.savez(f, data=c.data, indices=c.indices, indptr=c.indptr, shape=np.asarray(c.shape), lengths=features.lengths)


def _load_features(path) -> NgramFeatures:
    with np.load(path, allow_pickle=False) as z:
        counts = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(v) for v in z["shape"]))
        return NgramFeatures(counts=counts, lengths=z["lengths"])


@dataclass
class PoolFeatures:
    """The pool's features chunk by chunk: the raw bucket totals and lengths of all rows, and each chunk's
    counts, in memory or read back from its saved file."""

    store: ChunkStore
    totals: np.ndarray  # (B,) int64 counts over the pool
    lengths: np.ndarray  # (N,)
    held: list[NgramFeatures] | None  # the chunks, where there is no store folder
    count: int = 1

    @classmethod
    def count(cls, ts: TextSet, counter: NgramCounter, executor: Executor | None, cache_dir, chunk_rows: int
              ) -> "PoolFeatures":
        from pathlib import Path

        from tunesift.embed import texts_key

        executor = LocalExecutor() if executor is None else executor
        setting = f"dsir:{counter.num_buckets}:{counter.ngrams}:{counter.tokenizer}"
        folder = None if cache_dir is None else \
            Path(cache_dir) / "dsir" / f"{texts_key(setting, ts.texts)}.chunks-{chunk_rows}"
        store = ChunkStore(folder, _save_features, _load_features, ".npz", "dsir features", rows=chunk_rows)
        stage = Stage(name="dsir features", key=setting, factory=counter)
        count = max(-(-len(ts) // chunk_rows), 1)
        totals, lengths = np.zeros(counter.num_buckets, dtype=np.int64), []
        held = [] if folder is None else None
        for _, features in store.map(stage, count, lambda k: ts.texts[k * chunk_rows:(k + 1) * chunk_rows], executor):
            totals += np.asarray(features.counts.sum(axis=0), dtype=np.int64).ravel()
            lengths.append(features.lengths)
            if held is not None:
                held.append(features)
        return cls(store=store, totals=totals, lengths=np.concatenate(lengths), held=held, count=count)

    def chunks(self) -> Iterator[NgramFeatures]:
        if self.held is not None:
            yield from self.held
        else:
            for k in range(self.count):
                yield self.store.load(k)

    def log_importance_weights(self, log_diff: np.ndarray) -> np.ndarray:
        """(N,) :func:`log_importance_weights` of every row, chunk by chunk."""
        out = np.concatenate([log_importance_weights(c.counts, log_diff) for c in self.chunks()])
        if out.shape != self.lengths.shape:
            raise ValueError(f"{self.store.folder}: the saved DSIR feature chunks cover {out.size} rows, expected "
                             f"{self.lengths.size}; delete that folder to count them again")
        return out


def bucket_distribution(counts: sp.spmatrix | np.ndarray) -> np.ndarray:
    """(B,) normalised total counts over the rows of an (N, B) count matrix (the package's ``_fit_bow``),
    or of its (B,) column totals."""
    total = np.asarray(counts if np.ndim(counts) == 1 else counts.sum(axis=0), dtype=np.float64).ravel()
    mass = total.sum()
    return total / mass if mass > 0 else total


def log_ratio(target_probs: np.ndarray, raw_probs: np.ndarray, smoothing: float = 1e-8) -> np.ndarray:
    """(B,) ``log(p_target + ε) − log(p_raw + ε)``, the package's ``log_diff``."""
    return np.log(target_probs + smoothing) - np.log(raw_probs + smoothing)


def log_importance_weights(counts: sp.spmatrix, log_diff: np.ndarray) -> np.ndarray:
    """(N,) ``counts @ log_diff``: the naive-Bayes log importance weight of each row."""
    return np.asarray(counts @ log_diff, dtype=np.float64).ravel()


def sampling_order(log_weights: np.ndarray, rng: np.random.Generator | None,
                   ranked_last: np.ndarray | None = None) -> np.ndarray:
    """(N,) the order in which sampling without replacement with probabilities ∝ exp(log w) picks rows.

    Gumbel top-k (Kool et al. 2019): sorting ``log w + G`` (G i.i.d. standard Gumbel) decreasingly
    gives the order of successive draws without replacement, so every prefix of length k is a
    without-replacement sample of size k (what the package's ``resample`` draws with ``top_k=False``).

    Args:
        log_weights: (N,) log importance weights.
        rng: the noise source; None sorts by weight without noise (the package's ``top_k=True``).
        ranked_last: (N,) bool, rows placed after all others (each group keeps its own order).
    """
    keys = np.asarray(log_weights, dtype=np.float64)
    if rng is not None:
        keys = keys + rng.gumbel(size=len(keys))
    last = np.zeros(len(keys), dtype=bool) if ranked_last is None else np.asarray(ranked_last, dtype=bool)
    return np.lexsort((-keys, last)).astype(np.int64)  # stable: equal keys keep row order


@POOL_METHODS.register("dsir")
@dataclass
class DSIRSelection(PoolMethod):
    """DSIR on hashed n-grams (see the module docstring).

    Scores are the log importance weights (higher = keep); the order is one Gumbel top-k sample
    (``gumbel=False``: deterministic top-k by weight, the package's ``top_k=True``).
    """

    num_buckets: int = 10_000  # the package's and the paper's default
    ngrams: int = 2  # unigrams + bigrams, as in the paper
    smoothing: float = 1e-8  # ε added to both probabilities inside the log, as the package does
    min_length: int = 0  # shorter texts go last (the package drops them; its 100 suits Pile documents)
    gumbel: bool = True  # sample ∝ w without replacement; False: sort by w
    tokenizer: str = "wordpunct"  # as recent nltk behind data-selection; "wordpunct-re": as older nltk

    name: ClassVar[str] = "dsir"
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {
        "num_buckets": ("--dsir-buckets", "DSIR: hash buckets of the n-gram features"),
        "ngrams": ("--dsir-ngrams", "DSIR: largest n of the hashed n-grams"),
        "smoothing": ("--dsir-smoothing", "DSIR: ε in log(p + ε) of both distributions"),
        "min_length": ("--dsir-min-length", "DSIR: pool texts with fewer tokens are ranked last"),
        "tokenizer": ("--dsir-tokenizer", "DSIR: wordpunct (as recent nltk, `regex` engine) or "
                      "wordpunct-re (as older nltk, stdlib re)"),
        "gumbel": ("--dsir-gumbel", "DSIR: sample ∝ importance weight (Gumbel top-k); --no-dsir-gumbel "
                   "sorts by weight"),
    }

    def __post_init__(self) -> None:
        for name in ("num_buckets", "ngrams"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an integer of at least 1, got {value!r}")
        if not isinstance(self.min_length, (int, np.integer)) or isinstance(self.min_length, bool) \
                or self.min_length < 0:
            raise ValueError(f"`min_length` must be a non-negative integer, got {self.min_length!r}")
        if isinstance(self.smoothing, bool) or not isinstance(self.smoothing, (int, float)) \
                or not np.isfinite(self.smoothing) or self.smoothing <= 0:
            raise ValueError(f"`smoothing` must be a positive number, got {self.smoothing!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"`tokenizer` must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if not isinstance(self.gumbel, (bool, np.bool_)):
            raise ValueError(f"`gumbel` must be True or False, got {self.gumbel!r}")

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        with ctx.timer.stage("dsir_features") if ctx.timer is not None else nullcontext():
            counter = NgramCounter(self.num_buckets, self.ngrams, self.tokenizer)
            pool_features = PoolFeatures.count(pool, counter, ctx.executor, ctx.cache_dir, ctx.chunk_rows)
            target_features = shard_features(target, counter, ctx.executor)
        target_probs = bucket_distribution(target_features.counts)
        raw_probs = bucket_distribution(pool_features.totals)
        if not target_probs.any():
            raise ValueError(f"{target.path}: the target texts contain no tokens; DSIR has nothing to fit")
        log_diff = log_ratio(target_probs, raw_probs, self.smoothing)
        log_w = pool_features.log_importance_weights(log_diff)
        short = pool_features.lengths < self.min_length
        order = sampling_order(log_w, ctx.rng if self.gumbel else None, ranked_last=short)
        info = {
            "pool_ngrams": int(pool_features.totals.sum()),
            "target_ngrams": int(target_features.counts.sum()),
            "buckets_used_by_target": int(np.count_nonzero(target_probs)),
            "short_rows_ranked_last": int(short.sum()),
            "log_importance": {"min": float(log_w.min()), "median": float(np.median(log_w)),
                               "max": float(log_w.max())},
        }
        budget_rows = order[:ctx.budget]
        info["selected_mean_log_importance"] = float(log_w[budget_rows].mean())
        # the picks are a Gumbel top-k sample ∝ exp(log_w), not a sort by it: `score` says the order
        return Ranking(scores=scores_from_order(order), order=order, columns={"log_importance": log_w}, info=info)
