"""Uniform random selection: the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

from tunesift.io.tables import TextSet
from tunesift.pool.base import Context, PoolMethod, Ranking, scores_from_order
from tunesift.registry import POOL_METHODS


@POOL_METHODS.register("random")
@dataclass
class RandomSelection(PoolMethod):
    name = "random"

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        order = ctx.rng.permutation(len(pool))
        return Ranking(scores=scores_from_order(order), order=order)  # the position in the random order
