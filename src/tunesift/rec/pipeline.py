"""Run DEALRec (or a baseline) end to end: data -> stages -> selection -> files.

The stages (:mod:`tunesift.rec.stages`: surrogate, influence, early-training scores, the backbone's
effort) are cached in ``<out>/cache`` under their keys, so a rerun with the same settings loads them
and a run that crashed resumes at the stage (or effort chunk) it was in. Timings per stage go to the
manifest; the files are written by :func:`tunesift.output.write_selection`, as for pool methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from tunesift.output import Timer, check_budget, complete_manifest, write_selection
from tunesift.pool.base import scores_from_order
from tunesift.rec.backbone import Backbone, get_backbone
from tunesift.rec.data import RecData, load_rec_data
from tunesift.rec.methods import RecMethod, RecRanking
from tunesift.rec.stages import (
    EarlySettings,
    EarlyStage,
    EffortStage,
    InfluenceSettings,
    InfluenceStage,
    Stage,
    StageCache,
    SurrogateSettings,
    SurrogateStage,
    stage_key,
)
from tunesift.registry import REC_METHODS
from tunesift.settings import replace_settings

log = logging.getLogger("tunesift")

STAGE_SETTINGS = {"surrogate": SurrogateSettings, "influence": InfluenceSettings, "early": EarlySettings}


@dataclass
class RecSettings:
    """The settings of every stage of a selection: the surrogate's, the influence's, the early scores'
    (all backbones) and the backbone's own (``None``: the backbone's defaults)."""

    surrogate: SurrogateSettings = field(default_factory=SurrogateSettings)
    influence: InfluenceSettings = field(default_factory=InfluenceSettings)
    early: EarlySettings = field(default_factory=EarlySettings)
    backbone: Any = None

    @classmethod
    def from_flat(cls, backbone: str | type = "bigrec", base: "RecSettings | None" = None,
                  **values: Any) -> "RecSettings":
        """Settings from flat field names (``surrogate_epochs=5``, ``lora_r=4``...), each routed to the one
        stage (or the backbone) that declares it; unknown names raise ``TypeError`` listing the known ones."""
        bb = get_backbone(backbone) if isinstance(backbone, str) else backbone
        base = base or cls()
        parts = {name: getattr(base, name) for name in STAGE_SETTINGS}
        parts["backbone"] = base.backbone if isinstance(base.backbone, bb.Settings) else bb.Settings()
        owners = {f.name: name for name, c in STAGE_SETTINGS.items() for f in fields(c)}
        owners.update({f.name: "backbone" for f in fields(bb.Settings)})
        unknown = set(values) - set(owners)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; stage settings: "
                            f"{sorted(k for k, v in owners.items() if v != 'backbone')}, {bb.name} settings: "
                            f"{sorted(k for k, v in owners.items() if v == 'backbone')}")
        grouped: dict[str, dict] = {}
        for k, v in values.items():
            grouped.setdefault(owners[k], {})[k] = v
        for name, vals in grouped.items():
            parts[name] = replace_settings(parts[name], vals)
        return cls(**parts)

    def stage_fields(self) -> set[str]:
        return {f.name for c in STAGE_SETTINGS.values() for f in fields(c)}


class RecContext:
    """What a rec method may ask for; every stage runs once, timed, and is cached on disk.

    Attributes:
        data: the dataset; pool: (N,) positions in ``data`` of the candidate users (those with at least
            one training item); budget; rng: the only random generator of the selection;
        backbone: the prepared :class:`tunesift.rec.backbone.Backbone` whose effort is asked for.
    """

    def __init__(self, data: RecData, pool: np.ndarray, budget: int, seed: int, settings: RecSettings,
                 backbone: Backbone, cache: StageCache, timer: Timer, device: str, progress: bool = True,
                 executor: Any = None):
        self.data = data
        self.pool = pool
        self.budget = budget
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.settings = settings
        self.surrogate_settings = settings.surrogate
        self.backbone = backbone
        self.cache = cache
        self.timer = timer
        self.device = device
        self.progress = progress
        self.executor = executor  # where per-user chunks run (effort): tunesift.executor; None: here
        self.stage_info: dict[str, Any] = {}
        self._results: dict[str, Any] = {}
        self._tensors = None
        self.pool_hash = hashlib.sha256(np.asarray(pool, dtype=np.int64).tobytes()).hexdigest()
        self._dataset = dict(fingerprint=data.fingerprint, n_users=data.n_users, n_items=data.n_items)
        self.dataset_key = stage_key(**self._dataset)
        self.data_key = stage_key(**self._dataset, pool=self.pool_hash)
        self._surrogate_stage = SurrogateStage(settings.surrogate)
        self.stages: dict[str, Stage] = {
            "surrogate": self._surrogate_stage,
            "influence": InfluenceStage(settings.influence, self._surrogate_stage),
            "el2n": EarlyStage("el2n", settings.early, self._surrogate_stage),
            "grand": EarlyStage("grand", settings.early, self._surrogate_stage),
            "effort": EffortStage(backbone),
        }

    def run(self, name: str) -> Any:
        """The result of stage ``name``: from memory, from the cache (same key), or computed now."""
        if name in self._results:
            return self._results[name]
        stage = self.stages[name]
        key = stage.key(self)
        with self.timer.stage(name):
            result = stage.load(self, key) if key is not None else None
            cached = result is not None
            if cached:
                info = self.cache.info(name, key)
            else:
                result, info = stage.compute(self)
                if key is not None:
                    stage.save(self, key, result, info)
        self.stage_info[name] = {**info, "cached": cached}
        if cached:
            log.info("%s: loaded from the cache (%s)", name, self.cache.folder)
        self._results[name] = result
        return result

    # what methods ask for
    def surrogate(self):
        """The trained SASRec (best validation checkpoint) and its early snapshot."""
        first = "surrogate" not in self._results
        trained = self.run("surrogate")
        if first:
            how = "read from the cache: it was trained to" if self.stage_info["surrogate"]["cached"] else "trained:"
            log.info("surrogate %s best epoch %d of %d, valid %s", how, trained.best_epoch, trained.epochs_run,
                     ", ".join(f"{k} {v:.4f}" for k, v in trained.best_metrics.items()))
        return trained

    def influence(self) -> np.ndarray:
        """(N,) influence of each candidate on the surrogate's empirical risk."""
        return self.run("influence")

    def effort(self) -> np.ndarray:
        """(N,) the backbone's effort on each candidate's training sample(s)."""
        return self.run("effort")

    def early_scores(self, kind: str) -> np.ndarray:
        """(N,) EL2N ("el2n") or GraNd ("grand") scores on the surrogate's early snapshot."""
        if kind not in EarlyStage.KINDS:
            raise ValueError(f"kind must be 'el2n' or 'grand', got {kind!r}")
        return self.run(kind)

    # what stages share
    def training_tensors(self):
        if self._tensors is None:
            from tunesift.rec.sasrec import training_tensors

            self._tensors = training_tensors(self.data.train, self.data.n_items, self.surrogate_settings.max_len,
                                             seed=self.seed)
        return self._tensors

    def pool_batch(self, device: Any = None):
        """The candidates' training rows sorted by history length (chunks then pad little), and the
        permutation: row k of the batch is candidate ``order[k]``."""
        import torch

        from tunesift.rec.sasrec import length_order

        tensors = self.training_tensors()
        idx = torch.as_tensor(self.pool, dtype=torch.long)
        rows = [t[idx] for t in tensors.loss_batch()]
        order = length_order(rows[0])
        return tuple(t[order].to(device or self.device) for t in rows), order.numpy()


