"""Embedding N texts in process vs on Ray actors (``--ray local`` at 1 and 2 workers): wall times, ratios.

The embedder is the model-free hashing one (``tunesift.bench.gotd.HashingEmbedder``: signed hashed
unigrams and bigrams, pure Python, so CPU-bound and one core per process), the texts synthetic; each
mode runs ``tunesift.embed.cached_embed`` without a cache over the same chunks, in its own Ray
instance started by the script (``ray.init(num_cpus=workers)``) and shut down after it. "start" is
starting Ray and the actors (measured as a first map of one tiny chunk), "embed" the embedding
itself; the ratios are local / Ray, so above 1 is faster on Ray. Every mode's matrix is checked equal
to the local one. On a machine whose cores are busy the ratios say little about a cluster.

Examples::

    python benchmarks/ray_embed.py                       # N = 200,000 texts, chunks of 10,000
    python benchmarks/ray_embed.py --n 2000 --chunk 250  # a quick check
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="texts (default: 200,000)")
    p.add_argument("--chunk", type=int, default=10_000, help="texts per chunk (default: 10,000)")
    p.add_argument("--dim", type=int, default=256, help="hashing embedder's dimension (default: 256)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray workers to try (default: 1 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    return p.parse_args(argv)


def make_texts(n: int, seed: int) -> list[str]:
    """``n`` synthetic texts of 20–60 words from a 5,000-word vocabulary."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(5000)]
    return [" ".join(vocab[j] for j in rng.integers(0, len(vocab), rng.integers(20, 61))) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    from tunesift.bench.gotd import HashingEmbedder
    from tunesift.embed import cached_embed, embedding_stage
    from tunesift.executor import LocalExecutor, make_executor

    args = parse_args(argv)
    texts = make_texts(args.n, args.seed)
    embedder = HashingEmbedder(args.dim)
    rows = []
    t = time.perf_counter()
    with LocalExecutor() as ex:
        reference = cached_embed(embedder, texts, None, chunk_rows=args.chunk, executor=ex)
    local = time.perf_counter() - t
    rows.append({"mode": "local", "workers": 1, "start_s": 0.0, "embed_s": local, "equal": True})
    for workers in args.workers:
        t = time.perf_counter()
        with make_executor("local", workers) as ex:
            list(ex.map(embedding_stage(embedder), [(0, texts[:1])]))  # Ray and the actors up
            start = time.perf_counter() - t
            t = time.perf_counter()
            arr = cached_embed(embedder, texts, None, chunk_rows=args.chunk, executor=ex)
            took = time.perf_counter() - t
        rows.append({"mode": "ray local", "workers": workers, "start_s": start, "embed_s": took,
                     "equal": bool(np.array_equal(arr, reference))})
    print(f"{args.n:,} texts, chunks of {args.chunk:,}, hashing embedder dim {args.dim}")
    print(f"{'mode':<10} {'workers':>7} {'start s':>8} {'embed s':>8} {'texts/s':>9} {'local/this':>10} {'same':>5}")
    for r in rows:
        print(f"{r['mode']:<10} {r['workers']:>7} {r['start_s']:>8.2f} {r['embed_s']:>8.2f} "
              f"{args.n / r['embed_s']:>9,.0f} {local / r['embed_s']:>10.2f} {'yes' if r['equal'] else 'NO':>5}")
    if args.json:
        print(json.dumps({"n": args.n, "chunk": args.chunk, "dim": args.dim, "rows": rows}))
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
