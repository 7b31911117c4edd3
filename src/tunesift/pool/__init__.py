"""Pool methods: rank a text pool for a target task (GOT-D, DSIR, kNN, random).

The methods register in ``tunesift.registry.POOL_METHODS``, which lists their modules and imports them
on first use.
"""

from tunesift.pool.base import Context, PoolMethod, Ranking, order_by_score
from tunesift.pool.run import PoolSelection, select_from_pool

__all__ = ["Context", "PoolMethod", "PoolSelection", "Ranking", "order_by_score", "select_from_pool"]
