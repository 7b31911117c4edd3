"""The files every selection run writes: scores.parquet, selected.jsonl and manifest.json.

Shared by every command so that all methods produce the same output (atomically written).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from tunesift.io.atomic import as_json, write_json, write_jsonl, write_parquet
from tunesift.io.packed import CompactSequence


def ranks_from_order(order: np.ndarray, n: int) -> np.ndarray:
    """rank[i] = 1 + position of example i in ``order`` (rank 1 = picked first)."""
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"order must be a permutation of range({n})")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    return rank


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No progress bar from any library within the block (``--no-progress``): ours (tqdm), and those
    transformers and huggingface_hub draw while loading or converting weights. Restored after it."""
    names = ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")  # read by the libraries when they start a bar
    before = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    try:
        with library_bars(False):
            yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def library_bars(show: bool) -> Iterator[None]:
    """Within the block, the progress bars of transformers and huggingface_hub (weight loading, GGUF
    conversion) are drawn only when ``show``; the process's setting is restored after it.

    transformers keeps a switch of its own (read when it draws "Loading weights"), set apart from
    huggingface_hub's after import, so both are turned off and both restored."""
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:  # no Hugging Face libraries, no bars of theirs
        show = True
    if show:
        yield
        return
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        hf_logging = None
    was_hub = are_progress_bars_disabled()
    was_transformers = hf_logging.is_progress_bar_enabled() if hf_logging is not None else False
    disable_progress_bars()
    if hf_logging is not None:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hf_logging is not None and was_transformers:
            hf_logging.enable_progress_bar()  # turns huggingface_hub's on as well
        (disable_progress_bars if was_hub else enable_progress_bars)()


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("tunesift", "numpy", "scipy", "torch", "transformers", "sentence-transformers", "peft", "pyarrow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    torch = sys.modules.get("torch")
    if torch is not None:  # CPU results depend on it in the last bits (reduction order), which can move a pick
        out["torch_threads"] = str(torch.get_num_threads())
    return out


@dataclass
class Timer:
    """Wall time per named stage, recorded in the manifest."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0


def check_budget(budget: Any, n: int, what: str) -> int:
    """``budget`` as an int in 1..n, or a clear error naming ``what`` the n candidates are.

    Shared by every selection command (pool and rec methods), so all say the same thing.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if n < 1:
        raise ValueError(f"there are no {what} to select from")
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in 1..{n} ({n} {what}), got {budget}")
    return int(budget)


def write_selection(
    out_dir: str | Path,
    ids: Sequence[Any],
    scores: np.ndarray,
    order: np.ndarray,
    budget: int,
    selected_rows: Sequence[dict] | None,
    manifest: dict,
    columns: dict[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write one selection.

    Args:
        ids: (N,) example ids.
        scores: (N,) the method's score, higher = keep.
        order: (N,) a permutation of range(N), best first; the first ``budget`` are selected.
        selected_rows: the rows to write to selected.jsonl, in rank order (``budget`` of them);
            when None, nothing but scores and manifest is written.
        manifest: settings, seed, fingerprints, timings...; versions and a timestamp are added.
        columns: extra (N,) per-example columns for scores.parquet.
    """
    out = Path(out_dir)
    n = len(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"scores has shape {scores.shape}, expected ({n},)")
    if not 0 < budget <= n:
        raise ValueError(f"budget {budget} must be in 1..{n}")
    rank = ranks_from_order(order, n)
    along = scores[np.asarray(order, dtype=np.int64)]
    if np.isnan(along).any() or np.any(np.diff(along) > 0):
        raise ValueError("scores must be non-increasing along the order (higher = picked earlier), with no NaN; "
                         "a method whose own quantity does not follow its order gives it its own column")
    table: dict[str, Any] = {
        "id": (ids if isinstance(ids, (list, CompactSequence)) else list(ids))
        if not all(isinstance(i, (int, np.integer)) for i in ids) else np.asarray(ids, dtype=np.int64),
        "score": scores,
        "rank": rank,
        "selected": rank <= budget,
    }
    for k, v in (columns or {}).items():
        v = np.asarray(v)
        if len(v) != n:
            raise ValueError(f"column {k!r} has {len(v)} values, expected {n}")
        table[k] = v
    paths = {"scores": out / "scores.parquet", "manifest": out / "manifest.json"}
    write_parquet(paths["scores"], table)
    if selected_rows is not None:
        paths["selected"] = out / "selected.jsonl"
        write_jsonl(paths["selected"], selected_rows)
    complete_manifest(manifest, n, budget, written=True)
    write_json(paths["manifest"], manifest)
    return paths


def complete_manifest(manifest: dict, n: int, budget: int, written: bool = False) -> dict:
    """Fill in, in place, what every manifest carries — ``budget``, ``n_examples``, package ``versions``
    (with ``torch_threads``), the ``command`` line and, once written, ``written_at`` — and make its values
    what the JSON file holds, so a selection's in-memory manifest equals its ``manifest.json``."""
    manifest.setdefault("budget", budget)
    manifest.setdefault("n_examples", n)
    manifest["versions"] = versions()
    manifest["command"] = list(sys.argv)
    if written:
        manifest["written_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    normal = as_json(manifest)
    manifest.clear()
    manifest.update(normal)
    return manifest


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` for the block (None: left as they are), then restored."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a clear error if matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: `pip install matplotlib` (or `tunesift[plot]`)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
