"""GOT-D's OT solve on a pool matrix in memory vs memory-mapped: wall time and peak resident memory.

For each N, synthetic unit-norm embeddings (a mixture of clusters; the target drawn from a few of
them) are written to ``pool_N.npy`` / ``target.npy`` in blocks (never whole in memory), then each
mode runs in its own subprocess, so that its peak resident set (``VmHWM`` of that process, from
/proc; ``ru_maxrss`` would carry the driver's peak over fork + exec) is its own:

- ``memory``: ``np.load(pool)`` into memory, then ``tunesift.ot.sinkhorn`` on the tensor;
- ``mmap``: ``np.load(pool, mmap_mode="r")`` handed to ``sinkhorn`` as it is: the solver reads it
  block by block (:class:`tunesift.ot.HostRows`) and releases the pages it has read.

- ``ray1`` / ``ray2`` (``--modes``): the memory-mapped pool split over 1 or 2 Ray actors
  (:func:`tunesift.executor.drivers.sinkhorn_on` on ``--ray local``): each actor reads its own rows of the file;
  the driver holds only the (M,) target potentials. "load s" is then the start of Ray; the solve
  includes starting its actors; "peak RSS" is the driver's (each actor reads its rows block by block,
  as the mmap mode does).
  On a 2-core machine this is a ratio of 1 to 2 workers, not a promise of cluster speed.

- ``cli``: the whole ``tunesift gotd`` command on the precomputed embeddings (``--pool-embeddings``,
  ``--target-embeddings``; a pool file of N one-line texts ``row i``), budget N/20: reading, the OT
  solve, ``scores.parquet`` and ``selected.jsonl``; peak RSS of that process from GNU ``time``, and
  its picks compared with the mode before it. ``--cli-method knn`` runs kNN (TAPT/c) instead: a
  memory-mapped pool of more than 2^18 rows is searched part by part (``tunesift.pool.knn_parts``).
- ``cli-ray1`` / ``cli-ray2``: the ``cli`` command with ``--ray local --ray-workers 1|2`` (a local Ray
  instance started by the command, its start included in the time): with 2 workers the Sinkhorn runs over
  2 actors that each read their rows of the file; with 1 the split job runs in the driver. Peak RSS is
  the driver's (the actors are Ray's processes, not the command's children).
- ``cli-shards``: the same command on the same texts written as a folder of JSONL shards of
  ``--shard-rows`` rows (texts packed into one buffer — a memory-mapped temporary file in the cache's
  ``spill/`` folder — and ids computed from the shards, rows read back from the shards for
  ``selected.jsonl``). ``--text-bytes B`` pads every text to about B bytes, so the texts' share of the
  memory shows (a long-document pool).

All use GOT-D's settings (epsilon 0.1 absolute, plain Sinkhorn, threshold 1e-3, online cost in
blocks of 2048 rows). The script checks that the two give the same potentials (max |Δf|) and the same
top 5% (GOT-D's pick: the most negative f), and prints the ratios mmap / memory. The mmap mode reads
the file through the page cache, which the kernel may keep or drop (it is not the process's
memory); a cold cache makes every sweep read the disk. "rise" is the peak minus the resident set
before the pool is touched (torch and the target already loaded).

Examples::

    python benchmarks/scale.py                          # N = 100k, 500k, 2M; M = 2000; d = 384
    python benchmarks/scale.py --n 20000 --threads 1    # a quick check
    python benchmarks/scale.py --n 10000000 --dir /big/disk --keep --json
    python benchmarks/scale.py --n 100000 500000 --modes mmap ray1 ray2
    python benchmarks/scale.py --n 1000000 --modes cli cli-ray1 cli-ray2   # the whole command over Ray actors
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("memory", "mmap", "ray1", "ray2", "cli", "cli-shards", "cli-ray1", "cli-ray2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 500_000, 2_000_000], help="pool sizes")
    p.add_argument("--m", type=int, default=2000, help="target size (default: 2000)")
    p.add_argument("--d", type=int, default=384, help="embedding dimension (default: 384, MiniLM's)")
    p.add_argument("--clusters", type=int, default=64, help="clusters of the synthetic pool")
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--threshold", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=2000)
    p.add_argument("--block-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1, help="torch threads per solve (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the pool matrix stays on the host either way)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None, help="where the .npy files go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the .npy files (reused by a later run in --dir)")
    p.add_argument("--json", action="store_true", help="also print one JSON line per size")
    p.add_argument("--record", default=None, metavar="FILE", help="write the machine, the command and one result "
                   "per size to this JSON file (benchmarks/results/STUDY/NAME.json)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=["memory", "mmap"],
                   help="what to compare (default: memory mmap); the first is the reference of the ratios")
    p.add_argument("--shard-rows", type=int, default=100_000, help="rows per shard of the cli-shards mode")
    p.add_argument("--cli-method", default="gotd", choices=["gotd", "knn"],
                   help="the method the cli modes run (default: gotd; knn: its searches over the pool file)")
    p.add_argument("--text-bytes", type=int, default=0, help="pad each text of the cli modes to about this many "
                   "bytes (default: none, 'row i')")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--pool", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--f-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_synthetic(path: Path, n: int, d: int, clusters: int, seed: int, centers_of: list[int] | None = None,
                    block: int = 65536) -> None:
    """``n`` unit-norm rows around ``clusters`` random centres (or the centres ``centers_of``), in blocks."""
    from tunesift.io.atomic import atomic_npy

    centers = np.random.default_rng(1234).standard_normal((clusters, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    pick = np.arange(clusters) if centers_of is None else np.asarray(centers_of)
    with atomic_npy(path, (n, d), np.float32) as out:
        for start in range(0, n, block):
            rows = min(block, n - start)
            x = centers[rng.choice(pick, size=rows)] + 0.06 * rng.standard_normal((rows, d)).astype(np.float32)
            out[start:start + rows] = x / np.linalg.norm(x, axis=1, keepdims=True)


def _rss_mb(field: str) -> float:
    """This process's resident set (``VmRSS``) or its peak (``VmHWM``) in MB, from /proc (Linux).

    ``getrusage(...).ru_maxrss`` is not used on Linux: a child inherits its parent's peak across
    fork + exec, so a child of a driver that generated a large pool would report the driver's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One solve in this process; prints a JSON line with its times and peak memory."""
    t0 = time.perf_counter()
    import torch

    from tunesift.ot import sinkhorn

    torch.set_num_threads(args.threads)
    y = torch.from_numpy(np.load(args.target)).to(args.device)
    base_mb = _rss_mb("VmRSS")
    t1 = time.perf_counter()
    kw = dict(epsilon=args.epsilon, threshold=args.threshold, max_iter=args.max_iter, block_size=args.block_size)
    if args.child.startswith("ray"):
        from tunesift.executor import make_executor
        from tunesift.executor.drivers import sinkhorn_on

        workers = int(args.child[3:])
        with make_executor("local", workers=workers) as executor:
            with executor.place("start", [list] * workers) as up:  # Ray started: not part of the solve
                up.call("copy")
            t2 = time.perf_counter()
            out = sinkhorn_on(executor, np.load(args.pool, mmap_mode="r"), y.cpu().numpy(), device=args.device, **kw)
            f = out.f.double().cpu().numpy()
            t3 = time.perf_counter()
    else:
        if args.child == "memory":
            x = torch.from_numpy(np.load(args.pool)).to(args.device)
        else:
            x = np.load(args.pool, mmap_mode="r")
            if args.device != "cpu":
                from tunesift.ot import HostRows

                x = HostRows(x, torch.float32, args.device)
        t2 = time.perf_counter()
        out = sinkhorn(x, y, **kw)
        f = out.f.double().cpu().numpy()
        t3 = time.perf_counter()
    np.save(args.f_out, f)
    peak_mb = _rss_mb("VmHWM")
    print(json.dumps({"mode": args.child, "load_s": t2 - t1, "solve_s": t3 - t2, "wall_s": t3 - t0,
                      "n_iter": out.n_iter, "converged": bool(out.converged), "error": out.errors[-1],
                      "peak_rss_mb": peak_mb, "rss_before_pool_mb": base_mb}))


