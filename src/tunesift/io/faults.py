"""Fault points: where a crash-consistency test may stop the process for real.

``TUNESIFT_FAULT=NAME:SIGNAL`` (e.g. ``stage:surrogate:KILL``, ``embeddings:TERM``) makes the process
send itself ``SIGNAL`` (KILL, TERM or INT) when it reaches the fault point ``NAME``, right after the
result it names was saved. The test suite uses it to kill -9 real runs at a chosen stage and check that
the same command then resumes to the same bytes. Unset (always, outside tests), it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "TUNESIFT_FAULT"
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def fault_point(name: str) -> None:
    """Stop here with the configured signal if ``TUNESIFT_FAULT`` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, sig = spec.rpartition(":")
    if where == name:
        os.environ.pop(ENV)  # once: the handler of TERM/INT must not fire again while unwinding
        os.kill(os.getpid(), _SIGNALS[sig])
