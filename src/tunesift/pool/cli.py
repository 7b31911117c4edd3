"""`tunesift gotd`: rank a pool for a target with GOT-D or a baseline and write the selection."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from tunesift.cli import add_device_argument, add_executor_arguments, add_threads_argument, apply_threads, out_arg

log = logging.getLogger("tunesift")


def register(sub: argparse._SubParsersAction) -> None:
    from tunesift.embed import DEFAULT_CHUNK_ROWS, DEFAULT_EMBED_BACKEND, EMBED_BACKEND_HELP, EMBED_BACKENDS
    from tunesift.registry import POOL_METHODS

    p = sub.add_parser(
        "gotd",
        help="select pre-fine-tuning data from a pool for a target task (GOT-D or a baseline)",
        description="Rank every pool example for the target and write scores.parquet, selected.jsonl "
        "and manifest.json to --out. Selections of different budgets are prefixes of one ranking.",
    )
    p.add_argument("--pool", required=True, help="pool: a .jsonl, .csv, .tsv, .parquet file, a saved HF dataset, or a "
                   "folder or glob ('shards/*.parquet') of shards of one of the four formats (ids default to "
                   "SHARD:ROW)")
    p.add_argument("--target", required=True, help="target file (same formats)")
    p.add_argument("--budget", type=int, required=True, help="how many pool examples to select")
    p.add_argument("--out", required=True, type=out_arg, help="output folder")
    p.add_argument("--method", default="gotd", choices=POOL_METHODS.names(), help="selection method (default: gotd)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    p.add_argument("--target-text-field", default=None, help="text field of the target, if different")
    p.add_argument("--id-field", default=None, help="field holding a unique id (default: row number)")
    p.add_argument("--embedder", default=None, help="local Hugging Face encoder folder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--embed-backend", default=DEFAULT_EMBED_BACKEND, choices=EMBED_BACKENDS,
                   help=f"{EMBED_BACKEND_HELP} (default: {DEFAULT_EMBED_BACKEND})")
    p.add_argument("--pool-embeddings", default=None, help=".npy of precomputed pool embeddings aligned with the rows")
    p.add_argument("--target-embeddings", default=None, help=".npy of precomputed target embeddings")
    p.add_argument("--embed-chunk", type=int, default=DEFAULT_CHUNK_ROWS, metavar="ROWS",
                   help=f"rows embedded (or counted by DSIR) and cached per chunk; a killed run resumes at the first "
                   f"unfinished one "
                   f"(default: {DEFAULT_CHUNK_ROWS})")
    p.add_argument("--cache-dir", default="default", help="cache of embeddings and DSIR features, and where the pool's texts are spilled to a temporary file ($TUNESIFT_CACHE or ~/.cache/tunesift; 'none': no cache, texts spilled to the system's temporary folder)")
    add_device_argument(p)
    add_threads_argument(p)
    add_executor_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    from tunesift.registry import Method
    from tunesift.settings import FlagTable

    table = FlagTable()
    Method.add_flags(p, table, POOL_METHODS)
    p.set_defaults(func=run, _flags=table)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from tunesift.embed import default_cache_dir
    from tunesift.executor import make_executor
    from tunesift.io.lock import LOCK_NAME, hold_lock
    from tunesift.io.tables import read_text_set
    from tunesift.pool import select_from_pool
    from tunesift.registry import POOL_METHODS

    apply_threads(args)
    if args.embed_chunk < 1:
        raise ValueError(f"--embed-chunk must be at least 1, got {args.embed_chunk}")
    # a shard folder's texts go to a memory-mapped temporary file beside the cache (pools larger than RAM)
    cache = None if args.cache_dir == "none" else default_cache_dir() if args.cache_dir == "default" else args.cache_dir
    spill = Path(cache) / "spill" if cache is not None else Path(tempfile.gettempdir())
    pool = read_text_set(args.pool, args.text_field, args.id_field, name="pool", spill_dir=spill,
                         field_option="--text-field")
    target = read_text_set(args.target, args.target_text_field or args.text_field, None, name="target",
                           field_option="--target-text-field")
    log.info("pool: %d rows from %s; target: %d rows from %s", len(pool), args.pool, len(target), args.target)
    args._flags.check_unused(args, [args.method])
    method = POOL_METHODS.get(args.method).from_args(args, args._flags)
    executor = make_executor(args.ray, args.ray_workers)
    with hold_lock(Path(args.out) / LOCK_NAME, f"--out {args.out}"), executor:
        result = select_from_pool(
            pool, target, args.budget, method=method, seed=args.seed, embedder=args.embedder,
            pool_embeddings=args.pool_embeddings, target_embeddings=args.target_embeddings,
            cache_dir=cache, device=args.device,
            out_dir=args.out, progress=not args.no_progress, embed_chunk_rows=args.embed_chunk,
            executor=executor, embed_backend=args.embed_backend,
        )
    t = result.manifest["timings_s"]
    log.info("selected %d of %d with %s in %.1f s; wrote %s", args.budget, len(pool), args.method,
             t.get("total", 0.0), ", ".join(str(p) for p in result.paths.values()))
    return 0
