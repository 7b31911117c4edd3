"""Speed, memory and agreement of tunesift's OT solvers against ott-jax (GOT-D's solver) and POT.

Every case solves the same entropic OT problem (pool x, target y, uniform masses, squared-Euclidean
cost) with GOT-D's released settings: epsilon 0.1 (absolute), momentum 1.3, threshold 0.1, at most
2000 iterations, cost evaluated online in blocks of 2000 rows. Solvers:

- ``ours``: ``tunesift.ot.sinkhorn`` with those settings (online cost: memory O((N + M) d)) except
  the threshold, ``--our-threshold`` (default 1e-3). ott-jax checks its error only every 10
  iterations, so at threshold 0.1 it usually stops far below it; ours checks every iteration (the
  error comes free with the sweep) and would stop right at 0.1, a less converged answer.
- ``ours-same``: ours with exactly ott-jax's threshold.
- ``ours-stored``: ``ours`` with a cost memory budget (the (N, M) cost stored once), if it fits.
- ``semidual``: ``tunesift.ot.solve_semidual`` (L-BFGS on the semi-dual), ``--our-threshold``.
- ``ott-jax``: ``PointCloud(x, y, batch_size=2000, epsilon=0.1)`` +
  ``Sinkhorn(momentum=Momentum(value=1.3), threshold=0.1, max_iterations=2000)``, jitted; the
  compile time is reported apart from the solve.
- ``pot``: ``ot.sinkhorn(..., method="sinkhorn_log")`` on the dense cost (only where it fits; its
  stopping rule is the L2 error of the second marginal, checked every 10 iterations).

Agreement: GOT-D keeps the pool points with the most negative potential, so for each solver we report
the overlap of its k most negative ``f`` with ott-jax's (k = 5% of N by default), and the Pearson
and Spearman correlations of ``f``; with a tightly converged float64 reference ("truth") too.
Peak memory: the rise of the process's peak resident set during the solve (CPU; glibc is told to
return freed blocks so that earlier runs do not hide later peaks), or ``torch.cuda.max_memory_allocated``
for ours on a GPU. Times are wall-clock seconds; the machine's load adds noise, so compare ratios
within one run.

Examples::

    python benchmarks/ot_speed.py                                   # synthetic, N = 10k and 20k, M = 2k
    python benchmarks/ot_speed.py --pool-embeddings pool.npy --target-embeddings target.npy \\
        --n 20000 100000 --m 2000 --threads 1 --json
    python benchmarks/ot_speed.py --synthetic 1000000 --solvers ours,semidual --device cuda --our-block-size 32768
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

SOLVERS = ("ours", "ours-same", "ours-stored", "semidual", "ott-jax", "pot")
KEYS = {"ours": "ours", "ours-same": "same", "ours-stored": "stored", "semidual": "semidual", "ott-jax": "ref",
        "pot": "pot"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--pool-embeddings", help="(N, d) .npy of pool embeddings (real case)")
    data.add_argument("--target-embeddings", help="(M, d) .npy of target embeddings (real case)")
    data.add_argument("--n", type=int, nargs="+", default=None,
                      help="pool subsample sizes for the real case (default: the whole pool)")
    data.add_argument("--synthetic", type=int, nargs="*", default=None,
                      help="pool sizes of synthetic unit-norm clustered cases (default 10000 20000 when no "
                           "real embeddings are given)")
    data.add_argument("--m", type=int, default=2000, help="target size (subsample of the real target; default 2000)")
    data.add_argument("--dim", type=int, default=384, help="dimension of synthetic points (default 384)")
    data.add_argument("--seed", type=int, default=0)
    solve = parser.add_argument_group("solver settings (GOT-D's by default)")
    solve.add_argument("--epsilon", type=float, default=0.1)
    solve.add_argument("--momentum", type=float, default=1.3)
    solve.add_argument("--threshold", type=float, default=0.1)
    solve.add_argument("--max-iter", type=int, default=2000)
    solve.add_argument("--our-momentum", type=float, default=None,
                       help="momentum of ours, ours-stored (default --momentum; ours-same always uses --momentum)")
    solve.add_argument("--our-threshold", type=float, default=1e-3,
                       help="threshold of ours, ours-stored and semidual (L1 error of both marginals)")
    solve.add_argument("--pot-threshold", type=float, default=None,
                       help="POT's stopThr (L2 error of the second marginal); default --our-threshold")
    solve.add_argument("--block-size", type=int, default=2000, help="rows per block, ours and ott-jax")
    solve.add_argument("--our-block-size", type=int, default=None, help="rows per block for ours only")
    solve.add_argument("--cost-memory-budget", type=float, default=8e9,
                       help="bytes for ours-stored (default 8e9); the case is skipped when N M 4 exceeds it")
    run = parser.add_argument_group("run")
    run.add_argument("--solvers", default=",".join(SOLVERS), help=f"comma-separated subset of {','.join(SOLVERS)}")
    run.add_argument("--device", default="cpu", help="device for ours (cpu or cuda); ott-jax and POT use the CPU")
    run.add_argument("--threads", type=int, default=None,
                     help="CPU threads for torch (and, when 1, for XLA); default: all cores")
    run.add_argument("--k", type=int, default=None, help="top-k size (default: --topk-frac of N)")
    run.add_argument("--topk-frac", type=float, default=0.05)
    run.add_argument("--pot-max-entries", type=float, default=5e7, help="run POT only when N M <= this")
    run.add_argument("--truth-threshold", type=float, default=1e-5,
                     help="marginal error of the float64 reference solve; 0 skips it")
    run.add_argument("--repeat", type=int, default=1, help="time each solve this many times and keep the fastest")
    run.add_argument("--json", action="store_true", help="print one JSON object per case (after the table)")
    run.add_argument("--record", default=None, metavar="FILE", help="write the machine, the command and every case's "
                     "results to this JSON file (the evidence of a published table: benchmarks/results/STUDY/NAME.json)")
    args = parser.parse_args(argv)
    args.solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    unknown = set(args.solvers) - set(SOLVERS)
    if unknown:
        parser.error(f"unknown solvers {sorted(unknown)}; choose from {SOLVERS}")
    if bool(args.pool_embeddings) != bool(args.target_embeddings):
        parser.error("--pool-embeddings and --target-embeddings go together")
    if args.synthetic is None and not args.pool_embeddings:
        args.synthetic = [10_000, 20_000]
    return args


# ----------------------------------------------------------------------------------------- data


def clustered_points(n: int, dim: int, centers: np.ndarray, weights: np.ndarray, rng: np.random.Generator,
                     noise: float = 1.0, chunk: int = 100_000) -> np.ndarray:
    """Unit-norm points around ``centers`` (mixture ``weights``): within-cluster cosine about 0.5."""
    out = np.empty((n, dim), dtype=np.float32)
    labels = rng.choice(len(centers), size=n, p=weights)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = centers[labels[start:stop]] + (noise / math.sqrt(dim)) * rng.standard_normal((stop - start, dim))
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def synthetic_case(n: int, m: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 50-domain pool (Dirichlet proportions) and a target drawn from 5 of its domains."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    pool = clustered_points(n, dim, centers, rng.dirichlet(np.ones(50)), rng)
    target_weights = np.zeros(50)
    target_weights[rng.choice(50, 5, replace=False)] = rng.dirichlet(np.ones(5))
    target = clustered_points(m, dim, centers, target_weights, rng)
    return pool, target


def real_cases(args: argparse.Namespace) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pool = np.load(args.pool_embeddings, mmap_mode="r")
    target = np.load(args.target_embeddings, mmap_mode="r")
    if pool.ndim != 2 or target.ndim != 2 or pool.shape[1] != target.shape[1]:
        raise SystemExit(f"embeddings must be (N, d) and (M, d): got {pool.shape} and {target.shape}")
    rng = np.random.default_rng(args.seed)
    m = min(args.m, target.shape[0])
    y = np.ascontiguousarray(target[np.sort(rng.choice(target.shape[0], m, replace=False))], dtype=np.float32)
    cases = []
    for n in args.n or [pool.shape[0]]:
        if n > pool.shape[0]:
            raise SystemExit(f"--n {n} exceeds the pool's {pool.shape[0]} rows")
        rows = np.sort(rng.choice(pool.shape[0], n, replace=False))
        cases.append(("real", np.ascontiguousarray(pool[rows], dtype=np.float32), y))
    return cases


# -------------------------------------------------------------------------------------- measuring


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{key}:\s+(\d+)", handle.read()).group(1))


def setup_memory_accounting() -> None:
    """Make freed large blocks go back to the OS, so peak RSS rises per run are comparable."""
    if _LIBC is not None:
        _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed 1 MiB, no dynamic raise after frees
        _LIBC.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD


def reset_peak() -> int | None:
    """Release free memory, reset the peak-RSS counter; return the current RSS in bytes (or None)."""
    gc.collect()
    if _LIBC is None or not os.path.exists("/proc/self/clear_refs"):
        return None
    _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return None
    return _status_kib("VmRSS") * 1024


@dataclass
class Run:
    solver: str
    seconds: float = math.nan
    compile_seconds: float = math.nan
    iterations: int | None = None
    passes: int | None = None
    converged: bool | None = None
    error: float = math.nan
    peak_bytes: float = math.nan
    f: np.ndarray | None = None
    note: str = ""
    agreement: dict[str, float] = field(default_factory=dict)


REPEAT = 1


def measured(run: Run, solve: Callable[[], Any], cuda: bool = False) -> Any:
    """Time ``solve()`` (fastest of ``REPEAT`` runs) and record its peak memory rise into ``run``."""
    import torch

    for _ in range(REPEAT):
        base = reset_peak()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            gpu_base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = solve()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if math.isnan(run.seconds) or seconds < run.seconds:
            run.seconds = seconds
        if cuda:
            run.peak_bytes = torch.cuda.max_memory_allocated() - gpu_base
        elif base is not None:
            run.peak_bytes = _status_kib("VmHWM") * 1024 - base
    return out


def warm_up(args: argparse.Namespace) -> None:
    """One small solve per library, so that no timed run pays for first-use initialisation."""
    x, y = synthetic_case(600, 60, args.dim, args.seed + 1)
    small = argparse.Namespace(**{**vars(args), "cost_memory_budget": 1e9, "max_iter": 5, "truth_threshold": 0})
    for solver in args.solvers:
        if solver == "ott-jax":
            run_ott(x, y, small)
        elif solver == "pot":
            run_pot(x, y, small)
        else:
            run_ours(solver, x, y, small)


# ---------------------------------------------------------------------------------------- solvers


def run_ours(kind: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> Run:
    import torch

    from tunesift.ot import sinkhorn, solve_semidual

    device = torch.device(args.device)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    block = args.our_block_size or args.block_size
    run = Run(kind)
    if kind == "ours-stored" and x.shape[0] * y.shape[0] * 4 > args.cost_memory_budget:
        run.note = "skipped: cost does not fit --cost-memory-budget"
        return run
    threshold = args.threshold if kind == "ours-same" else args.our_threshold
    if kind == "semidual":
        solve = lambda: solve_semidual(xt, yt, epsilon=args.epsilon, threshold=threshold,  # noqa: E731
                                       max_iter=args.max_iter, block_size=block, warn=False)
    else:
        budget = int(args.cost_memory_budget) if kind == "ours-stored" else 0
        momentum = args.momentum if kind == "ours-same" or args.our_momentum is None else args.our_momentum
        solve = lambda: sinkhorn(xt, yt, epsilon=args.epsilon, momentum=momentum,  # noqa: E731
                                 threshold=threshold, max_iter=args.max_iter, block_size=block,
                                 cost_memory_budget=budget, warn=False)
    result = measured(run, solve, cuda=device.type == "cuda")
    run.iterations, run.passes, run.converged = result.n_iter, result.n_passes, result.converged
    run.error = result.errors[-1]
    run.f = result.f.double().cpu().numpy()
    return run


def run_ott(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> Run:
    import jax
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import acceleration, sinkhorn

    run = Run("ott-jax")
    solver = sinkhorn.Sinkhorn(momentum=acceleration.Momentum(value=args.momentum), threshold=args.threshold,
                               max_iterations=args.max_iter)

    def solve(x, y):
        geom = pointcloud.PointCloud(x, y, batch_size=args.block_size, epsilon=args.epsilon)
        out = solver(linear_problem.LinearProblem(geom))
        return out.f, out.errors, out.converged

    xj, yj = jax.device_put(x), jax.device_put(y)
    start = time.perf_counter()
    compiled = jax.jit(solve).lower(xj, yj).compile()
    run.compile_seconds = time.perf_counter() - start
    f, errors, converged = measured(run, lambda: jax.block_until_ready(compiled(xj, yj)))
    errors = np.asarray(errors)
    done = errors[errors >= 0]  # -1 marks checks never reached
    run.iterations = int(len(done) * solver.inner_iterations)
    run.passes = int(len(done) * (2 * solver.inner_iterations + 1) + 1)  # g and f updates, error, cost
    run.converged = bool(converged)
    run.error = float(done[-1]) if len(done) else math.nan
    run.f = np.asarray(f, dtype=np.float64)
    return run


def run_pot(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> Run:
    import ot

    run = Run("pot")
    if x.shape[0] * y.shape[0] > args.pot_max_entries:
        run.note = "skipped: dense cost exceeds --pot-max-entries"
        return run
    a = np.full(x.shape[0], 1.0 / x.shape[0], dtype=np.float32)
    b = np.full(y.shape[0], 1.0 / y.shape[0], dtype=np.float32)
    threshold = args.our_threshold if args.pot_threshold is None else args.pot_threshold

    def solve():
        cost = ot.dist(x, y)  # squared Euclidean, (N, M)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ot.sinkhorn(a, b, cost, args.epsilon, method="sinkhorn_log", stopThr=threshold,
                               numItermax=args.max_iter, log=True)

    _, log = measured(run, solve)
    run.iterations = int(log["niter"]) + 1  # POT reports the index of its last iteration
    run.passes = 2 * run.iterations
    run.error = float(log["err"][-1]) if log.get("err") else math.nan
    run.converged = bool(run.error < threshold)
    run.f = args.epsilon * np.asarray(log["log_u"], dtype=np.float64)
    return run


def run_truth(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """f of a tightly converged float64 solve (plain Sinkhorn, cost stored when it fits in 4 GB)."""
    import torch

    from tunesift.ot import sinkhorn

    budget = int(4e9) if x.shape[0] * y.shape[0] * 8 <= 4e9 else 0
    result = sinkhorn(torch.from_numpy(x).double(), torch.from_numpy(y).double(), epsilon=args.epsilon,
                      threshold=args.truth_threshold, max_iter=20 * args.max_iter, block_size=args.block_size,
                      cost_memory_budget=budget, warn=True)
    return result.f.numpy()


# -------------------------------------------------------------------------------------- agreement


def top_k(f: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most negative potentials (GOT-D's picks)."""
    return np.argpartition(f, k - 1)[:k]


