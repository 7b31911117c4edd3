"""Executors: where per-example stages run (in this process, or on Ray actors).

The executors register in ``tunesift.registry.EXECUTORS`` (which imports their modules on first use);
Ray itself is imported only when a Ray executor first runs a stage.
"""

from __future__ import annotations

from tunesift.executor.base import ChunkError, Executor, Stage
from tunesift.executor.local import LocalExecutor
from tunesift.registry import EXECUTORS


def make_executor(ray: str | None = None, workers: int | None = None) -> Executor:
    """The executor that ``--ray`` / ``--ray-workers`` ask for: local when ``ray`` is None.

    Args:
        ray: None (run here), "local" (a Ray instance started here), "auto" or a cluster address.
        workers: Ray actors per stage; only with ``ray``.
    """
    if ray is None:
        if workers is not None:
            raise ValueError("--ray-workers applies with --ray only")
        return EXECUTORS.get("local")()
    return EXECUTORS.get("ray")(address=ray, workers=workers)


__all__ = ["ChunkError", "Executor", "LocalExecutor", "Stage", "make_executor"]
