"""Run DEALRec (or a baseline) end to end: data -> surrogate -> influence / effort -> selection -> files.

Each stage's result is cached in ``<out>/cache`` under a key of everything it depends on (data
fingerprint, candidate users, settings, seed): the SASRec checkpoint (``surrogate.pt``), influence and
effort scores (``.npy``, effort in resumable chunks). A rerun with the same settings loads them; a run
that crashed resumes at the stage (or effort chunk) it was in. Timings per stage go to the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tunesift.io.atomic import atomic_write, write_json
from tunesift.output import Timer, write_selection
from tunesift.rec.data import RecData, load_rec_data
from tunesift.rec.methods import RecMethod, RecRanking
from tunesift.rec.prompts import Sample, build_samples
from tunesift.registry import REC_METHODS

log = logging.getLogger("tunesift")

LLM_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class PipelineSettings:
    """Settings of the stages shared by all methods; defaults are DEALRec's unless noted."""

    # surrogate: SASRec (code/prune/utils.py)
    hidden_size: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.5
    max_len: int = 50
    surrogate_epochs: int = 200
    surrogate_batch_size: int = 500
    surrogate_lr: float = 1e-3
    eval_every: int = 1  # ours: validate every epoch (the code: every 5) for early stopping
    patience: int = 10  # ours: validations without improvement before stopping
    metric_k: int = 20  # ours: best checkpoint by validation Recall@K (then NDCG@K)
    early_epoch: int = 10  # snapshot for GraNd / EL2N ("early in training", Paul et al.)
    # influence (code/prune/influence_score.py)
    influence_parameters: tuple[str, ...] | None = None  # None: last block's attention output projection
    influence_solver: str = "lissa"  # or "exact" (forms the Hessian; small subsets only)
    lissa_depth: int = 5000
    lissa_damping: float = 0.01
    lissa_scale: float = 25.0
    lissa_batch_size: int = 1
    lissa_repeats: int = 1
    influence_scoring: str = "vmap"  # per-sample gradients by vmap(grad); "jvp": same numbers, forward mode
    gradient_batch_size: int = 256  # samples per batched per-sample-gradient call
    grand_parameters: tuple[str, ...] | None = None  # GraNd's gradient: None = all surrogate parameters
    # effort (code/prune/effort_score.py): the LLM and its LoRA
    llm: str | None = None  # local Hugging Face causal LM folder; None = SmolLM2-135M-Instruct
    llm_dtype: str = "float32"  # "bfloat16" / "float16": half the memory; ~2x faster where the chip has bf16 units
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    effort_batch_size: int = 8  # ours: padded batches (the code: 1)
    effort_loss_on: str = "prompt"  # "prompt": the whole text (paper and code); "response": response only
    effort_parameters: str | None = None  # regex on parameter names; None = last layer's v_proj lora_B
    effort_chunk: int = 2048  # samples per saved chunk (a crash loses at most one chunk)
    # prompts (BIGRec)
    max_tokens: int = 512
    prompt_tokenizer: str = "llm"  # "llm": the LLM's tokenizer measures max_tokens; "whitespace": words

    def __post_init__(self) -> None:
        if self.influence_solver not in ("lissa", "exact"):
            raise ValueError(f"`influence_solver` must be 'lissa' or 'exact', got {self.influence_solver!r}")
        if self.influence_scoring not in ("vmap", "jvp"):
            raise ValueError(f"`influence_scoring` must be 'vmap' or 'jvp', got {self.influence_scoring!r}")
        if self.effort_loss_on not in ("prompt", "response"):
            raise ValueError(f"`effort_loss_on` must be 'prompt' or 'response', got {self.effort_loss_on!r}")
        if self.llm_dtype not in LLM_DTYPES:
            raise ValueError(f"`llm_dtype` must be one of {', '.join(LLM_DTYPES)}, got {self.llm_dtype!r}")
        if self.prompt_tokenizer not in ("llm", "whitespace"):
            raise ValueError(f"`prompt_tokenizer` must be 'llm' or 'whitespace', got {self.prompt_tokenizer!r}")
        for name in ("gradient_batch_size", "effort_batch_size", "effort_chunk", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        for name in ("influence_parameters", "grand_parameters", "lora_targets"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, (value,))
            elif value is not None:
                setattr(self, name, tuple(value))
        # the stage settings validate their own fields
        self.sasrec_config(1)
        self.train_settings(0)
        self.lissa_settings(0)

    def sasrec_config(self, n_items: int):
        from tunesift.rec.sasrec import SASRecConfig

        return SASRecConfig(n_items=n_items, hidden_size=self.hidden_size, n_blocks=self.n_blocks,
                            n_heads=self.n_heads, dropout=self.dropout, max_len=self.max_len)

    def train_settings(self, seed: int):
        from tunesift.rec.sasrec import TrainSettings

        return TrainSettings(epochs=self.surrogate_epochs, batch_size=self.surrogate_batch_size,
                             lr=self.surrogate_lr, eval_every=self.eval_every, patience=self.patience,
                             metric_k=self.metric_k, early_epoch=self.early_epoch, seed=seed)

    def lissa_settings(self, seed: int):
        from tunesift.rec.influence import LissaSettings

        return LissaSettings(depth=self.lissa_depth, damping=self.lissa_damping, scale=self.lissa_scale,
                             batch_size=self.lissa_batch_size, repeats=self.lissa_repeats, seed=seed)


def _key(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class StageCache:
    """Stage results on disk: ``NAME.npy`` / ``NAME.pt`` next to ``NAME.json`` holding the key and
    the stage's info. A result is reused only when its key matches. ``folder=None`` disables caching."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _meta(self, name: str) -> dict | None:
        if self.folder is None or not (self.folder / f"{name}.json").exists():
            return None
        try:
            return json.loads((self.folder / f"{name}.json").read_text())
        except json.JSONDecodeError:
            return None

    def path(self, name: str, suffix: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}{suffix}"

    def valid(self, name: str, key: str, suffix: str) -> bool:
        meta = self._meta(name)
        p = self.path(name, suffix)
        return meta is not None and meta.get("key") == key and p is not None and p.exists()

    def info(self, name: str) -> dict:
        return (self._meta(name) or {}).get("info", {})

    def load_array(self, name: str, key: str) -> np.ndarray | None:
        if not self.valid(name, key, ".npy"):
            return None
        return np.load(self.path(name, ".npy"), allow_pickle=False)

    def save_array(self, name: str, key: str, array: np.ndarray, info: dict | None = None) -> None:
        if self.folder is None:
            return
        with atomic_write(self.path(name, ".npy"), "wb") as f:
            np.save(f, np.asarray(array))
        write_json(self.path(name, ".json"), {"key": key, "info": info or {}})

    def mark(self, name: str, key: str, info: dict | None = None) -> None:
        """Record the key of a file saved by the caller (e.g. the surrogate checkpoint)."""
        if self.folder is not None:
            write_json(self.path(name, ".json"), {"key": key, "info": info or {}})

    def chunked(self, name: str, key: str, n: int, chunk: int,
                compute: Callable[[slice], np.ndarray], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Compute ``n`` values in chunks, saving each, so an interrupted run resumes where it stopped."""
        done = self.load_array(name, key)
        if done is not None:
            return done
        parts = []
        part_key = _key(parent=key, chunk=chunk)
        for k, start in enumerate(range(0, n, chunk)):
            sl = slice(start, min(start + chunk, n))
            part_name = f"{name}.part{k:05d}"
            arr = self.load_array(part_name, part_key)
            if arr is None or arr.shape[0] != sl.stop - sl.start:
                arr = np.asarray(compute(sl))
                self.save_array(part_name, part_key, arr)
            elif progress is not None:
                progress(arr.shape[0])
            parts.append(arr)
        result = np.concatenate(parts) if parts else np.zeros(0)
        self.save_array(name, key, result)
        if self.folder is not None:
            for k in range(len(parts)):
                for suffix in (".npy", ".json"):
                    p = self.path(f"{name}.part{k:05d}", suffix)
                    if p is not None and p.exists():
                        p.unlink()
        return result


class RecContext:
    """What a rec method may ask for; every stage runs once, timed, and is cached on disk.

    Attributes:
        data: the dataset; pool: (N,) positions in ``data`` of the candidate users (those with at least
            one training item); budget; rng: the only random generator of the selection.
    """

    def __init__(self, data: RecData, pool: np.ndarray, budget: int, seed: int, settings: PipelineSettings,
                 cache: StageCache, timer: Timer, device: str, progress: bool = True, llm: Any = None):
        self.data = data
        self.pool = pool
        self.budget = budget
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.settings = settings
        self.cache = cache
        self.timer = timer
        self.device = device
        self.progress = progress
        self.stage_info: dict[str, Any] = {}
        self._llm = llm  # (model, tokenizer) given by the caller, or loaded on demand
        self._llm_given = llm is not None
        self._surrogate = None
        self._tensors = None
        self._influence: np.ndarray | None = None
        self._effort: np.ndarray | None = None
        self._early: dict[str, np.ndarray] = {}
        self._samples: list[Sample] | None = None
        self._tokenizer: Any = ...
        self._pool_hash = hashlib.sha256(np.asarray(pool, dtype=np.int64).tobytes()).hexdigest()
        self._dataset = dict(fingerprint=data.fingerprint, n_users=data.n_users, n_items=data.n_items)
        self._data_key = _key(**self._dataset, pool=self._pool_hash)

    # ---------------------------------------------------------------------------------------- SASRec

    def training_tensors(self):
        if self._tensors is None:
            from tunesift.rec.sasrec import training_tensors

            self._tensors = training_tensors(self.data.train, self.data.n_items, self.settings.max_len, seed=self.seed)
        return self._tensors

    def _surrogate_key(self) -> str:
        """The surrogate trains on every user, so its key leaves the candidates out: runs on other
        candidate subsets (``max_users``) of the same data reuse it."""
        s = self.settings
        return _key(data=_key(**self._dataset), config=asdict(s.sasrec_config(self.data.n_items)),
                    train=asdict(s.train_settings(self.seed)))

    def surrogate(self):
        """The trained SASRec (best validation checkpoint) and its early snapshot."""
        if self._surrogate is not None:
            return self._surrogate
        from tunesift.rec.sasrec import evaluation_tensors, load_surrogate, save_surrogate, train_sasrec

        key = self._surrogate_key()
        with self.timer.stage("surrogate"):
            if self.cache.valid("surrogate", key, ".pt"):
                self._surrogate = load_surrogate(self.cache.path("surrogate", ".pt"), self.device)
                cached = True
                log.info("surrogate: loaded from %s", self.cache.path("surrogate", ".pt"))
            else:
                d = self.data
                valid = evaluation_tensors(d.train, d.valid, self.settings.max_len)
                test = evaluation_tensors([a + b for a, b in zip(d.train, d.valid)], d.test, self.settings.max_len)
                self._surrogate = train_sasrec(self.training_tensors(), valid, self.settings.sasrec_config(d.n_items),
                                               self.settings.train_settings(self.seed), device=self.device,
                                               progress=self.progress, test=test)
                if self.cache.folder is not None:
                    save_surrogate(self._surrogate, self.cache.path("surrogate", ".pt"))
                    self.cache.mark("surrogate", key, self._surrogate.info())
                cached = False
        self.stage_info["surrogate"] = {**self._surrogate.info(), "cached": cached}
        t = self._surrogate
        log.info("surrogate: best epoch %d of %d, valid %s", t.best_epoch, t.epochs_run,
                 ", ".join(f"{k} {v:.4f}" for k, v in t.best_metrics.items()))
        return self._surrogate

    def _pool_batch(self, device: Any = None):
        """The candidates' training rows sorted by history length (chunks then pad little), and the
        permutation: row k of the batch is candidate ``order[k]``."""
        import torch

        from tunesift.rec.sasrec import length_order

        tensors = self.training_tensors()
        idx = torch.as_tensor(self.pool, dtype=torch.long)
        rows = [t[idx] for t in tensors.loss_batch()]
        order = length_order(rows[0])
        return tuple(t[order].to(device or self.device) for t in rows), order.numpy()

    @staticmethod
    def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[order] = values
        return out

    # ------------------------------------------------------------------------------------- influence

    def influence(self) -> np.ndarray:
        """(N,) influence of each candidate on the surrogate's empirical risk."""
        if self._influence is not None:
            return self._influence
        from tunesift.rec.influence import influence_scores
        from tunesift.rec.sasrec import trim_padding

        s = self.settings
        trained = self.surrogate()
        names = list(s.influence_parameters or trained.model.influence_parameter_names())
        key = _key(surrogate=self._surrogate_key(), pool=self._pool_hash, names=names, solver=s.influence_solver,
                   lissa=asdict(s.lissa_settings(self.seed)), scoring=s.influence_scoring)
        with self.timer.stage("influence"):
            cached = self.cache.load_array("influence", key)
            if cached is not None:
                self._influence = cached
                info = {**self.cache.info("influence"), "cached": True}
            else:
                batch, order = self._pool_batch()
                result = influence_scores(trained.model, batch, names, solver=s.influence_solver,
                                          lissa_settings=s.lissa_settings(self.seed),
                                          batch_size=s.gradient_batch_size, scoring=s.influence_scoring,
                                          progress=self.progress, prepare=trim_padding)
                self._influence = self._unsort(result.scores, order)
                info = result.info()
                self.cache.save_array("influence", key, self._influence, info)
                info = {**info, "cached": False}
        self.stage_info["influence"] = info
        return self._influence

    # ----------------------------------------------------------------------------------- early scores

    def early_scores(self, kind: str) -> np.ndarray:
        """(N,) EL2N ("el2n") or GraNd ("grand") scores on the surrogate's early snapshot."""
        if kind in self._early:
            return self._early[kind]
        if kind not in ("el2n", "grand"):
            raise ValueError(f"kind must be 'el2n' or 'grand', got {kind!r}")
        from tunesift.rec.influence import per_sample_gradient_norms
        from tunesift.rec.methods import el2n_scores
        from tunesift.rec.sasrec import trim_padding

        s = self.settings
        trained = self.surrogate()
        names = list(s.grand_parameters) if s.grand_parameters else None
        key = _key(surrogate=self._surrogate_key(), pool=self._pool_hash, kind=kind, names=names)
        with self.timer.stage(kind):
            scores = self.cache.load_array(kind, key)
            cached = scores is not None
            if scores is None:
                model = trained.early_model()
                batch, order = self._pool_batch()
                if kind == "el2n":
                    scores = el2n_scores(model, batch)
                else:
                    n_params = sum(p.numel() for n, p in model.named_parameters()
                                   if (names is None or n in names) and n != "item_embeddings.weight")
                    chunk = max(1, min(s.gradient_batch_size, (1 << 26) // max(n_params, 1)))
                    scores = per_sample_gradient_norms(model, batch, names, batch_size=chunk, progress=self.progress,
                                                       prepare=trim_padding).double().cpu().numpy()
                scores = self._unsort(scores, order)
                self.cache.save_array(kind, key, scores, {"early_epoch": trained.early_epoch})
        self.stage_info[kind] = {"early_epoch": trained.early_epoch, "cached": cached,
                                 "parameters": names or "all"}
        self._early[kind] = scores
        return scores

    # ---------------------------------------------------------------------------------- LLM, prompts

    def llm(self):
        """(model, tokenizer) with LoRA, loaded once (``tunesift.rec.llm.load_causal_lm``)."""
        if self._llm is None:
            import torch

            from tunesift.rec.llm import load_causal_lm

            s = self.settings
            with self.timer.stage("load_llm"):
                self._llm = load_causal_lm(s.llm, device=self.device, lora_r=s.lora_r, lora_alpha=s.lora_alpha,
                                           lora_dropout=s.lora_dropout, target_modules=s.lora_targets, seed=self.seed,
                                           dtype=getattr(torch, s.llm_dtype))
        return self._llm

    def prompt_tokenizer(self):
        """The tokenizer measuring ``max_tokens``: the LLM's (loading only the tokenizer if the LLM is
        not needed) or None (whitespace words) when asked for or when no LLM is available."""
        if self._tokenizer is not ...:
            return self._tokenizer
        tok, source = None, "whitespace"
        if self.settings.prompt_tokenizer == "llm":
            if self._llm is not None:
                tok, source = self._llm[1], "llm"
            else:
                try:
                    from transformers import AutoTokenizer

                    from tunesift.rec.llm import resolve_llm_path

                    folder = resolve_llm_path(self.settings.llm)
                    tok, source = AutoTokenizer.from_pretrained(folder), str(folder)
                except (ImportError, FileNotFoundError, ValueError, OSError) as e:
                    log.warning("prompts: no LLM tokenizer (%s); measuring max_tokens in whitespace words", e)
        self._tokenizer = tok
        self.stage_info["prompts"] = {"tokenizer": source, "max_tokens": self.settings.max_tokens}
        return tok

    def samples(self) -> list[Sample]:
        """(N,) the BIGRec training sample of every candidate user."""
        if self._samples is None:
            tok = self.prompt_tokenizer()
            with self.timer.stage("prompts"):
                self._samples = build_samples(self.data, "train", users=self.pool, tokenizer=tok,
                                              max_tokens=self.settings.max_tokens)
            if len(self._samples) != len(self.pool):
                raise RuntimeError("every candidate user must have one training sample")
            self.stage_info["prompts"]["truncated"] = sum(1 for x in self._samples if x.n_dropped)
        return self._samples

    # ---------------------------------------------------------------------------------------- effort

    def effort(self) -> np.ndarray:
        """(N,) the LLM's effort (LoRA gradient norm) on each candidate's training sample."""
        if self._effort is not None:
            return self._effort
        s = self.settings
        samples = self.samples()  # measured with the LLM's tokenizer; the LLM itself loads only if needed
        texts_hash = hashlib.sha256("\0".join(x.text for x in samples).encode()).hexdigest()
        model_id = "given" if self._llm_given else (str(Path(s.llm).resolve()) if s.llm else "default-smollm2")
        key = _key(data=self._data_key, llm=model_id, lora=[s.lora_r, s.lora_alpha, s.lora_dropout, s.lora_targets],
                   loss_on=s.effort_loss_on, params=s.effort_parameters, texts=texts_hash, seed=self.seed,
                   max_tokens=s.max_tokens, **({} if s.llm_dtype == "float32" else {"dtype": s.llm_dtype}))
        cache = StageCache(None) if self._llm_given else self.cache  # a model object has no stable identity
        with self.timer.stage("effort"):
            cached = cache.load_array("effort", key) is not None
            n_chunks = -(-len(samples) // s.effort_chunk)

            def compute(sl: slice) -> np.ndarray:
                from tunesift.rec.effort import effort_scores

                model, tokenizer = self.llm()
                part = samples[sl]
                if n_chunks > 1:
                    log.info("effort: samples %d-%d of %d", sl.start + 1, sl.stop, len(samples))
                return effort_scores(model, tokenizer, [x.prompt for x in part],
                                     responses=[x.response for x in part], batch_size=s.effort_batch_size,
                                     loss_on=s.effort_loss_on, param_filter=s.effort_parameters,
                                     max_length=s.max_tokens, device=self.device, progress=self.progress)

            self._effort = cache.chunked("effort", key, len(samples), s.effort_chunk, compute)
        self.stage_info["effort"] = {"llm": model_id, "dtype": s.llm_dtype, "cached": cached,
                                     "batch_size": s.effort_batch_size,
                                     "loss_on": s.effort_loss_on,
                                     "parameters": s.effort_parameters or "last layer's v_proj lora_B"}
        return self._effort


@dataclass
class RecSelection:
    """The result of :func:`select_samples`.

    Attributes:
        users: (budget,) ids of the selected users, in rank order.
        indices: (budget,) their positions in ``data``.
        samples: (budget,) their BIGRec training samples (prompt, response), in rank order.
        ranking: the method's scores over the candidates, its selection and extra columns.
        pool: (N,) positions in ``data`` of the candidate users (those with a training item).
        manifest: settings, seed, fingerprints, timings per stage, LiSSA convergence.
        paths: the files written (when ``out_dir`` was given).
    """

    users: list[Any]
    indices: np.ndarray
    samples: list[Sample]
    ranking: RecRanking
    pool: np.ndarray
    manifest: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def _split_settings(settings: dict[str, Any], method_cls: type) -> tuple[dict, dict]:
    method_fields = {f.name for f in fields(method_cls)} if hasattr(method_cls, "__dataclass_fields__") else set()
    pipe_fields = {f.name for f in fields(PipelineSettings)}
    unknown = set(settings) - method_fields - pipe_fields
    if unknown:
        raise TypeError(f"unknown setting(s) {sorted(unknown)}; method settings: {sorted(method_fields)}, "
                        f"pipeline settings: {sorted(pipe_fields)}")
    return ({k: v for k, v in settings.items() if k in method_fields},
            {k: v for k, v in settings.items() if k in pipe_fields})


def select_samples(
    data: RecData | str | os.PathLike,
    budget: int,
    method: str | RecMethod = "dealrec",
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    settings: PipelineSettings | None = None,
    llm: str | os.PathLike | tuple[Any, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
    max_users: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    format: str | None = None,
    **options: Any,
) -> RecSelection:
    """Pick ``budget`` users whose BIGRec samples to fine-tune an LLM recommender on.

    Args:
        data: a :class:`RecData` or a path (DEALRec folder, RecBole files or an interaction table).
        method: a registered name (``tunesift.registry.REC_METHODS``) or a configured instance.
        settings: the stages' settings; keyword ``options`` fill fields of the method (e.g. ``lam``,
            ``strata``) or of :class:`PipelineSettings` (e.g. ``surrogate_epochs=5``, ``llm=PATH``).
        llm: a local causal-LM folder (sets ``settings.llm``), or a ready (model, tokenizer) for the
            effort score (not cached on disk: a model object has no stable identity).
        max_users: score a seeded random subset of this many candidate users (for a quick run). The
            surrogate still trains on every user; the influence's mean gradient and LiSSA's samples
            then come from the subset (an estimate of the full data's).
        out_dir: writes scores.parquet, selected.jsonl, manifest.json there; stages are cached in
            ``cache_dir`` (default ``out_dir/cache``; none when both are None).
    """
    from tunesift.embed import resolve_device

    timer = Timer()
    t_start = time.perf_counter()
    with timer.stage("load"):
        if not isinstance(data, RecData):
            data = load_rec_data(data, format=format)
    if isinstance(method, str):
        cls = REC_METHODS.get(method)
        method_kw, pipe_kw = _split_settings(options, cls)
        m = cls(**method_kw)
    else:
        m = method
        method_kw, pipe_kw = _split_settings(options, type(m))
        if method_kw:
            raise TypeError("pass method settings either to the method instance or as keywords with a method name")
    if isinstance(llm, (str, os.PathLike)):
        pipe_kw["llm"] = str(llm)
        llm = None
    elif llm is not None and not (isinstance(llm, tuple) and len(llm) == 2):
        raise TypeError(f"llm must be a model folder or a (model, tokenizer) pair, got {type(llm).__name__}")
    if settings is None:
        settings = PipelineSettings(**pipe_kw)
    elif pipe_kw:
        settings = PipelineSettings(**{**asdict(settings), **pipe_kw})
    pool = np.array([u for u in range(data.n_users) if data.train[u]], dtype=np.int64)
    if pool.size == 0:
        raise ValueError(f"{data.source}: no user has a training item")
    if max_users is not None:
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users}")
        if max_users < pool.size:
            pool = np.sort(np.random.default_rng(seed).choice(pool, size=max_users, replace=False))
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if not 1 <= budget <= pool.size:
        raise ValueError(f"budget must be in 1..{pool.size} (users with a training item), got {budget}")
    device = resolve_device(device)
    cache_folder = cache_dir if cache_dir is not None else (Path(out_dir) / "cache" if out_dir is not None else None)
    ctx = RecContext(data, pool, int(budget), seed, settings, StageCache(cache_folder), timer, device,
                     progress=progress, llm=llm)
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
    samples_all = ctx.samples()
    selected_samples = [samples_all[i] for i in first]
    timer.stages["total"] = time.perf_counter() - t_start
    manifest = {
        "command": "dealrec",
        "method": m.name,
        "method_settings": m.settings(),
        "settings": asdict(settings),
        "seed": seed,
        "budget": int(budget),
        "data": {"source": data.source, "format": data.format, "name": data.name, "fingerprint": data.fingerprint,
                 "counts": data.counts(), "warnings": data.warnings},
        "candidates": int(pool.size),
        "max_users": max_users,
        "device": device,
        "stages": {k: v for k, v in ctx.stage_info.items() if not k.startswith("_")},
        "timings_s": {k: round(v, 4) for k, v in timer.stages.items()},
        "method_info": ranking.info,
    }
    users = [data.users[int(pool[i])] for i in first]
    result = RecSelection(users=users, indices=pool[first], samples=selected_samples, ranking=ranking, pool=pool,
                          manifest=manifest)
    if out_dir is not None:
        ids = [data.users[int(u)] for u in pool]
        columns = {"influence": np.full(pool.size, np.nan), "effort": np.full(pool.size, np.nan)}
        columns.update({k: np.asarray(v, dtype=np.float64) for k, v in ranking.columns.items()})
        columns["stratum"] = np.asarray(ranking.selection.strata, dtype=np.int64)
        rows = []
        for rank, (i, sample) in enumerate(zip(first, selected_samples), 1):
            rows.append({"user": sample.user, "prompt": sample.prompt, "response": sample.response,
                         "rank": rank, "score": float(scores[i]), "targets": sample.targets,
                         "history": sample.history, "target_items": sample.target_items,
                         "n_dropped": sample.n_dropped})
        result.paths = write_selection(out_dir, ids, scores, order, int(budget), rows, manifest, columns)
    return result
