"""What every bench shares: a resumable run store, time and peak-memory measurement, result tables
(mean and std over seeds) and plots.

A bench is a grid of runs (e.g. method x seed). Each finished run is saved as one JSON record in
``<out>/runs/<run id>/result.json`` (written atomically), so a bench that is interrupted resumes where
it stopped: finished runs are read back, not redone. The bench's settings are saved in
``<out>/bench.json``; resuming with different settings is refused (the records would not be comparable).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from tunesift.io.atomic import atomic_write, write_json
from tunesift.output import pyplot

log = logging.getLogger("tunesift")

# ---------------------------------------------------------------------------------------------------
# Time and peak memory
# ---------------------------------------------------------------------------------------------------


def current_rss_bytes() -> int:
    """Resident memory of this process now (bytes); 0 when it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001  (psutil missing or unsupported platform)
        return 0


@dataclass
class Measurement:
    """Wall time and peak memory of one stage.

    Attributes:
        seconds: wall-clock time of the stage.
        peak_rss_mb: highest resident memory of the whole process seen during the stage (MiB),
            sampled every ``interval`` seconds by a background thread (plus at start and end).
        start_rss_mb: resident memory when the stage started (MiB); ``peak - start`` is what the stage
            added (an underestimate when memory freed earlier is reused).
        peak_cuda_mb: ``torch.cuda.max_memory_allocated`` during the stage (MiB), None without CUDA.
    """

    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    start_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None

    def to_dict(self, prefix: str = "") -> dict[str, float | None]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


class _RssSampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = current_rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, current_rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, current_rss_bytes())
        return self.peak


def _cuda_in_use() -> bool:
    import sys

    torch = sys.modules.get("torch")  # do not import torch just to measure
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[Measurement]:
    """Measure the wall time and peak memory of the ``with`` block.

    >>> with measure() as m:
    ...     work()
    >>> m.seconds, m.peak_rss_mb

    The ``Measurement`` is filled in when the block exits (also when it raises).
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    result = Measurement()
    cuda = _cuda_in_use()
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sampler = _RssSampler(interval)
    result.start_rss_mb = sampler.peak / 2**20
    sampler.start()
    t0 = time.perf_counter()
    try:
        yield result
    finally:
        if cuda or _cuda_in_use():
            import torch

            torch.cuda.synchronize()
            result.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        result.seconds = time.perf_counter() - t0
        result.peak_rss_mb = sampler.stop() / 2**20


# ---------------------------------------------------------------------------------------------------
# Resumable run store
# ---------------------------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def run_id(key: Mapping[str, Any]) -> str:
    """A folder name for one run, e.g. ``{"method": "random", "seed": 0}`` -> ``method=random,seed=0``."""
    if not key:
        raise ValueError("a run key needs at least one field")
    parts = []
    for k, v in key.items():
        part = f"{k}={v}"
        if _SAFE.search(part):
            raise ValueError(f"run key field {k!r}={v!r} may only use letters, digits and . _ = -")
        parts.append(part)
    return ",".join(parts)


def absolute_path(spec: str | None) -> str | None:
    """``spec`` as an absolute path when it names an existing file or folder, else unchanged (a name such
    as ``synthetic``): what a bench records, so that it resumes from any working folder."""
    if spec is None or not os.path.exists(spec):
        return spec
    return os.path.abspath(spec)


def _same_settings(a: Any, b: Any) -> bool:
    """Settings equal, where two spellings of one existing file or folder (``../data`` from one folder,
    ``/abs/data`` from another) count as the same: a bench resumes from wherever it is started."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_settings(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_settings(x, y) for x, y in zip(a, b))
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and a and b:
        try:
            return os.path.samefile(a, b)
        except OSError:  # either is not an existing path
            return False
    return False


