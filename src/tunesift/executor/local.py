"""The default executor: every chunk in this process, one after the other."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

from tunesift.executor.base import Executor, Placed, Stage
from tunesift.registry import EXECUTORS


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """Runs each chunk here, in order, with one worker per stage key (built on first use).

    Nothing is pickled and exceptions propagate unchanged, so a stage run through it behaves as a
    plain loop over its chunks.
    """

    name = "local"

    def __init__(self) -> None:
        self._workers: dict[str, Callable[[Any], Any]] = {}

    def map(self, stage: Stage, chunks: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        worker = self._workers.get(stage.key)
        if worker is None:
            worker = self._workers[stage.key] = stage.factory()
        for index, chunk in chunks:
            yield index, worker(chunk)

    def place(self, name: str, factories: Sequence[Callable[[], Any]], gpus: float = 0.0) -> Placed:
        return LocalPlaced([factory() for factory in factories])

    def close(self) -> None:
        self._workers.clear()


class LocalPlaced(Placed):
    """The workers live here; a call runs them one after the other (nothing is copied or pickled)."""

    def __init__(self, workers: list[Any]):
        self.workers = workers

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(worker, method)(*args) for worker in self.workers]

    def close(self) -> None:
        self.workers = []
