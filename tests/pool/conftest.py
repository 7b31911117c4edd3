"""Data shared by the kNN tests."""

import numpy as np
import pytest


@pytest.fixture
def misleading_sample():
    """(pool (640, 6), target (3, 6)) float32 where every 16th pool row (kNN's threshold sample) points
    along the target and the others do not, so the sampled threshold keeps fewer rows than asked for."""
    rng = np.random.default_rng(10)
    n, dim = 640, 6
    direction = np.eye(dim)[0]
    pool = rng.normal(size=(n, dim))
    pool[::16] = direction + 0.2 * rng.normal(size=(n // 16, dim))
    target = direction + 0.05 * rng.normal(size=(3, dim))
    return pool.astype(np.float32), target.astype(np.float32)
