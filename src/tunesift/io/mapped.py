"""Reading a memory-mapped matrix a block of rows at a time without keeping the rows read resident.

A page of a read-only file mapping that a process has touched counts in its resident set until the
kernel reclaims it. A pass over a matrix larger than memory (checking it, copying it block by block into
a solver) would so grow the process's RSS to the file's size; :class:`PageRelease` gives the pages of the
rows just read back (``madvise(MADV_DONTNEED)``: they stay in the page cache, not in the process).
"""

from __future__ import annotations

import mmap

import numpy as np

_FOLIO_BYTES = 2 << 20


class PageRelease:
    """``release(start, stop)`` gives back the pages of rows ``start:stop`` of ``array`` when it is a
    read-only, C-contiguous ``np.memmap``; a no-op for any other array."""

    def __init__(self, array: np.ndarray):
        self._row_bytes = array.strides[0] if array.ndim else 0
        self._mmap, self._offset = self._find(array)

    @staticmethod
    def _find(array: np.ndarray) -> tuple[mmap.mmap | None, int]:
        mm = getattr(array, "_mmap", None)
        if (not isinstance(array, np.memmap) or mm is None or getattr(array, "mode", None) != "r"
                or not array.flags.c_contiguous or not hasattr(mmap, "MADV_DONTNEED")):
            return None, 0
        view = np.frombuffer(mm, dtype=np.uint8)
        base = view.__array_interface__["data"][0]
        del view
        return mm, array.__array_interface__["data"][0] - base

    @property
    def active(self) -> bool:
        return self._mmap is not None

    def release(self, start: int, stop: int) -> None:
        if self._mmap is None or stop <= start:
            return
        # From 2 MiB before the block: the page cache holds a file in folios of up to 2 MiB, and a
        # fault maps a whole folio, rows already released before this block included.
        lo = max(0, self._offset + start * self._row_bytes - _FOLIO_BYTES)
        lo -= lo % mmap.PAGESIZE  # the mapping starts on a page; the kernel rounds the length up
        hi = min(self._offset + stop * self._row_bytes, len(self._mmap))
        if hi > lo:
            self._mmap.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
