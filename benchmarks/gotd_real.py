"""GOT-D and its baselines on the real multi-domain pool: what each method's top-k is made of.

Pool: the text sets in ../shared/data/text with their data set as `domain` (built by
benchmarks/text_pool.py); target: ChemProt's training texts. Prints a markdown table of the domain
composition of each method's top-k and its run time (embedding excluded: all methods share the same
precomputed MiniLM embeddings; DSIR uses none).

    python benchmarks/text_pool.py --out /tmp/textpool
    python benchmarks/gotd_real.py --dir /tmp/textpool --budget 5000 [--device cuda]

`--dir` must hold pool.jsonl and target_chemprot.jsonl, and for the embedding methods
pool_minilm.npy / target_minilm.npy (`tunesift gotd` computes and caches them when absent; pass
`--embed` to compute them here).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tunesift.io.tables import read_text_set
from tunesift.pool import select_from_pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--methods", default="gotd,knn,dsir,random")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embed", action="store_true", help="embed with MiniLM if the .npy files are absent")
    ap.add_argument("--out", default=None, help="write each method's selection under OUT/<method>")
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args()
    d = Path(args.dir)
    pool = read_text_set(d / "pool.jsonl", id_field="id", name="pool")
    target = read_text_set(d / "target_chemprot.jsonl", id_field="id", name="target")
    domains = pool.column("domain")
    pe, te = d / "pool_minilm.npy", d / "target_minilm.npy"
    emb = {"pool_embeddings": str(pe), "target_embeddings": str(te)} if pe.exists() and te.exists() else {}
    if not emb and not args.embed:
        raise SystemExit(f"{pe} missing: pass --embed to compute the embeddings (slow on a CPU)")
    base = Counter(domains)
    names = [n for n, _ in base.most_common()]
    rows = {}
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        res = select_from_pool(pool, target, args.budget, method=method, seed=args.seed, device=args.device,
                               progress=False, out_dir=None if args.out is None else Path(args.out) / method,
                               **(emb if method in ("gotd", "knn") else {}))
        wall = time.perf_counter() - t0
        picked = Counter(domains[i] for i in res.indices)
        rows[method] = {"domains": dict(picked), "seconds": wall, "info": res.manifest["method_info"]}
        print(f"{method}: {wall:.1f} s", json.dumps(res.manifest["method_info"].get("solver", {})), flush=True)
    head = "| domain | pool | " + " | ".join(rows) + " |"
    print(f"\nTop-{args.budget} of {len(pool):,} pool rows for ChemProt ({len(target):,} target texts), "
          f"device {args.device}\n")
    print(head)
    print("|" + "---|" * (2 + len(rows)))
    for n in names:
        cells = [f"{rows[m]['domains'].get(n, 0):,}" for m in rows]
        print(f"| {n} | {base[n]:,} | " + " | ".join(cells) + " |")
    print("| **time (s)** | | " + " | ".join(f"{rows[m]['seconds']:.1f}" for m in rows) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"budget": args.budget, "device": args.device, "pool": dict(base),
                                               "methods": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
