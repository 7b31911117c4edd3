"""Keep the evidence of a bench folder (``tunesift bench rec`` or ``tunesift bench gotd``), pool several
folders' runs, and print a rec bench's tables.

A bench folder holds what its ``results.md`` is computed from (each run's record and per-example metrics, a
few hundred KB) beside gigabytes of caches, checkpoints and selections that go with the machine. Commands:

- ``pack SRC [SRC ...] DEST`` copies only the evidence into ``DEST``: ``bench.json``, per run ``result.json``
  and its per-example file (``per_user.npz`` of a rec bench: Recall/NDCG per test user; ``per_example.npz``
  of a warm-up bench: correctness, predictions, labels and, zero-shot, each label's score per test text;
  compressed), a rec bench's ``references.npz`` and a warm-up bench's small records of its shared stages
  (``cache/warm_head.json``, ``cache/pool_embeddings.json``, ``cache/lm_loss_before.json``). Every source
  must hold a bench with the settings of ``DEST`` (the data compared by fingerprint, not by path). A run
  already in ``DEST`` must have the same per-example values to the bit, or nothing is written: two runs of
  one seed that differ (another thread count, another CPU) are not the same run. No text, user or item id
  is copied.
- ``table DIR`` prints, from a rec bench or packed folder and without the data, the models or the caches,
  each metric's per-seed values and the paired tables of ``results.md`` (bootstrap over test users, seeds
  averaged; each seed against the reference's run of the same seed, its p-value also adjusted for the number
  of methods compared to that reference: Holm).
- ``summary DIR`` prints one table over a rec bench's methods: each metric's mean and 95% CI, the first
  metric's per-seed values and its difference to ``--reference`` (default ``random``) over test users and
  over seeds.
- A packed folder is a bench folder: copied to a working folder, the bench command with the same settings
  resumes on it, skipping the packed runs, so seeds run on different machines end in one table.

    python benchmarks/bench_runs.py pack /work/runs/tiger-stable benchmarks/results/tiger-stable
    python benchmarks/bench_runs.py table benchmarks/results/tiger-stable --metrics recall@10,recall@20
    python benchmarks/bench_runs.py summary benchmarks/results/tiger-stable --metrics recall@10,ndcg@10
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine.py beside it

COST = {"selection_s": "select s", "finetune_s": "train s", "eval_s": "rank s", "n_train": "training samples",
        "train_steps": "steps", "finetune_peak_rss_mb": "train peak RSS MB"}


PER_EXAMPLE = ("per_user.npz", "per_example.npz")  # a rec bench's, a warm-up bench's
STAGE_RECORDS = ("cache/warm_head.json", "cache/pool_embeddings.json", "cache/lm_loss_before.json")
# where a bench's settings name a path on the machine that ran it (the content is fingerprinted beside it)
MACHINE_PATHS = {"rec": (("data", "source"),),
                 "gotd": (("pool",), ("task_info", "source"), ("pool_embeddings",), ("verbalizer",))}


def bench_kind(settings: dict) -> str | None:
    """"rec" or "gotd" from a bench's settings, None for neither."""
    if isinstance(settings.get("data"), dict) and "fingerprint" in settings["data"]:
        return "rec"
    if "pool_fingerprint" in settings and "task_info" in settings:
        return "gotd"
    return None


def _settings(folder: Path) -> dict:
    path = folder / "bench.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: no bench.json; not a `tunesift bench rec` or `bench gotd` folder")
    settings = json.loads(path.read_text(encoding="utf-8"))
    if bench_kind(settings) is None:
        raise SystemExit(f"{path}: no data or pool fingerprint; not a `tunesift bench rec` or `bench gotd` folder")
    return settings


def _comparable(settings: dict) -> dict:
    """The settings without the paths of the machine that ran them: the same data read from another folder is
    the same bench."""
    out = json.loads(json.dumps(settings))
    for path in MACHINE_PATHS[bench_kind(settings)]:
        *parents, last = path
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def per_example_file(run: Path) -> Path | None:
    """The per-example evidence file of a run folder, None when it has none."""
    return next((run / name for name in PER_EXAMPLE if (run / name).is_file()), None)


def finished_runs(folder: Path) -> list[Path]:
    """The run folders of ``folder`` that hold a record and its per-example file."""
    return sorted(p.parent for p in (folder / "runs").glob("*/result.json") if per_example_file(p.parent))