def run_cli(args: argparse.Namespace, n: int, pool: Path, target: Path, folder: Path,
            sharded: bool = False, ray_workers: int = 0) -> tuple[dict, np.ndarray]:
    """``tunesift gotd`` on the precomputed matrices (with ``--ray local`` on ``ray_workers`` > 0);
    (its figures, the selected rows)."""
    import shutil

    pad = f"_b{args.text_bytes}" if args.text_bytes else ""
    texts, target_texts = folder / f"texts_n{n}{pad}.jsonl", folder / f"target_texts_m{args.m}.jsonl"
    out = folder / "cli-out"
    filler = " " + "lorem ipsum " * (args.text_bytes // 12) if args.text_bytes else ""
    for path, rows, fill in ((texts, n, filler), (target_texts, args.m, "")):
        if not path.exists():
            with open(path, "w") as f:
                for start in range(0, rows, 100_000):
                    f.write("".join(f'{{"text": "row {i}{fill}"}}\n' for i in range(start, min(rows, start + 100_000))))
    if sharded:  # the same rows as shards of --shard-rows
        shards = folder / f"texts_n{n}{pad}_shards{args.shard_rows}"
        if not shards.exists():
            tmp = folder / f".{shards.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            with open(texts) as f:
                for k, start in enumerate(range(0, n, args.shard_rows)):
                    with open(tmp / f"part-{k:05d}.jsonl", "w") as g:
                        g.writelines(next(f) for _ in range(min(args.shard_rows, n - start)))
            tmp.rename(shards)
        texts = shards
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-f", "MAXRSS %M", sys.executable, "-m", "tunesift", "gotd", "--pool", str(texts),
           "--target", str(target_texts), "--pool-embeddings", str(pool), "--target-embeddings", str(target),
           "--budget", str(max(1, n // 20)), "--out", str(out), "--method", args.cli_method,
           "--threads", str(args.threads), "--device", args.device, "--no-progress"]
    if args.cli_method == "gotd":
        cmd += ["--epsilon", str(args.epsilon), "--threshold", str(args.threshold), "--max-iter", str(args.max_iter),
                "--block-size", str(args.block_size)]
    if ray_workers:
        cmd += ["--ray", "local", "--ray-workers", str(ray_workers)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"tunesift gotd failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("MAXRSS ")][-1]
    with open(out / "selected.jsonl") as f:
        rows = np.sort(np.array([int(json.loads(line)["text"].split()[1]) for line in f]))
    shutil.rmtree(out, ignore_errors=True)
    return {"mode": "cli" if not ray_workers else f"cli-ray{ray_workers}", "load_s": 0.0, "solve_s": wall, "wall_s": wall, "n_iter": -1, "converged": True,
            "error": float("nan"), "peak_rss_mb": int(peak.split()[1]) / 1024, "rss_before_pool_mb": 0.0}, rows


def run_mode(args: argparse.Namespace, mode: str, pool: Path, target: Path, f_out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--pool", str(pool), "--target", str(target),
           "--f-out", str(f_out), "--epsilon", str(args.epsilon), "--threshold", str(args.threshold),
           "--max-iter", str(args.max_iter), "--block-size", str(args.block_size), "--threads", str(args.threads),
           "--device", args.device]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{mode} solve failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tunesift-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"target_m{args.m}_d{args.d}.npy"
    if not target.exists():
        write_synthetic(target, args.m, args.d, args.clusters, args.seed + 1, centers_of=list(range(4)))
    print(f"M = {args.m}, d = {args.d}, epsilon {args.epsilon}, threshold {args.threshold}, block {args.block_size}, "
          f"{args.threads} thread(s), {args.device}; files in {folder}")
    header = (f"{'N':>10} {'mode':>7} {'iters':>5} {'load s':>7} {'solve s':>8} {'peak RSS MB':>12} "
              f"{'rise MB':>8} {'file MB':>8}")
    print(header)
    made: list[Path] = []
    lines: list[dict] = []
    try:
        for n in args.n:
            pool = folder / f"pool_n{n}_d{args.d}.npy"
            if not pool.exists():
                write_synthetic(pool, n, args.d, args.clusters, args.seed)
                made.append(pool)
            file_mb = pool.stat().st_size / 2**20
            results, fs = {}, {}
            picks = {}
            for mode in args.modes:
                if mode.startswith("cli"):
                    results[mode], picks[mode] = run_cli(args, n, pool, target, folder, sharded=mode == "cli-shards",
                                                         ray_workers=int(mode[7:]) if mode.startswith("cli-ray") else 0)
                    fs[mode] = fs[args.modes[0]] if not args.modes[0].startswith("cli") else np.zeros(n)
                else:
                    f_out = folder / f"f_{mode}_n{n}.npy"
                    results[mode] = run_mode(args, mode, pool, target, f_out)
                    fs[mode] = np.load(f_out)
                    f_out.unlink()
                r = results[mode]
                print(f"{n:>10} {mode:>7} {r['n_iter']:>5} {r['load_s']:>7.2f} {r['solve_s']:>8.2f} "
                      f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] - r['rss_before_pool_mb']:>8.0f} "
                      f"{file_mb:>8.0f}", flush=True)
            k = max(1, n // 20)
            ref = args.modes[0]
            top = {mode: np.sort(np.argsort(fs[mode], kind="stable")[:k]) for mode in args.modes}
            top.update(picks)  # the commands' own picks, not a copy of the reference's potentials
            line = {"n": n, "m": args.m, "d": args.d, "file_mb": file_mb, **results}
            for mode in args.modes[1:]:
                same_top = bool(np.array_equal(top[ref], top[mode]))
                max_df = float(np.abs(fs[ref] - fs[mode]).max())
                a, b = results[ref], results[mode]
                time_ratio = b["solve_s"] / a["solve_s"]
                rss_ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
                what = "the whole command" if mode.startswith("cli") else "solve"
                df = "" if mode.startswith("cli") else f"max |f_{mode} - f_{ref}| {max_df:.3g}; "
                print(f"{n:>10}   {mode} / {ref}: {what} time {time_ratio:.2f}x, peak RSS {rss_ratio:.2f}x "
                      f"({b['peak_rss_mb']:.0f} vs {a['peak_rss_mb']:.0f} MB); {df}"
                      f"top {k} {'identical' if same_top else 'DIFFER'}", flush=True)
                line[f"{mode}_vs_{ref}"] = {"time_ratio": time_ratio, "rss_ratio": rss_ratio, "max_abs_df": max_df,
                                            "top_identical": same_top}
            if args.json:
                print(json.dumps(line))
            lines.append(line)
            if args.record:  # after every size, so a long run keeps what it finished
                from machine import write_record

                write_record(args.record, "benchmarks/scale.py", sys.argv[1:] if argv is None else argv, lines)
    finally:
        if not args.keep:
            for p in made:
                p.unlink(missing_ok=True)
            for p in folder.glob("*texts_*.jsonl"):  # the cli modes' text files
                p.unlink()
            for p in folder.glob("texts_*_shards*"):
                shutil.rmtree(p)
            if not args.dir:
                target.unlink(missing_ok=True)
                folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
