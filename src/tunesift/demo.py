"""`tunesift demo`: GOT-D and its baselines on an embedded default that needs no user files.

The pool is Debian's ``fortunes`` collection (about 15k quotations in ~40 categories: computers,
science, politics, love, ...), installed from the distribution's package registry by
``scripts/demo.sh``. The target is a held-out part of one category (default: science); every method
picks ``--budget`` pool rows and the demo prints, and draws, which categories each one picked.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np

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
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--fortunes", default=None, help="folder of fortune files (default: the Debian package's)")
    p.add_argument("--target-domain", default="science", help="category whose held-out half is the target")
    p.add_argument("--pool-size", type=int, default=2000, help="pool rows (a seeded sample; default 2000)")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--methods", default="gotd,knn,dsir,random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    return 0


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