class RunStore:
    """A bench's output folder: settings, one saved record per finished run, and scratch space.

    Args:
        root: the bench's ``--out`` folder.
        settings: everything that makes runs comparable (data, model, budget, scale, ...). Saved to
            ``bench.json`` on first use; a later bench in the same folder with other settings raises
            ``ValueError`` naming the first difference, instead of mixing incomparable records.
    """

    def __init__(self, root: str | os.PathLike, settings: Mapping[str, Any]):
        import json

        self.root = Path(root)
        self.settings = dict(settings)
        path = self.root / "bench.json"
        # round-trip through JSON so tuples/paths compare equal to what was stored
        normalised = json.loads(json.dumps(self.settings, default=str))
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not _same_settings(saved, normalised):
                diff = sorted(k for k in set(saved) | set(normalised)
                              if not _same_settings(saved.get(k), normalised.get(k)))
                k = diff[0]
                raise ValueError(
                    f"{self.root} holds a bench with other settings ({k}: {saved.get(k)!r} there, "
                    f"{normalised.get(k)!r} now); use another --out folder or delete it"
                )
        else:
            write_json(path, normalised)

    def run_dir(self, key: Mapping[str, Any]) -> Path:
        """Scratch folder of one run (selection, adapter, generations...)."""
        return self.root / "runs" / run_id(key)

    def claim(self, key: Mapping[str, Any]):
        """A context that holds run ``key`` for this process, or raises
        :class:`tunesift.io.lock.FolderBusyError` when another live process runs it: several benches may
        share one folder (e.g. one process per core), each run done once."""
        from tunesift.io.lock import LOCK_NAME, hold_lock

        return hold_lock(self.run_dir(key) / LOCK_NAME, f"run {run_id(key)}")

    def claimed(self, keys: Sequence[Mapping[str, Any]], log_prefix: Callable[[int, Mapping[str, Any]], str]):
        """Yield ``(i, key)`` (1-based) for each unfinished key while this process holds its claim; skip keys
        that are done (before, or by another process meanwhile) and keys another live process holds
        (logged with ``log_prefix(i, key)``), then log how many were held elsewhere."""
        from tunesift.io.lock import FolderBusyError

        busy = 0
        for i, key in enumerate(keys, 1):
            if self.is_done(key):
                continue
            held = self.claim(key)
            try:
                held.__enter__()
            except FolderBusyError as e:
                log.info("%s: %s; skipped here", log_prefix(i, key), e)
                busy += 1
                continue
            try:
                if not self.is_done(key):  # finished by another process since the list was made
                    yield i, key
            finally:
                held.__exit__(None, None, None)
        if busy:
            log.info("%d run(s) were running in another process; rerun (or wait for it) to include them", busy)

    def is_done(self, key: Mapping[str, Any]) -> bool:
        return (self.run_dir(key) / "result.json").exists()

    def load(self, key: Mapping[str, Any]) -> dict:
        import json

        path = self.run_dir(key) / "result.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run {run_id(key)} has not finished")
        return json.loads(path.read_text(encoding="utf-8"))

    def save(self, key: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
        """Mark a run finished by writing its record (the key's fields are added to it)."""
        path = self.run_dir(key) / "result.json"
        write_json(path, {**dict(key), **dict(record)})
        return path

    def records(self) -> list[dict]:
        """Every finished run's record, in folder-name order."""
        import json

        folder = self.root / "runs"
        if not folder.exists():
            return []
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*/result.json"))]


# ---------------------------------------------------------------------------------------------------
# Summaries and result files
# ---------------------------------------------------------------------------------------------------


@dataclass
class SummaryRow:
    """Mean and std of each metric over the runs of one group (e.g. one method, all seeds).

    ``std`` is the sample standard deviation (ddof=1); None when the group has a single run or a
    metric is missing from every run of the group.
    """

    group: dict[str, Any]
    n_runs: int
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.group, "n_runs": self.n_runs}
        for m in self.mean:
            out[f"{m}_mean"] = self.mean[m]
            out[f"{m}_std"] = self.std[m]
        return out


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof=1) of the finite values; (None, None) if none, std None if one."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    if len(vals) > 1 and min(vals) == max(vals):  # identical runs: exactly 0, not a rounding residue
        return vals[0], 0.0
    mean = math.fsum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def summarize(records: Sequence[Mapping[str, Any]], group_by: Sequence[str], metrics: Sequence[str],
              order: Sequence[Any] | None = None) -> list[SummaryRow]:
    """Group run records by ``group_by`` fields and average each metric over the group.

    Args:
        records: one mapping per run holding the ``group_by`` fields and (some of) the ``metrics``.
        order: the order of the groups by their first ``group_by`` value (e.g. the methods as given);
            groups not listed follow in first-seen order.
    """
    if not group_by:
        raise ValueError("group_by needs at least one field")
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        missing = [g for g in group_by if g not in r]
        if missing:
            raise ValueError(f"run record {dict(r)!r} lacks the group field(s) {missing}")
        groups.setdefault(tuple(r[g] for g in group_by), []).append(r)
    keys = list(groups)
    if order is not None:
        rank = {v: i for i, v in enumerate(order)}
        keys.sort(key=lambda k: rank.get(k[0], len(rank)))
    rows = []
    for k in keys:
        runs = groups[k]
        row = SummaryRow(group=dict(zip(group_by, k)), n_runs=len(runs))
        for m in metrics:
            row.mean[m], row.std[m] = mean_std([r.get(m) for r in runs])
        rows.append(row)
    return rows


def _fmt(x: float | None, digits: int) -> str:
    if x is None:
        return "—"
    if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e6):
        return f"{x:.{max(digits - 1, 0)}e}"
    return f"{x:.{digits}f}"