def pack(sources: list[Path], dest: Path) -> dict[str, int]:
    """Copy the evidence of every finished run of ``sources`` into ``dest``; returns counts of runs
    ``added`` and ``same`` (already there, identical). Checks everything before writing anything."""
    from tunesift.io.atomic import atomic_write, write_json

    dest_settings = _settings(dest) if (dest / "bench.json").exists() else None
    base = dest_settings if dest_settings is not None else _settings(sources[0])
    references = _arrays(dest / "references.npz") if (dest / "references.npz").exists() else None
    plan: dict[str, tuple[dict, dict[str, np.ndarray], str]] = {}
    stage_records: dict[str, dict] = {}
    same = 0
    for src in sources:
        settings = _settings(src)
        if _comparable(settings) != _comparable(base):
            diff = sorted(k for k in set(settings) | set(base)
                          if _comparable(settings).get(k) != _comparable(base).get(k))
            raise SystemExit(f"{src}: a bench with other settings than {dest if dest_settings else sources[0]} "
                             f"({diff[0]}: {_comparable(settings).get(diff[0])!r} against "
                             f"{_comparable(base).get(diff[0])!r}); runs of different benches are not pooled")
        if (src / "references.npz").exists():
            refs = _arrays(src / "references.npz")
            if references is not None and not _same_arrays(references, refs):
                raise SystemExit(f"{src / 'references.npz'}: the reference rankers differ from another source's; "
                                 "the two folders did not rank the same test users")
            references = refs
        for run in finished_runs(src):
            record = json.loads((run / "result.json").read_text(encoding="utf-8"))
            name = per_example_file(run).name
            per_user = _arrays(run / name)
            earlier = plan.get(run.name)
            packed = dest / "runs" / run.name
            if earlier is None and (packed / name).exists():
                earlier = (json.loads((packed / "result.json").read_text(encoding="utf-8")), _arrays(packed / name))
                if _same_arrays(earlier[1], per_user):
                    same += 1
                    continue
            if earlier is not None:
                if not _same_arrays(earlier[1], per_user):
                    raise SystemExit(f"{run}: the same run is in two places with different per-example values (e.g. "
                                     f"another thread count or CPU); pack one of them, not both")
                same += 1
                continue
            plan[run.name] = (record, per_user, name)
        for rel in STAGE_RECORDS:  # a warm-up bench's shared stages (the first source's, they are per bench)
            if (src / rel).is_file() and rel not in stage_records:
                stage_records[rel] = json.loads((src / rel).read_text(encoding="utf-8"))
    write_json(dest / "bench.json", base)
    if not (dest / "machine.json").exists():  # where the runs ran: packing happens on that machine
        from machine import machine_info

        write_json(dest / "machine.json", {**machine_info(), "note": "the machine that packed the runs"})
    if references is not None:
        with atomic_write(dest / "references.npz", "wb") as f:
            np.savez_compressed(f, **references)
    for rel, record in stage_records.items():
        if not (dest / rel).exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            write_json(dest / rel, record)
    for name, (record, per_user, file_name) in plan.items():
        folder = dest / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **per_user)
        with atomic_write(folder / file_name, "wb") as f:
            f.write(buf.getvalue())
        write_json(folder / "result.json", record)  # last: a run counts as finished once its record is there
    return {"added": len(plan), "same": same}


def add_references(folder: Path, data: str) -> list[str]:
    """Add to a rec bench folder's ``references.npz`` the popularity rankers it lacks (a folder packed before
    they existed), computed from ``data`` for the bench's own pool and test users. The users are drawn again
    as the bench drew them (``data_seed``, the scale's sizes); the stored ``popular`` values must come out
    identical, or nothing is written. Returns the rankers added."""
    from tunesift.bench.rec import POPULARITY_RANKERS, bench_users, popularity_tops, score_tops
    from tunesift.io.atomic import atomic_write
    from tunesift.rec.data import load_rec_data

    settings = _settings(folder)
    if bench_kind(settings) != "rec":
        raise SystemExit(f"{folder}: not a `tunesift bench rec` folder")
    loaded = load_rec_data(data)
    if loaded.fingerprint != settings["data"]["fingerprint"]:
        raise SystemExit(f"{data}: not the data of {folder} (fingerprint {loaded.fingerprint[:12]}… against "
                         f"{settings['data']['fingerprint'][:12]}…)")
    scale = settings["scale"]
    pool_users, test_users = bench_users(loaded, scale.get("n_users"), scale.get("n_test_users"),
                                         settings.get("data_seed", 0))
    stored = _arrays(folder / "references.npz")
    metrics = sorted({k.split(":", 1)[1] for k in stored})
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    tops = popularity_tops(loaded.subset_users(pool_users), loaded, test_users, max(ks))
    scored = score_tops(tops, loaded, test_users, ks)
    for m in metrics:
        if f"popular:{m}" in stored and not np.array_equal(stored[f"popular:{m}"], scored["popular"][m]):
            raise SystemExit(f"{folder}: the stored `popular` {m} differs from the one recomputed here; the pool or "
                             "the test users were not drawn as the bench drew them; nothing written")
    added = [r for r in POPULARITY_RANKERS if any(f"{r}:{m}" not in stored for m in metrics)]
    if added:
        stored.update({f"{r}:{m}": scored[r][m] for r in added for m in metrics})
        buf = io.BytesIO()
        np.savez_compressed(buf, **stored)
        with atomic_write(folder / "references.npz", "wb") as f:
            f.write(buf.getvalue())
    return added


