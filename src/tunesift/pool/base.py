"""The contract every pool method follows (GOT-D and its baselines).

A pool method ranks every pool example for a target: ``rank(pool, target, context) -> Ranking``.
The order is the full ranking, best first, so selections of different budgets are prefixes of one
ranking (as in GOT-D's code). ``scores`` has one meaning for every method: higher = picked earlier, so
sorting by score (descending) gives the order; a method whose own quantity does not (DSIR's Gumbel
sample, kNN's round robin) puts that quantity in a column of its own and takes
:func:`scores_from_order`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from tunesift.io.tables import TextSet
from tunesift.registry import Method


@dataclass
class Ranking:
    """What a pool method returns.

    Attributes:
        scores: (N,) higher = picked earlier: non-increasing along ``order``.
        order: (N,) permutation of the pool, best first.
        columns: extra (N,) columns for scores.parquet (e.g. ``gradient`` for GOT-D).
        info: entries for the manifest (solver convergence, domains kept, ...).
    """

    scores: np.ndarray
    order: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a method may use besides the two text sets.

    ``embed(textset, role, indices=None)`` returns float32 embeddings of ``textset`` (or of its rows
    ``indices``), shape (n, d), cached on disk; ``role`` is "pool" or "target" so precomputed arrays
    can be used. ``timer`` records stage times. ``executor`` runs per-example stages chunk by chunk
    (:mod:`tunesift.executor`; None: here, in order). ``cache_dir`` is where those stages save their
    finished chunks (:mod:`tunesift.io.chunks`; None: nothing is saved), ``chunk_rows`` rows per chunk.
    """

    rng: np.random.Generator
    budget: int
    embed: Callable[..., np.ndarray] | None = None
    timer: Any = None
    device: str = "cpu"
    progress: bool = True
    executor: Any = None
    cache_dir: Any = None
    chunk_rows: int = 65536


class PoolMethod(Method):
    """Base class of pool methods (settings, CLI flags: :class:`tunesift.registry.Method`)."""

    uses_embeddings: ClassVar[bool] = False

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        raise NotImplementedError


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; ties broken by index (stable), so runs are deterministic."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def scores_from_order(order: np.ndarray) -> np.ndarray:
    """(N,) scores that say only the order: 1 for the first row of ``order`` down to 0 for the last
    (evenly spaced; 1 for a single row)."""
    order = np.asarray(order, dtype=np.int64)
    scores = np.empty(len(order), dtype=np.float64)
    scores[order] = np.linspace(1.0, 0.0, len(order)) if len(order) > 1 else 1.0
    return scores
