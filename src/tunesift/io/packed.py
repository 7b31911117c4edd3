"""Compact columns for large sets: texts packed into one UTF-8 buffer, ids computed from shard positions.

A Python list of N strings costs ~57 bytes per string plus the text (one object each and a pointer);
:class:`PackedTexts` costs the text's UTF-8 bytes plus an 8-byte offset. :class:`ShardRowIds` holds no
per-row data at all: the id of row i, ``"<shard>:<row in the shard>"``, is computed when asked for.
Both behave as read-only sequences: an integer index gives one item, a slice a list, iteration streams.
``PackedTexts(spill_dir=...)`` keeps the UTF-8 buffer in an unlinked temporary file there, read through a
memory map: its pages are the file's, which the OS drops under memory pressure and reads back on demand,
so a set whose texts exceed RAM can be held (the offsets, 8 bytes a row, stay in memory). The file has
no name on disk, so it is gone when the process ends, however it ends.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import tempfile
from array import array
from collections.abc import Sequence
from typing import Any, Iterable, Iterator


class CompactSequence(Sequence):
    """Slices as lists, ``+`` as list concatenation, equality with any sequence of the same items."""

    def _item(self, index: int) -> Any:
        raise NotImplementedError

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(n))]
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        return self._item(index % n)

    def __add__(self, other: Iterable[Any]) -> list:
        return [*self, *other]

    def __radd__(self, other: Iterable[Any]) -> list:
        return [*other, *self]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (Sequence, CompactSequence)) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # mutable-sequence semantics, as a list

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self[:3])
        return f"{type(self).__name__}([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"


class PackedTexts(CompactSequence):
    """Strings in one UTF-8 buffer with (N + 1) int64 offsets; append whole lists with :meth:`extend`.

    Args:
        texts: the first strings.
        spill_dir: keep the buffer in an unlinked temporary file in this folder (created if missing),
            memory-mapped for reading, instead of in this process's memory (see the module docstring).
    """

    def __init__(self, texts: Iterable[str] = (), spill_dir: str | os.PathLike | None = None):
        self._offsets = array("q", [0])
        self._file = None
        if spill_dir is None:
            self._buffer: Any = bytearray()
        else:
            os.makedirs(spill_dir, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=spill_dir, prefix="tunesift-texts-")
            self._buffer = b""  # the mapped view, remapped when the file has grown past it
        self.extend(texts)

    def extend(self, texts: Iterable[str]) -> None:
        end, offsets = self._offsets[-1], self._offsets
        write = self._buffer.extend if self._file is None else self._file.write
        for t in texts:
            b = t.encode("utf-8")
            write(b)
            end += len(b)
            offsets.append(end)

    @property
    def spilled(self) -> bool:
        """Whether the buffer lives in a temporary file rather than in memory."""
        return self._file is not None

    def _view(self) -> Any:
        if self._file is not None and len(self._buffer) < self._offsets[-1]:
            self._file.flush()
            self._buffer = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._buffer

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _item(self, index: int) -> str:
        return self._view()[self._offsets[index]:self._offsets[index + 1]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        buf, off = self._view(), self._offsets
        for i in range(len(off) - 1):
            yield buf[off[i]:off[i + 1]].decode("utf-8")

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer and the offsets (the buffer's on disk when :attr:`spilled`)."""
        return self._offsets[-1] + self._offsets.itemsize * len(self._offsets)

    def __reduce__(self):  # pickles as its two buffers (Ray workers, multiprocessing); unpickles in memory
        return _packed_from_buffers, (bytes(self._view()), self._offsets.tobytes())


def _packed_from_buffers(buffer: bytes, offsets: bytes) -> PackedTexts:
    out = PackedTexts()
    out._buffer = bytearray(buffer)
    out._offsets = array("q")
    out._offsets.frombytes(offsets)
    return out


class PackedValues(CompactSequence):
    """JSON scalars (the ids of ``--id-field``: strings, numbers) packed as their JSON text in a
    :class:`PackedTexts` (``spill_dir`` as there); item i is decoded when asked for."""

    def __init__(self, values: Iterable[Any] = (), spill_dir: str | os.PathLike | None = None):
        self._texts = PackedTexts(spill_dir=spill_dir)
        self.extend(values)

    @staticmethod
    def encode(value: Any) -> str:
        """The JSON text a value is stored as; a ``TypeError`` for values JSON has no scalar for."""
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"{type(value).__name__}")
        return json.dumps(value, ensure_ascii=False)

    def extend(self, values: Iterable[Any]) -> None:
        self._texts.extend(self.encode(v) for v in values)

    def extend_encoded(self, texts: Iterable[str]) -> None:
        """Append values already given as :meth:`encode`'s JSON texts."""
        self._texts.extend(texts)

    def encoded(self, index: int) -> str:
        """Item ``index`` as its stored JSON text (equal texts: equal values)."""
        return self._texts[index]

    def __len__(self) -> int:
        return len(self._texts)

    def _item(self, index: int) -> Any:
        return json.loads(self._texts[index])

    def __iter__(self) -> Iterator[Any]:
        return (json.loads(t) for t in self._texts)


class RowNumbers(CompactSequence):
    """The ids 0..n-1 of a file's rows, stored as nothing but n."""

    def __init__(self, n: int):
        self._n = int(n)

    def __len__(self) -> int:
        return self._n

    def _item(self, index: int) -> int:
        return index

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._n))


class ShardRowIds(CompactSequence):
    """The ids ``"<shard name>:<row in the shard>"`` of a sharded set's rows, from the shards' names and
    first rows; nothing is stored per row."""

    def __init__(self, names: Sequence[str], starts: Sequence[int], total: int):
        if len(names) != len(starts):
            raise ValueError(f"{len(names)} shard names for {len(starts)} shard starts")
        self._names, self._starts, self._n = list(names), list(starts), int(total)

    def __len__(self) -> int:
        return self._n

    def _item(self, index: int) -> str:
        k = bisect.bisect_right(self._starts, index) - 1
        return f"{self._names[k]}:{index - self._starts[k]}"

    def __iter__(self) -> Iterator[str]:
        for k, name in enumerate(self._names):
            end = self._starts[k + 1] if k + 1 < len(self._starts) else self._n
            for row in range(end - self._starts[k]):
                yield f"{name}:{row}"
