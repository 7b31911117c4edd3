"""The execution seam: run one per-example stage over chunks of rows and get the results back in order.

A *stage* is work done independently on each chunk of a pool (embedding its texts, counting its
n-grams). It travels as a :class:`Stage`: a picklable *factory* that builds the stage's worker (a
callable ``chunk -> result``), so an executor that runs chunks in other processes builds the worker
once per process — a model is loaded once, then embeds many chunks. Stages hand their chunks to an
:class:`Executor` and do not know which one runs them; the executor is chosen once, by the caller
(``--ray``), and its implementations are registered in ``tunesift.registry.EXECUTORS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence


@dataclass(frozen=True)
class Stage:
    """A per-example stage, as an executor runs it.

    Attributes:
        name: what the stage does, for logs and errors ("embedding (hf-mean:…)", "dsir features").
        key: workers built for one key are interchangeable: an executor may keep them for the next
            stage with the same key (the pool's and then the target's embedding share a loaded model).
        factory: builds the worker, ``factory() -> (chunk -> result)``; called once per worker
            process, so it must be picklable where chunks run elsewhere (a class instance or a
            module-level function with its arguments, not a lambda over live models).
        gpus: GPUs each worker needs where the executor places workers itself (Ray); 0 = none.
    """

    name: str
    key: str
    factory: Callable[[], Callable[[Any], Any]]
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"`gpus` must be non-negative, got {self.gpus!r}")


class Placed:
    """Stateful workers, one per part of a job, kept between rounds (see :meth:`Executor.place`).

    ``call(method, *args)`` runs ``worker.method(*args)`` on every worker and returns the results in
    part order; the arguments are sent once to all of them. ``close()`` releases the workers.
    """

    def call(self, method: str, *args: Any) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Placed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ChunkError(RuntimeError):
    """A chunk failed in a worker process; the message names the stage, the chunk and the cause.

    Attributes:
        stage: the stage's name.
        index: the chunk's index, as the stage numbered it.
    """

    def __init__(self, stage: str, index: int, cause: str, where: str = "a worker"):
        super().__init__(f"{stage}: chunk {index} failed in {where}: {cause}")
        self.stage = stage
        self.index = index


class Executor:
    """Runs a stage over chunks: ``map(stage, chunks)`` yields ``(index, result)`` in the order given.

    ``chunks`` is consumed lazily (an executor keeps only a few chunks in flight), so it may be a
    generator that slices a large pool; results come back in input order whatever order the workers
    finish in, so a caller can save each result as it arrives and a killed run loses only the chunks
    not yet returned. An executor is a context manager: ``close()`` releases its workers. ``place`` keeps stateful
    workers for jobs that go in rounds (an iterative solve over parts of the pool).
    """

    name: ClassVar[str] = ""

    def map(self, stage: Stage, chunks: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        """Args:
            stage: what to run on each chunk.
            chunks: ``(index, chunk)`` pairs; the index names the chunk in logs and errors.

        Yields:
            ``(index, stage's result on that chunk)``, in the order of ``chunks``.
        """
        raise NotImplementedError

    def parallelism(self) -> int:
        """How many workers a job split into parts can use at once (1: here, one after the other)."""
        return 1

    def place(self, name: str, factories: Sequence[Callable[[], Any]], gpus: float = 0.0) -> Placed:
        """Build one stateful worker per factory (where the executor runs work) and keep it for rounds of
        calls, e.g. the parts of an iterative solve that each hold their rows (:mod:`tunesift.ot.parts`).

        Args:
            name: what the workers do, for logs and errors.
            factories: one per part; each builds its worker where it runs (picklable where that is
                another process).
            gpus: GPUs each worker needs where the executor places workers itself (Ray).
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the manifest records about where the stages ran."""
        return {"name": self.name}

    def close(self) -> None:
        """Release the workers (and whatever the executor started to run them)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
