"""Run per-example stages on a pool of Ray actors (``--ray auto|local|ADDRESS``).

Each actor builds the stage's worker once (``Stage.factory``: e.g. loads the embedder) and then runs
one chunk after another; the driver keeps one chunk in flight per actor and hands the results back
in input order, so the caller saves each finished chunk as it does locally and a killed run resumes
at the first unfinished one. A stage's actors are kept until a stage with another key needs the CPUs
(or :meth:`RayExecutor.close`), so the pool's and the target's embedding share the loaded models.
``ray`` is imported on first use only.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence

from tunesift.executor.base import ChunkError, Executor, Placed, Stage
from tunesift.registry import EXECUTORS

log = logging.getLogger("tunesift")

RAY_MISSING = "--ray needs the ray extra: pip install 'tunesift[ray]'"


def import_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


class StageActor:
    """What runs inside each Ray actor: the stage's worker, built once from its factory."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]):
        self._worker = factory()

    def run(self, chunk: Any) -> Any:
        return self._worker(chunk)


class PlacedActor:
    """What runs inside each Ray actor of :meth:`RayExecutor.place`: one stateful worker."""

    def __init__(self, factory: Callable[[], Any]):
        self._worker = factory()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self._worker, method)(*args)


class RayPlaced(Placed):
    """Workers on Ray actors: a call sends its arguments to the object store once, runs every worker's
    method at once and returns the results in part order."""

    def __init__(self, ray, name: str, actors: list):
        self._ray, self.name, self.actors = ray, name, actors

    def call(self, method: str, *args: Any) -> list[Any]:
        from ray.exceptions import RayError

        refs = [self._ray.put(a) for a in args]
        futures = [actor.call.remote(method, *refs) for actor in self.actors]
        results = []
        for part, future in enumerate(futures):
            try:
                results.append(self._ray.get(future))
            except RayError as e:
                raise ChunkError(f"{self.name} ({method})", part, _summary(e), where="a Ray worker") from e
        return results

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []


def _summary(error: BaseException) -> str:
    """``Type: message`` of what failed in a worker, without Ray's copy of the remote traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):  # an exception raised by the stage's worker
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if getattr(error, "actor_init_failed", getattr(error, "_actor_init_failed", False)) and lines:
        return f"the worker could not start: {lines[-1]}"  # the factory's exception, last in the traceback
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Chunks run on Ray actors, one CPU (and ``Stage.gpus`` GPUs) each.

    Args:
        address: "local" starts a Ray instance on this machine with ``workers`` CPUs (shut down by
            :meth:`close`); "auto" or "HOST:PORT" / "ray://HOST:PORT" connects to a running cluster
            (``ray start --head``). When Ray is already initialised in this process, that instance is
            used and left running.
        workers: actors per stage (default: the instance's CPUs; for a GPU stage, at most its GPUs).
    """

    name = "ray"

    def __init__(self, address: str = "local", workers: int | None = None):
        if not isinstance(address, str) or not address:
            raise ValueError(f"--ray must be auto, local or a cluster ADDRESS, got {address!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"--ray-workers must be at least 1, got {workers!r}")
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # checked now; Ray itself starts on the first stage
            raise ImportError(RAY_MISSING)
        self.address = address
        self.workers = workers
        self._ray = None
        self._started = False
        self._actors: dict[str, list] = {}

    def _connect(self):
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if not ray.is_initialized():
            if self.address == "local":
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False,
                         logging_level=logging.WARNING)
            else:
                try:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise ValueError(f"--ray {self.address}: could not connect to a Ray cluster ({e}); start one "
                                     "with `ray start --head`, or use --ray local") from None
            self._started = True
        self._ray = ray
        return ray

    def _size(self, name: str, gpus: float) -> int:
        """Workers to start (one CPU, ``gpus`` GPUs each): ``--ray-workers``, at most what the instance has."""
        ray = self._connect()
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 0))
        n = self.workers or max(cpus, 1)
        if cpus and n > cpus:
            log.warning("--ray-workers %d: the Ray instance has %d CPUs; starting %d workers", n, cpus, cpus)
            n = cpus
        if gpus:
            have = resources.get("GPU", 0.0)
            if have < gpus:
                raise ValueError(f"{name}: each worker needs {gpus:g} GPU(s) and the Ray instance has "
                                 f"{have:g}; use --device cpu or a cluster with GPUs")
            n = min(n, int(have // gpus))
        return n

    def parallelism(self) -> int:
        return self._size("parallelism", 0.0)

    def place(self, name: str, factories: Sequence[Callable[[], Any]], gpus: float = 0.0) -> Placed:
        ray = self._connect()
        self._release()  # stage actors hold their CPUs
        size = self._size(name, gpus)
        if len(factories) > size:
            raise ValueError(f"{name}: {len(factories)} parts, but the Ray instance runs {size} workers at once; "
                             "split into fewer parts")
        actor_class = ray.remote(num_cpus=1, num_gpus=gpus)(PlacedActor)
        log.info("%s: %d Ray worker(s)%s", name, len(factories), f", {gpus:g} GPU each" if gpus else "")
        return RayPlaced(ray, name, [actor_class.remote(factory) for factory in factories])

    def _pool_for(self, stage: Stage) -> list:
        """The stage's actors, started on first use: one CPU each, ``stage.gpus`` GPUs each."""
        if stage.key in self._actors:
            return self._actors[stage.key]
        ray = self._connect()
        self._release()  # actors hold their CPUs: another stage's would leave none for this one
        n = self._size(stage.name, stage.gpus)
        actor_class = ray.remote(num_cpus=1, num_gpus=stage.gpus)(StageActor)
        actors = [actor_class.remote(stage.factory) for _ in range(n)]
        self._actors[stage.key] = actors
        log.info("%s: %d Ray worker(s)%s", stage.name, n, f", {stage.gpus:g} GPU each" if stage.gpus else "")
        return actors

    def map(self, stage: Stage, chunks: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        from ray.exceptions import RayError
        from ray.util import ActorPool

        pool = ActorPool(self._pool_for(stage))
        items = iter(chunks)
        in_flight: deque[int] = deque()  # chunk indices, in submission (= result) order

        def submit_next() -> bool:
            try:
                index, chunk = next(items)
            except StopIteration:
                return False
            pool.submit(lambda actor, value: actor.run.remote(value), chunk)
            in_flight.append(index)
            return True

        while pool.has_free() and submit_next():
            pass
        while in_flight:
            index = in_flight.popleft()
            try:
                result = pool.get_next()
            except RayError as e:
                raise ChunkError(stage.name, index, _summary(e), where="a Ray worker") from e
            submit_next()  # one chunk in flight per actor
            yield index, result

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "workers": self.workers}

    def _release(self) -> None:
        for actors in self._actors.values():
            for actor in actors:
                self._ray.kill(actor)
        self._actors.clear()

    def close(self) -> None:
        if self._ray is None:
            return
        self._release()
        if self._started:
            self._ray.shutdown()
        self._ray = None
        self._started = False
