"""Run one pool method end to end: read, embed (cached), rank, write the three output files."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesift.embed import (DEFAULT_CHUNK_ROWS, DEFAULT_EMBED_BACKEND, HFEncoderEmbedder, cached_embed,
                            default_cache_dir, load_precomputed, resolve_device)
from tunesift.executor import Executor, LocalExecutor
from tunesift.io.tables import TextSet
from tunesift.output import Timer, check_budget, complete_manifest, torch_threads, write_selection
from tunesift.pool.base import Context, PoolMethod, Ranking
from tunesift.registry import POOL_METHODS


@dataclass
class PoolSelection:
    """The result of :func:`select_from_pool`.

    Attributes:
        ids: (budget,) ids of the selected pool rows, in rank order.
        indices: (budget,) their row positions in the pool.
        ranking: the method's full ranking (scores, order, extra columns, info).
        manifest: every setting, the seed, fingerprints and timings.
    """

    ids: list[Any]
    indices: np.ndarray
    ranking: Ranking
    manifest: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def _shard_list(ts: TextSet) -> dict:
    """``{"shards": [...]}`` (name, format, rows, sha256 of each) for a sharded set, else nothing."""
    return {"shards": ts.extra["shards"]} if "shards" in ts.extra else {}


def _check_inputs(pool: TextSet, target: TextSet, budget: int) -> None:
    if len(pool) == 0:
        raise ValueError(f"{pool.path}: the pool is empty")
    if len(target) == 0:
        raise ValueError(f"{target.path}: the target is empty")
    check_budget(budget, len(pool), f"rows in the pool {pool.path}")


def select_from_pool(
    pool: TextSet,
    target: TextSet,
    budget: int,
    method: str | PoolMethod = "gotd",
    seed: int = 0,
    embedder: Any = None,
    pool_embeddings: str | os.PathLike | np.ndarray | None = None,
    target_embeddings: str | os.PathLike | np.ndarray | None = None,
    cache_dir: str | os.PathLike | None = "default",
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    embed_chunk_rows: int = DEFAULT_CHUNK_ROWS,
    executor: Executor | None = None,
    threads: int | None = None,
    embed_backend: str = DEFAULT_EMBED_BACKEND,
    **settings: Any,
) -> PoolSelection:
    """Rank ``pool`` for ``target`` with one registered method and take the top ``budget``.

    Args:
        method: a registered name (``tunesift.registry.POOL_METHODS``) or a configured instance;
            ``settings`` are passed to the method's constructor when a name is given.
        embedder: an object with ``model_id`` and ``embed(texts)``, a local encoder path, or None for
            the packaged all-MiniLM-L6-v2.
        pool_embeddings, target_embeddings: precomputed (N, d) / (M, d) arrays or ``.npy`` paths.
        cache_dir: where embeddings are cached ("default": ``$TUNESIFT_CACHE`` or ~/.cache/tunesift;
            None: no cache).
        out_dir: when given, writes scores.parquet, selected.jsonl and manifest.json there.
        embed_chunk_rows: rows embedded (and DSIR-counted) and cached per chunk (a killed run resumes at the
            first unfinished chunk).
        executor: where per-example stages run, chunk by chunk (:mod:`tunesift.executor`; default:
            here, in order). The selection does not depend on it.
        threads: torch's CPU threads for this call (None: as they are); recorded in the manifest
            (``versions.torch_threads``), since CPU sums, and so the last bits of the scores, depend on it.
        embed_backend: how the packaged or local encoder runs: ``torch`` (float32), ``torch-bf16``
            (bfloat16 autocast) or ``auto`` (:func:`tunesift.embed.resolve_embed_backend`); the resolved
            one is in the manifest's ``embeddings`` entries and the cache key. Not used with an embedder
            object or precomputed embeddings.

    Returns a :class:`PoolSelection` whose ``manifest`` is the dictionary ``manifest.json`` holds.

    Cached and precomputed float32 embeddings stay memory-mapped: GOT-D's OT solve reads the pool's
    block by block, so the pool's matrix need not fit in memory.
    """
    _check_inputs(pool, target, budget)
    from tunesift.embed import resolve_embed_backend

    resolve_embed_backend(embed_backend)  # refused before any work when it is not a backend
    m = POOL_METHODS.get(method)(**settings) if isinstance(method, str) else method
    if settings and not isinstance(method, str):
        raise TypeError("pass settings either to the method instance or as keywords with a method name")
    with torch_threads(threads) if m.uses_embeddings or threads is None else _no_torch(threads):
        return _select(pool, target, budget, m, seed, embedder, pool_embeddings, target_embeddings, cache_dir,
                       device, out_dir, progress, embed_chunk_rows, executor, embed_backend)


@contextlib.contextmanager
def _no_torch(threads: Any):
    """A method without torch (DSIR, random): the setting is checked, and has nothing to set."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    yield