def agreement(f: np.ndarray, reference: np.ndarray, k: int) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    overlap = len(np.intersect1d(top_k(f, k), top_k(reference, k), assume_unique=True)) / k
    return {"topk_overlap": overlap, "pearson": float(pearsonr(f, reference)[0]),
            "spearman": float(spearmanr(f, reference)[0])}


# ------------------------------------------------------------------------------------------ main


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def solve_case(label: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    n, m = x.shape[0], y.shape[0]
    k = min(args.k or max(1, int(round(args.topk_frac * n))), n)
    runs: dict[str, Run] = {}
    for solver in args.solvers:
        print(f"  [{label} N={n} M={m}] {solver} ...", file=sys.stderr, flush=True)
        if solver == "ott-jax":
            runs[solver] = run_ott(x, y, args)
        elif solver == "pot":
            runs[solver] = run_pot(x, y, args)
        else:
            runs[solver] = run_ours(solver, x, y, args)
    truth = None
    if args.truth_threshold > 0:
        print(f"  [{label} N={n} M={m}] float64 reference ...", file=sys.stderr, flush=True)
        truth = run_truth(x, y, args)
    ott = runs.get("ott-jax")
    for run in runs.values():
        if run.f is None:
            continue
        if ott is not None and ott.f is not None and run is not ott:
            run.agreement.update({f"{key}": value for key, value in agreement(run.f, ott.f, k).items()})
        if truth is not None:
            run.agreement.update({f"truth_{key}": value for key, value in agreement(run.f, truth, k).items()})

    # table
    print(f"\n{label}: N={n}, M={m}, d={x.shape[1]}, k={k}, device={args.device}, threads={args.threads or 'all'}")
    header = ["solver", "solve_s", "compile_s", "iters", "passes", "conv", "error", "peak_MB",
              "vs_ott_x", "top-k(ott)", "spearman(ott)", "top-k(truth)"]
    rows = [header]
    for run in runs.values():
        speed = ott.seconds / run.seconds if ott is not None and run is not ott and run.seconds > 0 else math.nan
        rows.append([run.solver, fmt(run.seconds), fmt(run.compile_seconds), fmt(run.iterations), fmt(run.passes),
                     fmt(run.converged), fmt(run.error), fmt(run.peak_bytes / 2**20), fmt(speed),
                     fmt(run.agreement.get("topk_overlap"), 4), fmt(run.agreement.get("spearman"), 6),
                     fmt(run.agreement.get("truth_topk_overlap"), 4)])
        if run.note:
            rows[-1][1] = run.note
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width)
                               in enumerate(zip(row, widths))))

    ours = runs.get("ours")
    record: dict[str, Any] = {"case": label, "n": n, "m": m, "d": int(x.shape[1]), "k": k, "device": args.device,
                              "threads": args.threads, "epsilon": args.epsilon, "momentum": args.momentum,
                              "threshold": args.threshold, "our_threshold": args.our_threshold,
                              "our_momentum": args.momentum if args.our_momentum is None else args.our_momentum,
                              "block_size": args.block_size,
                              "ours_s": ours.seconds if ours else None,
                              "ref": "ott-jax 0.6.0" if ott else None, "ref_s": ott.seconds if ott else None,
                              "ref_compile_s": ott.compile_seconds if ott else None,
                              "topk_overlap": ours.agreement.get("topk_overlap") if ours else None}
    if ours is not None and ott is not None:
        record["speedup"] = ott.seconds / ours.seconds
        record["speedup_with_compile"] = (ott.seconds + ott.compile_seconds) / ours.seconds
    for run in runs.values():
        key = KEYS[run.solver]
        record.update({f"{key}_s": run.seconds, f"{key}_iter": run.iterations, f"{key}_passes": run.passes,
                       f"{key}_converged": run.converged, f"{key}_error": run.error,
                       f"{key}_peak_mb": run.peak_bytes / 2**20})
        if run.note:
            record[f"{key}_note"] = run.note
        for name, value in run.agreement.items():
            if key != "ours" or name.startswith("truth_"):
                record[f"{key}_{name}"] = value
            else:
                record[name] = value
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads == 1:
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if "ott-jax" in args.solvers:
        try:
            import ott  # noqa: F401
        except ImportError:
            raise SystemExit("ott-jax is not installed: pip install -e '.[bench]' (or drop it from --solvers)")
    setup_memory_accounting()
    global REPEAT
    REPEAT = max(1, args.repeat)
    warm_up(args)
    cases: list[tuple[str, np.ndarray, np.ndarray]] = []
    if args.pool_embeddings:
        cases += real_cases(args)
    for n in args.synthetic or []:
        cases.append(("synthetic", *synthetic_case(n, args.m, args.dim, args.seed)))
    records = [solve_case(label, x, y, args) for label, x, y in cases]
    if args.json:
        print()
        for record in records:
            print(json.dumps(record))
    if args.record:
        from machine import write_record

        write_record(args.record, "benchmarks/ot_speed.py", sys.argv[1:] if argv is None else argv, records)


if __name__ == "__main__":
    main()
