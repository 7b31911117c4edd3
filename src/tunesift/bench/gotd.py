"""`tunesift bench gotd`: does pre-fine-tuning on a method's selection help the target task?

GOT-D's experiments (Kang et al., ICLR 2024, §5.3, Tables 2-3) select k pool examples with each method,
continue the model's pre-training objective on them (masked-LM for BERT), fine-tune a classifier on the
target task's labelled examples (at most a label budget) and report the test metric averaged over seeds.
This bench runs that grid over methods x selection budgets x seeds, with ``none`` (no pre-fine-tuning)
as the floor, and also records the target-domain LM loss before and after pre-fine-tuning.

Protocol of one run (method, budget, seed):

1. labels: ``label_budget`` training examples drawn with ``seed``; their texts are the selection target;
2. selection: the method's ranking of the pool for that target (one ranking per method and seed;
   budgets are its prefixes, as in GOT-D's code), the top ``budget`` rows;
3. pre-fine-tuning: all the model's weights are trained on the selected texts with its own objective
   (small learning rate, linear warm-up and decay);
4. LM loss on the target's test texts before and after (fixed masks);
5. evaluation (``--eval``):

   - ``finetune`` (default): fine-tuning a classifier on the labelled examples, epoch chosen on the dev
     split, score on the test split (GOT-D's NLU tables);
   - ``zero-shot``: no labels at all (the ``label_budget`` training texts are only the selection's
     target): a causal LM (``--model smollm2``, SmolLM2-135M, or a local causal-LM folder) classifies the
     test texts by the likelihood of each label's verbalizer after a prompt
     (:mod:`tunesift.warmup.zeroshot`), as GOT-D's zero-shot AG News experiment does with GPT-2 XL.
     Template, verbalizers and length normalisation are settings of the bench, recorded in its results;
     ``none`` is then deterministic and runs once (first seed).

Paired statistics (methods.md §3, :mod:`tunesift.bench.stats`): each run saves its per-test-example
correctness (``per_example.npz`` next to ``result.json``); ``results.md`` gives, per budget, every
method's accuracy with a 95% bootstrap CI and its paired difference to ``none`` and to ``random`` (same
budget) on the same test texts, seeds averaged per example, with the p-value and the smallest detectable
difference.

A checkpoint without an LM head (all-MiniLM-L6-v2 ships a bare encoder) first gets a fresh head (seed 0)
that is warmed up alone, encoder frozen, for a fixed number of steps on a fixed general sample of the pool
(``--head-warmup-steps``, once per bench, saved in ``cache/warm_head``). Every method, ``none`` included,
starts from that model: ``none`` means "warmed head, no pre-fine-tuning", and the LM loss "before" is that
of a working head. (Pre-fine-tuning through an untrained head damages the encoder: every method then
scores below ``none``.)

Every finished run is saved (resumable); ``results.md/csv/json``, ``runs.csv`` and plots are rewritten
at the end. Pool rows identical to a dev or test text of the task are dropped first, so the test texts
never reach pre-fine-tuning.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesift.bench.evals import DEFAULT_EVAL, evaluation, evaluation_names
from tunesift.cli import add_device_argument, add_executor_arguments, out_arg
from tunesift.io.faults import fault_point

log = logging.getLogger("tunesift")

NO_PRETRAINING = "none"
REFERENCES = (NO_PRETRAINING, "random")  # what every method's paired difference is taken against


# ----------------------------------------------------------------------------------------------------
# A model-free embedder for the tiny scale


class HashingEmbedder:
    """Signed feature hashing of lower-cased unigrams and bigrams, L2-normalised: (n, dim) float32.

    No model, deterministic and fast: it lets the ``tiny`` scale run GOT-D and kNN in CI. Real runs use a
    sentence encoder (all-MiniLM-L6-v2 by default).
    """

    def __init__(self, dim: int = 256):
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        self.dim = dim
        self.model_id = f"hash-bow:{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                h = zlib.crc32(gram.encode("utf-8"))
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


# ----------------------------------------------------------------------------------------------------
# Scales


@dataclass(frozen=True)
class Scale:
    """Defaults of one bench size; every field can be overridden on the command line.

    ``model`` is "tiny" (a 2-layer BERT built from a config with a word tokenizer fitted on the data; a
    2-layer Llama with ``--eval zero-shot``), "minilm" (the packaged all-MiniLM-L6-v2 encoder, given a fresh
    MLM head; SmolLM2-135M, "smollm2", with ``--eval zero-shot``) or a local model folder.
    """

    name: str
    model: str
    embedder: str  # "hash" or "minilm" or a local encoder folder
    task: str | None  # default task (None: --task required)
    pool: str | None  # default pool (None: --pool required)
    budgets: tuple[int, ...]
    seeds: int
    pool_size: int | None  # rows drawn from the pool (None: all)
    label_budget: int | None
    test_limit: int | None  # test examples scored (None: all)
    dev_limit: int | None
    lm_loss_texts: int  # target test texts for the LM loss
    pretrain_epochs: int
    pretrain_lr: float
    pretrain_batch_size: int
    finetune_epochs: int
    finetune_lr: float
    finetune_batch_size: int
    max_length: int
    threads: int | None = None  # torch CPU threads (None: torch's default)
    # warm-up of a fresh MLM head (checkpoints without one), encoder frozen: steps, lr, pool texts
    head_warmup_steps: int = 200
    head_warmup_lr: float = 1e-3
    head_warmup_texts: int = 4000


SCALES: dict[str, Scale] = {
    # about a minute on 2 CPU cores with the defaults: for CI and for trying the harness
    "tiny": Scale("tiny", model="tiny", embedder="hash", task="synthetic", pool="synthetic", budgets=(100, 400),
                  seeds=2, pool_size=None, label_budget=100, test_limit=None, dev_limit=None, lm_loss_texts=200,
                  pretrain_epochs=2, pretrain_lr=1e-3, pretrain_batch_size=16, finetune_epochs=6,
                  finetune_lr=3e-3, finetune_batch_size=16, max_length=32,
                  threads=1,  # models this small only lose time to thread synchronisation
                  head_warmup_steps=40, head_warmup_lr=3e-3, head_warmup_texts=640),
    # MiniLM on subsamples: 18 runs per task (2 seeds), 4-13 minutes each with two single-thread jobs on 2
    # cores (ChemProt, SciCite: 2.3-2.4 h of runs per task). The classifier's
    # new head needs ~100 steps at lr 3e-4 before it stops predicting the majority class on 300 ChemProt
    # labels (with 5 epochs at 1e-4 every run scored the majority baseline; at 5e-4 or more it never left it)
    "cpu": Scale("cpu", model="minilm", embedder="minilm", task=None, pool=None, budgets=(500, 2000),
                 seeds=2, pool_size=20000, label_budget=300, test_limit=800, dev_limit=200,
                 lm_loss_texts=300, pretrain_epochs=1, pretrain_lr=5e-5, pretrain_batch_size=32,
                 finetune_epochs=12, finetune_lr=3e-4, finetune_batch_size=32, max_length=64,
                 head_warmup_steps=150, head_warmup_lr=2e-3, head_warmup_texts=4800),
    # paper-like on one GPU: 5K labels (Table 3), full test sets, several pre-fine-tuning epochs; a small
    # encoder such as MiniLM-L6 needs more classifier epochs than BERT-base (the dev split picks the epoch)
    "gpu": Scale("gpu", model="minilm", embedder="minilm", task=None, pool=None, budgets=(5000, 20000, 50000),
                 seeds=3, pool_size=None, label_budget=5000, test_limit=None, dev_limit=None, lm_loss_texts=2000,
                 pretrain_epochs=3, pretrain_lr=5e-5, pretrain_batch_size=64, finetune_epochs=10,
                 finetune_lr=1e-4, finetune_batch_size=32, max_length=128,
                 head_warmup_steps=1000, head_warmup_lr=2e-3, head_warmup_texts=64000),
}


# settings with a CLI flag of the same name (``--pool-size`` ...) whose default comes from the scale
TUNABLE = ("model", "embedder", "pool_embeddings", "metric", "pool_size", "label_budget", "test_limit", "dev_limit",
           "lm_loss_texts", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "finetune_epochs", "finetune_lr",
           "finetune_batch_size", "max_length", "head_warmup_steps", "head_warmup_lr", "head_warmup_texts")


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers, got {text!r}")
    return sorted(set(values))


# ----------------------------------------------------------------------------------------------------
# Settings of one bench


@dataclass
class GotdBenchConfig:
    """Everything one ``tunesift bench gotd`` needs; built from a scale plus overrides.

    Attributes:
        methods: pool method names (``tunesift.registry.POOL_METHODS``) and/or ``none``.
        seeds: the seeds run (0..n-1 from the CLI's ``--seeds n``).
        eval: "finetune" (a classifier on at most ``label_budget`` labels) or "zero-shot" (verbalizer
            likelihoods of a causal LM, :mod:`tunesift.warmup.zeroshot`; ``template``, ``verbalizer`` and
            ``length_norm`` apply to it only).
    """

    out: str
    scale: str
    pool: str
    task: str
    methods: list[str]
    budgets: list[int]
    seeds: list[int]
    model: str
    embedder: str
    objective: str = "auto"
    metric: str | None = None
    text_field: str = "text"
    pool_embeddings: str | None = None  # .npy aligned with the pool file's rows, from the same embedder
    pool_size: int | None = None
    label_budget: int | None = None
    test_limit: int | None = None
    dev_limit: int | None = None
    lm_loss_texts: int = 500
    pretrain_epochs: int = 1
    pretrain_lr: float = 1e-4
    pretrain_batch_size: int = 32
    pretrain_lora_r: int = 0  # 0: pre-fine-tune all weights; r: LoRA adapters of rank r, merged afterwards
    finetune_lora_r: int = 0  # --eval finetune: 0 trains the classifier's weights, r LoRA adapters of rank r
    finetune_epochs: int = 3
    finetune_lr: float = 5e-5
    finetune_batch_size: int = 32
    max_length: int = 128
    head_warmup_steps: int = 200
    head_warmup_lr: float = 1e-3
    head_warmup_texts: int = 4000
    # evaluation: "finetune" (a classifier on the labels) or "zero-shot" (verbalizer likelihoods, no labels)
    eval: str = "finetune"
    template: str | None = None  # zero-shot prompt with one {text} (None: the task's default)
    verbalizer: str | None = None  # JSON file: label -> verbalizer (None: the task's default)
    length_norm: str = "sum"  # zero-shot score: "sum" of the verbalizer's log-probs or their per-token "mean"
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    @staticmethod
    def scale_defaults(scale: str, eval: str | None = None) -> dict[str, Any]:
        """The fields a scale sets for an evaluation (None: the default one), everything but ``out``,
        ``scale`` and the overrides: the scale's, with those the evaluation replaces at that scale
        (``WarmupEval.scale_settings``)."""
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        fields = asdict(SCALES[scale])
        eval = eval or DEFAULT_EVAL
        if eval in evaluation_names():  # an unknown one: check() says so
            fields.update(evaluation(eval).scale_settings.get(scale, {}))
        base = {k: v for k, v in fields.items() if k in GotdBenchConfig.__dataclass_fields__}
        base.update(budgets=list(fields["budgets"]), seeds=list(range(fields["seeds"])),
                    methods=["gotd", "dsir", "knn", "random", NO_PRETRAINING])
        return base

    @classmethod
    def from_scale(cls, scale: str, out: str, **overrides: Any) -> "GotdBenchConfig":
        base = cls.scale_defaults(scale, overrides.get("eval"))
        base.update({k: v for k, v in overrides.items() if v is not None})
        if base.get("task") is None:
            raise ValueError(f"--task is required at scale {scale!r} (a task name or a train/dev/test folder)")
        if base.get("pool") is None:
            raise ValueError(f"--pool is required at scale {scale!r} (a pool file)")
        config = cls(out=str(out), scale=scale, **base)
        config.check()
        return config

    def check(self) -> None:
        from tunesift.registry import POOL_METHODS

        unknown = [m for m in self.methods if m != NO_PRETRAINING and m not in POOL_METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; expected some of "
                             f"{', '.join(POOL_METHODS.names() + [NO_PRETRAINING])}")
        if not self.methods:
            raise ValueError("methods: give at least one method")
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError(f"budgets must be positive integers, got {self.budgets}")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        for name in ("pool_size", "label_budget", "test_limit", "dev_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"`{name}` must be a positive integer or None, got {v}")
        for name in ("pretrain_lora_r", "finetune_lora_r"):
            r = getattr(self, name)
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise ValueError(f"`{name}` must be a non-negative integer (0: all weights), got {r!r}")
        if self.head_warmup_steps < 0:
            raise ValueError(f"`head_warmup_steps` must be non-negative (0: no warm-up), got {self.head_warmup_steps}")
        if self.head_warmup_texts < 1:
            raise ValueError(f"`head_warmup_texts` must be a positive integer, got {self.head_warmup_texts}")
        if not self.head_warmup_lr > 0:
            raise ValueError(f"`head_warmup_lr` must be positive, got {self.head_warmup_lr}")
        if self.eval not in evaluation_names():
            raise ValueError(f"`eval` must be one of {', '.join(evaluation_names())}, got {self.eval!r}")
        chosen = evaluation(self.eval)
        fields = GotdBenchConfig.__dataclass_fields__
        for name in evaluation_names():  # another evaluation's settings are refused, not ignored
            given = [f"--{k.replace('_', '-')}" for k in evaluation(name).own_settings
                     if k not in chosen.own_settings and getattr(self, k) != fields[k].default]
            if name != self.eval and given:
                raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --eval {name} only")
        chosen.check_config(self)

    def comparable_settings(self) -> dict[str, Any]:
        """What must not change between a bench and its resumption (the grid itself may grow)."""
        d = asdict(self)
        for k in ("out", "methods", "budgets", "seeds", "device", "threads", "progress"):
            d.pop(k)
        own = evaluation(self.eval).own_settings
        for name in evaluation_names():  # other evaluations' settings are not this bench's
            for k in evaluation(name).own_settings:
                if k not in own:
                    d.pop(k, None)
        if self.eval == DEFAULT_EVAL:  # as before --eval existed, so older bench folders still resume
            d.pop("eval")
        for k in ("pretrain_lora_r", "finetune_lora_r"):
            if not d.get(k, 1):  # as before LoRA existed, so older bench folders still resume
                d.pop(k)
        from tunesift.bench.common import absolute_path

        for k in ("pool", "pool_embeddings", "verbalizer"):
            if d.get(k) is not None and d[k] != "synthetic":
                d[k] = absolute_path(d[k])
        return d


# ----------------------------------------------------------------------------------------------------
# Data


def _normalise(text: str) -> str:
    """The key two texts are "equal" under: case, spacing and backslashes ignored (AG News' reader turns
    its escaped backslashes into spaces; ``benchmarks/text_pool.py`` keeps them)."""
    return " ".join(text.replace("\\", " ").split()).lower()


def load_pool(spec: str, text_field: str = "text"):
    """The pool: ``synthetic`` or a file that :func:`tunesift.io.read_text_set` reads."""
    from tunesift.io.tables import read_text_set
    from tunesift.warmup.tasks import synthetic_pool

    if spec == "synthetic":
        return synthetic_pool()
    return read_text_set(spec, text_field, None, name="pool", field_option="--text-field")


def pool_rows(pool, task, pool_size: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Which pool rows a bench uses: at most ``pool_size`` rows drawn with seed 0 (the same draw for every
    task, so cached embeddings are shared), minus rows equal (up to case and spacing) to a dev or test
    text of the task, which must not reach pre-fine-tuning.

    Returns:
        (sample, kept, dropped): (s,) the drawn rows, (k,) the rows kept (a subset of ``sample``), both
        sorted; and how many were dropped as dev/test duplicates.
    """
    sample = np.arange(len(pool))
    if pool_size is not None and pool_size < len(pool):
        sample = np.sort(np.random.default_rng(0).choice(len(pool), size=pool_size, replace=False))
    held_out = set()
    for split in (task.dev, task.test):
        if split is not None:
            held_out.update(_normalise(t) for t in split.joined_texts())
            held_out.update(_normalise(t) for t in split.texts)
    kept = np.asarray([i for i in sample if _normalise(pool.texts[i]) not in held_out], dtype=np.int64)
    return sample, kept, len(sample) - len(kept)


def prepare_pool(pool, task, pool_size: int | None):
    """The pool a bench uses (see :func:`pool_rows`) and the number of dev/test duplicates dropped."""
    _, kept, dropped = pool_rows(pool, task, pool_size)
    return _subset(pool, kept, dropped), dropped


def _subset(pool, kept: np.ndarray, dropped: int):
    if len(kept) == len(pool):
        return pool
    sub = pool.subset(kept)
    sub.fingerprint = f"{pool.fingerprint}:rows{len(kept)}:drop{dropped}"
    return sub


def fixed_subset(split, limit: int | None):
    """At most ``limit`` examples of ``split`` (seed 0: the same for every method and seed)."""
    from tunesift.warmup.tasks import sample_labels

    if split is None or limit is None:
        return split
    return sample_labels(split, limit, np.random.default_rng(0))


def make_embedder(spec: str, device: str, progress: bool):
    from tunesift.embed import HFEncoderEmbedder

    if spec == "hash":
        return HashingEmbedder()
    return HFEncoderEmbedder(None if spec == "minilm" else spec, device=device, progress=progress)


def resolve_model(spec: str, out: Path, texts: Sequence[str], max_length: int, objective: str = "mlm") -> str:
    """A local model folder: the packaged MiniLM encoder, the packaged SmolLM2-135M decoder (converted once
    by :mod:`tunesift.rec.llm`), a tiny model built once into ``out/model`` (a BERT, or with ``objective``
    "causal" a Llama decoder; its word tokenizer fitted on ``texts``), or ``spec`` itself."""
    from tunesift.embed import default_model_path
    from tunesift.warmup.tiny import build_tiny_model

    if spec == "minilm":
        return default_model_path()
    if spec == "smollm2":
        from tunesift.rec.llm import convert_default_llm

        return str(convert_default_llm())
    if spec == "tiny":
        folder = out / "model"
        if not (folder / "config.json").exists():
            build_tiny_model(folder, texts, objective=objective, max_length=max(max_length, 64), seed=0)
        return str(folder)
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"{spec}: no such model folder (expected 'tiny', 'minilm', 'smollm2' or a local "
                                "folder)")
    return spec


