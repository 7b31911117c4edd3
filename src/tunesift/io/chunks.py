"""A per-example stage's finished chunks, saved one file each, so a killed run recomputes only the rest.

``ChunkStore(folder, save, load)`` names chunk ``k`` ``folder/NNNNN<suffix>``; :meth:`ChunkStore.map`
runs a stage (:mod:`tunesift.executor`) over the chunks that have no file yet (building each chunk's
input only when it is sent, so a large pool is never sliced whole at once), saves each result
atomically as it arrives and yields every chunk's result in order, finished ones read back from disk.
``folder=None`` keeps nothing: the stage runs over every chunk, as without a store. The folder's name
must carry everything the results depend on (the inputs' content, the stage's settings, the chunking):
a file that exists is taken as done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from tunesift.io.atomic import atomic_write
from tunesift.io.faults import fault_point

log = logging.getLogger("tunesift")


class ChunkStore:
    """Chunk files of one stage on one input (see the module docstring).

    Args:
        folder: where the chunk files go (None: nothing is saved).
        save: ``save(file_object, result)`` writes one chunk's result to an open binary file.
        load: ``load(path) -> result`` reads it back.
        suffix: the files' suffix.
        name: the stage's name in log lines and fault points (``<name>:partNNNNN`` after chunk NNNNN is saved).
        rows: rows per chunk and ``unit`` what they are, for the log line of a resumed run.
    """

    def __init__(self, folder: str | os.PathLike | None, save: Callable[[Any, Any], None],
                 load: Callable[[Path], Any], suffix: str = ".npz", name: str = "chunks", rows: int = 0,
                 unit: str = "rows"):
        self.folder = None if folder is None else Path(folder)
        self._save, self._load, self.suffix, self.name = save, load, suffix, name
        self.rows, self.unit = rows, unit

    def path(self, k: int) -> Path | None:
        return None if self.folder is None else self.folder / f"{k:05d}{self.suffix}"

    def done(self, k: int) -> bool:
        p = self.path(k)
        return p is not None and p.exists()

    def load(self, k: int) -> Any:
        return self._load(self.path(k))

    def map(self, stage: Any, count: int, payload: Callable[[int], Any], executor: Any) -> Iterator[tuple[int, Any]]:
        """``(k, result)`` for chunks k = 0..count-1 in order: a chunk with a file is read, the others run on
        ``executor`` on ``payload(k)`` (built only when sent) and are saved as they arrive."""
        pending = [k for k in range(count) if not self.done(k)]
        if self.folder is not None and len(pending) < count:
            log.info("%s: %d of %d chunks (%d %s each) already in the cache; resuming at chunk %d", self.name,
                     count - len(pending), count, self.rows, self.unit, pending[0] if pending else count)
        computed = executor.map(stage, ((k, payload(k)) for k in pending)) if pending else iter(())
        todo = set(pending)
        for k in range(count):
            if k not in todo:
                yield k, self.load(k)
                continue
            got, result = next(computed)
            assert got == k, (got, k)  # executors return chunks in input order
            if self.folder is not None:
                with atomic_write(self.path(k), "wb") as f:
                    self._save(f, result)
                log.info("%s: chunk %d of %d saved", self.name, k + 1, count)
                fault_point(f"{self.name}:part{k:05d}")
            yield k, result
