"""Blockwise costs against the dense squared-Euclidean matrix."""

from __future__ import annotations

import pytest
import torch

from tunesift.ot import mean_cost, squared_euclidean
from tunesift.ot.cost import BlockCost


def test_squared_euclidean_matches_cdist():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(squared_euclidean(x, y), torch.cdist(x, y) ** 2)
    assert mean_cost(x, y) == pytest.approx(float((torch.cdist(x, y) ** 2).mean()), rel=1e-12)


@pytest.mark.parametrize("budget", [0, 10**6])
def test_blocks_reproduce_the_dense_cost(budget):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(11, 4, generator=gen, dtype=torch.float64), torch.randn(6, 4, generator=gen, dtype=torch.float64)
    eps = 0.3
    cost = BlockCost(x, y, eps, block_size=4, cost_memory_budget=budget)
    assert cost.is_stored == (budget > 0)
    assert list(cost.blocks()) == [(0, 4), (4, 8), (8, 11)]
    dense = squared_euclidean(x, y)
    shift = torch.randn(6, generator=gen, dtype=torch.float64)
    spread = 0.0
    for start, stop in cost.blocks():
        torch.testing.assert_close(cost.neg_cost(start, stop), -dense[start:stop] / eps)
        scores, row_const = cost.row_scores(start, stop, shift)
        exact = shift[None, :] - dense[start:stop] / eps
        if row_const is not None:
            scores = scores - row_const[:, None]
        torch.testing.assert_close(scores, exact)
        spread = max(spread, float((exact.amax(1) - exact.amin(1)).max()))
    assert cost.row_spread_bound(shift) >= spread - 1e-9
