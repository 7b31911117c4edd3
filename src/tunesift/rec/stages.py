"""The stages of a recommendation selection, each a unit with its own settings and cache key.

- ``surrogate``: SASRec trained on every user of the data (its best checkpoint and an early snapshot);
- ``influence``: DEALRec's influence of each candidate on the surrogate's empirical risk;
- ``el2n`` / ``grand``: early-training scores on the surrogate's early snapshot (EL2N, GraNd, CCS);
- ``effort``: the backbone's effort (its own loss's per-sample gradient norm), see :mod:`tunesift.rec.backbone`.

A stage's settings are a dataclass whose fields are its command-line flags (:mod:`tunesift.settings`);
its cache key covers everything its result depends on (the data, the candidates, the fields marked as
changing results, the seed and the keys of the stages it reads), so a rerun loads it and a changed
setting recomputes only what depends on it. :class:`StageCache` stores the results on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from tunesift.io.atomic import atomic_write, write_json
from tunesift.io.faults import fault_point
from tunesift.settings import setting

log = logging.getLogger("tunesift")


def stage_key(**parts: Any) -> str:
    """A short stable hash of the JSON of ``parts`` (sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class StageCache:
    """Stage results on disk, one slot per stage and key: ``NAME/KEY.npy`` (or ``.pt``) next to
    ``NAME/KEY.json`` holding the key and the stage's info. A result is reused only when a slot with its
    key exists, so runs whose keys differ (other seeds, other settings) keep their own results side by
    side, and processes sharing the folder never read each other's half-written slots: the data file is
    written (atomically) before its ``.json``, and a slot without its ``.json`` does not count. A changed
    setting adds slots; deleting the folder clears them all. ``folder=None`` disables caching."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, key: str, suffix: str) -> Path | None:
        """Where stage ``name``'s result of ``key`` lives (``suffix``: ``.npy``, ``.pt``, ``.json``); the
        stage's folder is made here, so a caller may write there."""
        if self.folder is None:
            return None
        (self.folder / name).mkdir(parents=True, exist_ok=True)
        return self.folder / name / f"{key}{suffix}"

    def _meta(self, name: str, key: str) -> dict | None:
        p = self.path(name, key, ".json")
        if p is None or not p.exists():
            return None
        try:
            meta = json.loads(p.read_text())
        except json.JSONDecodeError:
            return None
        return meta if isinstance(meta, dict) and meta.get("key") == key else None

    def valid(self, name: str, key: str, suffix: str) -> bool:
        p = self.path(name, key, suffix)
        return self._meta(name, key) is not None and p is not None and p.exists()

    def info(self, name: str, key: str) -> dict:
        return (self._meta(name, key) or {}).get("info", {})

    def load_array(self, name: str, key: str) -> np.ndarray | None:
        if not self.valid(name, key, ".npy"):
            return None
        return np.load(self.path(name, key, ".npy"), allow_pickle=False)

    def save_array(self, name: str, key: str, array: np.ndarray, info: dict | None = None) -> None:
        if self.folder is None:
            return
        with atomic_write(self.path(name, key, ".npy"), "wb") as f:
            np.save(f, np.asarray(array))
        self.mark(name, key, info)

    def mark(self, name: str, key: str, info: dict | None = None) -> None:
        """Record ``key``'s slot as complete, once its data file is written (by :meth:`save_array`, or by
        the caller at :meth:`path`, e.g. the surrogate checkpoint)."""
        if self.folder is not None:
            write_json(self.path(name, key, ".json"), {"key": key, "info": info or {}})
            fault_point(f"stage:{name}")

    def _parts(self, name: str, key: str, chunk: int) -> Path:
        return self.folder / name / f"{key}.parts-{chunk}"

    def chunked(self, name: str, key: str, n: int, chunk: int, factory: Callable[[], Callable[[slice], np.ndarray]],
                progress: Callable[[int], None] | None = None, executor: Any = None,
                reduce: bool = False) -> np.ndarray:
        """Compute ``n`` values in chunks, saving each, so an interrupted run resumes where it stopped.

        ``factory()`` builds the worker (``slice -> values``) where the chunks run: once here, or once per
        actor of a Ray ``executor`` (:mod:`tunesift.executor`; None: here, in order). Chunks come back
        in order and each is saved as it arrives, as ``NAME/KEY.parts-CHUNK/NNNNN.npy``. Returns the values
        in chunk order; the parts stay on disk until :meth:`drop_parts`, so the caller saves its own result
        (which may be these values reordered) first and a crash in between loses nothing. ``reduce``: each
        chunk gives one row (e.g. a partial sum), so the result is (chunks, ...)."""
        from tunesift.executor import LocalExecutor
        from tunesift.executor import Stage as ChunkStage

        slices = [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]
        folder = None if self.folder is None else self._parts(name, key, chunk)
        parts: list[np.ndarray | None] = []
        for k, sl in enumerate(slices):
            arr = None
            if folder is not None and (folder / f"{k:05d}.npy").exists():
                arr = np.load(folder / f"{k:05d}.npy", allow_pickle=False)
                if arr.shape[0] != (1 if reduce else sl.stop - sl.start):
                    arr = None
            if arr is not None and progress is not None:
                progress(arr.shape[0])
            parts.append(arr)
        todo = [(k, sl) for k, sl in enumerate(slices) if parts[k] is None]
        if todo:
            executor = LocalExecutor() if executor is None else executor
            stage = ChunkStage(name=f"{name} chunks", key=f"{name}:{key}", factory=factory)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            for k, arr in executor.map(stage, iter(todo)):
                parts[k] = np.asarray(arr)[None] if reduce else np.asarray(arr)
                if folder is not None:
                    with atomic_write(folder / f"{k:05d}.npy", "wb") as f:
                        np.save(f, parts[k])
                    fault_point(f"stage:{name}.part{k:05d}")
        return np.concatenate(parts) if parts else np.zeros(0)

    def drop_parts(self, name: str, key: str) -> None:
        """Delete the chunk files :meth:`chunked` saved for ``name`` and ``key`` (any chunk size)."""
        if self.folder is not None:
            for folder in (self.folder / name).glob(f"{key}.parts-*"):
                shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# settings


@dataclass
class SurrogateSettings:
    """The SASRec surrogate (DEALRec's ``code/prune/utils.py`` unless noted) and its per-sample gradients."""

    hidden_size: int = setting(64, "SASRec hidden size")
    n_blocks: int = setting(2, "SASRec blocks", flag="--surrogate-blocks")
    n_heads: int = setting(2, "SASRec attention heads", flag="--surrogate-heads")
    dropout: float = setting(0.5, "SASRec dropout", flag="--surrogate-dropout")
    max_len: int = setting(50, "SASRec history length")
    surrogate_epochs: int = setting(200, "SASRec training epochs")
    surrogate_batch_size: int = setting(500, "SASRec batch size")
    surrogate_lr: float = setting(1e-3, "SASRec learning rate (Adam)")
    eval_every: int = setting(1, "epochs between validations of the surrogate (the code: 5)")
    patience: int = setting(10, "validations without improvement before stopping (0: never)")
    metric_k: int = setting(20, "best surrogate checkpoint by validation Recall@K (then NDCG@K)")
    early_epoch: int = setting(10, "surrogate snapshot used by grand/el2n/ccs ('early in training', Paul et al.)")
    gradient_batch_size: int = setting(256, "samples per batched per-sample-gradient call", key=False)

    def __post_init__(self) -> None:
        if self.gradient_batch_size < 1:
            raise ValueError(f"`gradient_batch_size` must be at least 1, got {self.gradient_batch_size}")
        self.sasrec_config(1)
        self.train_settings(0)

    def sasrec_config(self, n_items: int):
        from tunesift.rec.sasrec import SASRecConfig

        return SASRecConfig(n_items=n_items, hidden_size=self.hidden_size, n_blocks=self.n_blocks,
                            n_heads=self.n_heads, dropout=self.dropout, max_len=self.max_len)

    def train_settings(self, seed: int):
        from tunesift.rec.sasrec import TrainSettings

        return TrainSettings(epochs=self.surrogate_epochs, batch_size=self.surrogate_batch_size,
                             lr=self.surrogate_lr, eval_every=self.eval_every, patience=self.patience,
                             metric_k=self.metric_k, early_epoch=self.early_epoch, seed=seed)


def _as_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass
class InfluenceSettings:
    """DEALRec's influence score (``code/prune/influence_score.py``)."""

    influence_parameters: tuple[str, ...] | None = setting(
        None, "surrogate parameters of the influence gradient (default: the last block's attention output projection)")
    influence_solver: str = setting("lissa", "lissa, or exact (forms the Hessian; small parameter sets)",
                                    choices=("lissa", "exact"))
    lissa_depth: int = setting(5000, "LiSSA recursion steps")
    lissa_damping: float = setting(0.01, "LiSSA damping")
    lissa_scale: float = setting(25.0, "LiSSA scale (raise it if LiSSA diverges)")
    lissa_batch_size: int = setting(1, "samples per LiSSA Hessian-vector product")
    lissa_repeats: int = setting(1, "independent LiSSA estimates averaged")
    influence_scoring: str = setting("vmap", "vmap (per-sample gradients) or jvp (forward mode, same numbers)",
                                     choices=("vmap", "jvp"), key=False)
    influence_chunk: int = setting(65536, "candidates per saved chunk of the influence's mean gradient and "
                                          "scores (a killed run resumes at the first unfinished one; more "
                                          "chunks: the same numbers up to float rounding)", key=False)

    def __post_init__(self) -> None:
        if self.influence_solver not in ("lissa", "exact"):
            raise ValueError(f"`influence_solver` must be 'lissa' or 'exact', got {self.influence_solver!r}")
        if self.influence_scoring not in ("vmap", "jvp"):
            raise ValueError(f"`influence_scoring` must be 'vmap' or 'jvp', got {self.influence_scoring!r}")
        self.influence_parameters = _as_names(self.influence_parameters)
        _check_chunk("influence_chunk", self.influence_chunk)
        self.lissa_settings(0)

    def lissa_settings(self, seed: int):
        from tunesift.rec.influence import LissaSettings

        return LissaSettings(depth=self.lissa_depth, damping=self.lissa_damping, scale=self.lissa_scale,
                             batch_size=self.lissa_batch_size, repeats=self.lissa_repeats, seed=seed)


@dataclass
class EarlySettings:
    """GraNd / EL2N (Paul et al., NeurIPS 2021) on the surrogate's early snapshot."""

    grand_parameters: tuple[str, ...] | None = setting(
        None, "surrogate parameters of GraNd's gradient (default: all of them, the item embeddings "
              "included: their gradient is taken over the rows a sample looks up)")
    early_chunk: int = setting(16384, "candidates per saved chunk of GraNd / EL2N (a killed run resumes at the "
                                      "first unfinished one)", key=False)

    def __post_init__(self) -> None:
        self.grand_parameters = _as_names(self.grand_parameters)
        _check_chunk("early_chunk", self.early_chunk)


def _check_chunk(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------------
# stages


class Stage:
    """One stage: ``key(ctx)`` names its result, ``compute(ctx) -> (result, info)`` makes it.

    ``RecContext.run(stage)`` loads a cached result with the same key, or computes, times and caches it.
    Array-valued stages are cached as ``.npy``; others override :meth:`load` and :meth:`save`.
    """

    name: ClassVar[str] = ""

    def key(self, ctx: Any) -> str:
        raise NotImplementedError

    def compute(self, ctx: Any) -> tuple[Any, dict]:
        raise NotImplementedError

    def load(self, ctx: Any, key: str) -> Any:
        return ctx.cache.load_array(self.name, key)

    def save(self, ctx: Any, key: str, result: Any, info: dict) -> None:
        ctx.cache.save_array(self.name, key, result, info)


class ChunkedStage(Stage):
    """A per-candidate stage computed in chunks, each saved as it is done (:meth:`StageCache.chunked`), so
    a killed run resumes at the first unfinished chunk; ``compute`` calls :meth:`chunked`."""

    def chunked(self, ctx: Any) -> Callable[[int, int, Callable[[], Callable[[slice], np.ndarray]]], np.ndarray]:
        """``chunked(n, chunk, factory)``: ``n`` values, ``chunk`` at a time, by the worker ``factory()``
        builds (here, or once per actor of the run's executor)."""
        key = self.key(ctx)
        cache = ctx.cache if key is not None else StageCache(None)

        def run(n: int, chunk: int, factory: Callable[[], Callable[[slice], np.ndarray]]) -> np.ndarray:
            return cache.chunked(self.name, key or "", n, chunk, factory, executor=getattr(ctx, "executor", None))

        return run

    def save(self, ctx: Any, key: str, result: Any, info: dict) -> None:
        # the stage's result (e.g. scores put back in candidate order), not the chunks' concatenation
        ctx.cache.save_array(self.name, key, result, info)
        ctx.cache.drop_parts(self.name, key)


class SurrogateStage(Stage):
    """SASRec on every user of the data; the key leaves the candidates out, so runs on other candidate
    subsets (``max_users``) of the same data reuse it."""

    name = "surrogate"

    def __init__(self, settings: SurrogateSettings):
        self.settings = settings

    def key(self, ctx: Any) -> str:
        s = self.settings
        return stage_key(data=ctx.dataset_key, config=asdict(s.sasrec_config(ctx.data.n_items)),
                         train=asdict(s.train_settings(ctx.seed)))

    def load(self, ctx: Any, key: str) -> Any:
        from tunesift.rec.sasrec import load_surrogate

        if not ctx.cache.valid(self.name, key, ".pt"):
            return None
        log.info("surrogate: loaded from %s", ctx.cache.path(self.name, key, ".pt"))
        return load_surrogate(ctx.cache.path(self.name, key, ".pt"), ctx.device)

    def save(self, ctx: Any, key: str, result: Any, info: dict) -> None:
        from tunesift.rec.sasrec import save_surrogate

        if ctx.cache.folder is not None:
            save_surrogate(result, ctx.cache.path(self.name, key, ".pt"))
            ctx.cache.mark(self.name, key, info)

    def compute(self, ctx: Any) -> tuple[Any, dict]:
        from tunesift.rec.sasrec import evaluation_tensors, train_sasrec

        d, s = ctx.data, self.settings
        valid = evaluation_tensors(d.train, d.valid, s.max_len)
        test = evaluation_tensors([a + b for a, b in zip(d.train, d.valid)], d.test, s.max_len)
        trained = train_sasrec(ctx.training_tensors(), valid, s.sasrec_config(d.n_items), s.train_settings(ctx.seed),
                               device=ctx.device, progress=ctx.progress, test=test)
        return trained, trained.info()


class InfluenceStage(ChunkedStage):
    """(N,) influence of each candidate on the surrogate's empirical risk (:mod:`tunesift.rec.influence`),
    in resumable pieces: the mean gradient's partial sums per chunk, then h = H⁻¹v (saved once, with
    LiSSA's trace), then the scores per chunk; each piece is saved as it is done. Its chunks run here,
    in the driver (the surrogate is small), not on the run's executor."""

    name = "influence"

    def __init__(self, settings: InfluenceSettings, surrogate: SurrogateStage):
        self.settings = settings
        self.surrogate = surrogate

    def _names(self, ctx: Any) -> list[str]:
        return list(self.settings.influence_parameters or ctx.surrogate().model.influence_parameter_names())

    def key(self, ctx: Any) -> str:
        s = self.settings
        return stage_key(surrogate=self.surrogate.key(ctx), pool=ctx.pool_hash, names=self._names(ctx),
                         solver=s.influence_solver, lissa=asdict(s.lissa_settings(ctx.seed)),
                         scoring=s.influence_scoring)

    def compute(self, ctx: Any) -> tuple[np.ndarray, dict]:
        import torch

        from tunesift.rec.influence import InfluenceParts
        from tunesift.rec.sasrec import trim_padding

        s, key = self.settings, self.key(ctx)
        batch, order = ctx.pool_batch()
        model = ctx.surrogate().model
        parts = InfluenceParts(model, batch, self._names(ctx), solver=s.influence_solver,
                               lissa_settings=s.lissa_settings(ctx.seed),
                               batch_size=ctx.surrogate_settings.gradient_batch_size, scoring=s.influence_scoring,
                               progress=ctx.progress, prepare=trim_padding, chunk=s.influence_chunk)
        n, chunk = parts.n, parts.chunk
        h_name, h_key = f"{self.name}.ihvp", stage_key(parent=key, chunk=chunk)
        was_training = model.training
        model.eval()
        try:
            h = ctx.cache.load_array(h_name, h_key)
            if h is None:
                sums = ctx.cache.chunked(f"{self.name}.gradient", key, n, chunk, lambda: lambda sl: (
                    parts.gradient_sum(sl).cpu().numpy()), reduce=True)
                v = parts.mean([torch.from_numpy(row) for row in sums]).to(batch[0].device)
                h, trace = parts.inverse_hvp(v)
                h_info = {"v_norm": float(v.norm()), **({"lissa": trace.info()} if trace is not None else {})}
                h = h.detach().cpu().numpy()
                ctx.cache.save_array(h_name, h_key, h, h_info)
                ctx.cache.drop_parts(f"{self.name}.gradient", key)
            else:
                h_info = {**ctx.cache.info(h_name, h_key), "ihvp_cached": True}
                log.info("influence: H⁻¹v read from the cache; scoring the candidates")
            h_t = torch.from_numpy(h).to(batch[0].device)
            scores = ctx.cache.chunked(self.name, key, n, chunk, lambda: lambda sl: (
                parts.scores(sl, h_t).detach().cpu().double().numpy()))
        finally:
            model.train(was_training)
        info = {"solver": parts.solver, "path": parts.path, "parameters": parts.names, "n_parameters": int(h.size),
                "chunk": chunk, "seconds": {k: round(t, 3) for k, t in parts.seconds.items()}, **h_info}
        return unsort(scores, order), info


class EarlyStage(ChunkedStage):
    """(N,) EL2N (``kind="el2n"``) or GraNd (``"grand"``) on the surrogate's early snapshot."""

    KINDS = ("el2n", "grand")

    def __init__(self, kind: str, settings: EarlySettings, surrogate: SurrogateStage):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self.name = kind
        self.settings = settings
        self.surrogate = surrogate

    def _names(self) -> list[str] | None:
        return list(self.settings.grand_parameters) if self.settings.grand_parameters else None

    def key(self, ctx: Any) -> str:
        # GraNd's key names the fix of its position-embedding norms, so no result from before it is reused
        fixed = {"shared_lookups": "dense"} if self.name == "grand" else {}
        # "saved": caches from before the fix held the scores in length order, not candidate order
        return stage_key(surrogate=self.surrogate.key(ctx), pool=ctx.pool_hash, kind=self.name, names=self._names(),
                         saved="candidate order", **fixed)

    def compute(self, ctx: Any) -> tuple[np.ndarray, dict]:
        from tunesift.rec.influence import per_sample_gradient_norms
        from tunesift.rec.methods import el2n_scores
        from tunesift.rec.sasrec import trim_padding

        trained = ctx.surrogate()
        model = trained.early_model()
        batch, order = ctx.pool_batch()
        names = self._names()
        if self.name == "el2n":
            def score(sl: slice) -> np.ndarray:
                return el2n_scores(model, [t[sl] for t in batch])
        else:
            n_params = sum(p.numel() for n, p in model.named_parameters()
                           if (names is None or n in names) and n != "item_embeddings.weight")
            size = max(1, min(ctx.surrogate_settings.gradient_batch_size, (1 << 26) // max(n_params, 1),
                              self.settings.early_chunk))

            def score(sl: slice) -> np.ndarray:
                return per_sample_gradient_norms(model, [t[sl] for t in batch], names, batch_size=size,
                                                 progress=ctx.progress, prepare=trim_padding).double().cpu().numpy()
        # chunks of the length-sorted rows, a multiple of the gradient batches: the same batches as one call
        chunk = self.settings.early_chunk if self.name == "el2n" else self.settings.early_chunk // size * size
        scores = self.chunked(ctx)(len(order), chunk, lambda: score)
        return unsort(scores, order), {"early_epoch": trained.early_epoch, "parameters": names or "all"}


class EffortStage(ChunkedStage):
    """(N,) the backbone's effort on each candidate's training sample(s), computed in resumable chunks."""

    name = "effort"

    def __init__(self, backbone: Any):
        self.backbone = backbone

    def key(self, ctx: Any) -> str | None:
        parts = self.backbone.effort_key(ctx.data, ctx.pool, ctx.seed)
        if parts is None:  # e.g. a model object given by the caller: no stable identity, no cache
            return None
        return stage_key(data=ctx.data_key, backbone=self.backbone.name, seed=ctx.seed, **parts)

    def compute(self, ctx: Any) -> tuple[np.ndarray, dict]:
        return self.backbone.effort(ctx.data, ctx.pool, ctx.seed, self.chunked(ctx))


def unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``out[order] = values``: values computed in ``order`` back in candidate order."""
    out = np.empty_like(values)
    out[order] = values
    return out

