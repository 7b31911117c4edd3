"""A real-text shard folder through `tunesift gotd` with MiniLM, killed during embedding and resumed.

Writes the first ``--rows`` rows of a text pool (``benchmarks/text_pool.py``'s ``pool.jsonl``) as
``--shards`` JSONL shards, then runs, each as its own ``python -m tunesift gotd`` process on that folder:

1. an uninterrupted run (its own cache);
2. the same command killed (SIGKILL, through the ``TUNESIFT_FAULT`` fault point) right after the second
   embedding chunk was saved;
3. the same command again, on the killed run's cache: it must resume at the third chunk and write the
   same ``scores.parquet`` and ``selected.jsonl``, byte for byte, as run 1.

Prints the times, the chunks found in the cache after the kill, the resume line of the log and whether
the outputs are identical; exit status 1 if they are not.

    python benchmarks/text_pool.py --out /tmp/textpool
    python benchmarks/shard_resume.py --pool /tmp/textpool/pool.jsonl --target /tmp/textpool/target_chemprot.jsonl
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list, fault: str | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TUNESIFT_FAULT", None)
    if fault:
        env["TUNESIFT_FAULT"] = fault
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tunesift", *map(str, args)], env=env, capture_output=True, text=True)
    return done, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", required=True, help="pool JSONL (a `text` field per line)")
    p.add_argument("--target", required=True, help="target JSONL")
    p.add_argument("--rows", type=int, default=8000, help="pool rows used (default: 8000)")
    p.add_argument("--shards", type=int, default=4, help="shards written (default: 4)")
    p.add_argument("--chunk", type=int, default=2000, help="--embed-chunk (default: 2000)")
    p.add_argument("--budget", type=int, default=500)
    p.add_argument("--embedder", default=None, help="local encoder folder (default: the packaged MiniLM)")
    p.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed)")
    args = p.parse_args(argv)

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tunesift-shards-"))
    shards = work / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    with open(args.pool, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(args.rows), f)]
    per = -(-len(lines) // args.shards)
    for k in range(args.shards):
        (shards / f"part-{k:03d}.jsonl").write_text("".join(lines[k * per:(k + 1) * per]), encoding="utf-8")
    common = ["gotd", "--pool", shards, "--target", args.target, "--budget", args.budget, "--embed-chunk", args.chunk,
              "--device", "cpu", "--threads", 1, "--no-progress"]
    if args.embedder:
        common += ["--embedder", args.embedder]
    chunks = -(-len(lines) // args.chunk)
    print(f"{len(lines)} rows in {args.shards} shards, {chunks} embedding chunks of {args.chunk}; {work}")
    try:
        clean, t_clean = run([*common, "--out", work / "clean", "--cache-dir", work / "cache-clean"])
        if clean.returncode != 0:
            print(clean.stderr[-3000:])
            return 1
        print(f"uninterrupted run: {t_clean:.1f} s")
        killed, t_killed = run([*common, "--out", work / "out", "--cache-dir", work / "cache"],
                               fault="embeddings:part00001:KILL")
        saved = sorted(q.name for q in (work / "cache" / "embeddings").glob(f"*.chunks-{args.chunk}/*.npy"))
        print(f"killed run: exit {killed.returncode} after {t_killed:.1f} s; chunks in the cache: {len(saved)}")
        again, t_again = run([*common, "--out", work / "out", "--cache-dir", work / "cache"])
        if again.returncode != 0:
            print(again.stderr[-3000:])
            return 1
        resume = [line for line in again.stderr.splitlines() if "resuming at chunk" in line]
        print(f"resumed run: {t_again:.1f} s; log: {resume[0].strip() if resume else '(no resume line)'}")
        same = {name: (work / "out" / name).read_bytes() == (work / "clean" / name).read_bytes()
                for name in ("scores.parquet", "selected.jsonl")}
        print("outputs identical to the uninterrupted run: " + ", ".join(f"{k} {v}" for k, v in same.items()))
        ok = killed.returncode == -9 and len(saved) == 2 and bool(resume) and all(same.values())
        print("OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
