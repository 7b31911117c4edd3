"""``tunesift bench rec``: DEALRec against its baselines, its ablations and full training, on a backbone.

For every method and seed: select ``budget`` users (:func:`tunesift.rec.select_samples`; ``full`` takes
every user of the pool), train the backbone on their training samples with early stopping on their
validation samples, rank all items for every test user and score Recall@K / NDCG@K over all items
against all of the user's test items. This is the protocol of DEALRec's Table 2 (Lin et al., SIGIR
2024); the backbone (BIGRec, TIGER, ...) decides what training and ranking mean
(:mod:`tunesift.rec.backbone`), and its ``scales`` size the bench (``tiny`` for CI, ``cpu``, ``gpu``).

Users: the pool (candidates for selection and the users of ``full``) is a seeded random subsample of the
users with a training item; the test users are a seeded random subsample of ALL users with test items
(both "all" where the scale says None). Both are drawn once per bench with ``data_seed``, so every
method and seed sees the same pool and the same test users — which is what makes the comparison paired.

Results: mean ± std over seeds, and for every method a 95% bootstrap CI of each metric and its paired
difference to ``random`` and ``full`` over the same test users (pooled over seeds), with the p-value and
the smallest difference the run could have detected (:mod:`tunesift.bench.stats`).

Every finished (method, seed) is saved in ``<out>/runs/method=M,seed=S/result.json`` with the per-user
metrics (``per_user.npz``); within a run the selection (``selection.json``) and the trained model are
saved as they finish, so an interrupted bench resumes at the stage it was in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tunesift.bench.common import (Measurement, RunStore, absolute_path, markdown_table, measure, plot_bars, summarize,
                                   write_results)
from tunesift.io.atomic import atomic_write, write_json
from tunesift.io.faults import fault_point
from tunesift.rec.backbone import Backbone, RecScale, get_backbone

log = logging.getLogger("tunesift")

FULL = "full"
DEFAULT_METHODS = ("random", "grand", "el2n", "ccs", "dealrec", FULL)
ABLATIONS = ("dealrec-no-effort", "dealrec-no-influence", "greedy")
REFERENCES = ("random", FULL)
# rankers that need no selection, scored on the same test users: three popularity lists and the surrogate
POPULARITY_RANKERS = ("popular", "popular-valid", "popular-valid-unseen")
REFERENCE_RANKERS = POPULARITY_RANKERS + ("sasrec",)
REFERENCE_LABELS = {"popular": "popular (train)", "popular-valid": "popular (train + valid)",
                    "popular-valid-unseen": "popular (train + valid, seen removed)", "sasrec": "sasrec (surrogate)"}


def scales_for(backbone: str | type) -> dict[str, RecScale]:
    bb = get_backbone(backbone) if isinstance(backbone, str) else backbone
    return bb.scales


def scale_with(scale: RecScale | str, backbone: str | type = "bigrec", stages: Mapping[str, Any] | None = None,
               settings: Mapping[str, Any] | None = None, **overrides: Any) -> RecScale:
    """A backbone's scale with some fields replaced.

    Args:
        stages: stage settings to override (flat names, e.g. ``{"lissa_depth": 50}``).
        settings: the backbone's settings to override (nested dict, e.g. ``{"fit": {"train": {"epochs": 2}}}``).
        overrides: ``n_users``, ``n_test_users``, ``budget`` (None values are ignored).
    """
    from tunesift.settings import replace_settings

    table = scales_for(backbone)
    if isinstance(scale, str):
        if scale not in table:
            raise ValueError(f"unknown scale {scale!r} for this backbone; expected one of {', '.join(table)}")
        base = table[scale]
    else:
        base = scale
    overrides = {k: v for k, v in overrides.items() if v is not None}
    allowed = {"n_users", "n_test_users", "budget"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown scale field(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
    for k, v in overrides.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{k}` must be a positive integer, got {v!r}")
    changes: dict[str, Any] = dict(overrides)
    if stages:
        changes["stages"] = {**base.stages, **dict(stages)}
    if settings:
        changes["backbone"] = replace_settings(base.backbone, settings)
    return dataclasses.replace(base, **changes)


@dataclass
class RecBenchResult:
    """What :func:`run_rec_bench` did: every requested run's record and the files written."""

    records: list[dict]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    ran: list[dict] = field(default_factory=list)  # keys of the runs computed by this call (not resumed)


