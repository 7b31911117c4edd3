"""Confidence intervals and paired tests for "method A beats method B" on the same test examples.

A bench measures a per-example metric (Recall@10 of each test user, correctness of each test text) for
every method and seed, always on the same N test examples. This module turns those values into a mean
with a percentile-bootstrap confidence interval, and into the **paired** difference between two methods
with its interval, a p-value and the minimum detectable effect (methods.md §3).

For values ``a`` of shape (Sa, N) and ``b`` of shape (Sb, N), with ``ā_n`` the mean over a's seeds of
example n, the paired difference and its bootstrap replicates are (Efron & Tibshirani 1993, *An
Introduction to the Bootstrap*, ch. 13 and §16.4)::

    δ̂  = (1/N) Σ_n (ā_n − b̄_n)
    δ*_r = (1/N) Σ_n (ā_{I_rn} − b̄_{I_rn}),   I_rn ~ Uniform{0, …, N−1},  r = 1 … n_boot

The same resampled examples ``I_r`` serve every seed and both methods (that is the pairing: an example
that is hard for one method is hard for the other, and that shared variance cancels). The interval is
the percentile interval of ``δ*``; the p-value is the two-sided shift-method test of δ = 0,
``p = (1 + #{r : |δ*_r − δ̂| ≥ |δ̂|}) / (n_boot + 1)``; the minimum detectable effect is
``(z_{1−α/2} + z_power) · se`` (≈ 2.80 · se at 95% and 80% power), ``se`` the bootstrap standard error.

What the interval covers: which test examples were drawn, and the seed noise of each example's value
(averaged over seeds). It does not cover a shift shared by all examples of one seed (one seed's model
being better everywhere). That run-to-run variation is what ``seed_paired_difference`` measures: the
runs of two methods with the same seed are paired, and the mean of their S differences of the metric
(each a mean over the N examples) gets a Student-t interval and a paired t-test with S − 1 degrees of
freedom (Student 1908; ``scipy.stats.ttest_rel`` on the run means). With 2–3 seeds that interval is
wide, which is the point: it shows how little a handful of runs says about methods as a whole.

Cost: O(n_boot · N) time and O(chunk · N) memory. Resamples are drawn ``chunk`` at a time as an index
matrix ``rng.integers(0, N, size=(chunk, N))`` (by default at most ~4M indices, i.e. ~64 MiB with the
gathered values); N = 10,000 and n_boot = 10,000 take about 0.6 s on one core. The results do not depend
on the chunk size: numpy's Generator draws the same index stream whatever the chunking.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "Comparison",
    "Estimate",
    "PairedDifference",
    "SeedPairedDifference",
    "bootstrap_mean",
    "compare_methods",
    "holm",
    "markdown",
    "paired_difference",
    "paired_section",
    "run_means",
    "seed_comparisons",
    "seed_markdown",
    "seed_paired_difference",
    "significant_differences",
]

# Indices drawn per chunk when chunk_size is None: 2**22 int64 indices plus as many gathered float64
# values is 64 MiB, whatever N is.
_CHUNK_ELEMENTS = 2**22


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A metric's mean over test examples (pooled over seeds) with its bootstrap interval.

    Attributes:
        mean: mean over examples of the seed-averaged per-example value.
        low, high: percentile-bootstrap interval at ``confidence``.
        se: bootstrap standard error (std of the bootstrap means, ddof=1).
        n_examples: N, the number of test examples.
        n_seeds: S, the number of seeds averaged per example.
        confidence: the interval's coverage, e.g. 0.95.
        n_boot: the number of bootstrap resamples.
    """

    mean: float
    low: float
    high: float
    se: float
    n_examples: int
    n_seeds: int
    confidence: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Difference:
    """A difference between two methods with its interval and p-value (the fields both tests share)."""

    diff: float
    low: float
    high: float
    se: float
    p_value: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (the only case a table may say "better" or "worse")."""
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


@dataclass(frozen=True)
class PairedDifference(_Difference):
    """The paired difference ``mean(a) − mean(b)`` of two methods on the same test examples.

    Attributes:
        diff: δ̂, mean over examples of (a's seed mean − b's seed mean).
        low, high: percentile-bootstrap interval of δ at ``confidence``.
        se: bootstrap standard error of δ̂.
        p_value: two-sided bootstrap (shift-method) p-value of δ = 0; at least ``1 / (n_boot + 1)``.
        mde: minimum detectable effect, ``(z_{1−α/2} + z_power) · se`` with α = 1 − confidence: the
            smallest true |δ| this run would call significant with probability ``power``.
        n_examples: N.
        n_seeds_a, n_seeds_b: seeds averaged for each method.
        confidence, power, n_boot: the settings behind the numbers above.
        significant: (property) whether the interval excludes 0.
    """

    mde: float
    n_examples: int
    n_seeds_a: int
    n_seeds_b: int
    confidence: float
    power: float
    n_boot: int


@dataclass(frozen=True)
class Comparison:
    """One method's estimate and its paired differences to the references (method − reference).

    Attributes:
        method: the method's name.
        estimate: its metric's mean and interval.
        differences: reference name -> paired difference ``method − reference``, in the order the
            references were given; references absent from the data, and the method itself, are left out.
    """

    method: str
    estimate: Estimate
    differences: dict[str, PairedDifference] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "estimate": self.estimate.to_dict(),
            "differences": {ref: d.to_dict() for ref, d in self.differences.items()},
        }


@dataclass(frozen=True)
class SeedPairedDifference(_Difference):
    """The mean over seeds of ``run_a(s) − run_b(s)``, the two methods' runs with the same seed s.

    Attributes:
        diff: d̄, the mean of the per-seed differences of the run-level metric.
        low, high: Student-t interval ``d̄ ± t_{1−α/2, S−1} · sd / √S`` at ``confidence``.
        se: ``sd / √S`` (sd with ddof=1).
        p_value: two-sided paired t-test of δ = 0 (1.0 when every difference is exactly 0).
        seeds: the seeds both methods ran, in increasing order (S = len(seeds) >= 2).
        differences: the per-seed differences, in the order of ``seeds``.
        confidence: the interval's coverage.
        significant: (property) whether the interval excludes 0.
    """

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "seeds": list(self.seeds), "differences": list(self.differences)}


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def _as_values(values: Any, name: str) -> np.ndarray:
    """``values`` as a float (S, N) array; a 1-D (N,) array is one seed."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a numeric array of shape (S, N) or (N,): {e}") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (S, N) (seeds x examples) or (N,), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"`{name}` is empty (shape {x.shape}); it needs at least one seed and two examples")
    if x.shape[1] < 2:
        raise ValueError(f"`{name}` needs at least two examples to bootstrap, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        s, n = np.argwhere(bad)[0]
        raise ValueError(
            f"`{name}` must be finite; it holds {int(bad.sum())} NaN/inf value(s), the first at "
            f"seed {s}, example {n} ({x[s, n]})"
        )
    return x


def _check_settings(n_boot: Any, confidence: Any, seed: Any, chunk_size: Any, power: Any = 0.8) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 100:
        raise ValueError(f"`n_boot` must be an integer >= 100, got {n_boot!r}")
    for name, v in (("confidence", confidence), ("power", power)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 < float(v) < 1.0:
            raise ValueError(f"`{name}` must be a number strictly between 0 and 1, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size!r}")


def _same_examples(shapes: Mapping[str, tuple[int, int]]) -> int:
    """The common N of several (S, N) arrays; ValueError naming the first that differs."""
    items = list(shapes.items())
    first_name, first_shape = items[0]
    for name, shape in items[1:]:
        if shape[1] != first_shape[1]:
            raise ValueError(
                f"`{name}` has {shape[1]} examples (shape {shape}) but `{first_name}` has "
                f"{first_shape[1]} (shape {first_shape}); paired statistics need the same test examples"
            )
    return first_shape[1]


# ---------------------------------------------------------------------------------------------------
# Bootstrap core
# ---------------------------------------------------------------------------------------------------


def _seed_mean(x: np.ndarray) -> np.ndarray:
    """(S, N) -> (N,) mean over seeds; an example with identical seeds keeps its value exactly, so
    identical methods differ by exactly 0 (0.1 averaged over three seeds is not 0.1 in floating point)."""
    mean = x.mean(axis=0)
    same = (x == x[0]).all(axis=0)
    mean[same] = x[0, same]
    return mean


def _chunk(n_examples: int, n_boot: int, chunk_size: int | None) -> int:
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // n_examples)
    return min(int(chunk_size), n_boot)


def _bootstrap_means(rows: np.ndarray, n_boot: int, seed: int, chunk_size: int | None) -> np.ndarray:
    """Bootstrap means of several per-example vectors, all resampled with the same example indices.

    Args:
        rows: shape (K, N), K vectors over the same N examples.
    Returns:
        shape (K, n_boot): entry (k, r) is the mean of ``rows[k]`` over the r-th resample of examples.
    """
    k, n = rows.shape
    chunk = _chunk(n, n_boot, chunk_size)
    rng = np.random.default_rng(seed)
    out = np.empty((k, n_boot))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))  # (chunk, N): row r = examples of resample start + r
        for j in range(k):
            out[j, start:start + size] = np.take(rows[j], idx).mean(axis=1)
    return out