def load(folder: Path) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], dict[str, dict[str, np.ndarray]],
                                list[dict]]:
    """method -> seed -> metric -> per-user values, the reference rankers (name -> metric -> values) and the
    runs' records."""
    runs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    records = []
    for run in finished_runs(folder):
        record = json.loads((run / "result.json").read_text(encoding="utf-8"))
        runs.setdefault(str(record["method"]), {})[int(record["seed"])] = _arrays(run / "per_user.npz")
        records.append(record)
    refs: dict[str, dict[str, np.ndarray]] = {}
    if (folder / "references.npz").exists():
        for key, values in _arrays(folder / "references.npz").items():
            name, metric = key.split(":", 1)
            refs.setdefault(name, {})[metric] = values
    return runs, refs, records


def _labels() -> dict[str, str]:
    from tunesift.bench.rec import REFERENCE_LABELS

    return REFERENCE_LABELS


class Runs:
    """A bench or packed folder's finished runs, read once: the methods in order, their per-user values by
    metric (method -> (seeds, users)) with the seed of each row, and the reference rankers beside them."""

    def __init__(self, folder: Path, metrics: list[str] | None = None, order: list[str] | None = None):
        self.runs, self.refs, self.records = load(folder)
        if not self.runs:
            raise SystemExit(f"{folder}: no finished run (runs/*/result.json with per_user.npz)")
        self.methods = [m for m in (order or []) if m in self.runs] + sorted(set(self.runs) - set(order or []))
        known = sorted({k for by_seed in self.runs.values() for arrays in by_seed.values() for k in arrays})
        self.metrics = metrics or known
        missing = [m for m in self.metrics if m not in known]
        if missing:
            raise SystemExit(f"{folder}: no metric {missing[0]!r} in the runs; they have {', '.join(known)}")
        self.seeds = {m: sorted(self.runs[m]) for m in self.methods}

    def per_example(self, metric: str) -> dict[str, np.ndarray]:
        """method -> (seeds, users), then each reference ranker -> (1, users)."""
        out = {m: np.stack([self.runs[m][s][metric] for s in self.seeds[m]]) for m in self.methods}
        out.update({_labels().get(r, r): by[metric][None] for r, by in self.refs.items() if metric in by})
        return out

    def run_means(self, metric: str) -> dict[str, dict[int, float]]:
        from tunesift.bench.stats import run_means

        values = self.per_example(metric)
        return run_means({m: values[m] for m in self.methods}, self.seeds)


def tables(folder: Path, metrics: list[str] | None = None, references: tuple[str, ...] = ("random", "full"),
           order: list[str] | None = None) -> str:
    """Markdown: per metric, the per-seed table and ``results.md``'s paired section (bootstrap over test users;
    run to run, with Holm-adjusted p-values); then each method's cost per run."""
    from tunesift.bench.common import markdown_table, summarize
    from tunesift.bench.stats import paired_section

    r = Runs(folder, metrics, order)
    parts = []
    for metric in r.metrics:
        means = r.run_means(metric)
        lines = [f"## {metric}", "", "| method | seeds | per-seed mean | mean | sd over seeds |", "|---|---|---|---|---|"]
        for m in r.methods:
            values = [means[m][s] for s in r.seeds[m]]
            sd = f"{np.std(values, ddof=1):.4f}" if len(values) > 1 else "—"
            lines.append(f"| {m} | {len(values)} | " + ", ".join(f"{v:.4f}" for v in values)
                         + f" | {np.mean(values):.4f} | {sd} |")
        text, _, _ = paired_section(r.per_example(metric), r.seeds, references, metric, f"{metric}: paired comparisons")
        parts += ["\n".join(lines) + "\n", text]
    cost = [c for c in COST if any(c in rec for rec in r.records)]
    parts.append("## Cost per run (mean ± sd over seeds)\n\n"
                 + markdown_table(summarize(r.records, ["method"], cost, order=r.methods), cost, digits=1, labels=COST))
    return "\n".join(parts)


