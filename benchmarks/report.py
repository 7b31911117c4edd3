"""Regenerate every published table from the evidence stored in ``benchmarks/results/``, or check them.

Each generated table in ``README.md`` and ``docs/**/*.md`` sits between a line ``<!-- report: NAME -->`` and
a line ``<!-- /report -->``; everything else in those files (prose, the papers' numbers) is written by hand.
``NAME`` is ``STUDY/TABLE`` (a study's page) or ``summary`` (the README's "what the measurements show").

    python benchmarks/report.py            # rewrite every generated table from the stored records
    python benchmarks/report.py --check    # exit 1, naming each table, when a published one differs
    python benchmarks/report.py --list     # every table name and the evidence it reads

A study is a folder ``benchmarks/results/STUDY`` holding compact records — ``bench.json`` and per run
``result.json`` with its per-example metrics (``benchmarks/bench_runs.py pack`` copies them out of a bench
folder), or the JSON record a speed benchmark writes — and a page ``docs/results/STUDY.md``. What each
study compares, and the verdict rule of the summary, are declared below before any run is read; the
statistics are those of ``tunesift.bench.stats`` (paired bootstrap over test examples, 10,000 resamples,
seed 0; paired t-test over seeds, Holm-adjusted over the methods compared to one reference).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"^<!-- report: (?P<name>\S+) -->\n(?P<body>.*?)^<!-- /report -->$", re.S | re.M)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pages(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may hold generated tables."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


# ---------------------------------------------------------------------------------------------------
# The verdict of one comparison
# ---------------------------------------------------------------------------------------------------

ALPHA = 0.05


@dataclass
class Finding:
    """One comparison ``a − b`` of a study, as the summary table shows it.

    ``over_examples``: the paired bootstrap over test examples (seeds averaged per example);
    ``over_seeds``: the paired t-test over seeds (None with fewer than two common seeds) and
    ``p_seeds``: its Holm-adjusted p-value; ``effect``: the smallest difference that matters, declared with
    the study (the paper's claimed gain where there is one), used to tell "level" from "cannot tell".
    """

    study: str
    label: str
    metric: str
    over_examples: object
    over_seeds: object | None
    p_seeds: float | None
    effect: float

    @property
    def verdict(self) -> str:
        """better / worse: significant over test examples (the 95% CI excludes 0) and over seeds (Holm p < 0.05),
        the same sign; level: significant in neither, and the CI over test examples excludes a difference of
        ±``effect``; cannot tell: anything else (the two tests disagree, fewer than two seeds, or too little
        data to exclude a difference that matters)."""
        ex = self.over_examples
        seeds = self.over_seeds is not None and self.p_seeds is not None and self.p_seeds < ALPHA
        if ex.significant and seeds and np.sign(ex.diff) == np.sign(self.over_seeds.diff):
            return "better" if ex.diff > 0 else "worse"
        if not ex.significant and self.over_seeds is not None and not seeds and -self.effect < ex.low \
                and ex.high < self.effect:
            return "level"
        return "cannot tell"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _diff(d, digits: int) -> str:
    f = f"+.{digits}f"
    return f"{d.diff:{f}} [{d.low:{f}}, {d.high:{f}}]"


def summary_table(findings: list[Finding], links: dict[str, str], digits: dict[str, int]) -> str:
    head = ["protocol", "comparison", "Δ [95% CI] over test examples", "Δ [95% CI] over seeds",
            "detectable", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for f in findings:
        n = digits.get(f.study, 4)
        ex = f.over_examples
        seeds = (f"{_diff(f.over_seeds, n)} {_p(f.p_seeds)}, {len(f.over_seeds.seeds)} seeds"
                 if f.over_seeds is not None else "— (one seed)")
        lines.append(f"| {links[f.study]} | {f.label}, {f.metric} | {_diff(ex, n)} {_p(ex.p_value)} | {seeds} | "
                     f"{ex.mde:.{n}f} | **{f.verdict}** |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Studies
# ---------------------------------------------------------------------------------------------------


@dataclass
class Study:
    """A folder of records, the page that shows them, and the comparisons the README summarises.

    ``comparisons``: (a, b, budget or None) pairs fixed before the runs (the headline claims); ``effect``: the
    smallest difference in the primary metric that would matter (see ``Finding``); ``title``: the protocol's
    name in the summary.
    """

    name: str
    title: str
    comparisons: list[tuple] = field(default_factory=list)
    effect: float = 0.0
    digits: int = 4

    @property
    def folder(self) -> Path:
        return RESULTS / self.name

    @property
    def link(self) -> str:
        return f"[{self.title}](docs/results/{self.name}.md)"

    def available(self) -> bool:
        return self.folder.is_dir()

    def tables(self) -> dict[str, Callable[[], str]]:
        raise NotImplementedError

    def machine(self) -> str:
        """The machine the runs ran on (``machine.json``, written when they were packed)."""
        path = self.folder / "machine.json"
        if not path.is_file():
            return "Not recorded (packed before machine records existed).\n"
        return machine_line(json.loads(path.read_text(encoding="utf-8"))) + "\n"

    def stored(self) -> int:
        """How many runs the folder holds (the index's count)."""
        return len(list((self.folder / "runs").glob("*/result.json"))) if (self.folder / "runs").is_dir() else 0

    def findings(self) -> list[Finding]:
        raise NotImplementedError


def machine_line(m: dict) -> str:
    """One sentence naming a machine record (``benchmarks/machine.py``'s ``machine_info``)."""
    v = m.get("versions", {})
    return (f"{m.get('cpu')}, {m.get('cores')} cores ({', '.join(m.get('cpu_flags', [])) or 'no flags read'}), "
            f"{m.get('memory_gib')} GiB" + (f", GPU {m['gpu']}" if m.get("gpu") else "") +
            f"; Python {v.get('python')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
            f"numpy {v.get('numpy')}" + (f", {v['torch_threads']} torch thread(s)" if v.get("torch_threads") else "")
            + f"; recorded {m.get('recorded_at', '')[:10]}.")


def _cost_table(records: list[dict], by: list[str], order: list[str], keys: list[tuple[str, str]]) -> str:
    """Mean over a group's runs of each cost field (those some record has), one row per group."""
    keys = [(k, label) for k, label in keys if any(r.get(k) is not None for r in records)]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    rank = {m: i for i, m in enumerate(order)}
    head = by + ["runs"] + [label for _, label in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for group in sorted(groups, key=lambda g: (rank.get(g[0], len(rank)), g[1:])):
        rs = groups[group]
        cells = [str(g) for g in group] + [str(len(rs))]
        for k, _ in keys:
            vals = [float(r[k]) for r in rs if r.get(k) is not None]
            cells.append("—" if not vals else f"{np.mean(vals):,.0f}" if np.mean(vals) >= 10 else f"{np.mean(vals):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nMean over the runs; wall-clock seconds.\n"


def _holm_seeds(found: dict, references: list[str]) -> dict[tuple[str, str], float]:
    from tunesift.bench.stats import holm_by_reference

    return holm_by_reference(found, references)


# -- a `tunesift bench rec` study --------------------------------------------------------------------

REC_METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


class RecStudy(Study):
    """A packed ``tunesift bench rec`` folder (per-user Recall/NDCG of every run, the reference rankers)."""

    def __init__(self, *args, order: list[str], references: tuple[str, ...] = ("random", "full"), **kw):
        super().__init__(*args, **kw)
        self.order = order
        self.references = list(references)

    @cached_property
    def runs(self):
        from bench_runs import Runs

        return Runs(self.folder, REC_METRICS, self.order)

    @cached_property
    def settings(self) -> dict:
        return json.loads((self.folder / "bench.json").read_text(encoding="utf-8"))

    @cached_property
    def compared(self):
        """metric -> (method -> Comparison over test users, method -> reference -> over seeds, Holm p)."""
        from tunesift.bench.stats import compare_methods, seed_comparisons

        out = {}
        for metric in REC_METRICS:
            comparisons = {c.method: c for c in compare_methods(self.runs.per_example(metric), self.references)}
            found = seed_comparisons(self.runs.run_means(metric), self.references)
            out[metric] = (comparisons, found, _holm_seeds(found, self.references))
        return out

    def tables(self):
        return {f"{self.name}/summary": self.summary, f"{self.name}/differences": self.differences,
                f"{self.name}/training": self.training, f"{self.name}/cost": self.cost,
                f"{self.name}/setup": self.setup, f"{self.name}/machine": self.machine}

    def summary(self) -> str:
        """Each method's (and each reference ranker's) metrics with their 95% CI over test users, seeds averaged."""
        comparisons = {m: self.compared[m][0] for m in REC_METRICS}
        means = self.runs.run_means(REC_METRICS[0])
        head = ["method", "seeds"] + [f"{m} [95% CI]" for m in REC_METRICS] + [f"per-seed {REC_METRICS[0]}"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for name in comparisons[REC_METRICS[0]]:
            cells = [name, str(len(self.runs.seeds[name])) if name in self.runs.seeds else "—"]
            for metric in REC_METRICS:
                e = comparisons[metric][name].estimate
                cells.append(f"{e.mean:.4f} [{e.low:.4f}, {e.high:.4f}]")
            cells.append(", ".join(f"{means[name][s]:.4f}" for s in self.runs.seeds[name]) if name in means else "—")
            lines.append("| " + " | ".join(cells) + " |")
        n = next(iter(comparisons[REC_METRICS[0]].values())).estimate.n_examples
        return "\n".join(lines) + f"\n\nBootstrap over {n:,} test users (10,000 resamples), seeds averaged per user.\n"

    def differences(self) -> str:
        """Per reference and metric: Δ over test users (paired bootstrap) and over seeds (t-test, Holm)."""
        parts = []
        for ref in self.references:
            head = ["method"] + [f"Δ {m}" for m in REC_METRICS]
            lines = [f"Against `{ref}` — each cell: over test users Δ [95% CI] p; over seeds the paired t-test's p and "
                     "the same p Holm-adjusted over the methods compared.", "",
                     "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            for method in self.runs.methods:
                if method == ref:
                    continue
                cells = [method]
                for metric in REC_METRICS:
                    comparisons, found, holm = self.compared[metric]
                    d = comparisons[method].differences.get(ref)
                    s = found.get(method, {}).get(ref)
                    text = f"{_diff(d, 4)} {_p(d.p_value)}" if d else "—"
                    text = f"**{text}**" if d is not None and d.significant else text
                    cells.append(text + (f"; seeds {_p(s.p_value)}, Holm {_p(holm[method, ref])}" if s else ""))
                lines.append("| " + " | ".join(cells) + " |")
            parts.append("\n".join(lines) + "\n")
        return "\n".join(parts) + "\n**Bold**: the 95% CI over test users excludes 0 (before any correction).\n"

    def training(self) -> str:
        """How each run trained: the step whose weights were kept of those run, whether it stopped early, and how
        many distinct items it ranked first over the test users (a collapsed model ranks the same few first)."""
        by = {}
        for r in self.runs.records:
            by.setdefault(r["method"], []).append(r)
        head = ["method", "kept step / steps run, per seed", "stopped early", "distinct top-1 items, per seed"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for method in self.runs.methods:
            rs = sorted(by[method], key=lambda r: r["seed"])
            steps = ", ".join(f"{r.get('best_step', '—')}/{r.get('train_steps', '—')}" for r in rs)
            early = ", ".join("yes" if r.get("stopped_early") else "no" for r in rs)
            top1 = ", ".join(str(r.get("distinct_top1", "—")) for r in rs)
            lines.append(f"| {method} | {steps} | {early} | {top1} |")
        return "\n".join(lines) + "\n"

    def cost(self) -> str:
        keys = [("selection_s", "select s"), ("finetune_s", "train s"), ("eval_s", "rank s"),
                ("n_train", "training samples"), ("train_steps", "steps"), ("finetune_peak_rss_mb", "train peak RSS MB")]
        return _cost_table(self.runs.records, ["method"], self.runs.methods, keys)

    def setup(self) -> str:
        s, data = self.settings, self.settings["data"]
        scale = s.get("scale", {})
        rows = [("data", f"{data.get('name')}: {data.get('users'):,} users, {data.get('items'):,} items "
                         f"(sha256 {str(data.get('fingerprint'))[:12]}…)"),
                ("backbone", s.get("backbone")), ("scale", scale.get("name")),
                ("budget", scale.get("budget")), ("pool users", scale.get("n_users") or "all"),
                ("test users", scale.get("n_test_users") or "all with a test item"),
                ("runs stored", f"{len(self.runs.records)} ({len(self.runs.methods)} methods)")]
        return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"

    def findings(self) -> list[Finding]:
        out = []
        metric = REC_METRICS[0]
        comparisons, found, holm = self.compared[metric]
        for a, b in self.comparisons:
            s = found.get(a, {}).get(b)
            out.append(Finding(self.name, f"{a} − {b}", "R@10", comparisons[a].differences[b], s,
                               holm.get((a, b)) if s else None, self.effect))
        return out


# -- a `tunesift bench gotd` study -------------------------------------------------------------------

NONE = "none"


class GotdStudy(Study):
    """A packed ``tunesift bench gotd`` folder: per run its record and per-test-text correctness (zero-shot:
    each label's score too, from which the label prior is removed)."""

    def __init__(self, *args, order: list[str], references: tuple[str, ...] = ("none", "random"), **kw):
        super().__init__(*args, **kw)
        self.order = order
        self.references = list(references)

    @cached_property
    def settings(self) -> dict:
        return json.loads((self.folder / "bench.json").read_text(encoding="utf-8"))

    @cached_property
    def records(self) -> list[dict]:
        from bench_runs import finished_runs

        out = []
        for run in finished_runs(self.folder):
            record = json.loads((run / "result.json").read_text(encoding="utf-8"))
            with np.load(run / "per_example.npz", allow_pickle=False) as z:
                record["_arrays"] = {k: z[k] for k in z.files}
            out.append(record)
        if not out:
            raise SystemExit(f"{self.folder}: no finished run")
        return sorted(out, key=lambda r: (r["budget"], r["seed"]))

    @property
    def zero_shot(self) -> bool:
        return self.settings.get("eval") == "zero-shot"

    @property
    def budgets(self) -> list[int]:
        return sorted({r["budget"] for r in self.records if r["method"] != NONE})

    def methods(self) -> list[str]:
        found = {r["method"] for r in self.records}
        return [m for m in self.order if m in found] + sorted(found - set(self.order))

    def correct(self, r: dict, calibrated: bool) -> np.ndarray:
        a = r["_arrays"]
        if not calibrated:
            return a["correct"].astype(np.float64)
        from zeroshot_prior import prior_corrected

        return (prior_corrected(a["label_scores"]) == a["labels"]).astype(np.float64)

    def group(self, budget: int, calibrated: bool = False):
        """method -> (S, N) correctness at ``budget`` (``none`` at every budget), method -> its seeds, and the
        run-level accuracy per method and seed — the deterministic ``none`` of a zero-shot bench (one run)
        paired with every seed."""
        values, seeds = {}, {}
        for m in self.methods():
            rs = [r for r in self.records if r["method"] == m and r["budget"] == (0 if m == NONE else budget)]
            if rs:
                values[m] = np.stack([self.correct(r, calibrated) for r in rs])
                seeds[m] = [r["seed"] for r in rs]
        runs = {m: {s: float(v.mean()) for s, v in zip(seeds[m], values[m])} for m in values}
        if NONE in runs and len(runs[NONE]) == 1 and self.zero_shot:  # scored without training: one run
            value = next(iter(runs[NONE].values()))
            every = sorted({s for m, by in runs.items() if m != NONE for s in by})
            runs[NONE] = {s: value for s in every}
        return values, seeds, runs

    @cached_property
    def compared(self):
        """(budget, calibrated) -> (method -> Comparison, method -> reference -> over seeds, Holm p)."""
        from tunesift.bench.stats import compare_methods, seed_comparisons

        out = {}
        for budget in self.budgets:
            for calibrated in ((False, True) if self.zero_shot else (False,)):
                values, _, runs = self.group(budget, calibrated)
                refs = [r for r in self.references if r in values]
                comparisons = {c.method: c for c in compare_methods(values, refs)}
                found = seed_comparisons(runs, refs)
                out[budget, calibrated] = (comparisons, found, _holm_seeds(found, refs))
        return out

    def tables(self):
        out = {f"{self.name}/setup": self.setup, f"{self.name}/cost": self.cost, f"{self.name}/picks": self.picks,
               f"{self.name}/machine": self.machine}
        for budget in self.budgets:
            out[f"{self.name}/budget-{budget}"] = lambda b=budget: self.budget_table(b, False)
            if self.zero_shot:
                out[f"{self.name}/calibrated-{budget}"] = lambda b=budget: self.budget_table(b, True)
            if any(r["method"] == "gotd" for r in self.records):
                out[f"{self.name}/gotd-{budget}"] = lambda b=budget: self.versus(b)
        return out

    def _mean(self, m: str, budget: int, key: str) -> float | None:
        vals = [r[key] for r in self.records if r["method"] == m and r["budget"] == (0 if m == NONE else budget)
                and r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    def budget_table(self, budget: int, calibrated: bool) -> str:
        comparisons, found, holm = self.compared[budget, calibrated]
        metric = self.settings["task_info"]["metric"]
        refs = [r for r in self.references if r in comparisons]
        head = ["method", "seeds", "accuracy [95% CI]"] + [f"Δ vs {r}: test texts; seeds" for r in refs]
        if not calibrated:
            head += [f"test {metric}" if metric != "accuracy" else "majority class share", "LM loss after"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for m, c in comparisons.items():
            e = c.estimate
            cells = [m, str(e.n_seeds), f"{e.mean:.4f} [{e.low:.4f}, {e.high:.4f}]"]
            for r in refs:
                d = c.differences.get(r)
                if d is None:
                    cells.append("—")
                    continue
                text = f"{_diff(d, 4)} {_p(d.p_value)}"
                text = f"**{text}**" if d.significant else text
                s = found.get(m, {}).get(r)
                cells.append(text + (f"; {_diff(s, 4)} {_p(holm[m, r])}" if s else ""))
            if not calibrated:
                if metric != "accuracy":
                    cells.append(f"{self._mean(m, budget, 'test_score'):.4f}")
                else:
                    rs = [r for r in self.records if r["method"] == m and r["budget"] == (0 if m == NONE else budget)]
                    share = np.mean([np.bincount(r["_arrays"]["predicted"]).max() / len(r["_arrays"]["predicted"])
                                     for r in rs])
                    cells.append(f"{share:.2f}")
                loss = self._mean(m, budget, "lm_loss_after")
                cells.append(f"{loss:.3f}" if loss is not None else "—")
            lines.append("| " + " | ".join(cells) + " |")
        n = next(iter(comparisons.values())).estimate.n_examples
        mdes = {r: [c.differences[r].mde for c in comparisons.values() if r in c.differences] for r in refs}
        note = (f"\n{n} test texts, bootstrap over them (10,000 resamples, seeds averaged per text); over seeds: each "
                f"seed's run against the reference's run of that seed, t-interval, p Holm-adjusted over the methods. "
                f"**Bold**: the CI over test texts excludes 0. Smallest detectable difference over test texts (80% "
                f"power): " + "; ".join(f"vs {r} {np.median(v):.4f}" for r, v in mdes.items() if v) + ".")
        if calibrated:
            note += (" Label prior removed: from each label's score its mean over the run's test texts is subtracted "
                     "before the argmax (no labels used).")
        return "\n".join(lines) + note + "\n"

    def picks(self) -> str:
        head = ["method", "budget", "pool domains picked (mean share over seeds)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for m in self.methods():
            for budget in self.budgets:
                rs = [r for r in self.records if r["method"] == m and r["budget"] == budget and r.get("selected_domains")]
                if not rs:
                    continue
                share: dict[str, float] = {}
                for r in rs:
                    for d, k in r["selected_domains"].items():
                        share[d] = share.get(d, 0.0) + k / budget / len(rs)
                top = sorted(share.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
                lines.append(f"| {m} | {budget} | " + ", ".join(f"{d} {100 * v:.0f}%" for d, v in top) + " |")
        return "\n".join(lines) + "\n"

    def cost(self) -> str:
        keys = [("selection_s", "select s"), ("pretrain_s", "warm-up s"), ("finetune_s", "fine-tune s"),
                ("eval_s", "score s"), ("total_s", "total s"), ("peak_rss_mb", "peak RSS MB")]
        return _cost_table(self.records, ["method", "budget"], self.methods(), keys)

    def setup(self) -> str:
        s = self.settings
        task = s["task_info"]
        rows = [("task", f"{task['name']} ({task['metric']}; {task.get('note') or ''})".replace("; )", ")")),
                ("evaluation", s.get("eval", "finetune")), ("model", s.get("model")),
                ("pool", f"{s['pool_rows']:,} rows (sha256 {s['pool_fingerprint'][:12]}…)"),
                ("target", f"{s.get('label_budget')} training texts of the task per seed"),
                ("test texts", s.get("test_limit") or "all"),
                ("warm-up", f"{s.get('pretrain_epochs')} epoch, lr {s.get('pretrain_lr')}, batch "
                            f"{s.get('pretrain_batch_size')}, {s.get('max_length')} tokens"
                            + (f", LoRA r {s['pretrain_lora_r']}" if s.get("pretrain_lora_r") else "")),
                ("runs stored", str(len(self.records)))]
        prompt = s.get("zero_shot_prompt")
        if prompt:
            rows.append(("prompt", json.dumps(prompt["template"]) + " → " + " / ".join(
                json.dumps(v) for v in prompt["verbalizers"].values())))
        if not self.zero_shot:
            rows.append(("classifier", f"{s.get('finetune_epochs')} epochs, lr {s.get('finetune_lr')}"
                                       + (f", LoRA r {s['finetune_lora_r']}" if s.get("finetune_lora_r") else "")))
        return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"

    def pair(self, budget: int, a: str, b: str, calibrated: bool = False):
        """(a − b over test texts, over seeds or None, its Holm p over the methods compared to b) at ``budget``."""
        from tunesift.bench.stats import compare_methods, seed_comparisons

        key = (budget, b, calibrated)
        if key not in self._pairs:
            values, _, runs = self.group(budget, calibrated)
            comparisons = {c.method: c for c in compare_methods(values, [b])} if b in values else {}
            found = seed_comparisons(runs, [b]) if b in values else {}
            self._pairs[key] = (comparisons, found, _holm_seeds(found, [b]))
        comparisons, found, holm = self._pairs[key]
        if a not in comparisons or b not in comparisons[a].differences:
            return None
        s = found.get(a, {}).get(b)
        return comparisons[a].differences[b], s, (holm.get((a, b)) if s else None)

    @cached_property
    def _pairs(self) -> dict:
        return {}

    def versus(self, budget: int) -> str:
        """GOT-D against each other method at ``budget``, as scored and with the label prior removed."""
        others = [m for m in self.methods() if m != "gotd"]
        modes = (False, True) if self.zero_shot else (False,)
        head = ["GOT-D − …"] + [("prior removed: " if c else "") + "test texts; seeds" for c in modes]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for b in others:
            cells = [b]
            for calibrated in modes:
                found = self.pair(budget, "gotd", b, calibrated)
                if found is None:
                    cells.append("—")
                    continue
                d, s, p = found
                text = f"{_diff(d, 4)} {_p(d.p_value)}"
                text = f"**{text}**" if d.significant else text
                cells.append(text + (f"; {_diff(s, 4)} {_p(p)}" if s else ""))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + ("\n\nOver seeds: Holm over the methods compared to the same reference. "
                                   "**Bold**: the CI over test texts excludes 0.\n")

    def findings(self) -> list[Finding]:
        out = []
        for a, b, budget in self.comparisons:
            if budget not in self.budgets:
                continue
            found = self.pair(budget, a, b)
            if found is None:
                continue
            out.append(Finding(self.name, f"{a} − {b} at {budget}", "accuracy", *found, self.effect))
        return out


# ---------------------------------------------------------------------------------------------------
# The registry: what each study compares, fixed before its runs
# ---------------------------------------------------------------------------------------------------


# -- speed records (benchmarks/*.py --record FILE) -----------------------------------------------------


class SpeedStudy(Study):
    """A folder of speed records: each the JSON that a benchmark's ``--record FILE`` wrote — its command, the
    machine and its results — measured with the reference side by side in the same run. No comparison of
    methods: nothing goes to the summary."""

    def record(self, name: str) -> dict:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; rerun its benchmark with --record {path}")
        return json.loads(path.read_text(encoding="utf-8"))

    def stored(self) -> int:
        return len(list(self.folder.glob("*.json")))

    def findings(self) -> list[Finding]:
        return []

    def tables(self):
        names = sorted(p.stem for p in self.folder.glob("*.json"))
        out = {f"{self.name}/records": lambda: self.records_table(names)}
        for name, table in (("ot-synthetic-200k", self.ot_table), ("effort-f32", self.effort_table),
                            ("influence", self.influence_table), ("scale", self.scale_table)):
            if name in names:
                out[f"{self.name}/{name}"] = lambda t=table, n=name: t(self.record(n))
        return out

    def records_table(self, names: list[str]) -> str:
        lines = ["| record | command | machine |", "|---|---|---|"]
        for n in names:
            r = self.record(n)
            lines.append(f"| [`{n}.json`](../../benchmarks/results/{self.name}/{n}.json) | `{r['command']}` | "
                         f"{machine_line(r['machine'])} |")
        return "\n".join(lines) + "\n"

    @staticmethod
    def ot_table(rec: dict) -> str:
        r = rec["results"][0]
        ref = r["ref_s"]
        rows = [("ours, cost online", "", r["ours_s"]), ("ours, cost stored", "stored_", r["stored_s"]),
                ("ours, semi-dual L-BFGS", "semidual_", r["semidual_s"]), (r["ref"], "ref_", ref)]
        lines = ["| solver | s | ott-jax s ÷ this | iterations | converged | top-5% overlap with the converged "
                 "float64 solve | peak MB |", "|---|---|---|---|---|---|---|"]
        for label, pre, t in rows:
            pre = pre or "ours_"
            lines.append(f"| {label} | {t:,.1f} | {ref / t:.2f}× | {r.get(pre + 'iter')} | {r.get(pre + 'converged')} | "
                         f"{r.get(pre + 'truth_topk_overlap'):.4f} | {r.get(pre + 'peak_mb'):,.0f} |")
        return "\n".join(lines) + (f"\n\nN = {r['n']:,} pool points, M = {r['m']:,} target points, d = {r['d']}, "
                                   f"ε = {r['epsilon']}, {r['threads']} thread; top-5% = the {r['k']:,} most negative "
                                   f"gradients. ott-jax's compile: {r['ref_compile_s']:.1f} s, not counted.\n")

    @staticmethod
    def effort_table(rec: dict) -> str:
        lines = ["| users | ours s | authors' procedure s | ratio | Spearman | max relative difference |",
                 "|---|---|---|---|---|---|"]
        for r in rec["results"]:
            lines.append(f"| {r['n']} | {r['ours_wall_s']:.1f} | {r['reference_wall_s']:.1f} | {r['ratio_wall']:.2f}× | "
                         f"{r['spearman']:.6f} | {r['max_relative_difference']:.1e} |")
        r = rec["results"][0]
        return "\n".join(lines) + (f"\n\n{r['dtype']}, batch {r['batch_size']}, {r['mean_tokens']:.0f} tokens a "
                                   f"sample on average; the shared prompt prefix computed once "
                                   f"({r['token_ratio']:.2f}× fewer tokens).\n")

    @staticmethod
    def influence_table(rec: dict) -> str:
        lines = ["| LiSSA | ours s | authors' procedure s | ratio | Spearman with the authors' scores |",
                 "|---|---|---|---|---|"]
        for r in rec["results"]:
            lines.append(f"| depth {r['lissa_depth']:,}, batch {r['lissa_batch_size']} | {r['ours_wall_s']:.1f} | "
                         f"{r['reference_wall_s']:.1f} | {r['ratio_wall']:.1f}× | {r['spearman']:.6f} |")
        return "\n".join(lines) + f"\n\n{rec['results'][0]['users']:,} users (every training user of Games).\n"

    @staticmethod
    def scale_table(rec: dict) -> str:
        lines = ["| N | pool file MB | in memory: solve s, peak RSS MB | memory-mapped: solve s, peak RSS MB | "
                 "time ratio | RSS ratio | same picks |", "|---|---|---|---|---|---|---|"]
        for r in rec["results"]:
            a, b, c = r["memory"], r["mmap"], r["mmap_vs_memory"]
            lines.append(f"| {r['n']:,} | {r['file_mb']:,.0f} | {a['solve_s']:.1f}, {a['peak_rss_mb']:,.0f} | "
                         f"{b['solve_s']:.1f}, {b['peak_rss_mb']:,.0f} | {c['time_ratio']:.2f}× | {c['rss_ratio']:.2f} | "
                         f"{'yes' if c['top_identical'] else 'no'} |")
        r = rec["results"][0]
        return "\n".join(lines) + f"\n\nM = {r['m']:,} target points, d = {r['d']}; ratios memory-mapped ÷ in memory.\n"


REC_ORDER = ["random", "dealrec", "dealrec-no-effort", "dealrec-no-influence", "greedy", "grand", "el2n", "ccs",
             "full"]
GOTD_ORDER = ["none", "random", "gotd", "dsir", "knn", "tsds"]
GOTD_VS = [("gotd", "random"), ("gotd", "dsir"), ("gotd", "knn"), ("gotd", "none")]

STUDIES: list[Study] = [
    # DEALRec's Table 2 claims DEALRec − random R@10 +0.0012 on TIGER (Games): the difference that matters
    RecStudy("tiger-stable", "DEALRec on TIGER, Games, 1,024 users", order=REC_ORDER, effect=0.0012,
             comparisons=[("dealrec", "random"), ("dealrec", "full"), ("full", "random")]),
    # BIGRec on LLaMA-7B: DEALRec − random R@10 +0.0018 (Table 2)
    RecStudy("bigrec-cpu", "DEALRec on BIGRec (SmolLM2), Games, 16 of 128 users", order=REC_ORDER, effect=0.0018,
             comparisons=[("dealrec", "random"), ("dealrec", "full")]),
    # one point of accuracy: the smallest zero-shot gain a user would act on (the paper's gains are 4-8 points)
    GotdStudy("sst2-zeroshot", "GOT-D warm-up, SST-2 zero-shot (SmolLM2)", order=GOTD_ORDER, effect=0.01,
              comparisons=[(a, b, n) for n in (250, 1000) for a, b in GOTD_VS]),
    # the same protocol at 250 with the warm-up as a LoRA (rank 8, merged) at lr 5e-4 instead of all weights at 5e-5
    GotdStudy("sst2-zeroshot-lora", "GOT-D warm-up as LoRA, SST-2 zero-shot (SmolLM2)", order=GOTD_ORDER,
              effect=0.01, comparisons=[(a, b, 250) for a, b in GOTD_VS]),
    SpeedStudy("speed", "Speed: OT against ott-jax, DEALRec's stages against the authors', the scale curve"),
    GotdStudy("agnews-zeroshot", "GOT-D warm-up, AG News zero-shot (SmolLM2)", order=GOTD_ORDER, effect=0.01,
              comparisons=[(a, b, n) for n in (250, 1000) for a, b in GOTD_VS]),
]


# ---------------------------------------------------------------------------------------------------
# The flag reference (docs/usage.md): generated from the parser, which the settings declarations build
# ---------------------------------------------------------------------------------------------------

COMMANDS = ("gotd", "dealrec", "bench rec", "bench gotd", "demo")


def _subparsers(parser) -> dict[str, object]:
    import argparse

    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def command_parser(command: str):
    from tunesift.cli import build_parser

    parser = build_parser()
    for word in command.split():
        parser = _subparsers(parser)[word]
    return parser


def flag_table(command: str) -> str:
    """Markdown: every flag of ``tunesift COMMAND``, by argument group, with its value, default and help."""
    import argparse

    parser = command_parser(command)
    parts = []
    for group in parser._action_groups:
        rows = []
        for a in group._group_actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or not a.option_strings:
                continue
            flags = ", ".join(f"`{o}`" for o in a.option_strings)
            if a.nargs == 0:
                value = ""
            elif a.choices:
                value = "|".join(str(c) for c in a.choices)
            else:
                value = a.metavar or a.dest.upper()
            help_text = " ".join((a.help or "").split()).replace("%%", "%").replace("|", "\\|")
            value = value.replace("|", " \\| ")
            rows.append(f"| {flags} | {value} | {'(required) ' if a.required else ''}{help_text} |")
        if rows:
            title = {"options": "options", "optional arguments": "options"}.get(group.title, group.title)
            parts.append(f"**{title}**\n\n| flag | value | what it does |\n|---|---|---|\n"
                         + "\n".join(rows) + "\n")
    return "\n".join(parts)


def index_table(studies: list[Study]) -> str:
    lines = ["| study | records | runs stored |", "|---|---|---|"]
    for s in studies:
        if s.available():
            runs = s.stored()
            lines.append(f"| [{s.title}]({s.name}.md) | [`benchmarks/results/{s.name}`](../../benchmarks/results/"
                         f"{s.name}) | {runs} |")
        else:
            lines.append(f"| {s.title} | not stored yet | 0 |")
    return "\n".join(lines) + "\n"


def study_tables(studies: list[Study]) -> dict[str, Callable[[], str]]:
    out: dict[str, Callable[[], str]] = {f"flags/{c.replace(' ', '-')}": (lambda c=c: flag_table(c)) for c in COMMANDS}
    for study in studies:
        if study.available():
            out.update(study.tables())
            # the study's own rows of the summary, for its page's verdict
            out[f"{study.name}/findings"] = lambda s=study: summary_table(s.findings(), {s.name: "this study"},
                                                                          {s.name: s.digits})
    out["index"] = lambda: index_table(studies)
    out["summary"] = lambda: summary_table([f for s in studies if s.available() for f in s.findings()],
                                           {s.name: s.link for s in studies}, {s.name: s.digits for s in studies})
    return out


# ---------------------------------------------------------------------------------------------------
# Rewriting the pages
# ---------------------------------------------------------------------------------------------------


def render(text: str, tables: dict[str, Callable[[], str]], where: str, cache: dict[str, str]) -> str:
    """``text`` with every generated block rewritten; SystemExit naming the page for an unknown table."""

    def body(m: re.Match) -> str:
        name = m.group("name")
        if name not in tables:
            raise SystemExit(f"{where}: no table {name!r} (known: {', '.join(sorted(tables))}); "
                             "its study's records are missing from benchmarks/results or the name is wrong")
        if name not in cache:
            cache[name] = tables[name]().rstrip("\n") + "\n"
        return f"<!-- report: {name} -->\n{cache[name]}<!-- /report -->"

    return BLOCK.sub(body, text)


def run(check: bool, root: Path = ROOT, studies: list[Study] | None = None) -> int:
    tables = study_tables(STUDIES if studies is None else studies)
    cache: dict[str, str] = {}
    stale = []
    for page in pages(root):
        if not page.is_file():
            continue
        old = page.read_text(encoding="utf-8")
        rel = page.relative_to(root).as_posix()
        new = render(old, tables, rel, cache)
        if new == old:
            continue
        stale.append(rel)
        if check:
            changed = {m.group("name") for m in BLOCK.finditer(old)} - {
                m.group("name") for m in BLOCK.finditer(old) if m.group(0) in new}
            diff = "".join(list(difflib.unified_diff(old.splitlines(True), new.splitlines(True), rel, rel + " (records)",
                                                     n=0))[:40])
            print(f"{rel}: stale table(s) {', '.join(sorted(changed))}\n{diff}", file=sys.stderr)
        else:
            from tunesift.io.atomic import atomic_write

            with atomic_write(page, "w") as f:
                f.write(new)
            print(f"rewrote {rel}")
    if check and stale:
        print(f"{len(stale)} page(s) differ from what benchmarks/results gives; run python benchmarks/report.py",
              file=sys.stderr)
        return 1
    if check:
        print(f"{len(cache)} generated table(s) in {len(pages(root))} page(s) match benchmarks/results")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a published table is stale")
    p.add_argument("--list", action="store_true", help="print every table name and its study folder")
    args = p.parse_args(argv)
    if args.list:
        for study in STUDIES:
            state = "" if study.available() else "  (no records yet)"
            names = ", ".join(study.tables()) if study.available() else ""
            print(f"{study.name}: benchmarks/results/{study.name}{state}\n  {names}")
        print("summary: every study's comparisons")
        return 0
    return run(args.check)


if __name__ == "__main__":
    sys.exit(main())
