"""Uniform random selection: the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunesift.io.tables import TextSet
from tunesift.pool.base import Context, PoolMethod, Ranking
from tunesift.registry import POOL_METHODS


@POOL_METHODS.register("random")
@dataclass
class RandomSelection(PoolMethod):
    name = "random"

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        order = ctx.rng.permutation(len(pool))
        scores = np.empty(len(pool))
        scores[order] = np.linspace(1.0, 0.0, len(pool))  # position in the random order, higher = earlier
        return Ranking(scores=scores, order=order)