# ----------------------------------------------------------------------------------------------------
# The bench


class GotdBench:
    """Runs the grid of one :class:`GotdBenchConfig`; ``run()`` returns the written result files."""

    def __init__(self, config: GotdBenchConfig, executor: Any = None):
        """``executor``: where embedding and DSIR's features run chunk by chunk (:mod:`tunesift.executor`;
        None: here). Results do not depend on it, so it is not part of the runs' settings."""
        from tunesift.warmup.tasks import load_task

        self.config = c = config
        self.executor = executor
        self.out = Path(c.out)
        self.task = load_task(c.task, metric=c.metric)
        self.raw_pool = load_pool(c.pool, c.text_field)
        self.sample_rows, self.kept_rows, self.leaks_dropped = pool_rows(self.raw_pool, self.task, c.pool_size)
        self.pool = _subset(self.raw_pool, self.kept_rows, self.leaks_dropped)
        if max(c.budgets) > len(self.pool):
            raise ValueError(f"budget {max(c.budgets)} is larger than the pool ({len(self.pool)} rows after "
                             f"dropping {self.leaks_dropped} dev/test duplicates)")
        self.dev = fixed_subset(self.task.dev, c.dev_limit)
        self.test = fixed_subset(self.task.test, c.test_limit)
        self.lm_texts = fixed_subset(self.task.test, c.lm_loss_texts).joined_texts()
        self.evaluation = evaluation(c.eval)(c)  # how a run is scored (tunesift.bench.evals)
        tokenizer_texts = self.pool.texts + self.task.train.joined_texts() + self.evaluation.setup(self)
        # the tiny model is built for --objective when given (causal: a tiny Llama, also for --eval finetune)
        objective = c.objective if c.objective != "auto" else self.evaluation.objective
        self.model_path = resolve_model(c.model, self.out, tokenizer_texts, c.max_length, objective=objective)
        self.evaluation.check_model(self)
        from tunesift.bench.common import RunStore

        settings = c.comparable_settings()
        settings.update(task_info=self.task.describe(), pool_rows=len(self.pool),
                        pool_fingerprint=self.pool.fingerprint,
                        model_path=self.model_path if c.model not in ("tiny", "minilm", "smollm2") else c.model)
        settings.update(self.evaluation.settings())
        self.store = RunStore(self.out, settings)
        self._pool_embeddings: np.ndarray | None = None
        self._embedder = None
        self._start_path: str | None = None

    # -- pieces ------------------------------------------------------------------------------------

    def labelled(self, seed: int):
        from tunesift.warmup.tasks import sample_labels

        return sample_labels(self.task.train, self.config.label_budget, np.random.default_rng(seed))

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``, cached in tunesift's embedding cache (shared between benches)."""
        from tunesift.embed import cached_embed, default_cache_dir

        if self._embedder is None:
            self._embedder = make_embedder(self.config.embedder, self.config.device, self.config.progress)
        return cached_embed(self._embedder, texts, default_cache_dir(), executor=self.executor)

    def pool_embeddings(self) -> tuple[np.ndarray, str]:
        """(rows, d) embeddings of the bench's pool rows and where they came from."""
        from tunesift.embed import load_precomputed

        c = self.config
        if c.pool_embeddings is not None:
            all_rows = load_precomputed(c.pool_embeddings, len(self.raw_pool), "pool")
            kept = np.ascontiguousarray(all_rows[self.kept_rows])
            # the target is embedded with --embedder: check that the file came from the same encoder
            probe = self.kept_rows[np.linspace(0, len(self.kept_rows) - 1, num=min(8, len(self.kept_rows))).astype(int)]
            ours = self._embed([self.raw_pool.texts[i] for i in probe])
            theirs = np.asarray(all_rows[probe], dtype=np.float32)
            if ours.shape != theirs.shape:
                raise ValueError(f"{c.pool_embeddings}: dimension {theirs.shape[1]}, but --embedder {c.embedder} "
                                 f"gives {ours.shape[1]}")
            norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
            cos = (ours * theirs).sum(1) / np.maximum(norms, 1e-12)
            if cos.min() < 0.98:
                raise ValueError(f"{c.pool_embeddings}: rows do not match --embedder {c.embedder} (cosine down to "
                                 f"{cos.min():.3f} on re-embedded rows); pass the embedder that made them")
            return kept, str(c.pool_embeddings)
        sample = self._embed([self.raw_pool.texts[i] for i in self.sample_rows])
        return sample[np.searchsorted(self.sample_rows, self.kept_rows)], self._embedder.model_id

    def ranking(self, method: str, seed: int) -> tuple[np.ndarray, float]:
        """The pool's order (best first) for ``method`` and ``seed``, saved in ``selections/`` and
        reused on resume; and the seconds the ranking took (0 when read back)."""
        import pyarrow.parquet as pq

        from tunesift.io.atomic import write_json
        from tunesift.io.tables import TextSet
        from tunesift.pool.run import select_from_pool
        from tunesift.registry import POOL_METHODS

        folder = self.out / "selections" / f"method={method},seed={seed}"
        done = folder / "done.json"
        if done.exists():
            rank = pq.read_table(folder / "scores.parquet", columns=["rank"]).column("rank").to_numpy()
            order = np.argsort(rank, kind="stable")
            import json

            return order, float(json.loads(done.read_text())["seconds"])
        labelled = self.labelled(seed)
        target = TextSet.from_texts(labelled.joined_texts(),
                                    name=f"{self.task.name} train ({len(labelled)} labels, seed {seed})")
        kw: dict[str, Any] = {}
        if POOL_METHODS.get(method).uses_embeddings:
            if self._pool_embeddings is None:
                t0 = time.perf_counter()
                self._pool_embeddings, source = self.pool_embeddings()
                info = self.out / "cache" / "pool_embeddings.json"
                if not info.exists():  # the first time (later runs read the cache)
                    write_json(info, {"seconds": time.perf_counter() - t0, "rows": len(self.pool), "source": source})
            kw = dict(pool_embeddings=self._pool_embeddings, target_embeddings=self._embed(target.texts))
        t0 = time.perf_counter()
        sel = select_from_pool(self.pool, target, max(self.config.budgets), method=method, seed=seed,
                               cache_dir=None, device=self.config.device, out_dir=folder,
                               progress=self.config.progress, executor=self.executor, **kw)
        seconds = time.perf_counter() - t0
        write_json(done, {"seconds": seconds, "info": sel.manifest.get("method_info", {})})
        return np.asarray(sel.ranking.order, dtype=np.int64), seconds

    def head_warmup_rows(self) -> np.ndarray:
        """(m,) the pool rows a fresh head is warmed up on: a fixed general sample (seed 0), sorted."""
        n = min(self.config.head_warmup_texts, len(self.pool))
        return np.sort(np.random.default_rng(0).choice(len(self.pool), size=n, replace=False))

    def start_path(self) -> str:
        """The model folder every run starts from (the same for every method, ``none`` included).

        A checkpoint with an LM head: the model itself. Without one (and ``head_warmup_steps`` > 0): the
        model with a fresh head (seed 0, output bias set to the
        sample's unigram log-frequencies) warmed up alone on :meth:`head_warmup_rows`, built once into
        ``cache/warm_head`` (what was done in ``cache/warm_head.json``).
        """
        import json

        from tunesift.io.atomic import write_json
        from tunesift.warmup.pretrain import (PretrainConfig, load_language_model, set_unigram_output_bias,
                                              warm_up_head)

        if self._start_path is not None:
            return self._start_path
        c = self.config
        folder, info = self.out / "cache" / "warm_head", self.out / "cache" / "warm_head.json"
        if info.exists():
            self._start_path = str(folder) if json.loads(info.read_text())["warmed"] else self.model_path
            return self._start_path
        lm = load_language_model(self.model_path, c.objective, seed=0)
        record: dict[str, Any] = {"warmed": bool(lm.fresh_parameters) and c.head_warmup_steps > 0,
                                  "fresh_parameters": lm.fresh_parameters}
        if record["warmed"]:
            texts = [self.pool.texts[i] for i in self.head_warmup_rows()]
            output = lm.model.get_output_embeddings()
            bias = getattr(output, "bias", None)
            if bias is not None and any(p is bias for n, p in lm.model.named_parameters() if n in lm.fresh_parameters):
                set_unigram_output_bias(lm, texts, c.max_length)  # start from the unigram loss, not worse
            epochs = -(-c.head_warmup_steps * c.pretrain_batch_size // len(texts))  # enough to reach the steps
            config = PretrainConfig(objective=lm.objective, learning_rate=c.head_warmup_lr, epochs=epochs,
                                    max_steps=c.head_warmup_steps, batch_size=c.pretrain_batch_size,
                                    max_length=c.max_length, seed=0, device=c.device)
            result = warm_up_head(lm, texts, config, progress=c.progress)
            tail = max(1, len(result.losses) // 10)
            record.update(steps=result.steps, texts=len(texts), seconds=result.seconds,
                          first_loss=float(np.nanmean(result.losses[:tail])),
                          last_loss=float(np.nanmean(result.losses[-tail:])))
            lm.model.save_pretrained(folder)
            lm.tokenizer.save_pretrained(folder)
            log.info("bench gotd: warmed the fresh %s head up for %d steps on %d pool texts (loss %.2f -> %.2f)",
                     lm.objective, result.steps, len(texts), record["first_loss"], record["last_loss"])
        write_json(info, record)
        self._start_path = str(folder) if record["warmed"] else self.model_path
        return self._start_path

    def load_start_model(self):
        """A fresh copy of the model every run starts from (see :meth:`start_path`; a head that is still
        missing, with ``head_warmup_steps`` 0, is seeded with 0 for every run)."""
        from tunesift.warmup.pretrain import load_language_model

        return load_language_model(self.start_path(), self.config.objective, seed=0)

    def lm_loss_before(self) -> float:
        """The LM loss of the starting model (warmed head, no pre-fine-tuning), cached."""
        import json

        from tunesift.io.atomic import write_json
        from tunesift.warmup.pretrain import lm_loss

        path = self.out / "cache" / "lm_loss_before.json"
        if path.exists():
            return float(json.loads(path.read_text())["loss"])
        lm = self.load_start_model()
        lm.model.to(self.device())
        loss = lm_loss(lm, self.lm_texts, self.config.max_length, seed=0).loss
        write_json(path, {"loss": loss})
        return loss

    def device(self) -> str:
        from tunesift.embed import resolve_device

        return resolve_device(self.config.device)

    def domains(self, rows: np.ndarray) -> dict[str, int]:
        if not self.pool.records or "domain" not in self.pool.records[0]:
            return {}
        counts: dict[str, int] = {}
        for i in rows:
            d = str(self.pool.records[i].get("domain"))
            counts[d] = counts.get(d, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def run_one(self, method: str, budget: int, seed: int, order: np.ndarray | None, selection_s: float) -> dict:
        """One (method, budget, seed): pre-fine-tune on the top ``budget`` of ``order``, evaluate (a
        fine-tuned classifier or zero-shot), score; the per-test-example results go to ``per_example.npz``."""
        from tunesift.bench.common import measure
        from tunesift.warmup.classify import accuracy, macro_f1
        from tunesift.warmup.pretrain import PretrainConfig, lm_loss, pretrain

        c = self.config
        record: dict[str, Any] = {"metric": self.task.metric, "eval": c.eval, "selection_s": selection_s}
        before = self.lm_loss_before()
        backbone = None
        with measure() as total:
            if method != NO_PRETRAINING:
                rows = order[:budget]
                record["selected_domains"] = self.domains(rows)
                lm = self.load_start_model()
                pcfg = PretrainConfig(objective=lm.objective, learning_rate=c.pretrain_lr, epochs=c.pretrain_epochs,
                                      batch_size=c.pretrain_batch_size, max_length=c.max_length, seed=seed,
                                      device=c.device, lora_r=c.pretrain_lora_r)
                with measure() as m_pre:
                    pre = pretrain(lm, [self.pool.texts[i] for i in rows], pcfg, progress=c.progress)
                record.update(pretrain_s=m_pre.seconds, pretrain_steps=pre.steps,
                              pretrain_final_loss=float(np.nanmean(pre.losses[-max(1, len(pre.losses) // 10):])))
                after = lm_loss(lm, self.lm_texts, c.max_length, seed=0).loss
                backbone = lm
            else:
                after = before
                record.update(pretrain_s=0.0, pretrain_steps=0)
            predictions, extra = self.evaluation.evaluate(self, backbone, seed, record)
        labels = self.test.labels
        record.update(
            test_accuracy=accuracy(labels, predictions), test_macro_f1=macro_f1(labels, predictions),
            lm_loss_before=before, lm_loss_after=after, lm_loss_change=after - before,
            total_s=total.seconds + selection_s, peak_rss_mb=total.peak_rss_mb, peak_cuda_mb=total.peak_cuda_mb,
        )
        self.save_per_example({"method": method, "budget": budget, "seed": seed}, predictions, **extra)
        return record

    def save_per_example(self, key: dict, predictions: np.ndarray, **extra: np.ndarray) -> None:
        """``per_example.npz`` of one run: (N,) ``correct`` (0/1), ``predicted`` and ``labels`` of the test texts."""
        from tunesift.io.atomic import atomic_write

        labels = self.test.labels
        predictions = np.asarray(predictions, dtype=np.int64)
        with atomic_write(self.store.run_dir(key) / "per_example.npz", "wb") as f:
            np.savez(f, correct=(predictions == labels).astype(np.uint8), predicted=predictions, labels=labels,
                     **extra)

    # -- the grid ----------------------------------------------------------------------------------

    def units(self) -> list[dict[str, Any]]:
        c = self.config
        out = []
        for seed in c.seeds:
            for method in c.methods:
                if method == NO_PRETRAINING and not self.evaluation.seeded_baseline and seed != c.seeds[0]:
                    continue  # e.g. the starting model scored without labels: the same for every seed
                for budget in ([0] if method == NO_PRETRAINING else c.budgets):
                    out.append({"method": method, "budget": budget, "seed": seed})
        return out

    def run(self):
        import torch

        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            self.run_units()
            return self.write()
        finally:
            torch.set_num_threads(threads)

    def run_units(self) -> None:
        """Run every unfinished (method, budget, seed), saving each as it finishes.

        Each run is claimed (:meth:`RunStore.claim`) while it runs, so several benches may share one
        ``--out`` folder (e.g. one process per core): a run another live process holds is skipped here, and
        the last bench to finish writes results with every finished run.
        """
        units = self.units()
        todo = [u for u in units if not self.store.is_done(u)]
        log.info("bench gotd: task %s (%s), pool %d rows (%d dev/test duplicates dropped), %d runs, %d to do",
                 self.task.name, self.task.metric, len(self.pool), self.leaks_dropped, len(units), len(todo))
        orders: dict[tuple[str, int], tuple[np.ndarray, float]] = {}
        name = lambda i, u: f"[{i}/{len(todo)}] {u['method']} budget {u['budget']} seed {u['seed']}"  # noqa: E731
        for i, u in self.store.claimed(todo, name):
            method, budget, seed = u["method"], u["budget"], u["seed"]
            order, sel_s = None, 0.0
            if method != NO_PRETRAINING:
                if (method, seed) not in orders:
                    orders[(method, seed)] = self.ranking(method, seed)
                order, sel_s = orders[(method, seed)]
            t0 = time.perf_counter()
            record = self.run_one(method, budget, seed, order, sel_s)
            self.store.save(u, record)
            fault_point("bench:run")
            log.info("%s: test %s %.4f, LM loss %.3f -> %.3f (%.0f s)", name(i, u), self.task.metric,
                     record["test_score"], record["lm_loss_before"], record["lm_loss_after"], time.perf_counter() - t0)

    def composition_table(self, records: list[dict], top: int = 5) -> str:
        """Markdown: the ``top`` pool domains of each (method, budget) selection, mean share over seeds."""
        groups: dict[tuple[str, int], list[dict[str, int]]] = {}
        for r in records:
            if r.get("selected_domains"):
                groups.setdefault((r["method"], r["budget"]), []).append(r["selected_domains"])
        if not groups:
            return ""
        rank = {m: i for i, m in enumerate(self.config.methods)}
        lines = ["| method | budget | domains |", "|---|---|---|"]
        for (method, budget), runs in sorted(groups.items(), key=lambda kv: (rank.get(kv[0][0], 99), kv[0][1])):
            share: dict[str, float] = {}
            for counts in runs:
                for d, n in counts.items():
                    share[d] = share.get(d, 0.0) + n / budget / len(runs)
            best = sorted(share.items(), key=lambda kv: -kv[1])[:top]
            lines.append(f"| {method} | {budget} | " + ", ".join(f"{d} {100 * v:.0f}%" for d, v in best) + " |")
        return "\n".join(lines) + "\n"

    def per_example(self, records: Sequence[dict], seeds: dict[tuple[str, int], list[int]] | None = None
                    ) -> tuple[dict[tuple[str, int], np.ndarray], int]:
        """(method, budget) -> (seeds, N) per-test-example correctness (0/1) of the finished runs, and how
        many finished runs have none (finished before runs saved it, or on other test texts); ``seeds``,
        when given, is filled with (method, budget) -> the seed of each row."""
        out: dict[tuple[str, int], list[np.ndarray]] = {}
        missing = 0
        for r in sorted(records, key=lambda r: r["seed"]):
            key = {"method": r["method"], "budget": r["budget"], "seed": r["seed"]}
            path = self.store.run_dir(key) / "per_example.npz"
            if not path.exists():
                missing += 1
                continue
            with np.load(path) as z:
                if not np.array_equal(z["labels"], self.test.labels):
                    missing += 1
                    continue
                out.setdefault((r["method"], r["budget"]), []).append(z["correct"].astype(np.float64))
            if seeds is not None:
                seeds.setdefault((r["method"], r["budget"]), []).append(int(r["seed"]))
        return {k: np.stack(v) for k, v in out.items()}, missing

    def paired_tables(self, records: Sequence[dict]) -> tuple[str, dict]:
        """Markdown of the paired comparisons (one table per budget: each method against ``none`` and
        ``random`` at that budget, on the same test texts) and their numbers for results.json."""
        from tunesift.bench.stats import paired_section

        c = self.config
        seeds: dict[tuple[str, int], list[int]] = {}
        values, missing = self.per_example(records, seeds)
        parts, numbers = [], {}
        for budget in c.budgets:
            keys = {m: (m, 0 if m == NO_PRETRAINING else budget) for m in c.methods}
            group = {m: values[k] for m, k in keys.items() if k in values}
            if not group or (set(group) == {NO_PRETRAINING} and budget != c.budgets[0]):
                continue  # `none` alone: one table is enough
            text, numbers[str(budget)], over_seeds = paired_section(
                group, {m: seeds[keys[m]] for m in group}, REFERENCES, "accuracy", f"budget {budget}")
            if over_seeds:
                numbers.setdefault("over seeds", {})[str(budget)] = over_seeds
            parts.append(text)
        if not parts:
            return "", {}
        n = len(self.test)
        head = ("\n## Paired comparisons\n\nAccuracy (per-example correctness) on the same "
                f"{n} test texts: bootstrap over the test texts (10,000 resamples), each method's correctness "
                "averaged over its seeds per text; Δ = method − reference (`none`: no pre-fine-tuning; `random`: "
                "the same budget). **Bold**: the 95% CI excludes 0. That interval does not include seed-to-seed "
                "variation of a method as a whole; the run-to-run table under it (methods with two or more seeds "
                "in common with the reference) does.")
        if self.task.metric != "accuracy":
            head += (f" (The task's own metric, {self.task.metric}, is not a mean over examples: it is in the table "
                     "above.)")
        if missing:
            head += f" {missing} finished run(s) without per-example results are left out."
        return head + "\n\n" + "\n".join(parts), numbers

    def command(self) -> str:
        """The command that reproduces this bench (its resolved settings, flags in a fixed order)."""
        c = self.config
        parts = ["tunesift", "bench", "gotd", "--scale", c.scale, "--task", c.task, "--pool", c.pool,
                 "--methods", ",".join(c.methods), "--budgets", ",".join(map(str, c.budgets)),
                 "--seeds", str(len(c.seeds)), "--out", c.out]
        default = GotdBenchConfig.scale_defaults(c.scale, c.eval)
        own = tuple(k for e in evaluation_names() for k in evaluation(e).own_settings)
        for name in TUNABLE + ("objective", "text_field", "eval", "pretrain_lora_r") + own:
            value = getattr(c, name)
            if value != default.get(name, GotdBenchConfig.__dataclass_fields__[name].default):
                parts += ["--" + name.replace("_", "-"), str(value)]
        if c.seeds and c.seeds != list(range(len(c.seeds))):
            parts += ["--first-seed", str(c.seeds[0])]
        return " ".join(shlex.quote(p) for p in parts)

    def write(self):
        import json

        from tunesift.bench.common import plot_lines, summarize, write_results

        c = self.config
        wanted = {(u["method"], u["budget"], u["seed"]) for u in self.units()}
        records = [r for r in self.store.records() if (r["method"], r["budget"], r["seed"]) in wanted]
        metric_label = f"test {self.task.metric}" + self.evaluation.title
        labels = {"test_score": metric_label, "dev_score": f"dev {self.task.metric}", "test_accuracy": "test accuracy",
                  "test_macro_f1": "test macro-F1", "lm_loss_after": "LM loss after",
                  "lm_loss_change": "LM loss change", "selection_s": "selection s", "pretrain_s": "pre-fine-tune s",
                  "finetune_s": "fine-tune s", "eval_s": "zero-shot s", "total_s": "total s",
                  "peak_rss_mb": "peak RSS MB"}
        shown = self.evaluation.report(self)
        metrics, cost, protocol, training = shown["metrics"], shown["cost"], shown["protocol"], shown["training"]
        notes = "\n".join([
            f"Command: `{self.command()}`",
            "",
            f"{protocol} Pool: {len(self.pool)} rows ({self.leaks_dropped} rows equal to dev/test texts dropped). "
            f"Model: {c.model}; {training}; {c.max_length} tokens. Scale `{c.scale}`.",
            "",
            "`budget` = pool examples pre-fine-tuned on (`none`: no pre-fine-tuning). LM loss = masked-LM (or "
            "next-token) loss on the task's test texts; `before` is that of the model every method starts from.",
        ])
        head_info = self.out / "cache" / "warm_head.json"
        if head_info.exists():
            h = json.loads(head_info.read_text())
            if h["warmed"]:
                notes += (f"\n\nThe checkpoint has no LM head: a fresh one (seed 0) was warmed up alone, encoder "
                          f"frozen, for {h['steps']} steps at lr {c.head_warmup_lr} on {h['texts']} general pool "
                          f"texts (training loss {h['first_loss']:.2f} -> {h['last_loss']:.2f}, {h['seconds']:.0f} s); "
                          "every method, `none` included, starts from that model.")
        embed_info = self.out / "cache" / "pool_embeddings.json"
        if embed_info.exists():
            e = json.loads(embed_info.read_text())
            notes += (f"\n\nPool embeddings for gotd/knn ({e['rows']} rows, `{e['source']}`): {e['seconds']:.1f} s, "
                      "computed once and shared; `selection s` is the ranking alone (once per method and seed, "
                      "shared by its budgets).")
        composition = self.composition_table(records)
        appendix = ""
        if composition:
            appendix += "\n## What each method picked (pool domains, mean share over seeds)\n\n" + composition
        paired, numbers = self.paired_tables(records)
        appendix += paired
        files = write_results(self.out, records, group_by=["method", "budget"], metrics=metrics,
                              title=f"GOT-D warm-up bench: {self.task.name}" + self.evaluation.title,
                              settings=self.store.settings, order=c.methods, cost_metrics=cost, notes=notes,
                              labels=labels, appendix=appendix, extra_json={"paired": numbers})
        if records:
            rows = summarize(records, ["method", "budget"], ["test_score", "lm_loss_after"], order=c.methods)
            flat = []
            for r in rows:  # `none` as a flat line across the budgets
                if r.group["method"] == NO_PRETRAINING:
                    flat.extend(replace(r, group={"method": NO_PRETRAINING, "budget": b}) for b in c.budgets)
                else:
                    flat.append(r)
            files.plot = plot_lines(self.out / "plot.png", flat, x="budget", metric="test_score", series="method",
                                    title=f"{self.task.name}: {metric_label} after pre-fine-tuning",
                                    xlabel="pool examples pre-fine-tuned on", ylabel=metric_label,
                                    log_x=len(c.budgets) > 1 and max(c.budgets) / min(c.budgets) >= 10)
            plot_lines(self.out / "lm_loss.png", flat, x="budget", metric="lm_loss_after", series="method",
                       title=f"{self.task.name}: LM loss on test texts", xlabel="pool examples pre-fine-tuned on",
                       ylabel="LM loss after pre-fine-tuning")
        return files


# ----------------------------------------------------------------------------------------------------
# CLI


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``gotd`` to the ``tunesift bench`` subcommands."""
    p = sub.add_parser(
        "gotd",
        help="pre-fine-tune on each method's selection, fine-tune on the target task, compare (GOT-D's claim)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    scale = "the scale's"

    def eval_defaults(field: str) -> str:  # "; zero-shot at cpu: 250,1000": where an evaluation sets its own
        own = [f"{name} at {at}: {','.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
               for name in evaluation_names() for at, fields in evaluation(name).scale_settings.items()
               if (v := fields.get(field)) is not None]
        return "".join("; " + o for o in own)

    p.add_argument("--pool", default=None, help="pool file (.jsonl/.csv/.tsv/.parquet, e.g. from "
                   "benchmarks/text_pool.py); 'synthetic' (the tiny scale's default)")
    p.add_argument("--task", default=None, help="task name (chemprot, sci-cite, mag, sst-2, cola, mrpc, rte, mr, cr, "
                   "ag_news, synthetic) or a folder / train file of train, dev, test JSONL with text,label")
    p.add_argument("--out", required=True, type=out_arg, help="bench folder (reuse it to resume)")
    p.add_argument("--scale", default="tiny", choices=list(SCALES),
                   help="tiny: a tiny BERT on a synthetic task, ~1 min; cpu: MiniLM on subsamples, ~2.4 h per task "
                   "on one core; gpu: full test sets, 5K labels, larger budgets (default: tiny)")
    p.add_argument("--methods", default=None, help="comma-separated pool methods and/or 'none' "
                   "(default: gotd,dsir,knn,random,none)")
    p.add_argument("--budgets", default=None,
                   help=f"comma-separated numbers of pool examples to pre-fine-tune on ({scale}"
                   f"{eval_defaults('budgets')})")
    p.add_argument("--seeds", type=int, default=None, help=f"runs per method and budget, seeds 0..N-1 "
                   f"({scale}{eval_defaults('seeds')})")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--model", default=None, help="'tiny', 'minilm', 'smollm2' (SmolLM2-135M, causal) or a local "
                   "model folder; an encoder is pre-fine-tuned with masked LM, a decoder with causal LM (the scale's; "
                   "with --eval zero-shot, 'tiny' is a tiny Llama and the cpu/gpu scales use smollm2)")
    p.add_argument("--objective", default="auto", choices=["auto", "mlm", "causal"],
                   help="pre-fine-tuning objective (default: from the model)")
    p.add_argument("--eval", default=DEFAULT_EVAL, choices=evaluation_names(),
                   help="finetune: a classifier fine-tuned on the labels after pre-fine-tuning; zero-shot: a causal LM "
                   "classifies the test texts by the likelihood of each label's verbalizer after a prompt, no labels "
                   "(GOT-D's zero-shot AG News experiment) (default: finetune)")
    p.add_argument("--template", default=None, help="zero-shot prompt with one {text} placeholder, the verbalizer "
                   "follows it, e.g. '{text}\\nTopic:' (a typed \\n is a newline; default: the task's: ag_news, sst-2, mr "
                   "and cr have one)")
    p.add_argument("--verbalizer", default=None, help="zero-shot verbalizers: a JSON file mapping each label (as in "
                   "the task's data) to its continuation, e.g. {\"0\": \" negative\", \"1\": \" positive\"} "
                   "(default: the task's)")
    p.add_argument("--length-norm", default=None, choices=["sum", "mean"],
                   help="zero-shot score of a verbalizer: the sum of its tokens' log-probabilities or their mean "
                   "(default: sum)")
    p.add_argument("--embedder", default=None,
                   help=f"embeddings for gotd/knn: 'minilm', 'hash' or a local encoder ({scale})")
    p.add_argument("--pool-embeddings", default=None, help=".npy of the pool's embeddings, aligned with the pool "
                   "file's rows, from the same encoder as --embedder (skips embedding the pool)")
    p.add_argument("--metric", default=None, help="override the task's metric (micro_f1, macro_f1, f1, mcc, accuracy)")
    p.add_argument("--text-field", default="text", help="pool text field (default: text)")
    p.add_argument("--pool-size", type=int, default=None, help=f"pool rows drawn once with seed 0 ({scale})")
    p.add_argument("--label-budget", type=int, default=None, help=f"labelled training examples per seed ({scale})")
    p.add_argument("--test-limit", type=int, default=None, help=f"test examples scored, a fixed subsample ({scale})")
    p.add_argument("--dev-limit", type=int, default=None, help=f"dev examples for choosing the epoch ({scale})")
    p.add_argument("--lm-loss-texts", type=int, default=None, help=f"test texts for the LM loss ({scale})")
    p.add_argument("--pretrain-epochs", type=int, default=None, help=f"pre-fine-tuning epochs ({scale})")
    p.add_argument("--pretrain-lr", type=float, default=None, help=f"pre-fine-tuning peak learning rate ({scale})")
    p.add_argument("--pretrain-batch-size", type=int, default=None, help=f"({scale})")
    p.add_argument("--pretrain-lora-r", type=int, default=None, help="pre-fine-tune LoRA adapters of this rank on "
                   "the attention projections, merged into the weights afterwards (default: 0, all weights)")
    p.add_argument("--finetune-lora-r", type=int, default=None, help="--eval finetune: train LoRA adapters of this "
                   "rank on the backbone's attention projections and the classifier's head whole, instead of all "
                   "weights (default: 0, all weights)")
    p.add_argument("--finetune-epochs", type=int, default=None, help=f"classifier epochs ({scale})")
    p.add_argument("--finetune-lr", type=float, default=None, help=f"classifier peak learning rate ({scale})")
    p.add_argument("--finetune-batch-size", type=int, default=None, help=f"({scale})")
    p.add_argument("--max-length", type=int, default=None, help=f"tokens per text ({scale})")
    p.add_argument("--head-warmup-steps", type=int, default=None, help="steps of training a fresh MLM head alone "
                   f"(encoder frozen) before anything else, for checkpoints without one; 0: none ({scale})")
    p.add_argument("--head-warmup-lr", type=float, default=None, help=f"learning rate of the head warm-up ({scale})")
    p.add_argument("--head-warmup-texts", type=int, default=None,
                   help=f"pool texts (a fixed sample) the head is warmed up on ({scale})")
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_executor_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run_cli)


def config_from_args(args: argparse.Namespace) -> GotdBenchConfig:
    overrides = {k: getattr(args, k) for k in ("pool", "task", "threads") + TUNABLE}
    overrides.update(objective=args.objective, text_field=args.text_field, device=args.device,
                     progress=not args.no_progress, eval=args.eval, template=args.template, verbalizer=args.verbalizer,
                     length_norm=args.length_norm, pretrain_lora_r=args.pretrain_lora_r,
                     finetune_lora_r=args.finetune_lora_r)
    if args.template is not None:
        args.template = args.template.replace("\\n", "\n")  # a shell gives "\n" as two characters
        overrides["template"] = args.template
    if args.methods is not None:
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.budgets is not None:
        overrides["budgets"] = parse_int_list(args.budgets, "--budgets")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be non-negative, got {args.first_seed}")
    if args.seeds is not None or args.first_seed:
        default = GotdBenchConfig.scale_defaults(args.scale, args.eval)["seeds"]
        n = args.seeds if args.seeds is not None else len(default)
        overrides["seeds"] = list(range(args.first_seed, args.first_seed + n))
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    return GotdBenchConfig.from_scale(args.scale, args.out, **overrides)


def run_cli(args: argparse.Namespace) -> int:
    from tunesift.executor import make_executor

    config = config_from_args(args)
    with make_executor(args.ray, args.ray_workers) as executor:
        files = GotdBench(config, executor=executor).run()
    log.info("wrote %s, %s, %s%s", files.markdown, files.csv, files.json, f", {files.plot}" if files.plot else "")
    return 0