def _sample_indices(candidates: Sequence[int], n: int | None, rng: np.random.Generator) -> list[int]:
    candidates = list(candidates)
    if n is None or n >= len(candidates):
        return candidates
    return sorted(int(i) for i in rng.choice(candidates, size=n, replace=False))


def bench_users(data: Any, n_users: int | None, n_test_users: int | None, data_seed: int = 0
                ) -> tuple[list[int], list[int]]:
    """(pool users, test users) of a bench, as positions in ``data``: seeded subsamples (``data_seed``) of
    the users with a training item and of ALL users with test items (all of them where the size is None)."""
    rng = np.random.default_rng(data_seed)
    with_train = [u for u in range(data.n_users) if data.train[u]]
    with_test = [u for u in range(data.n_users) if data.test[u]]
    if not with_train:
        raise ValueError(f"{data.source}: no user has a training item")
    if not with_test:
        raise ValueError(f"{data.source}: no user has a test item; there is nothing to evaluate on")
    return _sample_indices(with_train, n_users, rng), _sample_indices(with_test, n_test_users, rng)


def popularity_tops(pool: Any, data: Any, test_users: Sequence[int], k: int) -> dict[str, np.ndarray]:
    """(test users, k) top lists of the three popularity rankers (item ids, ties by item id), counted over
    every user of ``pool`` (a bench's pool as its own dataset), for ``test_users`` (positions in ``data``):

    - ``popular``: the pool's training interactions counted;
    - ``popular-valid``: its training and validation interactions counted (everything observed before the
      test items, as a deployed ranker would count);
    - ``popular-valid-unseen``: the same list with each test user's own training and validation items left
      out (a deployed ranker does not recommend what the user already has).

    The backbones rank every item, seen ones included, as the first two do."""
    def top(counts: np.ndarray, n: int) -> np.ndarray:
        return np.argsort(-counts[1:], kind="stable")[:n] + 1

    train = np.bincount([i for seq in pool.train for i in seq], minlength=data.n_items + 1)
    both = train + np.bincount([i for seq in pool.valid for i in seq], minlength=data.n_items + 1)
    out = {"popular": np.tile(top(train, k), (len(test_users), 1)),
           "popular-valid": np.tile(top(both, k), (len(test_users), 1))}
    longest = max((len(data.train[u]) + len(data.valid[u]) for u in test_users), default=0)
    ranked = top(both, min(k + longest, data.n_items))
    unseen = np.zeros((len(test_users), k), dtype=ranked.dtype)  # 0 (padding, never a hit) where the
    for row, u in enumerate(test_users):                          # catalogue has fewer than k unseen items
        seen = set(data.train[u]) | set(data.valid[u])
        keep = [i for i in ranked if i not in seen][:k]
        unseen[row, :len(keep)] = keep
    out["popular-valid-unseen"] = unseen
    return out


def score_tops(tops: Mapping[str, np.ndarray], data: Any, test_users: Sequence[int], ks: Sequence[int]
               ) -> dict[str, dict[str, np.ndarray]]:
    """ranker -> metric (``recall@K``, ``ndcg@K``) -> per-test-user values of each (test users, k) top list."""
    from tunesift.finetune.metrics import metrics_from_top_k

    truth = [sorted(set(data.test[u])) for u in test_users]
    out: dict[str, dict[str, np.ndarray]] = {}
    for ref, t in tops.items():
        m = metrics_from_top_k(t, truth, ks, n_items=data.n_items)
        out[ref] = {**{f"recall@{k}": m.per_user_recall[:, j] for j, k in enumerate(m.ks)},
                    **{f"ndcg@{k}": m.per_user_ndcg[:, j] for j, k in enumerate(m.ks)}}
    return out