@dataclass
class RecSelection:
    """The result of :func:`select_samples`.

    Attributes:
        users: (budget,) ids of the selected users, in rank order.
        indices: (budget,) their positions in ``data``.
        rows: (budget,) what the backbone trains on for each (BIGRec: prompt and response), in rank order.
        ranking: the method's scores over the candidates, its selection and extra columns.
        pool: (N,) positions in ``data`` of the candidate users (those with a training item).
        manifest: settings, seed, fingerprints, timings per stage, LiSSA convergence.
        paths: the files written (when ``out_dir`` was given).
    """

    users: list[Any]
    indices: np.ndarray
    rows: list[dict]
    ranking: RecRanking
    pool: np.ndarray
    manifest: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def _method(method: str | RecMethod, options: dict[str, Any]) -> tuple[RecMethod, dict[str, Any]]:
    """The method instance and the options that are not its settings."""
    if isinstance(method, str):
        cls = REC_METHODS.get(method)
        names = {f.name for f in fields(cls)} if dataclasses.is_dataclass(cls) else set()
        return cls(**{k: v for k, v in options.items() if k in names}), {k: v for k, v in options.items()
                                                                         if k not in names}
    names = {f.name for f in fields(type(method))} if dataclasses.is_dataclass(method) else set()
    if names & set(options):
        raise TypeError("pass method settings either to the method instance or as keywords with a method name")
    return method, options