def summary(folder: Path, metrics: list[str] | None = None, reference: str = "random",
            order: list[str] | None = None) -> str:
    """One Markdown table over the methods: each metric's mean [95% CI] (bootstrap over test users, seeds
    averaged), the first metric's per-seed values, and its difference to ``reference`` twice — over test
    users (paired bootstrap) and over seeds (each seed against the reference's run of that seed, paired
    t-test; Holm over the methods compared). **Bold**: the interval excludes 0."""
    from tunesift.bench.stats import _p, compare_methods, difference_text, holm_by_reference, seed_comparisons

    r = Runs(folder, metrics, order)
    if reference not in r.runs:
        raise SystemExit(f"{folder}: no run of the reference {reference!r}; methods: {', '.join(r.methods)}")
    primary = r.metrics[0]
    estimates = {metric: {c.method: c for c in compare_methods(r.per_example(metric), [reference], seed=0)}
                 for metric in r.metrics}
    means = r.run_means(primary)
    found = seed_comparisons(means, [reference])
    adjusted = holm_by_reference(found, [reference])
    head = (["method", "seeds"] + [f"{m} [95% CI]" for m in r.metrics] + [f"per-seed {primary}"]
            + [f"Δ {primary} vs {reference}, test users", f"Δ {primary} vs {reference}, over seeds (Holm)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, c in estimates[primary].items():
        cells = [name, str(len(r.seeds[name])) if name in r.seeds else "—"]
        for metric in r.metrics:
            e = estimates[metric][name].estimate if name in estimates[metric] else None
            cells.append(f"{e.mean:.4f} [{e.low:.4f}, {e.high:.4f}]" if e else "—")
        cells.append(", ".join(f"{means[name][s]:.4f}" for s in r.seeds[name]) if name in means else "—")
        d = c.differences.get(reference)
        cells.append(difference_text(d) if d else "—")
        d = found.get(name, {}).get(reference)
        cells.append(f"{difference_text(d)} ({_p(adjusted[name, reference])}), {len(d.seeds)} seeds" if d else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="copy the evidence of bench folders (rec or gotd) into one folder")
    a.add_argument("folders", nargs="+", type=Path, help="bench folders, then the destination")
    r = sub.add_parser("add-references", help="add the popularity rankers a packed rec folder lacks")
    r.add_argument("folder", type=Path)
    r.add_argument("--data", required=True, help="the bench's data (checked by fingerprint)")
    t = sub.add_parser("table", help="per-seed values and paired tables from a bench or packed folder")
    t.add_argument("folder", type=Path)
    t.add_argument("--metrics", default=None, help="comma-separated (default: every metric of the runs)")
    t.add_argument("--methods", default=None, help="comma-separated order of the rows (default: by name)")
    u = sub.add_parser("summary", help="one table over the methods: CIs, per-seed values, Δ to the reference")
    u.add_argument("folder", type=Path)
    u.add_argument("--metrics", default=None, help="comma-separated; the first is the one compared (default: all)")
    u.add_argument("--methods", default=None, help="comma-separated order of the rows (default: by name)")
    u.add_argument("--reference", default="random")
    args = p.parse_args(argv)
    if args.command == "pack":
        if len(args.folders) < 2:
            p.error("pack needs at least one source folder and the destination")
        *sources, dest = args.folders
        counts = pack(sources, dest)
        print(f"{dest}: {counts['added']} run(s) added, {counts['same']} already there and identical")
    elif args.command == "add-references":
        added = add_references(args.folder, args.data)
        print(f"{args.folder}: added {', '.join(added) if added else 'nothing (all there)'}")
    else:
        split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
        if args.command == "summary":
            print(summary(args.folder, split(args.metrics), args.reference, order=split(args.methods)))
        else:
            print(tables(args.folder, split(args.metrics), order=split(args.methods)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