def _interval(boot: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(low, high, se) of one row of bootstrap statistics."""
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1.0 - alpha / 2])
    if boot[0] == boot[-1] and (boot == boot[0]).all():  # constant: exactly 0, not a rounding residue
        return float(boot[0]), float(boot[0]), 0.0
    return float(low), float(high), float(np.std(boot, ddof=1))


def _z_sum(confidence: float, power: float) -> float:
    """z_{1−α/2} + z_power (standard normal quantiles; 1.95996 + 0.84162 = 2.80158 at 95% / 80%)."""
    normal = NormalDist()
    return normal.inv_cdf(1.0 - (1.0 - confidence) / 2) + normal.inv_cdf(power)


def _estimate(mean: float, boot: np.ndarray, shape: tuple[int, int], confidence: float, n_boot: int) -> Estimate:
    low, high, se = _interval(boot, confidence)
    return Estimate(mean=mean, low=low, high=high, se=se, n_examples=shape[1], n_seeds=shape[0],
                    confidence=float(confidence), n_boot=int(n_boot))


def _difference(diff: float, boot: np.ndarray, shape_a: tuple[int, int], shape_b: tuple[int, int],
                confidence: float, power: float, n_boot: int) -> PairedDifference:
    low, high, se = _interval(boot, confidence)
    extreme = int(np.count_nonzero(np.abs(boot - diff) >= abs(diff)))  # shift method: H0 centres δ* on 0
    return PairedDifference(
        diff=diff, low=low, high=high, se=se, p_value=(1 + extreme) / (n_boot + 1),
        mde=_z_sum(confidence, power) * se, n_examples=shape_a[1], n_seeds_a=shape_a[0],
        n_seeds_b=shape_b[0], confidence=float(confidence), power=float(power), n_boot=int(n_boot),
    )


# ---------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------


def bootstrap_mean(values: Any, n_boot: int = 10000, confidence: float = 0.95, seed: int = 0,
                   chunk_size: int | None = None) -> Estimate:
    """Mean of a per-example metric over test examples, pooled over seeds, with a bootstrap interval.

    Args:
        values: shape (S, N), the metric of each of N test examples under each of S seeds; shape (N,)
            means one seed.
        n_boot: bootstrap resamples (>= 100).
        confidence: the interval's coverage, in (0, 1).
        seed: seeds the numpy Generator that draws the resamples (same seed, same resamples).
        chunk_size: resamples drawn at a time (memory ~16 · chunk_size · N bytes); None picks one that
            keeps a chunk near 64 MiB. The result does not depend on it.
    Returns:
        ``Estimate``: the mean over examples of the seed means, its percentile interval from resampling
        examples (the same examples for every seed) and its bootstrap standard error.
    """
    _check_settings(n_boot, confidence, seed, chunk_size)
    x = _as_values(values, "values")
    per_example = _seed_mean(x)  # (N,): resampling the same examples for every seed = resampling these
    boot = _bootstrap_means(per_example[None, :], n_boot, seed, chunk_size)[0]
    return _estimate(float(per_example.mean()), boot, x.shape, confidence, n_boot)


def paired_difference(a: Any, b: Any, n_boot: int = 10000, confidence: float = 0.95, seed: int = 0,
                      power: float = 0.8, chunk_size: int | None = None) -> PairedDifference:
    """Paired bootstrap of ``mean(a) − mean(b)`` for two methods measured on the same test examples.

    Args:
        a: shape (Sa, N) or (N,), method a's metric per seed and example.
        b: shape (Sb, N) or (N,), method b's metric on the same N examples, in the same order; Sb may
            differ from Sa (e.g. 3 seeds against 1).
        n_boot: bootstrap resamples (>= 100); the smallest p-value is ``1 / (n_boot + 1)``.
        confidence: the interval's coverage, in (0, 1); α = 1 − confidence for the MDE.
        seed: seeds the numpy Generator that draws the resamples.
        power: the power the minimum detectable effect is computed for, in (0, 1).
        chunk_size: resamples drawn at a time (see ``bootstrap_mean``).
    Returns:
        ``PairedDifference`` with δ̂, its percentile interval, standard error, two-sided p-value, MDE.
        When every per-example difference is exactly 0: diff 0, interval [0, 0], se 0, p-value 1.
    """
    _check_settings(n_boot, confidence, seed, chunk_size, power)
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    _same_examples({"a": xa.shape, "b": xb.shape})
    d = _seed_mean(xa) - _seed_mean(xb)  # (N,) per-example paired differences
    boot = _bootstrap_means(d[None, :], n_boot, seed, chunk_size)[0]
    return _difference(float(d.mean()), boot, xa.shape, xb.shape, confidence, power, n_boot)


def compare_methods(per_example: Mapping[str, Any], references: Sequence[str], n_boot: int = 10000,
                    confidence: float = 0.95, seed: int = 0, power: float = 0.8,
                    chunk_size: int | None = None) -> list[Comparison]:
    """Every method's estimate and its paired difference to each reference (e.g. "random", "full").

    All statistics share one stream of resamples (common random numbers): each number is exactly what
    ``bootstrap_mean`` / ``paired_difference`` return with the same ``seed``, and the example indices
    are drawn once instead of once per pair.

    Args:
        per_example: method name -> its metric, shape (S, N) or (N,), on the same N test examples
            (S may differ between methods).
        references: the methods to compare against (a single name is accepted); those absent from
            ``per_example`` are skipped, and a method is not compared with itself.
        n_boot, confidence, seed, power, chunk_size: as in ``paired_difference``.
    Returns:
        One ``Comparison`` per method, in ``per_example``'s order.
    """
    _check_settings(n_boot, confidence, seed, chunk_size, power)
    if not isinstance(per_example, Mapping) or not per_example:
        raise ValueError("`per_example` must be a non-empty mapping of method name -> (S, N) values")
    if isinstance(references, str):
        references = [references]
    if any(not isinstance(r, str) for r in references):
        raise TypeError(f"`references` must be method names (strings), got {list(references)!r}")
    values = {str(m): _as_values(v, f"per_example[{m!r}]") for m, v in per_example.items()}
    _same_examples({f"per_example[{m!r}]": x.shape for m, x in values.items()})
    refs = [r for r in dict.fromkeys(references) if r in values]

    means = {m: _seed_mean(x) for m, x in values.items()}
    rows, keys = [], []  # (K, N) vectors to bootstrap with shared indices, and what each one is
    for m in values:
        rows.append(means[m])
        keys.append((m, None))
        for r in refs:
            if r != m:
                rows.append(means[m] - means[r])
                keys.append((m, r))
    boot = _bootstrap_means(np.stack(rows), n_boot, seed, chunk_size)  # (K, n_boot)

    out: dict[str, Comparison] = {}
    for (m, r), row, b in zip(keys, rows, boot):
        if r is None:
            out[m] = Comparison(m, _estimate(float(row.mean()), b, values[m].shape, confidence, n_boot))
        else:
            out[m].differences[r] = _difference(float(row.mean()), b, values[m].shape, values[r].shape,
                                                confidence, power, n_boot)
    return list(out.values())


def _run_values(values: Any, name: str) -> dict[int, float]:
    """``{seed: run-level metric}`` from a mapping; ValueError naming a bad seed or value."""
    if not isinstance(values, Mapping):
        raise TypeError(f"`{name}` must be a mapping of seed -> the run's metric, got {type(values).__name__}")
    out = {}
    for seed, v in values.items():
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"`{name}` has a seed {seed!r} that is not an integer")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(float(v)):
            raise ValueError(f"`{name}`[{seed}] must be a finite number, got {v!r}")
        out[int(seed)] = float(v)
    return out


def run_means(values: Mapping[str, Any], seeds: Mapping[str, Sequence[int]]) -> dict[str, dict[int, float]]:
    """method -> seed -> the run's mean over examples, from (S, N) per-example values and the seed of
    each row (``seeds[method]``, S of them)."""
    out = {}
    for m, v in values.items():
        x = _as_values(v, f"values[{m!r}]")
        row_seeds = [int(s) for s in seeds[m]]
        if len(row_seeds) != x.shape[0] or len(set(row_seeds)) != len(row_seeds):
            raise ValueError(f"`seeds[{m!r}]` must name the distinct seed of each of the {x.shape[0]} rows of "
                             f"values[{m!r}], got {row_seeds}")
        out[str(m)] = {s: float(row.mean()) for s, row in zip(row_seeds, x)}
    return out


def seed_paired_difference(a: Mapping[int, float], b: Mapping[int, float],
                           confidence: float = 0.95) -> SeedPairedDifference:
    """Paired t-interval over seeds of ``a − b``: each seed's run of a against the same seed's run of b.

    Args:
        a: seed -> method a's run-level metric (e.g. the mean Recall@10 over the test users of that run).
        b: seed -> method b's, on the same test examples; only the seeds in both are paired.
        confidence: the interval's coverage, in (0, 1).
    Returns:
        ``SeedPairedDifference``. ValueError when fewer than two seeds are in both (no spread to estimate).
    """
    _check_settings(100, confidence, 0, None)
    xa, xb = _run_values(a, "a"), _run_values(b, "b")
    seeds = tuple(sorted(set(xa) & set(xb)))
    if len(seeds) < 2:
        raise ValueError(f"a paired t-interval over seeds needs at least two seeds run by both methods; "
                         f"a has seeds {sorted(xa)}, b has {sorted(xb)}")
    d = np.array([xa[s] - xb[s] for s in seeds])
    n, mean = len(d), float(d.mean())
    if (d == d[0]).all() and d[0] == 0.0:
        return SeedPairedDifference(0.0, 0.0, 0.0, 0.0, 1.0, seeds, tuple(d.tolist()), float(confidence))
    from scipy import stats as sps

    se = float(d.std(ddof=1) / np.sqrt(n))
    half = float(sps.t.ppf(1.0 - (1.0 - confidence) / 2, n - 1)) * se
    if se == 0.0:  # every seed moved by the same non-zero amount: no spread, the sign is certain
        p = 0.0
    else:
        p = float(2.0 * sps.t.sf(abs(mean) / se, n - 1))
    return SeedPairedDifference(mean, mean - half, mean + half, se, p, seeds, tuple(d.tolist()), float(confidence))


def seed_comparisons(runs: Mapping[str, Mapping[int, float]], references: Sequence[str],
                     confidence: float = 0.95) -> dict[str, dict[str, SeedPairedDifference]]:
    """method -> reference -> ``seed_paired_difference(method, reference)`` for every pair with two or
    more common seeds (others, and a method against itself, are left out)."""
    if isinstance(references, str):
        references = [references]
    out: dict[str, dict[str, SeedPairedDifference]] = {}
    for m, xm in runs.items():
        for r in dict.fromkeys(references):
            if r == m or r not in runs or len(set(xm) & set(runs[r])) < 2:
                continue
            out.setdefault(m, {})[r] = seed_paired_difference(xm, runs[r], confidence)
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` for testing them together (controls the family-wise error
    rate, uniformly more powerful than Bonferroni): the i-th smallest p becomes the running maximum of
    ``(m − j + 1)·p_(j)`` over j ≤ i, capped at 1. Returned in the order given."""
    p = np.asarray([float(x) for x in p_values], dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError(f"`p_values` must be numbers in [0, 1], got {list(p_values)!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order])) if m else p
    out = np.empty(m)
    out[order] = stepped
    return out.tolist()


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _cell(name: str) -> str:
    return name.replace("|", "\\|")


def difference_text(d: _Difference, digits: int = 4) -> str:
    """``Δ [low, high] p``, the interval in bold where it excludes 0 (a paired or a run-to-run difference)."""
    f = f".{digits}f"
    text = f"{d.diff:+{f}} [{d.low:+{f}}, {d.high:+{f}}]"
    return (f"**{text}**" if d.significant else text) + f" {_p(d.p_value)}"


def holm_by_reference(found: Mapping[str, Mapping[str, _Difference]], references: Sequence[str]
                      ) -> dict[tuple[str, str], float]:
    """(method, reference) -> the p-value Holm-adjusted over the methods compared to that reference."""
    adjusted: dict[tuple[str, str], float] = {}
    for r in references:
        family = [m for m, by_ref in found.items() if r in by_ref]
        adjusted.update(zip(((m, r) for m in family), holm([found[m][r].p_value for m in family])))
    return adjusted


def markdown(comparisons: Sequence[Comparison], metric: str = "metric", digits: int = 4,
             references: Sequence[str] | None = None) -> str:
    """A Markdown table of ``compare_methods``'s results, and the smallest detectable difference.

    One line per method: seeds, ``mean [CI]`` of the metric, and per reference ``Δ [CI] p`` (method −
    reference), in bold where the paired interval excludes 0. Under the table, per reference, the median
    and the max over methods of the minimum detectable effect. The output depends only on the numbers.

    Args:
        comparisons: from ``compare_methods``.
        metric: the metric's name for the header (e.g. "R@10").
        digits: decimals shown.
        references: the order of the Δ columns (default: as first met in ``comparisons``).
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"`digits` must be a non-negative integer, got {digits!r}")
    if not comparisons:
        return "(no methods)\n"
    found = list(dict.fromkeys(r for c in comparisons for r in c.differences))
    refs = [r for r in (references or ()) if r in found] + [r for r in found if r not in (references or ())]
    first = comparisons[0].estimate
    level = f"{100 * first.confidence:g}%"
    f = f".{digits}f"

    head = ["method", "seeds", f"{_cell(metric)} [{level} CI]"] + [f"Δ vs {_cell(r)} [{level} CI]" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in comparisons:
        e = c.estimate
        cells = [_cell(c.method), str(e.n_seeds), f"{e.mean:{f}} [{e.low:{f}}, {e.high:{f}}]"]
        for r in refs:
            d = c.differences.get(r)
            if d is None:
                cells.append("—")
                continue
            cells.append(difference_text(d, digits))
        lines.append("| " + " | ".join(cells) + " |")

    notes = [
        "",
        f"Bootstrap over {first.n_examples} test examples ({first.n_boot} resamples, seeds averaged per "
        f"example); Δ = method − reference, paired; **bold**: the paired {level} CI excludes 0.",
    ]
    if refs:
        power = next(d.power for c in comparisons for d in c.differences.values())
        mdes = []
        for r in refs:
            vals = [c.differences[r].mde for c in comparisons if r in c.differences]
            mdes.append(f"vs {_cell(r)} {float(np.median(vals)):{f}} (median over methods; max {max(vals):{f}})")
        notes.append(f"Smallest detectable difference (two-sided {100 * (1 - first.confidence):g}%, "
                     f"{100 * power:g}% power): " + "; ".join(mdes) + ".")
    return "\n".join(lines + notes) + "\n"


def seed_markdown(runs: Mapping[str, Mapping[int, float]], references: Sequence[str], metric: str = "metric",
                  digits: int = 4, confidence: float = 0.95) -> tuple[str, dict[str, dict[str, dict]]]:
    """A Markdown table of the run-to-run paired differences (``seed_comparisons``) and their numbers.

    One line per method that has a reference with two or more common seeds: per reference the seeds
    paired, ``Δ [t-interval] p`` (bold where the interval excludes 0) and the per-seed differences.
    Returns ("", {}) when no pair has two common seeds.
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"`digits` must be a non-negative integer, got {digits!r}")
    found = seed_comparisons(runs, references, confidence)
    if not found:
        return "", {}
    refs = [r for r in dict.fromkeys(references) if any(r in d for d in found.values())]
    # Holm over the methods compared to one reference: the family a reader scans for "any method differs"
    adjusted = holm_by_reference(found, refs)
    level, f = f"{100 * confidence:g}%", f".{digits}f"
    head = ["method"] + [f"Δ {_cell(metric)} vs {_cell(r)} over seeds [{level} t-interval]" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m, by_ref in found.items():
        cells = [_cell(m)]
        for r in refs:
            d = by_ref.get(r)
            if d is None:
                cells.append("—")
                continue
            per_seed = ", ".join(f"{x:+{f}}" for x in d.differences)
            cells.append(difference_text(d, digits) + f" (Holm {_p(adjusted[m, r])}), {len(d.seeds)} seeds ({per_seed})")
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nRun-to-run: each seed's run paired with the reference's run of the same seed, the metric a "
            f"mean over the test examples of that run; mean of the per-seed differences with a Student-t "
            f"{level} interval and a paired t-test over seeds. **Bold**: the interval excludes 0. Holm: the p-value "
            f"adjusted for the number of methods compared to that reference (family-wise error rate).")
    as_dicts = {m: {r: {**d.to_dict(), "p_holm": adjusted[m, r]} for r, d in by_ref.items()}
                for m, by_ref in found.items()}
    return "\n".join(lines) + "\n" + note + "\n", as_dicts


def significant_differences(comparisons: Sequence[Comparison], digits: int = 4) -> list[str]:
    """``"method vs reference +0.0123 (p=0.004)"`` (``p<0.001`` below that) for every paired difference
    whose interval excludes 0, in the order of ``comparisons`` and of each one's references."""
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"`digits` must be a non-negative integer, got {digits!r}")
    return [f"{c.method} vs {r} {d.diff:+.{digits}f} ({_p(d.p_value)})" for c in comparisons
            for r, d in c.differences.items() if d.significant]


def paired_section(per_example: Mapping[str, Any], seeds: Mapping[str, Sequence[int]], references: Sequence[str],
                   metric: str, heading: str) -> tuple[str, list[dict], dict]:
    """One section of a bench's ``results.md``: the bootstrap table (``compare_methods`` against those of
    ``references`` present, with the significant differences listed) and under it the run-to-run table
    (``seed_markdown`` over the methods in ``seeds``: method -> the seed of each row of its values).

    Returns:
        (markdown, the comparisons as dicts, the run-to-run numbers — {} when no pair shares two seeds).
    """
    refs = [r for r in references if r in per_example]
    comparisons = compare_methods(per_example, refs, seed=0)
    significant = significant_differences(comparisons)
    by_seed, over_seeds = seed_markdown(run_means({m: v for m, v in per_example.items() if m in seeds}, seeds),
                                        refs, metric)
    text = (f"### {heading}\n\n" + markdown(comparisons, metric=metric, references=refs)
            + "Significant (95% CI of the paired difference excludes 0): "
            + ("; ".join(significant) if significant else "none") + ".\n" + ("\n" + by_seed if by_seed else ""))
    return text, [c.to_dict() for c in comparisons], over_seeds
