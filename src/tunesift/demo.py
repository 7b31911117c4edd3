"""`tunesift demo`: both methods on embedded defaults that need no user files.

- GOT-D and its baselines (``--part pool``): the pool is Debian's ``fortunes`` collection (about 15k
  quotations in ~40 categories: computers, science, politics, love, ...), installed from the
  distribution's package registry by ``scripts/demo.sh``. The target is a held-out part of one category
  (default: science); every method picks ``--budget`` pool rows and the demo prints, and draws, which
  categories each one picked.
- DEALRec (``--part rec``): MovieLens-100K (fetched from the ``recbole`` wheel by ``scripts/setup.sh``),
  DEALRec and random each pick users, a small TIGER is trained from scratch on each selection and ranks
  all movies for the test users; the demo prints Recall@10 with its paired comparison and draws what
  DEALRec picked (``demo-out/rec/selection.png``).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np

from tunesift.cli import add_device_argument, out_arg

log = logging.getLogger("tunesift")

FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes", "/usr/share/games/fortune")


def read_fortunes(folder: str | Path) -> list[dict]:
    """Every fortune as ``{"text", "domain"}`` (domain = the file it comes from), in file order."""
    folder = Path(folder)
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix or not path.is_file() or path.name.startswith("."):
            continue  # skip .dat/.u8 index files
        body = path.read_text(encoding="utf-8", errors="replace")
        for chunk in re.split(r"^%\s*$", body, flags=re.M):
            text = " ".join(chunk.split())
            if len(text) >= 20:
                rows.append({"text": text, "domain": path.name})
    return rows


def find_fortunes() -> Path | None:
    for d in FORTUNE_DIRS:
        if Path(d, "science").exists():
            return Path(d)
    return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run GOT-D and its baselines on an embedded default (Debian's fortunes)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-out", type=out_arg, help="output folder (default: demo-out)")
    p.add_argument("--fortunes", default=None, help="folder of fortune files (default: the Debian package's)")
    p.add_argument("--target-domain", default="science", help="category whose held-out half is the target")
    p.add_argument("--pool-size", type=int, default=2000, help="pool rows (a seeded sample; default 2000)")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--methods", default="gotd,knn,dsir,random")
    p.add_argument("--seed", type=int, default=0)
    add_device_argument(p)
    p.add_argument("--part", default="all", choices=("all", "pool", "rec"),
                   help="pool: GOT-D on fortunes; rec: DEALRec with TIGER on MovieLens-100K; all (default): both")
    p.add_argument("--rec-data", default=None, help="recommendation data for the rec part (default: MovieLens-100K)")
    p.add_argument("--rec-scale", default="demo", help="TIGER bench scale of the rec part (default: demo)")
    p.add_argument("--rec-budget", type=int, default=None, help="users DEALRec and random pick (default: the scale's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.part in ("all", "pool"):
        run_pool(args)
    if args.part in ("all", "rec"):
        run_rec(args)
    return 0


def run_rec(args: argparse.Namespace) -> None:
    """DEALRec vs random with TIGER few-shot training on MovieLens-100K (see the module docstring)."""
    from tunesift.bench.rec import RecBench
    from tunesift.bench.stats import paired_difference
    from tunesift.rec import select_samples
    from tunesift.rec.data import load_rec_data, movielens_100k
    from tunesift.rec.plot import plot_selection

    folder = Path(args.rec_data) if args.rec_data else movielens_100k(download=False)
    data = load_rec_data(folder)
    out = Path(args.out) / "rec"
    bench = RecBench(data, out, args.rec_scale, backbone="tiger", budget=args.rec_budget, device=args.device,
                     progress=not args.no_progress)
    methods = ("random", "dealrec")
    records = [bench.run(m, args.seed) for m in methods]
    bench.write(records, methods, command="tunesift demo --part rec")
    chosen = select_samples(bench.pool, bench.budget, "dealrec", seed=args.seed, backbone=bench.backbone,
                            device=bench.device, progress=False, cache_dir=bench.cache_dir / "selection",
                            out_dir=out / "dealrec-selection", **bench.scale.stages)
    picture = plot_selection(chosen.paths["scores"], out / "selection.png",
                             title=f"DEALRec (TIGER) on {data.name}: {bench.budget} of {len(chosen.pool)} users")
    per_user = bench.per_user(records)["recall@10"]
    d = paired_difference(per_user["dealrec"], per_user["random"], seed=0)
    print(f"\nDEALRec vs random, {bench.budget} of {len(chosen.pool)} {data.name} users, TIGER trained on each "
          f"selection, {len(bench.test_users)} test users (one seed):")
    for rec in records:
        print(f"  {rec['method']:8s} Recall@10 {rec['recall@10']:.4f}   NDCG@10 {rec['ndcg@10']:.4f}   "
              f"(select {rec['selection_s']:.0f} s, train {rec['finetune_s']:.0f} s)")
    print(f"  difference {d.diff:+.4f}, 95% CI [{d.low:+.4f}, {d.high:+.4f}], p = {d.p_value:.3f}"
          f" ({'significant' if d.significant else 'not significant'} with {len(bench.test_users)} test users; "
          f"the smallest detectable difference is {d.mde:.4f})")
    print(f"\npicture: {picture}; tables: {out / 'results.md'}")


def run_pool(args: argparse.Namespace) -> None:
    from tunesift.io.atomic import write_json, write_jsonl
    from tunesift.io.tables import read_text_set
    from tunesift.pool import select_from_pool

    folder = Path(args.fortunes) if args.fortunes else find_fortunes()
    if folder is None or not folder.exists():
        raise FileNotFoundError("no fortunes found: install Debian's `fortunes` package (scripts/demo.sh does) "
                                "or pass --fortunes DIR")
    rows = read_fortunes(folder)
    rng = np.random.default_rng(args.seed)
    in_target = [i for i, r in enumerate(rows) if r["domain"] == args.target_domain]
    if len(in_target) < 4:
        raise ValueError(f"category {args.target_domain!r} has {len(in_target)} fortunes in {folder}")
    held = set(rng.choice(in_target, size=len(in_target) // 2, replace=False).tolist())
    rest = [i for i in range(len(rows)) if i not in held]
    pool_idx = np.sort(rng.choice(rest, size=min(args.pool_size, len(rest)), replace=False))
    out = Path(args.out)
    write_jsonl(out / "pool.jsonl", ({"id": int(i), **rows[i]} for i in pool_idx))
    write_jsonl(out / "target.jsonl", ({"id": int(i), **rows[i]} for i in sorted(held)))
    pool = read_text_set(out / "pool.jsonl", id_field="id", name="pool")
    target = read_text_set(out / "target.jsonl", id_field="id", name="target")
    domains = pool.column("domain")
    base = Counter(domains)
    log.info("demo: pool %d fortunes from %d categories (%d %s), target %d held-out %s fortunes, budget %d",
             len(pool), len(base), base[args.target_domain], args.target_domain, len(target),
             args.target_domain, args.budget)
    summary = {}
    for method in args.methods.split(","):
        res = select_from_pool(pool, target, args.budget, method=method, seed=args.seed, device=args.device,
                               out_dir=out / method)
        picked = Counter(domains[i] for i in res.indices)
        summary[method] = {"domains": dict(picked.most_common()),
                           "target_domain_share": picked[args.target_domain] / args.budget,
                           "seconds": res.manifest["timings_s"].get("total")}
    pool_share = base[args.target_domain] / len(pool)
    print(f"\nshare of '{args.target_domain}' among the {args.budget} picks (pool: {pool_share:.1%})")
    for method, s in summary.items():
        top = ", ".join(f"{d} {c}" for d, c in list(s["domains"].items())[:5])
        print(f"  {method:8s} {s['target_domain_share']:6.1%}   top categories: {top}")
    write_json(out / "summary.json", {"pool_share": pool_share, "methods": summary,
                                      "target_domain": args.target_domain, "budget": args.budget})
    try:
        _plot(out / "composition.png", summary, base, args)
        print(f"\npicture: {out / 'composition.png'}; selections: {out}/<method>/selected.jsonl")
    except ImportError:
        pass


def _plot(path: Path, summary: dict, base: Counter, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tunesift.io.atomic import atomic_write

    cats = [d for d, _ in base.most_common(8)]
    if args.target_domain not in cats:
        cats = [args.target_domain] + cats[:7]
    labels = ["pool"] + list(summary)
    shares = [[base[c] / sum(base.values()) for c in cats]]
    for s in summary.values():
        picked = s["domains"]
        shares.append([picked.get(c, 0) / args.budget for c in cats])
    fig, ax = plt.subplots(figsize=(8, 4))
    left = np.zeros(len(labels))
    for j, c in enumerate(cats):
        vals = np.array([row[j] for row in shares])
        ax.barh(labels, vals, left=left, label=c)
        left += vals
    ax.barh(labels, 1 - left, left=left, color="lightgrey", label="other")
    ax.set_xlabel(f"share of the picks (target: held-out '{args.target_domain}' fortunes)")
    ax.legend(ncol=3, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.invert_yaxis()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
