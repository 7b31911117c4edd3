"""The cost of TSDS's selection against GOT-D's, on the same synthetic pool, in one process.

The pool is ``ot_speed.py``'s synthetic case (N unit-norm points around 50 directions with Dirichlet
proportions, the target M points from 5 of them, d = 384, seeded), with a fraction ``--duplicates`` of
the pool's rows replaced by near-copies of other rows (0.01 apart), so that TSDS's densities are not all
1. Both methods run through ``tunesift.pool.select_from_pool`` on the same arrays with their defaults
(or the flags below), interleaved: each repeat runs both, alternating which goes first, and the fastest
repeat is reported with its stages (TSDS: the neighbour search, the densities, the walk; GOT-D: the OT
solve). Wall-clock seconds on a loaded machine are noisy: compare the two within one run.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/tsds_cost.py --n 20000 --threads 1
    python benchmarks/tsds_cost.py --n 20000 100000 --m 2000 --repeat 3 --record benchmarks/results/tsds-cost
    python benchmarks/tsds_cost.py --n 1000000 --device cuda --record /tmp/tsds-gpu
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("tsds", "gotd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--n", type=int, nargs="+", default=[20_000, 100_000], help="pool sizes (default 20000 100000)")
    data.add_argument("--m", type=int, default=2000, help="target size (default 2000)")
    data.add_argument("--dim", type=int, default=384, help="dimension (default 384)")
    data.add_argument("--duplicates", type=float, default=0.1,
                      help="fraction of pool rows replaced by near-copies of other rows (default 0.1)")
    data.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--budget", type=int, default=1000, help="examples selected (the cost hardly depends on it)")
    run.add_argument("--repeat", type=int, default=1, help="runs of each method per size; the fastest is reported")
    run.add_argument("--methods", default="tsds,gotd", help="comma-separated, of: tsds, gotd")
    run.add_argument("--device", default="cpu")
    run.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    run.add_argument("--record", default=None, metavar="DIR",
                     help="write DIR/record.json: the machine, the command, the settings and every run")
    tsds = parser.add_argument_group("TSDS settings (default: the method's, i.e. the authors')")
    for flag, kind in (("--tsds-alpha", float), ("--tsds-c", float), ("--tsds-sigma", float), ("--tsds-k", int),
                       ("--tsds-kde-k", int)):
        tsds.add_argument(flag, type=kind, default=None)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if not 0 <= args.duplicates < 1:
        parser.error(f"--duplicates must be in [0, 1), got {args.duplicates}")
    return args


def synthetic(n: int, m: int, dim: int, duplicates: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``ot_speed.py``'s synthetic case with the last ``duplicates``·n rows replaced by near-copies."""
    from ot_speed import synthetic_case

    pool, target = synthetic_case(n, m, dim, seed)
    copies = int(round(duplicates * n))
    if copies:
        rng = np.random.default_rng(seed + 1)
        source = rng.integers(0, n - copies, size=copies)
        near = pool[source] + (0.01 / np.sqrt(dim)) * rng.standard_normal((copies, dim)).astype(np.float32)
        pool[n - copies:] = near / np.linalg.norm(near, axis=1, keepdims=True)
    return pool, target


def method_for(name: str, args: argparse.Namespace) -> Any:
    from tunesift.pool.gotd import GOTD
    from tunesift.pool.tsds import TSDS

    if name == "gotd":
        return GOTD()
    given = {"alpha": args.tsds_alpha, "c": args.tsds_c, "sigma": args.tsds_sigma, "k": args.tsds_k,
             "kde_k": args.tsds_kde_k}
    return TSDS(**{k: v for k, v in given.items() if v is not None})


def run_one(name: str, pool, target, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    from tunesift.pool import select_from_pool

    method = method_for(name, args)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sel = select_from_pool(pool, target, min(args.budget, len(x)), method=method, seed=args.seed, pool_embeddings=x,
                           target_embeddings=y, cache_dir=None, device=args.device, progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    info = sel.manifest["method_info"]
    if name == "tsds":
        keep = ("stop", "level_s", "k", "kde_k", "support", "neighbourhood_rows", "density_rows", "depth_reached",
                "rounds", "transport_cost", "regulariser", "objective")
        summary = {k: info[k] for k in keep}
    else:
        summary = {k: info["solver"][k] for k in ("method", "converged", "n_iter", "final_error", "ot_cost")}
    stages = {k: v for k, v in sel.manifest["timings_s"].items() if k != "total"}
    return {"method": name, "seconds": seconds, "cpu_seconds": cpu, "stages": stages, "info": summary,
            "settings": sel.manifest["settings"], "selected": sel.indices}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from tunesift.io.tables import TextSet

    if args.threads:
        torch.set_num_threads(args.threads)
    records: list[dict[str, Any]] = []
    for n in args.n:
        x, y = synthetic(n, args.m, args.dim, args.duplicates, args.seed)
        pool = TextSet.from_texts([f"p{i}" for i in range(n)], name=f"synthetic {n}")
        target = TextSet.from_texts([f"t{i}" for i in range(len(y))], name="synthetic target")
        best: dict[str, dict[str, Any]] = {}
        for rep in range(max(1, args.repeat)):
            order = args.methods if rep % 2 == 0 else args.methods[::-1]
            for name in order:
                out = run_one(name, pool, target, x, y, args)
                print(f"  n={n} repeat {rep + 1} {name}: {out['seconds']:.2f} s", file=sys.stderr)
                if name not in best or out["seconds"] < best[name]["seconds"]:
                    best[name] = out
        overlap = None
        if len(best) == 2:
            a, b = (set(best[m]["selected"].tolist()) for m in METHODS)
            overlap = len(a & b) / max(1, min(len(a), len(b)))
        for name in args.methods:
            out = best[name]
            out.pop("selected")
            records.append({"n": n, "m": int(len(y)), "dim": args.dim, "duplicates": args.duplicates, **out,
                            "selection_overlap": overlap})
    print_table(records)
    if args.record:
        from machine import machine_info

        from tunesift.io.atomic import write_json

        folder = Path(args.record)
        folder.mkdir(parents=True, exist_ok=True)
        command = ["python", "benchmarks/tsds_cost.py", *(sys.argv[1:] if argv is None else argv)]
        write_json(folder / "record.json", {"command": " ".join(command), "machine": machine_info(),
                                            "threads": torch.get_num_threads(),
                                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                            "config": {k: v for k, v in vars(args).items() if k != "record"},
                                            "results": records})
        print(f"wrote {folder / 'record.json'}", file=sys.stderr)


def print_table(records: list[dict[str, Any]]) -> None:
    header = f"{'N':>8} {'M':>5} {'method':<6} {'seconds':>8} {'cpu s':>8}  stages (s)  /  solution"
    print(header)
    print("-" * len(header))
    for r in records:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        i = r["info"]
        if r["method"] == "tsds":
            note = (f"stop {i['stop']}, K {i['k']}, support {i['support']}, densities {i['density_rows']} of "
                    f"{i['neighbourhood_rows']} rows (depth {i['depth_reached']})")
        else:
            note = f"{i['n_iter']} iterations, converged {i['converged']}"
        print(f"{r['n']:>8} {r['m']:>5} {r['method']:<6} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f}  "
              f"{stages}  /  {note}")
    overlaps = {r["n"]: r["selection_overlap"] for r in records if r["selection_overlap"] is not None}
    for n, o in overlaps.items():
        print(f"N={n}: {o:.1%} of the selected rows are the same for tsds and gotd")


if __name__ == "__main__":
    main()