def _measurement_record(prefix: str, m: Measurement | dict) -> dict:
    d = m if isinstance(m, dict) else asdict(m)
    rec = {f"{prefix}_s": round(d["seconds"], 3), f"{prefix}_peak_rss_mb": round(d["peak_rss_mb"], 1)}
    if d.get("peak_cuda_mb") is not None:
        rec[f"{prefix}_peak_cuda_mb"] = round(d["peak_cuda_mb"], 1)
    return rec


class RecBench:
    """One bench: the data, the backbone and its scale, the pool and test users, and the run store.

    Build it, then :meth:`run` each (method, seed), or call :func:`run_rec_bench`.
    """

    def __init__(self, data: Any, out: str | os.PathLike, scale: RecScale | str = "tiny", backbone: str = "bigrec",
                 budget: int | None = None, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                 data_seed: int = 0, progress: bool = True, format: str | None = None, executor: Any = None,
                 split: str | None = None):
        """``executor``: where the selections' per-user chunks (effort) run (:mod:`tunesift.executor`;
        None: here). Results do not depend on it, so it is not part of the bench's settings."""
        from tunesift.embed import resolve_device
        from tunesift.rec.data import RecData, load_rec_data

        self.backbone_cls = get_backbone(backbone)
        self.scale = scale_with(scale, self.backbone_cls)
        self.budget = int(budget if budget is not None else self.scale.budget)
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1, got {self.budget}")
        self.out = Path(out)
        self.device = resolve_device(device)
        self.progress = progress
        self.executor = executor
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.out / "cache"
        self.data = data if isinstance(data, RecData) else load_rec_data(data, format=format, split=split)
        full_data = self.data
        self.pool_users, self.test_users = bench_users(full_data, self.scale.n_users, self.scale.n_test_users,
                                                       data_seed)
        if self.budget > len(self.pool_users):
            raise ValueError(f"budget {self.budget} is larger than the pool ({len(self.pool_users)} users with a "
                             f"training item at scale {self.scale.name})")
        # the pool as its own dataset: selection and `full` see only these users; its fingerprint names
        # the subsample, so selection caches shared between benches never mix two pools
        pool = full_data.subset_users(self.pool_users)
        digest = hashlib.sha256(f"{full_data.fingerprint}:{self.pool_users}".encode()).hexdigest()
        self.pool = dataclasses.replace(pool, fingerprint=digest) if len(self.pool_users) < full_data.n_users else pool

        self.settings = {
            "data": {"source": absolute_path(full_data.source), "fingerprint": full_data.fingerprint,
                     "name": full_data.name,
                     "users": full_data.n_users, "items": full_data.n_items,
                     # how interactions were split (a DEALRec folder's own files: left out, as before)
                     **({"split": full_data.split} if full_data.split != "files" else {})},
            "backbone": self.backbone_cls.name,
            "scale": self.scale.describe(),
            "budget": self.budget,
            "data_seed": data_seed,
            "pool_users": len(self.pool_users),
            "test_users": len(self.test_users),
        }
        self.store = RunStore(self.out, self.settings)  # refuses to resume a bench with other settings
        write_json(self.out / "users.json", {"pool": [full_data.users[u] for u in self.pool_users],
                                             "test": [full_data.users[u] for u in self.test_users]})
        self.backbone: Backbone = self.backbone_cls(self.scale.backbone, device=self.device, progress=progress,
                                                    cache_dir=self.cache_dir)
        with measure() as m:
            self.backbone.prepare(self.pool, self.out)
        self.prepare_measurement = m

    # ---------------------------------------------------------------------------------------- stages

    def select(self, method: str, seed: int) -> list[int]:
        """Positions in the pool of the selected users."""
        if method == FULL:
            return [u for u in range(self.pool.n_users) if self.pool.train[u]]
        from tunesift.rec import select_samples

        result = select_samples(self.pool, self.budget, method=method, seed=seed, backbone=self.backbone,
                                device=self.device, progress=self.progress, cache_dir=self.cache_dir / "selection",
                                executor=self.executor, **self.scale.stages)
        return [int(i) for i in result.indices]

    def finetune(self, selected: Sequence[int], seed: int, full: bool, folder: Path) -> tuple[Any, dict]:
        """Train the backbone on the selected users (positions in the pool); returns (model, record)."""
        return self.backbone.train(self.pool, selected, seed, full, folder)

    def evaluate(self, model: Any) -> tuple[dict, dict[str, np.ndarray], list[dict]]:
        """Mean metrics, per-user metrics and per-user rows of ``model`` on the test users."""
        from tunesift.finetune.metrics import metrics_from_top_k

        ks = self.scale.ks
        recs = self.backbone.recommend(model, self.data, self.test_users, max(ks))
        truth = [sorted(set(self.data.test[u])) for u in self.test_users]
        metrics = metrics_from_top_k(recs.top_items, truth, ks, n_items=self.data.n_items)
        per_user = {}
        for j, k in enumerate(metrics.ks):
            per_user[f"recall@{k}"] = metrics.per_user_recall[:, j]
            per_user[f"ndcg@{k}"] = metrics.per_user_ndcg[:, j]
        mean = metrics.as_dict()
        top = np.asarray(recs.top_items)
        mean.update({"n_test_users": len(self.test_users), "distinct_top1": int(len(set(top[:, 0].tolist()))),
                     **recs.info})
        rows = []
        for i, u in enumerate(self.test_users):
            row = {"user": self.data.users[u], "target_items": truth[i],
                   "top_items": [int(x) for x in top[i, :10] if x > 0]}
            if recs.rows:
                row.update(recs.rows[i])
            rows.append(row)
        return mean, per_user, rows

    # ---------------------------------------------------------------------------------------- one run

    def run(self, method: str, seed: int) -> dict:
        """Select, train and evaluate one (method, seed); resumes from whatever stage was saved."""
        from tunesift.io.atomic import write_jsonl

        key = {"method": method, "seed": seed}
        if self.store.is_done(key):
            return self.store.load(key)
        folder = self.store.run_dir(key)
        sel_path = folder / "selection.json"
        if sel_path.exists():
            saved = json.loads(sel_path.read_text())
            selected, sel_m = saved["indices"], saved["measurement"]
            log.info("%s seed %d: selection read from %s", method, seed, sel_path)
        else:
            with measure() as m:
                selected = self.select(method, seed)
            sel_m = asdict(m)
            write_json(sel_path, {"indices": selected, "users": [self.pool.users[i] for i in selected],
                                  "measurement": sel_m})
            fault_point("bench:selection")
        train_path = folder / "fit.json"
        loaded = self.backbone.load(folder, seed) if train_path.exists() else None
        if loaded is not None:
            model, train_record = loaded
            ft_m = json.loads(train_path.read_text())["measurement"]
            log.info("%s seed %d: trained model read from %s", method, seed, folder)
        else:
            with measure() as m:
                model, train_record = self.finetune(selected, seed, method == FULL, folder)
            ft_m = asdict(m)
            write_json(train_path, {"measurement": ft_m, "record": train_record})
            fault_point("bench:train")
        with measure() as ev_m:
            metrics, per_user, rows = self.evaluate(model)
        write_jsonl(folder / "generations.jsonl", rows)
        with atomic_write(folder / "per_user.npz", "wb") as f:
            np.savez(f, **per_user)
        record = {
            "n_selected": len(selected),
            **metrics,
            **_measurement_record("selection", sel_m),
            **_measurement_record("finetune", ft_m),
            **_measurement_record("eval", ev_m),
            **train_record,
            "device": self.device,
        }
        self.store.save(key, record)
        fault_point("bench:run")
        del model
        _free_device_memory()
        return self.store.load(key)

    # ---------------------------------------------------------------------------------------- references

    def reference_rankers(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-user metrics of the rankers that need no selection, on the same test users (once, saved in
        ``references.npz``; a file from before a ranker existed gets it added): the three
        :func:`popularity_tops` lists and ``sasrec`` (the surrogate of seed 0, trained on every pool user,
        on each test user's training and validation items). None excludes seen items but
        ``popular-valid-unseen``, as the backbones do not."""
        path = self.out / "references.npz"
        names = self.metric_names()
        found: dict[str, dict[str, np.ndarray]] = {}
        if path.exists():
            with np.load(path) as z:
                found = {ref: {m: z[f"{ref}:{m}"] for m in names} for ref in REFERENCE_RANKERS
                         if all(f"{ref}:{m}" in z.files for m in names)}
        if len(found) == len(REFERENCE_RANKERS):
            return found
        kmax = max(self.scale.ks)
        tops = {ref: t for ref, t in popularity_tops(self.pool, self.data, self.test_users, kmax).items()
                if ref not in found}
        if "sasrec" not in found:
            tops["sasrec"] = self._sasrec_top(kmax)
        found.update(score_tops(tops, self.data, self.test_users, self.scale.ks))
        with atomic_write(path, "wb") as f:
            np.savez(f, **{f"{ref}:{m}": found[ref][m] for ref in REFERENCE_RANKERS for m in names})
        return found

    def _sasrec_top(self, kmax: int) -> np.ndarray:
        import torch

        from tunesift.rec.sasrec import right_align

        trained = self._surrogate()
        histories = [self.data.train[u] + self.data.valid[u] for u in self.test_users]
        inputs = torch.from_numpy(right_align(histories, trained.model.config.max_len))
        model = trained.model.eval()
        top = []
        with torch.no_grad():
            for lo in range(0, inputs.shape[0], 1024):
                scores = model.score_items(inputs[lo : lo + 1024].to(self.device)).float()
                scores[:, 0] = -torch.inf
                top.append(torch.sort(-scores, dim=1, stable=True).indices[:, :kmax].cpu().numpy())
        return np.concatenate(top)

    def _surrogate(self):
        from tunesift.output import Timer
        from tunesift.rec.pipeline import RecContext, RecSettings
        from tunesift.rec.stages import StageCache

        settings = RecSettings.from_flat(type(self.backbone), **self.scale.stages)
        settings.backbone = self.backbone.settings
        pool = np.array([u for u in range(self.pool.n_users) if self.pool.train[u]], dtype=np.int64)
        ctx = RecContext(self.pool, pool, 1, 0, settings, self.backbone, StageCache(self.cache_dir / "selection"),
                         Timer(), self.device, progress=self.progress)
        return ctx.surrogate()

    # ---------------------------------------------------------------------------------------- results

    def metric_names(self) -> list[str]:
        return [f"recall@{k}" for k in self.scale.ks] + [f"ndcg@{k}" for k in self.scale.ks]

    def per_user(self, records: Sequence[dict], seeds: dict[str, list[int]] | None = None
                 ) -> dict[str, dict[str, np.ndarray]]:
        """metric -> method -> (seeds, n_test_users) per-user values of the finished runs; ``seeds``, when
        given, is filled with method -> the seed of each row."""
        out: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in self.metric_names()}
        for r in records:
            path = self.store.run_dir({"method": r["method"], "seed": r["seed"]}) / "per_user.npz"
            if not path.exists():
                continue
            with np.load(path) as z:
                for m in self.metric_names():
                    out[m].setdefault(r["method"], []).append(z[m])
            if seeds is not None:
                seeds.setdefault(r["method"], []).append(int(r["seed"]))
        return {m: {k: np.stack(v) for k, v in by.items()} for m, by in out.items()}

    def paired_tables(self, records: Sequence[dict], methods: Sequence[str]) -> tuple[str, dict]:
        """Markdown of each metric's CIs and paired differences to random and full, and the numbers."""
        from tunesift.bench.stats import paired_section

        seeds: dict[str, list[int]] = {}
        per_user = self.per_user(records, seeds)
        references = self.reference_rankers()
        parts, numbers = [], {}
        for metric, by_method in per_user.items():
            ordered = {m: by_method[m] for m in methods if m in by_method}
            ordered.update({REFERENCE_LABELS[ref]: by[metric][None] for ref, by in references.items()})
            if not ordered:
                continue
            text, numbers[metric], over_seeds = paired_section(ordered, seeds, REFERENCES, metric, metric)
            if over_seeds:
                numbers.setdefault("over seeds", {})[metric] = over_seeds
            parts.append(text)
        return "\n".join(parts), numbers

    def picks(self, records: Sequence[dict], methods: Sequence[str]) -> tuple[str, list[dict]]:
        """What each run picked (its ``selection.json``): training items per picked user, distinct items
        in their histories, and users its picks share with each other seed's picks of the same method
        (mean over those seeds), beside b²/N, the users two independent uniform draws of b from N share on
        average. Markdown (mean ± std over a method's runs) and one record per run."""
        picked: dict[str, dict[int, set[int]]] = {}
        for r in records:
            path = self.store.run_dir({"method": r["method"], "seed": r["seed"]}) / "selection.json"
            if path.exists():
                picked.setdefault(r["method"], {})[int(r["seed"])] = set(json.loads(path.read_text())["indices"])
        rows = []
        for method, by_seed in picked.items():
            for seed, users in by_seed.items():
                others = [len(users & o) for s, o in by_seed.items() if s != seed]
                rows.append({"method": method, "seed": seed, "users": len(users),
                             "items_per_user": float(np.mean([len(self.pool.train[u]) for u in users])),
                             "distinct_items": len(set().union(*(self.pool.train[u] for u in users))),
                             "shared_users": float(np.mean(others)) if others else None})
        if not rows:
            return "", []
        n = len(self.pool_users)
        cols = ["items_per_user", "distinct_items", "shared_users"]
        table = markdown_table(summarize(rows, ["method"], cols, order=list(methods)), cols, digits=1,
                               labels={"items_per_user": "training items per picked user",
                                       "distinct_items": "distinct items in their histories",
                                       "shared_users": "users shared with another seed's picks"})
        pool_items = float(np.mean([len(t) for t in self.pool.train]))
        text = (f"\n## What was picked\n\nFrom each run's `selection.json`; mean ± std over a method's runs. The "
                f"pool's users have {pool_items:.1f} training items on average; two independent uniform draws of "
                f"{self.budget:,} of its {n:,} users share {self.budget ** 2 / n:.1f} users on average (b²/N).\n\n"
                + table)
        return text, rows

    def write(self, records: list[dict], methods: Sequence[str], command: str = "") -> dict[str, Path]:
        cost = ["selection_s", "finetune_s", "eval_s", "selection_peak_rss_mb", "finetune_peak_rss_mb",
                "eval_peak_rss_mb"]
        if any("finetune_peak_cuda_mb" in r for r in records):
            cost += ["selection_peak_cuda_mb", "finetune_peak_cuda_mb", "eval_peak_cuda_mb"]
        cost += [k for k in ("n_train", "train_steps", "train_epochs", "best_epoch", "best_step", "best_val_loss")
                 if any(k in r for r in records)]
        s, bb = self.scale, self.backbone
        notes = [
            f"Command: `{command}`" if command else "",
            f"Data: {self.data.source} ({self.data.n_users:,} users, {self.data.n_items:,} items). Backbone "
            f"`{bb.name}`, scale `{s.name}`: pool of {len(self.pool_users):,} users, budget {self.budget}, "
            f"{len(self.test_users):,} test users ranked over all {self.data.n_items:,} items. {s.note}",
            f"Setup (once, cached): {self.prepare_measurement.seconds:.1f} s.",
            bb.protocol_notes() if hasattr(bb, "protocol_notes") else "",
            getattr(bb, "paper_table", lambda name: "")(self.data.name),
        ]
        paired, numbers = self.paired_tables(records, methods) if records else ("", {})
        extra = ""
        if paired:
            extra = ("\n## Paired comparisons\n\nBootstrap over the test users (10,000 resamples), each method's "
                     "per-user values averaged over its seeds; Δ = method − reference on the same users. **Bold**: "
                     "the 95% CI excludes 0. That interval does not include seed-to-seed variation of a method "
                     "as a whole; the run-to-run table under it (methods with two or more seeds in common with "
                     "the reference) does.\n\n" + paired)
        picks, pick_rows = self.picks(records, methods)
        files = write_results(self.out, records, ["method"], self.metric_names(),
                              f"DEALRec bench ({bb.name} backbone)", settings=self.settings, order=list(methods),
                              cost_metrics=cost, notes="\n\n".join(n for n in notes if n),
                              labels={"selection_s": "select s", "finetune_s": "train s", "eval_s": "eval s"},
                              appendix=extra + picks, extra_json={"paired": numbers, "picks": pick_rows})
        paths = asdict(files)
        if records:
            rows = summarize(records, ["method"], self.metric_names(), order=list(methods))
            paths["plot"] = plot_bars(self.out / "results.png", rows, self.metric_names(), "method",
                                      title=f"{self.data.name} ({bb.name}): {s.name} scale, budget {self.budget}")
        return {k: Path(v) for k, v in paths.items() if v is not None}


def _free_device_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_methods(methods: Sequence[str]) -> list[str]:
    from tunesift.registry import REC_METHODS

    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise ValueError("methods is empty")
    known = [*REC_METHODS.names(), FULL]
    bad = [m for m in methods if m not in known]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; expected some of {', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods lists a method twice: {methods}")
    return methods


def _finished(bench: RecBench, methods: Sequence[str]) -> tuple[list[dict], list[str]]:
    """Every finished run in the bench folder (also those of other processes sharing it), and the methods
    in order: this call's first, then any others found."""
    records = bench.store.records()
    order = list(methods) + sorted({r["method"] for r in records} - set(methods))
    rank = {m: i for i, m in enumerate(order)}
    records.sort(key=lambda r: (r["seed"], rank[r["method"]]))
    return records, order


def run_rec_bench(data: Any, out: str | os.PathLike, methods: Sequence[str] = DEFAULT_METHODS,
                  seeds: Sequence[int] = (0, 1, 2), scale: RecScale | str = "tiny", backbone: str = "bigrec",
                  budget: int | None = None, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                  progress: bool = True, command: str = "", format: str | None = None,
                  data_seed: int = 0, executor: Any = None, split: str | None = None) -> RecBenchResult:
    """Run (or resume) the bench for every method and seed and write results.md/csv/json and a plot.

    Args:
        data: a :class:`tunesift.rec.RecData` or a data path (DEALRec folder, RecBole files, table).
        out: the bench folder (runs, results, caches).
        methods: registered rec methods and/or ``full``.
        seeds: one run per method and seed.
        scale: a name in the backbone's ``scales`` or a :class:`RecScale` (see :func:`scale_with`).
        backbone: a registered backbone (``bigrec``, ``tiger``).
        executor: where the effort's chunks of users run (:mod:`tunesift.executor`; None: here).
        split: how a table's or RecBole files' interactions are split (:func:`tunesift.rec.data.load_rec_data`).
    """
    methods = check_methods(methods)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    bench = RecBench(data, out, scale, backbone=backbone, budget=budget, device=device, cache_dir=cache_dir,
                     progress=progress, format=format, data_seed=data_seed, executor=executor, split=split)
    ran = []
    # seed-major: a stopped bench has every method's first seed
    keys = [{"method": m, "seed": s} for s in seeds for m in methods]
    t0 = time.perf_counter()
    name = lambda i, k: f"[{i}/{len(keys)}] {k['method']} seed {k['seed']}"  # noqa: E731
    for i, key in enumerate(keys, 1):
        if bench.store.is_done(key):
            log.info("%s: done before, skipped", name(i, key))
    for i, key in bench.store.claimed(keys, name):
        log.info("%s ...", name(i, key))
        rec = bench.run(key["method"], key["seed"])
        ran.append(key)
        log.info("%s: %s (%.0f s so far)", name(i, key), ", ".join(f"{m} {rec[m]:.4f}" for m in bench.metric_names()),
                 time.perf_counter() - t0)
        bench.write(*_finished(bench, methods), command)
    records, order = _finished(bench, methods)
    files = bench.write(records, order, command)
    return RecBenchResult(records=records, out=bench.out, files=files, ran=ran)