def select_samples(
    data: RecData | str | os.PathLike,
    budget: int,
    method: str | RecMethod = "dealrec",
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    settings: RecSettings | None = None,
    backbone: str | Backbone = "bigrec",
    llm: str | os.PathLike | tuple[Any, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
    max_users: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    format: str | None = None,
    executor: Any = None,
    threads: int | None = None,
    **options: Any,
) -> RecSelection:
    """Pick ``budget`` users whose samples to fine-tune a recommender backbone on.

    Args:
        data: a :class:`RecData` or a path (DEALRec folder, RecBole files or an interaction table).
        method: a registered name (``tunesift.registry.REC_METHODS``) or a configured instance.
        settings: the stages' and the backbone's settings; keyword ``options`` fill fields of the
            method (e.g. ``lam``, ``strata``), of a stage (e.g. ``surrogate_epochs=5``) or of the
            backbone (e.g. ``llm=PATH``, ``lora_r=4``), see :meth:`RecSettings.from_flat`.
        backbone: a registered name (``bigrec``, ``tiger``) or a ready :class:`Backbone` (its own
            settings then; ``settings.backbone`` and backbone options are not allowed).
        llm: BIGRec only: a local causal-LM folder (sets ``llm``), or a ready (model, tokenizer) for
            the effort score (not cached on disk: a model object has no stable identity).
        max_users: score a seeded random subset of this many candidate users (for a quick run). The
            surrogate still trains on every user; the influence's mean gradient and LiSSA's samples
            then come from the subset (an estimate of the full data's).
        out_dir: writes scores.parquet, selected.jsonl, manifest.json there; stages are cached in
            ``cache_dir`` (default ``out_dir/cache``; none when both are None).
        executor: where the effort's chunks of users run (:mod:`tunesift.executor`; None: here); the
            scores do not depend on it.
        threads: torch's CPU threads for this call (None: as they are), recorded in the manifest.

    Returns a :class:`RecSelection` whose ``manifest`` is the dictionary ``manifest.json`` holds.
    """
    from tunesift.output import torch_threads

    with torch_threads(threads):
        return _select_samples(data, budget, method, seed, out_dir, settings, backbone, llm, device, progress,
                               max_users, cache_dir, format, executor, options)


def _select_samples(data: Any, budget: int, method: Any, seed: int, out_dir: Any, settings: Any, backbone: Any,
                    llm: Any, device: str, progress: bool, max_users: Any, cache_dir: Any, format: Any, executor: Any,
                    options: dict[str, Any]) -> RecSelection:
    from tunesift.embed import resolve_device

    timer = Timer()
    t_start = time.perf_counter()
    with timer.stage("load"):
        if not isinstance(data, RecData):
            data = load_rec_data(data, format=format)
    m, options = _method(method, options)
    device = resolve_device(device)
    model = None
    if isinstance(llm, (str, os.PathLike)):
        options["llm"] = str(llm)
    elif llm is not None:
        if not (isinstance(llm, tuple) and len(llm) == 2):
            raise TypeError(f"llm must be a model folder or a (model, tokenizer) pair, got {type(llm).__name__}")
        model = llm
    cache_folder = cache_dir if cache_dir is not None else (Path(out_dir) / "cache" if out_dir is not None else None)
    if isinstance(backbone, Backbone):
        bb = backbone
        own = {f.name for f in fields(bb.Settings)} - RecSettings().stage_fields()
        if model is not None or set(options) & own or (settings is not None and settings.backbone is not None):
            raise TypeError("a ready backbone carries its own settings (and model): pass only stage options")
        settings = RecSettings.from_flat(type(bb), base=settings, **options)
        settings.backbone = bb.settings
    else:
        import inspect

        cls = get_backbone(backbone)
        settings = RecSettings.from_flat(cls, base=settings, **options)
        kw = {}
        if model is not None:
            if "model" not in inspect.signature(cls.__init__).parameters:
                raise TypeError(f"llm=(model, tokenizer) is for an LLM backbone; {cls.name} does not take a model")
            kw["model"] = model
        bb = cls(settings.backbone, device=device, progress=progress, cache_dir=cache_folder, **kw)
        bb.prepare(data, cache_folder)
    pool = np.array([u for u in range(data.n_users) if data.train[u]], dtype=np.int64)
    if pool.size == 0:
        raise ValueError(f"{data.source}: no user has a training item")
    what = f"users with a training item in {data.source}"
    if max_users is not None:
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users}")
        if max_users < pool.size:
            what = f"users drawn by --max-users {max_users} from the {pool.size} with a training item in {data.source}"
            pool = np.sort(np.random.default_rng(seed).choice(pool, size=max_users, replace=False))
    check_budget(budget, pool.size, what)
    ctx = RecContext(data, pool, int(budget), seed, settings, bb, StageCache(cache_folder), timer, device,
                     progress=progress, executor=executor)
    ranking = m.rank(ctx)
    with timer.stage("select"):
        chosen = np.asarray(ranking.selection.indices, dtype=np.int64)
        if chosen.size != budget or np.unique(chosen).size != budget:
            raise RuntimeError(f"method {m.name} chose {chosen.size} candidates ({np.unique(chosen).size} distinct), "
                               f"expected {budget}")
        scores = np.asarray(ranking.scores, dtype=np.float64)
        first = chosen[np.argsort(-scores[chosen], kind="stable")]  # selected, best score first
        rest_mask = np.ones(pool.size, dtype=bool)
        rest_mask[chosen] = False
        rest = np.flatnonzero(rest_mask)
        order = np.concatenate([first, rest[np.argsort(-scores[rest], kind="stable")]])
    with timer.stage("samples"):
        rows = bb.sample_rows(data, pool[first])
    timer.stages["total"] = time.perf_counter() - t_start
    manifest = {
        "command": "dealrec",
        "method": m.name,
        "method_settings": m.settings(),
        "backbone": bb.name,
        "settings": {"surrogate": asdict(settings.surrogate), "influence": asdict(settings.influence),
                     "early": asdict(settings.early), "backbone": asdict(bb.settings)},
        "seed": seed,
        "budget": int(budget),
        "data": {"source": data.source, "format": data.format, "name": data.name, "fingerprint": data.fingerprint,
                 "split": data.split, "counts": data.counts(), "warnings": data.warnings},
        "candidates": int(pool.size),
        "max_users": max_users,
        "device": device,
        "stages": dict(ctx.stage_info),
        "timings_s": {k: round(v, 4) for k, v in timer.stages.items()},
        "method_info": ranking.info,
    }
    if executor is not None and executor.name != "local":  # as in `tunesift gotd`: recorded where not the default
        manifest["executor"] = executor.describe()
    users = [data.users[int(pool[i])] for i in first]
    result = RecSelection(users=users, indices=pool[first], rows=rows, ranking=ranking, pool=pool, manifest=manifest)
    if out_dir is not None:
        ids = [data.users[int(u)] for u in pool]
        columns = {"influence": np.full(pool.size, np.nan), "effort": np.full(pool.size, np.nan)}
        columns.update({k: np.asarray(v, dtype=np.float64) for k, v in ranking.columns.items()})
        columns["stratum"] = np.asarray(ranking.selection.strata, dtype=np.int64)
        columns["method_score"] = scores  # the method's own score; DEALRec draws per stratum, not by it
        out_rows = [{**row, "rank": rank, "method_score": float(scores[i])}
                    for rank, (i, row) in enumerate(zip(first, rows), 1)]
        result.paths = write_selection(out_dir, ids, scores_from_order(order), order, int(budget), out_rows,
                                       manifest, columns)
    else:
        complete_manifest(manifest, int(pool.size), int(budget))
    return result
