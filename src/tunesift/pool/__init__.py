"""Pool methods: rank a text pool for a target task (GOT-D, DSIR, kNN, random).

Importing this package registers every method in ``tunesift.registry.POOL_METHODS``.
"""

from tunesift.pool import random as _random  # noqa: F401  (registration)
from tunesift.pool.base import Context, PoolMethod, Ranking, order_by_score
from tunesift.pool.run import PoolSelection, select_from_pool

for _mod in ("gotd", "dsir", "knn", "tsds"):
    try:
        __import__(f"tunesift.pool.{_mod}")
    except ModuleNotFoundError as _e:  # a method whose module is not written yet
        if _e.name != f"tunesift.pool.{_mod}":
            raise

__all__ = ["Context", "PoolMethod", "PoolSelection", "Ranking", "order_by_score", "select_from_pool"]
