"""Texts/s of the embedding backends on the same real texts, their vectors' cosine to float32 torch's,
and the overlap of GOT-D's picks made from each backend's vectors.

Backends (``--backends``): ``torch`` (float32, what ``--embed-backend torch`` runs) and ``torch-bf16``
(bfloat16 autocast, what ``auto`` picks on a CPU with ``avx512_bf16`` / ``amx_bf16``), both with the
packaged all-MiniLM-L6-v2 unless ``--embedder`` names a local encoder.

- **Speed**: the first ``--speed-texts`` texts of ``--pool`` (field ``text``) and the first
  ``--fortune-texts`` of the demo's fortunes (:func:`tunesift.demo.read_fortunes`), at each of
  ``--threads``. The texts are cut into ``--blocks`` blocks; every block is embedded by every backend,
  in an order that turns from block to block, so a load on the machine hits all backends alike. A
  backend's texts/s is its texts over the sum of its blocks' seconds (the model is loaded and warmed
  up before the clock starts).
- **Cosine** of each text's vector to float32 torch's (min and mean), per text set.
- **Picks**: a pool of ``--overlap-pool`` rows drawn (seeded) from ``--pool``, without the target:
  the first ``--target-size`` rows of domain ``--target-domain``. Both are embedded by each backend
  (timed too, interleaved the same way, at the first thread count), GOT-D (the project's own
  :func:`tunesift.pool.select_from_pool`, default settings) picks ``--budget-share`` of the pool from
  each backend's vectors, and the overlap of those picks with float32 torch's is reported.

Example (about 10 minutes at 1 thread on a 2-core CPU)::

    python benchmarks/embed_speed.py --pool /work/runs/textpool/pool.jsonl --threads 1,2 \\
        --record /work/runs/speed/embed-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", required=True, help="JSONL pool with fields text and domain (benchmarks/text_pool.py's)")
    p.add_argument("--speed-texts", type=int, default=2000, help="first texts of --pool timed (default: 2000; 0: none)")
    p.add_argument("--fortunes", default=None, help="folder of fortune files (default: the Debian package's)")
    p.add_argument("--fortune-texts", type=int, default=1000, help="first fortunes timed (default: 1000; 0: none)")
    p.add_argument("--threads", default="1,2", help="torch CPU thread counts, comma-separated (default: 1,2)")
    p.add_argument("--blocks", type=int, default=4, help="blocks each text set is cut into (default: 4)")
    p.add_argument("--backends", default="torch,torch-bf16", help="backends; the first is the reference "
                   "(default: torch,torch-bf16)")
    p.add_argument("--embedder", default=None, help="local encoder folder (default: the packaged MiniLM)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64, the embedder's)")
    p.add_argument("--overlap-pool", type=int, default=4000, help="pool rows for GOT-D's picks (default: 4000; 0: none)")
    p.add_argument("--target-domain", default="sst2", help="domain of the target rows (default: sst2)")
    p.add_argument("--target-size", type=int, default=300, help="target rows: the domain's first (default: 300)")
    p.add_argument("--budget-share", type=float, default=0.05, help="GOT-D's budget as a share of the pool "
                   "(default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pool sample and of GOT-D (default: 0)")
    p.add_argument("--record", default=None, metavar="FILE", help="write the machine, the command and the results "
                   "as JSON (benchmarks/machine.py)")
    return p.parse_args(argv)


def make_embedders(args: argparse.Namespace, backends: Sequence[str]) -> dict[str, Any]:
    from tunesift.embed import HFEncoderEmbedder

    out = {}
    for b in backends:
        e = HFEncoderEmbedder(args.embedder, device="cpu", batch_size=args.batch_size, progress=False, backend=b)
        e.embed(["warm-up text"] * 4)  # loads the model before any clock starts
        out[b] = e
    return out


def interleaved(embedders: dict[str, Any], texts: Sequence[str], blocks: int) -> tuple[dict[str, float], dict]:
    """Embed ``texts`` with every backend, block by block, the backends' order turning per block.

    Returns (seconds per backend, (n, d) vectors per backend)."""
    names = list(embedders)
    n = len(texts)
    bounds = np.linspace(0, n, max(1, min(blocks, n)) + 1).astype(int)
    seconds = {b: 0.0 for b in names}
    parts: dict[str, list[np.ndarray]] = {b: [] for b in names}
    for k in range(len(bounds) - 1):
        block = texts[bounds[k]:bounds[k + 1]]
        for j in range(len(names)):
            b = names[(k + j) % len(names)]
            t0 = time.perf_counter()
            parts[b].append(embedders[b].embed(block))
            seconds[b] += time.perf_counter() - t0
    return seconds, {b: np.concatenate(parts[b]) for b in names}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def speed_rows(label: str, threads: int, seconds: dict[str, float], vectors: dict, n: int) -> list[dict]:
    ref = next(iter(seconds))
    rows = []
    for b, s in seconds.items():
        cos = cosines(vectors[b], vectors[ref])
        rows.append({"case": "speed", "texts": label, "n": n, "threads": threads, "backend": b,
                     "seconds": round(s, 3), "texts_per_s": round(n / s, 2),
                     "speedup": round(seconds[ref] / s, 3), "cosine_min": float(cos.min()),
                     "cosine_mean": float(cos.mean())})
    return rows


def read_pool(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tunesift.demo import find_fortunes, read_fortunes
    from tunesift.embed import resolve_embed_backend
    from tunesift.output import torch_threads

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if resolve_embed_backend(b) != b:
            raise SystemExit(f"--backends: {b!r} is not a concrete backend")
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    rows = read_pool(args.pool)
    sets: list[tuple[str, list[str]]] = []
    if args.speed_texts:
        sets.append((f"pool first {args.speed_texts}", [r["text"] for r in rows[:args.speed_texts]]))
    if args.fortune_texts:
        folder = Path(args.fortunes) if args.fortunes else find_fortunes()
        if folder is None:
            print("no fortunes found (pass --fortunes DIR): the demo's texts are skipped", file=sys.stderr)
        else:
            fortunes = [r["text"] for r in read_fortunes(folder)][:args.fortune_texts]
            sets.append((f"demo fortunes first {len(fortunes)}", fortunes))
    results: list[dict] = []

    def show(rs: list[dict]) -> None:
        for r in rs:
            print(json.dumps(r), flush=True)
        results.extend(rs)

    embedders = make_embedders(args, backends)
    for threads in thread_counts:
        with torch_threads(threads):
            for label, texts in sets:
                seconds, vectors = interleaved(embedders, texts, args.blocks)
                show(speed_rows(label, threads, seconds, vectors, len(texts)))

    if args.overlap_pool:
        from tunesift.io.tables import TextSet
        from tunesift.pool import select_from_pool

        target_idx = [i for i, r in enumerate(rows) if r.get("domain") == args.target_domain][:args.target_size]
        taken = set(target_idx)
        rest = np.array([i for i in range(len(rows)) if i not in taken])
        pool_idx = np.sort(np.random.default_rng(args.seed).choice(rest, size=min(args.overlap_pool, len(rest)),
                                                                   replace=False))
        pool = TextSet.from_texts([rows[i]["text"] for i in pool_idx], ids=[rows[i].get("id", i) for i in pool_idx],
                                  name="pool sample")
        target = TextSet.from_texts([rows[i]["text"] for i in target_idx], name=f"{args.target_domain} target")
        budget = max(1, round(args.budget_share * len(pool)))
        threads = thread_counts[0]
        with torch_threads(threads):
            both = list(pool.texts) + list(target.texts)
            seconds, vectors = interleaved(embedders, both, args.blocks)
            show(speed_rows(f"GOT-D pool {len(pool)} + target {len(target)}", threads, seconds, vectors, len(both)))
            picks = {}
            for b in backends:
                sel = select_from_pool(pool, target, budget, method="gotd", seed=args.seed,
                                       pool_embeddings=vectors[b][:len(pool)], target_embeddings=vectors[b][len(pool):],
                                       cache_dir=None, device="cpu", progress=False)
                picks[b] = set(int(i) for i in sel.indices)
        ref = backends[0]
        domains = [rows[i].get("domain") for i in pool_idx]
        show([{"case": "gotd picks", "backend": b, "reference": ref, "pool_rows": len(pool), "target_rows": len(target),
               "target_domain": args.target_domain, "budget": budget, "threads": threads,
               "overlap": round(len(picks[b] & picks[ref]) / budget, 4),
               "picks_in_target_domain": round(sum(domains[i] == args.target_domain for i in picks[b]) / budget, 4)}
              for b in backends])

    if args.record:
        sys.path.insert(0, str(Path(__file__).parent))
        from machine import write_record

        write_record(args.record, "benchmarks/embed_speed.py", sys.argv[1:] if argv is None else argv, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