def markdown_table(rows: Sequence[SummaryRow], metrics: Sequence[str], digits: int = 4,
                   labels: Mapping[str, str] | None = None) -> str:
    """A Markdown table with one line per group and ``mean ± std`` per metric."""
    if not rows:
        return "(no finished runs)\n"
    labels = labels or {}
    group_cols = list(rows[0].group)
    head = group_cols + ["runs"] + [labels.get(m, m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [str(r.group[g]) for g in group_cols] + [str(r.n_runs)]
        for m in metrics:
            mean, std = r.mean.get(m), r.std.get(m)
            cells.append(_fmt(mean, digits) if std is None else f"{_fmt(mean, digits)} ± {_fmt(std, digits)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV (columns: union of keys in first-seen order), written atomically."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    with atomic_write(path) as f:
        f.write(buf.getvalue())


@dataclass
class ResultFiles:
    markdown: Path
    csv: Path
    json: Path
    runs_csv: Path
    plot: Path | None = None


def write_results(out_dir: str | os.PathLike, records: Sequence[Mapping[str, Any]], group_by: Sequence[str],
                  metrics: Sequence[str], title: str, settings: Mapping[str, Any] | None = None,
                  order: Sequence[Any] | None = None, cost_metrics: Sequence[str] = (),
                  notes: str = "", labels: Mapping[str, str] | None = None, digits: int = 4,
                  appendix: str = "", extra_json: Mapping[str, Any] | None = None) -> ResultFiles:
    """Write ``results.md``, ``results.csv`` (one line per group: mean and std of each metric),
    ``results.json`` (settings, summary and every run's record) and ``runs.csv`` (one line per run).

    Args:
        metrics: quality metrics (first table of results.md).
        cost_metrics: times and memory (second table of results.md); also averaged in csv/json.
        notes: Markdown placed under the title (the command, the protocol, caveats).
        appendix: Markdown placed after the tables (e.g. paired comparisons).
        extra_json: more entries for results.json (e.g. the paired comparisons' numbers).
    """
    out = Path(out_dir)
    all_metrics = list(metrics) + [m for m in cost_metrics if m not in metrics]
    rows = summarize(records, group_by, all_metrics, order)
    paths = ResultFiles(markdown=out / "results.md", csv=out / "results.csv", json=out / "results.json",
                        runs_csv=out / "runs.csv")
    write_csv(paths.csv, [r.flat() for r in rows])
    write_csv(paths.runs_csv, list(records))
    write_json(paths.json, {"title": title, "settings": dict(settings or {}), "group_by": list(group_by),
                            "metrics": list(metrics), "cost_metrics": list(cost_metrics),
                            "summary": [r.flat() for r in rows], "runs": list(records), **dict(extra_json or {})})
    md = [f"# {title}\n"]
    if notes:
        md.append(notes.rstrip() + "\n")
    md.append(f"Mean ± sample std over runs ({', '.join(group_by)} groups).\n")
    md.append(markdown_table(rows, metrics, digits, labels))
    if cost_metrics:
        md.append("\n## Cost\n")
        md.append(markdown_table(rows, cost_metrics, 2, labels))
    if appendix:
        md.append(appendix.rstrip() + "\n")
    with atomic_write(paths.markdown) as f:
        f.write("\n".join(md))
    return paths


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------


def plot_bars(path: str | os.PathLike, rows: Sequence[SummaryRow], metrics: Sequence[str], group_key: str,
              title: str = "", labels: Mapping[str, str] | None = None) -> Path:
    """Grouped bar chart (one cluster per metric, one bar per group) with std error bars, as a PNG."""
    plt = pyplot()
    labels = labels or {}
    path = Path(path)
    n_groups, n_metrics = len(rows), len(metrics)
    if not n_groups or not n_metrics:
        raise ValueError("plot_bars needs at least one group and one metric")
    width = 0.8 / n_groups
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * n_metrics * max(1, n_groups) * 0.5 + 2), 3.6))
    for g, row in enumerate(rows):
        xs = [i - 0.4 + width * (g + 0.5) for i in range(n_metrics)]
        ys = [row.mean.get(m) or 0.0 for m in metrics]
        errs = [row.std.get(m) or 0.0 for m in metrics]
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=str(row.group[group_key]))
    ax.set_xticks(range(n_metrics), [labels.get(m, m) for m in metrics])
    ax.set_title(title)
    ax.legend(fontsize="small", ncols=min(n_groups, 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def plot_lines(path: str | os.PathLike, rows: Sequence[SummaryRow], x: str, metric: str, series: str,
               title: str = "", xlabel: str | None = None, ylabel: str | None = None,
               log_x: bool = False) -> Path:
    """One line per ``series`` value of ``metric`` (mean, std band) against the group field ``x``."""
    plt = pyplot()
    path = Path(path)
    by_series: dict[Any, list[SummaryRow]] = {}
    for r in rows:
        by_series.setdefault(r.group[series], []).append(r)
    if not by_series:
        raise ValueError("plot_lines needs at least one row")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, rs in by_series.items():
        rs = sorted((r for r in rs if r.mean.get(metric) is not None), key=lambda r: r.group[x])
        xs = [r.group[x] for r in rs]
        ys = [r.mean[metric] for r in rs]
        sd = [r.std.get(metric) or 0.0 for r in rs]
        ax.plot(xs, ys, marker="o", label=str(name))
        ax.fill_between(xs, [a - b for a, b in zip(ys, sd)], [a + b for a, b in zip(ys, sd)], alpha=0.15)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or metric)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path
