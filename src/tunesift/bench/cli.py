"""`tunesift bench`: select, fine-tune and evaluate per method and seed (``rec``; ``gotd`` when present)."""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex

from tunesift.cli import add_device_argument, add_executor_arguments, add_threads_argument, apply_threads, out_arg

log = logging.getLogger("tunesift")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark selection methods end to end (select, fine-tune, evaluate)",
                       description="Benchmarks that select data with each method and seed, fine-tune on it and "
                       "evaluate; finished runs are saved, so an interrupted bench resumes where it stopped.")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    register_rec(bench_sub)
    importlib.import_module("tunesift.bench.gotd").register(bench_sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def register_rec(bench_sub: argparse._SubParsersAction) -> None:
    from tunesift.bench.rec import DEFAULT_METHODS
    from tunesift.rec.backbone import REC_BACKBONES
    from tunesift.rec.cli import add_rec_flags

    scales: dict[str, list[str]] = {}
    for name in REC_BACKBONES:
        for scale, spec in REC_BACKBONES.get(name).scales.items():
            scales.setdefault(scale, []).append(f"{name}: {spec.note}" if spec.note else name)
    p = bench_sub.add_parser(
        "rec", help="DEALRec vs random/GraNd/EL2N/CCS/ablations/full training on a backbone (Recall/NDCG@K)",
        description="For each method and seed: select --budget users (DEALRec's pipeline; `full` = every user "
        "of the pool), train the backbone (BIGRec: LoRA fine-tuning of an LLM; TIGER: a seq2seq model over "
        "semantic IDs, from scratch) on their samples, rank all items for every test user and score "
        "Recall@K / NDCG@K. Writes results.md, results.csv, results.json (mean and std over seeds, paired "
        "bootstrap comparisons to random and full, time and peak memory per stage) and results.png to --out.",
    )
    p.add_argument("--data", required=True, help="DEALRec folder, RecBole files or an interaction table")
    p.add_argument("--out", required=True, type=out_arg, help="bench folder (reuse it to resume)")
    p.add_argument("--backbone", default="bigrec", choices=REC_BACKBONES.names(), help="the recommender (default: bigrec)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)}; also dealrec-no-effort, "
                   "dealrec-no-influence, greedy: the paper's ablations)")
    p.add_argument("--budget", type=int, default=None, help="users selected per run (default: the scale's)")
    p.add_argument("--seeds", type=int, default=3, help="runs per method, seeds 0..N-1 (default: 3)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--scale", default="tiny", choices=list(scales),
                   help="; ".join(f"{k}: " + " | ".join(v) for k, v in scales.items()) + " (default: tiny)")
    p.add_argument("--n-users", type=int, default=None, help="pool size: users sampled for selection (scale's)")
    p.add_argument("--n-test-users", type=int, default=None, help="test users sampled (scale's)")
    p.add_argument("--format", default=None, help="data format: dealrec, recbole or table (default: detected)")
    from tunesift.rec.cli import add_split_argument

    add_split_argument(p)
    add_device_argument(p)
    add_threads_argument(p)
    add_executor_arguments(p)
    p.add_argument("--cache-dir", default=None, help="item-embedding and selection caches (default: OUT/cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    table = add_rec_flags(p, bench=True, methods=False)
    p.set_defaults(func=run_rec, _flags=table)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this bench (explicit options only)."""
    parts = ["tunesift", "bench", "rec", "--data", args.data, "--backbone", args.backbone, "--methods", args.methods,
             "--seeds", str(args.seeds), "--scale", args.scale, "--out", args.out]
    for flag, value in (("--budget", args.budget), ("--first-seed", args.first_seed or None),
                        ("--n-users", args.n_users), ("--n-test-users", args.n_test_users),
                        ("--format", args.format), ("--split", args.split), ("--threads", args.threads)):
        if value is not None:
            parts += [flag, str(value)]
    for flag, value in args._flags.given(args):
        parts += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
    if args.device != "auto":
        parts += ["--device", args.device]
    return shlex.join(parts)


def run_rec(args: argparse.Namespace) -> int:
    from tunesift.bench.rec import run_rec_bench, scale_with
    from tunesift.rec.pipeline import STAGE_SETTINGS

    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    apply_threads(args)
    table = args._flags
    table.check_unused(args, [*STAGE_SETTINGS, args.backbone])
    stages = {k: v for name in STAGE_SETTINGS for k, v in table.values(args, name).items()}
    scale = scale_with(args.scale, args.backbone, stages=stages, settings=table.values(args, args.backbone),
                       n_users=args.n_users, n_test_users=args.n_test_users)
    from tunesift.executor import make_executor

    with make_executor(args.ray, args.ray_workers) as executor:
        result = run_rec_bench(
            args.data, args.out, methods=args.methods.split(","),
            seeds=range(args.first_seed, args.first_seed + args.seeds), scale=scale, backbone=args.backbone,
            budget=args.budget, device=args.device, cache_dir=args.cache_dir, progress=not args.no_progress,
            command=_command(args), format=args.format, executor=executor, split=args.split,
        )
    log.info("%d runs (%d computed now); wrote %s", len(result.records), len(result.ran),
             ", ".join(str(p) for p in result.files.values()))
    return 0