def _select(pool: TextSet, target: TextSet, budget: int, m: PoolMethod, seed: int, embedder: Any,
            pool_embeddings: Any, target_embeddings: Any, cache_dir: Any, device: str, out_dir: Any, progress: bool,
            embed_chunk_rows: int, executor: Executor | None,
            embed_backend: str = DEFAULT_EMBED_BACKEND) -> PoolSelection:
    device = resolve_device(device) if m.uses_embeddings else "cpu"
    cache = default_cache_dir() if cache_dir == "default" else cache_dir
    executor = LocalExecutor() if executor is None else executor
    timer = Timer()
    embed_info: dict[str, Any] = {}
    pre = {"pool": pool_embeddings, "target": target_embeddings}
    sets = {"pool": pool, "target": target}
    model = [None]

    loaded: dict[str, np.ndarray] = {}

    def embed(ts: TextSet, role: str, indices: np.ndarray | None = None) -> np.ndarray:
        given = pre.get(role)
        if given is not None and ts is sets[role]:
            if role not in loaded:
                arr = given if isinstance(given, np.ndarray) else load_precomputed(given, len(ts), role)
                if not (isinstance(arr, np.ndarray) and arr.dtype == np.float32):
                    arr = np.asarray(arr, dtype=np.float32)  # a float32 memmap stays one
                if arr.ndim != 2 or arr.shape[0] != len(ts):
                    raise ValueError(f"{role} embeddings have shape {arr.shape}, expected ({len(ts)}, d)")
                loaded[role] = arr
                embed_info[role] = {"source": "array" if isinstance(given, np.ndarray) else str(given),
                                    "dim": int(arr.shape[1])}
            return loaded[role] if indices is None else loaded[role][indices]
        if model[0] is None:
            model[0] = embedder if (embedder is not None and not isinstance(embedder, (str, os.PathLike))) \
                else HFEncoderEmbedder(None if embedder is None else str(embedder), device=device, progress=progress,
                                       backend=embed_backend)
        texts = ts.texts if indices is None else [ts.texts[i] for i in indices]
        with timer.stage(f"embed_{role}"):
            arr = cached_embed(model[0], texts, cache, chunk_rows=embed_chunk_rows, executor=executor)
        described = model[0].describe() if hasattr(model[0], "describe") else {"model": model[0].model_id}
        info = embed_info.setdefault(role, {"source": model[0].model_id, **described, "dim": int(arr.shape[1]),
                                            "rows_embedded": 0})
        info["rows_embedded"] = info.get("rows_embedded", 0) + len(texts)
        return arr

    ctx = Context(rng=np.random.default_rng(seed), budget=int(budget), embed=embed, timer=timer,
                  device=device, progress=progress, executor=executor, cache_dir=cache, chunk_rows=embed_chunk_rows)
    with timer.stage("total"):
        ranking = m.rank(pool, target, ctx)
    order = np.asarray(ranking.order, dtype=np.int64)
    idx = order[:budget]
    manifest = {
        "command": "gotd",
        "method": m.name,
        "settings": m.settings(),
        "seed": seed,
        "budget": int(budget),
        "pool": {"path": pool.path, "rows": len(pool), "fingerprint": pool.fingerprint,
                 "text_field": pool.text_field, "id_field": pool.id_field, **_shard_list(pool)},
        "target": {"path": target.path, "rows": len(target), "fingerprint": target.fingerprint,
                   "text_field": target.text_field, "id_field": target.id_field, **_shard_list(target)},
        "device": device,
        "embeddings": embed_info,
        "timings_s": {k: round(v, 4) for k, v in timer.stages.items()},
        "method_info": ranking.info,
    }
    if executor.name != "local":  # recorded where it is not the default, so local manifests stay as they were
        manifest["executor"] = executor.describe()
    result = PoolSelection(ids=[pool.ids[i] for i in idx], indices=idx, ranking=ranking, manifest=manifest)
    if out_dir is not None:  # fills in the manifest (versions, n_examples, written_at) as written
        result.paths = write_selection(out_dir, pool.ids, ranking.scores, order, int(budget),
                                       pool.take(idx), manifest, ranking.columns)
    else:
        complete_manifest(manifest, len(pool), int(budget))
    return result
