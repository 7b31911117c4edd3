"""A per-example stage's finished chunks, saved one file each, so a killed run recomputes only the rest.

``ChunkStore(folder, save, load)`` names chunk ``k`` ``folder/NNNNN<suffix>``; :meth:`ChunkStore.map`
runs a stage (:mod:`tunesift.executor`) over the chunks that have no file yet, saves each result
atomically as it arrives and yields every chunk's result in order, finished ones read back from disk.
``folder=None`` keeps nothing: the stage runs over every chunk, as without a store. The folder's name
must carry everything the results depend on (the inputs' content, the stage's settings, the chunking):
a file that exists is taken as done.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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
        name: the stage's name in log lines and fault points (``chunks:<name>:NNNNN`` after chunk NNNNN is saved).
    """

    def __init__(self, folder: str | os.PathLike | None, save: Callable[[Any, Any], None],
                 load: Callable[[Path], Any], suffix: str = ".npz", name: str = "chunks"):
        self.folder = None if folder is None else Path(folder)
        self._save, self._load, self.suffix, self.name = save, load, suffix, name

    def path(self, k: int) -> Path | None:
        return None if self.folder is None else self.folder / f"{k:05d}{self.suffix}"

    def done(self, k: int) -> bool:
        p = self.path(k)
        return p is not None and p.exists()

    def load(self, k: int) -> Any:
        return self._load(self.path(k))

    def map(self, stage: Any, chunks: Iterable[tuple[int, Any]], executor: Any) -> Iterator[tuple[int, Any]]:
        """``(k, result)`` for every chunk ``(k, payload)`` in order; chunks with a file are read, the others
        run on ``executor`` and are saved as they arrive."""
        chunks = list(chunks)
        todo = [(k, payload) for k, payload in chunks if not self.done(k)]
        if self.folder is not None and len(todo) < len(chunks):
            log.info("%s: %d of %d chunks already saved in %s", self.name, len(chunks) - len(todo), len(chunks),
                     self.folder)
        computed = executor.map(stage, iter(todo)) if todo else iter(())
        pending = {k for k, _ in todo}
        for k, _ in chunks:
            if k not in pending:
                yield k, self.load(k)
                continue
            got, result = next(computed)
            assert got == k, (got, k)  # executors return chunks in input order
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                with atomic_write(self.path(k), "wb") as f:
                    self._save(f, result)
                log.info("%s: chunk %d of %d saved", self.name, k + 1, len(chunks))
                fault_point(f"chunks:{self.name}:{k:05d}")
            yield k, result

    def clear(self) -> None:
        """Delete the chunk files (when a joined result has been saved in their place)."""
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)
