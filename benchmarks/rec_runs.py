"""Keep the evidence of a ``tunesift bench rec`` folder, pool several folders' runs, and print their tables.

A bench folder holds what its ``results.md`` is computed from (each run's record and per-user metrics, a few
hundred KB) beside gigabytes of caches and checkpoints that go with the machine. Four commands:

- ``pack SRC [SRC ...] DEST`` copies only the evidence — ``bench.json``, ``references.npz`` and, per run,
  ``result.json`` and ``per_user.npz`` (compressed) — into ``DEST``. Every source must hold a bench with
  the settings of ``DEST`` (the data compared by fingerprint, not by path). A run already in ``DEST`` must
  have the same per-user values to the bit, or nothing is written: two runs of one seed that differ (another
  thread count, another CPU) are not the same run. No user or item id is copied.
- ``table DIR`` prints, from a bench or packed folder and without the data, the models or the caches, each
  metric's per-seed values and the paired tables of ``results.md`` (bootstrap over test users, seeds averaged;
  each seed against the reference's run of the same seed, its p-value also adjusted for the number of methods
  compared to that reference: Holm).
- ``summary DIR`` prints one table over the methods: each metric's mean and 95% CI, the first metric's
  per-seed values and its difference to ``--reference`` (default ``random``) over test users and over seeds.
- A packed folder is a bench folder: copied to a working folder, ``tunesift bench rec`` with the same settings
  resumes on it, skipping the packed runs, so seeds run on different machines end in one table.

    python benchmarks/rec_runs.py pack /work/runs/tiger-stable benchmarks/results/tiger-stable
    python benchmarks/rec_runs.py table benchmarks/results/tiger-stable --metrics recall@10,recall@20
    python benchmarks/rec_runs.py summary benchmarks/results/tiger-stable --metrics recall@10,ndcg@10
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

COST = {"selection_s": "select s", "finetune_s": "train s", "eval_s": "rank s", "n_train": "training samples",
        "train_steps": "steps", "finetune_peak_rss_mb": "train peak RSS MB"}


def _settings(folder: Path) -> dict:
    path = folder / "bench.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: no bench.json; not a `tunesift bench rec` folder")
    settings = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(settings.get("data"), dict) or "fingerprint" not in settings["data"]:
        raise SystemExit(f"{path}: no data fingerprint; not a `tunesift bench rec` folder")
    return settings


def _comparable(settings: dict) -> dict:
    """The settings with the data's path left out: the same data read from another folder is the same bench."""
    return {**settings, "data": {k: v for k, v in settings["data"].items() if k != "source"}}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def finished_runs(folder: Path) -> list[Path]:
    """The run folders of ``folder`` that hold both evidence files."""
    return sorted(p.parent for p in (folder / "runs").glob("*/result.json") if (p.parent / "per_user.npz").is_file())


def pack(sources: list[Path], dest: Path) -> dict[str, int]:
    """Copy the evidence of every finished run of ``sources`` into ``dest``; returns counts of runs
    ``added`` and ``same`` (already there, identical). Checks everything before writing anything."""
    from tunesift.io.atomic import atomic_write, write_json

    dest_settings = _settings(dest) if (dest / "bench.json").exists() else None
    base = dest_settings if dest_settings is not None else _settings(sources[0])
    references = _arrays(dest / "references.npz") if (dest / "references.npz").exists() else None
    plan: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}
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
            per_user = _arrays(run / "per_user.npz")
            earlier = plan.get(run.name)
            packed = dest / "runs" / run.name
            if earlier is None and (packed / "per_user.npz").exists():
                earlier = (json.loads((packed / "result.json").read_text(encoding="utf-8")), _arrays(packed / "per_user.npz"))
                if _same_arrays(earlier[1], per_user):
                    same += 1
                    continue
            if earlier is not None:
                if not _same_arrays(earlier[1], per_user):
                    raise SystemExit(f"{run}: the same run (method and seed) is in two places with different per-user "
                                     f"metrics (e.g. another thread count or CPU); pack one of them, not both")
                same += 1
                continue
            plan[run.name] = (record, per_user)
    write_json(dest / "bench.json", base)
    if references is not None:
        with atomic_write(dest / "references.npz", "wb") as f:
            np.savez_compressed(f, **references)
    for name, (record, per_user) in plan.items():
        folder = dest / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **per_user)
        with atomic_write(folder / "per_user.npz", "wb") as f:
            f.write(buf.getvalue())
        write_json(folder / "result.json", record)  # last: a run counts as finished once its record is there
    return {"added": len(plan), "same": same}


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


REFERENCE_LABELS = {"popular": "popular (no training)", "sasrec": "sasrec (surrogate)"}


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
        out.update({REFERENCE_LABELS.get(r, r): by[metric][None] for r, by in self.refs.items() if metric in by})
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
    a = sub.add_parser("pack", help="copy the evidence of bench folders into one folder")
    a.add_argument("folders", nargs="+", type=Path, help="bench folders, then the destination")
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
    else:
        split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
        if args.command == "summary":
            print(summary(args.folder, split(args.metrics), args.reference, order=split(args.methods)))
        else:
            print(tables(args.folder, split(args.metrics), order=split(args.methods)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
