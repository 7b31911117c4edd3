"""Atomic output: write to a temporary file in the same folder, fsync, then rename.

A crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the user's group
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def as_json(obj: Any) -> Any:
    """``obj`` as :func:`write_json` writes it and ``json.load`` reads it back (numpy values, paths, tuples
    become plain JSON values)."""
    return json.loads(json.dumps(obj, default=_default, ensure_ascii=False))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=_default, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, default=_default, ensure_ascii=False))
            f.write("\n")


# rows per Parquet row group (pyarrow's default): a table of up to this many rows is one group
ROW_GROUP_ROWS = 1 << 20


def write_parquet(path: str | os.PathLike, columns: dict[str, Any], row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write a dict of equal-length columns as one Parquet table, ``row_group_rows`` rows at a time.

    Each row group is converted to Arrow on its own, so a large pool's columns are never copied
    whole (string ids above all); a table of at most ``row_group_rows`` rows is written exactly as
    ``pyarrow.parquet.write_table`` would.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be at least 1, got {row_group_rows}")
    # lists and other sequences (packed texts, computed ids) are sliced per row group, never converted whole
    cols = {k: (v if isinstance(v, Sequence) and not isinstance(v, (str, bytes, tuple)) else np.asarray(v))
            for k, v in columns.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in cols.items()} }")
    n = lengths.pop() if lengths else 0
    with atomic_write(path, "wb") as f:
        writer = None
        try:
            for start in range(0, max(n, 1), row_group_rows):
                part = pa.table({k: v[start:start + row_group_rows] for k, v in cols.items()})
                if writer is None:
                    writer = pq.ParquetWriter(f, part.schema)
                writer.write_table(part)
        finally:
            if writer is not None:
                writer.close()


@contextlib.contextmanager
def atomic_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any = np.float32) -> Iterator[np.ndarray]:
    """A writable memory-mapped ``.npy`` of ``shape`` in a temporary sibling of ``path``, flushed,
    fsynced and renamed onto ``path`` on success (for arrays too large to build in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        yield array
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
