"""One writer per output folder: an advisory lock file holding the owner's pid.

The lock is a ``flock`` on ``FOLDER/.tunesift.lock``: the kernel releases it when the owner exits,
however it exits (kill -9 included), so a stale lock never blocks a rerun. The file names the owner so
that a refused run can say who holds the folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".tunesift.lock"


class FolderBusyError(RuntimeError):
    """Another live process writes to the folder."""


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` block, or raise :class:`FolderBusyError` at once.

    Args:
        what: how the user named the locked thing, for the message (e.g. ``--out sel/``).
    """
    import fcntl

    path = Path(path)
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            raise FolderBusyError(f"{what} is in use by {owner}; wait for it to finish or use another folder") from None
        f.seek(0)
        f.truncate()
        started = _dt.datetime.now().isoformat(timespec="seconds")
        f.write(f"tunesift pid {os.getpid()} (since {started})\n")
        f.flush()
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()
        for folder in created:  # a run that wrote nothing leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def is_locked(path: str | os.PathLike) -> bool:
    """Whether a live process holds the lock file ``path`` (without taking it)."""
    import fcntl

    path = Path(path)
    if not path.exists():
        return False
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False
