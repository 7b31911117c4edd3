"""``tunesift bench rec``: DEALRec against its baselines and full fine-tuning, the BIGRec way.

For every method and seed: select ``budget`` users (DEALRec's pipeline, :func:`tunesift.rec.select_samples`;
``full`` takes every user of the pool), LoRA-fine-tune the LLM on their BIGRec training samples with
early stopping on their validation samples, generate a title for each test user by beam search, ground
it to items by the base model's last-token states and score Recall@K / NDCG@K over all items
(:mod:`tunesift.finetune`). This is the protocol of DEALRec's Table 2 (Lin et al., SIGIR 2024).

Three scales:

- ``tiny``: a 2-layer, 32-wide Llama with a BPE tokenizer trained on the data, built offline in
  ``<out>/tiny-llm``; a few dozen users; every stage shortened. Finishes in about a minute (for CI).
- ``cpu``: SmolLM2-135M-Instruct on a seeded subsample of 128 pool users and 128 test users, budget 16,
  32 fine-tuning steps on the response tokens, 2 beams (see :data:`SCALES`); 2.3 h of runs on one CPU
  core (another job on the second) with the default 6 methods x 3 seeds (plus ~6 min, once, to embed the 17k titles).
- ``gpu``: the paper's protocol on all users: budget 1024, LoRA r=8 on q/v, lr 1e-4, effective batch 128,
  up to 50 epochs with early stopping (patience 5), 4 beams, 128 new tokens, K = 10, 20.

Users: the pool (candidates for selection and the users of ``full``) is a seeded random subsample of the
users with a training item; the test users are a seeded random subsample of ALL users with test items
(both "all" at the ``gpu`` scale). Both are drawn once per bench with ``data_seed``, so every method and
seed sees the same pool and the same test users.

Every finished (method, seed) is saved in ``<out>/runs/method=M,seed=S/result.json``; within a run the
selection (``selection.json``) and the fine-tuned adapter (``adapter/`` + ``train.json``) are saved as
they finish, so an interrupted bench resumes at the stage it was in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesift.bench.common import Measurement, RunStore, measure, plot_bars, summarize, write_results
from tunesift.finetune.generate import GenerationSettings
from tunesift.finetune.lora import LoraTrainSettings
from tunesift.io.atomic import write_json

log = logging.getLogger("tunesift")

FULL = "full"
DEFAULT_METHODS = ("random", "grand", "el2n", "ccs", "dealrec", FULL)

# DEALRec's Table 2 (Games, 1,024 samples, BIGRec on LLaMA-7B), for the notes of results.md
PAPER_TABLE2_GAMES = {
    "random": (0.0163, 0.0241, 0.0100, 0.0122),
    "grand": (0.0158, 0.0250, 0.0098, 0.0125),
    "el2n": (0.0154, 0.0256, 0.0098, 0.0128),
    "ccs": (0.0164, 0.0246, 0.0097, 0.0122),
    "dealrec": (0.0181, 0.0276, 0.0115, 0.0142),
    "full": (0.0169, 0.0233, 0.0102, 0.0120),
}


@dataclass(frozen=True)
class RecScale:
    """Everything that sizes a bench.

    Attributes:
        n_users: pool size (users with a training item, seeded subsample); None = all.
        n_test_users: test users (users with test items, seeded subsample); None = all.
        budget: default number of selected users.
        llm: "tiny" (built from the data), or None for the default SmolLM2 (``--llm`` overrides).
        max_tokens: prompt + response token limit of the BIGRec prompts (oldest titles dropped).
        max_val: at most this many validation samples for early stopping (seeded); None = all.
        train: LoRA fine-tuning settings (the seed is set per run).
        full_epochs: epochs of ``full`` fine-tuning (None: ``train.epochs``).
        generation: beam search settings.
        ks: the cut-offs of Recall@K and NDCG@K.
        lora: r, alpha, dropout and target modules of the adapter.
        pipeline: overrides of :class:`tunesift.rec.PipelineSettings` for the selection.
        embed_batch_size: texts per forward pass when embedding titles and generations.
        tiny_model: size of the ``tiny`` model (hidden size, layers, heads, BPE vocabulary).
    """

    name: str
    n_users: int | None
    n_test_users: int | None
    budget: int
    llm: str | None
    max_tokens: int
    max_val: int | None
    train: LoraTrainSettings
    full_epochs: int | None
    generation: GenerationSettings
    ks: tuple[int, ...]
    lora: dict = field(default_factory=lambda: {"r": 8, "alpha": 16, "dropout": 0.05, "targets": ("q_proj", "v_proj")})
    pipeline: dict = field(default_factory=dict)
    embed_batch_size: int = 64
    tiny_model: dict = field(default_factory=dict)

    def describe(self) -> dict:
        out = asdict(self)
        out["ks"] = list(self.ks)
        return out


SCALES: dict[str, RecScale] = {
    "tiny": RecScale(
        name="tiny", n_users=40, n_test_users=16, budget=8, llm="tiny", max_tokens=128, max_val=8,
        train=LoraTrainSettings(learning_rate=5e-3, epochs=2, batch_size=4, micro_batch_size=4, warmup_steps=1,
                                patience=2, max_length=160),
        full_epochs=1,
        generation=GenerationSettings(num_beams=2, max_new_tokens=8, batch_size=16, max_prompt_tokens=128),
        ks=(10, 20),
        lora={"r": 4, "alpha": 8, "dropout": 0.05, "targets": ("q_proj", "v_proj")},
        pipeline={"surrogate_epochs": 3, "early_epoch": 1, "patience": 2, "lissa_depth": 20,
                  "gradient_batch_size": 64, "effort_batch_size": 8},
        embed_batch_size=128,
        tiny_model={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "vocab_size": 400, "pretrain_steps": 100,
                    "pretrain_batch_size": 8},
    ),
    # 32 optimizer steps for every run: 8 epochs of the 16 selected users, one epoch of the 128-user pool
    # for `full` (with 8 steps, 2 epochs, the few-shot models still echoed the prompt instead of naming a
    # game, so every method scored the same). With so few steps the learning rate is higher than the
    # paper's and the loss covers the response only (the model must learn to answer with one title and
    # stop); 2 beams halve the cost of generation (HF beam search runs the prompt once per beam); 128 test
    # users (one hit moves Recall@K by about 1/128 of a user's share). 5-8 minutes per run on one AVX-512
    # core with another job on the second (fine-tuning ~3-4, generation ~3-4), 2.3 h for 6 methods x 3 seeds.
    "cpu": RecScale(
        name="cpu", n_users=128, n_test_users=128, budget=16, llm=None, max_tokens=256, max_val=8,
        train=LoraTrainSettings(learning_rate=1e-3, epochs=8, batch_size=4, micro_batch_size=4, warmup_steps=2,
                                patience=2, max_length=288, train_on_prompt=False),
        full_epochs=1,
        generation=GenerationSettings(num_beams=2, max_new_tokens=24, batch_size=8, max_prompt_tokens=256),
        ks=(10, 20),
        pipeline={"effort_batch_size": 4},
        embed_batch_size=64,
    ),
    # DEALRec / BIGRec on all of Games (finetune.sh, inference_ddp.py, evaluate.py)
    "gpu": RecScale(
        name="gpu", n_users=None, n_test_users=None, budget=1024, llm=None, max_tokens=512, max_val=None,
        train=LoraTrainSettings(learning_rate=1e-4, epochs=50, batch_size=128, micro_batch_size=16, warmup_steps=20,
                                patience=5, max_length=512),
        full_epochs=None,
        generation=GenerationSettings(num_beams=4, max_new_tokens=128, batch_size=16, max_prompt_tokens=512),
        ks=(10, 20),
        pipeline={"effort_batch_size": 32, "gradient_batch_size": 1024},
        embed_batch_size=256,
    ),
}


def scale_with(scale: RecScale | str, **overrides: Any) -> RecScale:
    """A scale with some fields replaced; ``epochs`` (a ``train`` field) is accepted as a shortcut."""
    base = SCALES[scale] if isinstance(scale, str) else scale
    if isinstance(scale, str) and scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "epochs" in overrides:
        overrides["train"] = dataclasses.replace(overrides.get("train", base.train), epochs=overrides.pop("epochs"))
    names = {f.name for f in dataclasses.fields(RecScale)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown scale field(s) {sorted(unknown)}; expected some of {sorted(names)}")
    for k in ("n_users", "n_test_users", "budget"):
        v = overrides.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"`{k}` must be a positive integer, got {v!r}")
    return dataclasses.replace(base, **overrides)


@dataclass
class RecBenchResult:
    """What :func:`run_rec_bench` did: every requested run's record and the files written."""

    records: list[dict]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    ran: list[dict] = field(default_factory=list)  # keys of the runs computed by this call (not resumed)


# --------------------------------------------------------------------------------------------------
# helpers


def _sample_indices(candidates: Sequence[int], n: int | None, rng: np.random.Generator) -> list[int]:
    candidates = list(candidates)
    if n is None or n >= len(candidates):
        return candidates
    return sorted(int(i) for i in rng.choice(candidates, size=n, replace=False))


def _measurement_record(prefix: str, m: Measurement | dict) -> dict:
    d = m if isinstance(m, dict) else asdict(m)
    rec = {f"{prefix}_s": round(d["seconds"], 3), f"{prefix}_peak_rss_mb": round(d["peak_rss_mb"], 1)}
    if d.get("peak_cuda_mb") is not None:
        rec[f"{prefix}_peak_cuda_mb"] = round(d["peak_cuda_mb"], 1)
    return rec


def _save_adapter(model, folder: Path) -> None:
    """Write a PEFT adapter next to ``folder`` and rename it into place (a crash leaves no half adapter)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class RecBench:
    """One bench: the data, the scale, the pool and test users, the LLM and the run store.

    Build it, then :meth:`run` each (method, seed), or call :func:`run_rec_bench`.
    """

    def __init__(self, data: Any, out: str | os.PathLike, scale: RecScale | str = "tiny", budget: int | None = None,
                 llm: str | os.PathLike | None = None, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                 data_seed: int = 0, progress: bool = True, format: str | None = None):
        from tunesift.embed import resolve_device
        from tunesift.rec.data import RecData, load_rec_data
        from tunesift.rec.prompts import build_samples

        self.scale = SCALES[scale] if isinstance(scale, str) else scale
        if isinstance(scale, str) and scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
        self.budget = int(budget if budget is not None else self.scale.budget)
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1, got {self.budget}")
        self.out = Path(out)
        self.device = resolve_device(device)
        self.progress = progress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.out / "cache"
        self.data = data if isinstance(data, RecData) else load_rec_data(data, format=format)
        full_data = self.data
        rng = np.random.default_rng(data_seed)
        with_train = [u for u in range(full_data.n_users) if full_data.train[u]]
        with_test = [u for u in range(full_data.n_users) if full_data.test[u]]
        if not with_train:
            raise ValueError(f"{full_data.source}: no user has a training item")
        if not with_test:
            raise ValueError(f"{full_data.source}: no user has a test item; there is nothing to evaluate on")
        self.pool_users = _sample_indices(with_train, self.scale.n_users, rng)
        self.test_users = _sample_indices(with_test, self.scale.n_test_users, rng)
        if self.budget > len(self.pool_users):
            raise ValueError(f"budget {self.budget} is larger than the pool ({len(self.pool_users)} users with a "
                             f"training item at scale {self.scale.name})")
        # the pool as its own dataset: selection and `full` see only these users; its fingerprint names
        # the subsample, so selection caches shared between benches never mix two pools
        pool = full_data.subset_users(self.pool_users)
        digest = hashlib.sha256(f"{full_data.fingerprint}:{self.pool_users}".encode()).hexdigest()
        self.pool = dataclasses.replace(pool, fingerprint=digest) if len(self.pool_users) < full_data.n_users else pool

        settings = {
            "data": {"source": full_data.source, "fingerprint": full_data.fingerprint, "name": full_data.name,
                     "users": full_data.n_users, "items": full_data.n_items},
            "scale": self.scale.describe(),
            "budget": self.budget,
            "llm": str(llm) if llm is not None else (self.scale.llm or "smollm2-135m-instruct"),
            "data_seed": data_seed,
            "pool_users": len(self.pool_users),
            "test_users": len(self.test_users),
        }
        self.store = RunStore(self.out, settings)  # refuses to resume a bench with other settings
        self.settings = settings
        self.llm_path = self._resolve_llm(llm)
        write_json(self.out / "users.json", {"pool": [full_data.users[u] for u in self.pool_users],
                                             "test": [full_data.users[u] for u in self.test_users]})
        self._tokenizer = None
        self._items: np.ndarray | None = None
        self.item_measurement: Measurement | None = None
        self._build_samples = build_samples

    # ---------------------------------------------------------------------------------------- model

    def _resolve_llm(self, llm: str | os.PathLike | None) -> str | None:
        if llm is not None:
            from tunesift.rec.llm import resolve_llm_path

            return str(resolve_llm_path(llm))
        if self.scale.llm == "tiny":
            from tunesift.finetune.tiny import build_tiny_causal_lm
            from tunesift.rec.prompts import build_samples

            # the tokenizer learns the words of the prompts and of every title
            texts = [s.text for s in build_samples(self.pool, "train", max_tokens=self.scale.max_tokens)]
            texts += self.data.titles[1:]
            return str(build_tiny_causal_lm(texts, self.out / "tiny-llm", seed=0, **self.scale.tiny_model))
        from tunesift.rec.llm import resolve_llm_path

        return str(resolve_llm_path(None))

    def load_model(self, seed: int, adapter: str | os.PathLike | None = None, with_lora: bool = True):
        """The LLM with a fresh (seeded) or saved LoRA adapter, and its tokenizer."""
        from tunesift.rec.llm import load_causal_lm

        lora = self.scale.lora
        return load_causal_lm(self.llm_path, device=self.device, lora_r=lora["r"] if with_lora else 0,
                              lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                              target_modules=tuple(lora["targets"]), adapter=adapter, seed=seed)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.llm_path)
            if self._tokenizer.pad_token_id is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    # ---------------------------------------------------------------------------------------- stages

    def samples(self, split: str, users: Sequence[int], data=None) -> list:
        """BIGRec samples of ``users`` (positions in ``data``, default the pool), lengths by the LLM's tokenizer."""
        return self._build_samples(self.pool if data is None else data, split, users=list(users),
                                   tokenizer=self.tokenizer, max_tokens=self.scale.max_tokens)

    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) base-model last-token states of every title (computed once, cached on disk)."""
        if self._items is None:
            from tunesift.finetune.ground import item_states

            model, tok = self.load_model(seed=0, with_lora=False)
            with measure() as m:
                self._items = item_states(model, tok, self.data.titles[1:], cache_dir=self.cache_dir,
                                          batch_size=self.scale.embed_batch_size,
                                          max_length=self.scale.max_tokens, progress=self.progress)
            self.item_measurement = m
            del model
        return self._items

    def select(self, method: str, seed: int) -> list[int]:
        """Positions in the pool of the selected users."""
        if method == FULL:
            return [u for u in range(self.pool.n_users) if self.pool.train[u]]
        from tunesift.rec import select_samples

        result = select_samples(self.pool, self.budget, method=method, seed=seed, llm=self.llm_path,
                                device=self.device, progress=self.progress,
                                cache_dir=self.cache_dir / "selection",
                                max_tokens=self.scale.max_tokens, lora_r=self.scale.lora["r"],
                                lora_alpha=self.scale.lora["alpha"], lora_dropout=self.scale.lora["dropout"],
                                lora_targets=tuple(self.scale.lora["targets"]), **self.scale.pipeline)
        return [int(i) for i in result.indices]

    def finetune(self, selected: Sequence[int], seed: int, full: bool):
        """Fine-tune a fresh adapter on the selected users' training samples; returns (model, tok, result)."""
        from tunesift.finetune.lora import train_lora

        model, tok = self.load_model(seed)
        train = self.samples("train", selected)
        val = self.samples("valid", selected)
        if self.scale.max_val is not None and len(val) > self.scale.max_val:
            keep = np.random.default_rng(seed).choice(len(val), size=self.scale.max_val, replace=False)
            val = [val[i] for i in sorted(keep)]
        settings = dataclasses.replace(self.scale.train, seed=seed)
        if full and self.scale.full_epochs is not None:
            settings = dataclasses.replace(settings, epochs=self.scale.full_epochs)
        result = train_lora(model, tok, train, val, settings, progress=self.progress)
        return model, tok, result

    def evaluate(self, model, tok) -> tuple[dict, list[dict]]:
        """Recall@K / NDCG@K of the fine-tuned model on the test users, and the generations."""
        from tunesift.finetune.generate import generate_responses
        from tunesift.finetune.ground import base_model, ground_and_score, last_token_states

        items = self.item_embeddings()
        test = self.samples("test", self.test_users, data=self.data)
        generations = generate_responses(model, tok, [s.prompt for s in test], self.scale.generation,
                                         progress=self.progress, desc="generating (test)")
        with base_model(model):
            states = last_token_states(model, tok, generations, batch_size=self.scale.embed_batch_size,
                                       max_length=self.scale.max_tokens)
        truth = [[i - 1 for i in s.target_items] for s in test]
        grounding = ground_and_score(states, items, truth, self.scale.ks)
        metrics = grounding.metrics.as_dict()
        exact = sum(1 for g, s in zip(generations, test) if g in s.targets)
        metrics.update({"n_test_users": len(test), "empty_generations": sum(1 for g in generations if not g),
                        "exact_title_hits": exact,
                        "distinct_top1": int(len(set(grounding.top_items[:, 0].tolist())))})
        rows = [{"user": s.user, "generated": g, "targets": s.targets, "target_items": s.target_items,
                 "top_items": [int(i) + 1 for i in top[:10]]}
                for s, g, top in zip(test, generations, grounding.top_items)]
        return metrics, rows

    # ---------------------------------------------------------------------------------------- one run

    def run(self, method: str, seed: int) -> dict:
        """Select, fine-tune and evaluate one (method, seed); resumes from whatever stage was saved."""
        import torch

        from tunesift.finetune.lora import TrainResult
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
        adapter, train_path = folder / "adapter", folder / "train.json"
        if train_path.exists() and adapter.exists():
            saved = json.loads(train_path.read_text())
            model, tok = self.load_model(seed, adapter=adapter)
            train_result, ft_m = TrainResult(**saved["result"]), saved["measurement"]
            log.info("%s seed %d: fine-tuned adapter read from %s", method, seed, adapter)
        else:
            with measure() as m:
                model, tok, train_result = self.finetune(selected, seed, full=method == FULL)
            ft_m = asdict(m)
            _save_adapter(model, adapter)
            write_json(train_path, {"result": train_result.to_dict(), "measurement": ft_m})
        self.item_embeddings()  # computed once, outside the per-run evaluation time
        with measure() as ev_m:
            metrics, rows = self.evaluate(model, tok)
        write_jsonl(folder / "generations.jsonl", rows)
        record = {
            "n_selected": len(selected),
            "n_train": train_result.n_train,
            "n_val": train_result.n_val,
            **metrics,
            **_measurement_record("selection", sel_m),
            **_measurement_record("finetune", ft_m),
            **_measurement_record("eval", ev_m),
            "train_steps": train_result.steps,
            "train_epochs": train_result.epochs,
            "best_step": train_result.best_step,
            "best_val_loss": train_result.best_val_loss,
            "stopped_early": train_result.stopped_early,
            "device": self.device,
        }
        self.store.save(key, record)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return self.store.load(key)

    # ---------------------------------------------------------------------------------------- results

    def metric_names(self) -> list[str]:
        return [f"recall@{k}" for k in self.scale.ks] + [f"ndcg@{k}" for k in self.scale.ks]

    def write(self, records: list[dict], methods: Sequence[str], command: str = "") -> dict[str, Path]:
        cost = ["selection_s", "finetune_s", "eval_s", "selection_peak_rss_mb", "finetune_peak_rss_mb",
                "eval_peak_rss_mb"]
        if any("finetune_peak_cuda_mb" in r for r in records):
            cost += ["selection_peak_cuda_mb", "finetune_peak_cuda_mb", "eval_peak_cuda_mb"]
        cost += ["n_train", "train_steps", "best_val_loss"]
        s = self.scale
        notes = [
            f"Command: `{command}`" if command else "",
            f"Data: {self.data.source} ({self.data.n_users:,} users, {self.data.n_items:,} items). "
            f"Scale `{s.name}`: pool of {len(self.pool_users):,} users, budget {self.budget}, "
            f"{len(self.test_users):,} test users ranked over all {self.data.n_items:,} items; "
            f"LLM {self.settings['llm']}; LoRA r={s.lora['r']} on {', '.join(s.lora['targets'])}; "
            f"lr {s.train.learning_rate}, effective batch {s.train.batch_size}, epochs {s.train.epochs}"
            + (f" (`full`: {s.full_epochs})" if s.full_epochs is not None else "")
            + f", patience {s.train.patience}, loss on "
            + ("prompt + response (as BIGRec's code)" if s.train.train_on_prompt else "the response only")
            + f"; {s.generation.num_beams} beams, "
            f"{s.generation.max_new_tokens} new tokens; prompts cut at {s.max_tokens} tokens.",
        ]
        if self.item_measurement is not None:
            notes.append(f"Item title embeddings (once, cached): {self.item_measurement.seconds:.1f} s.")
        if self.data.name == "games":
            lines = ["", "DEALRec paper, Table 2 (Games, 1,024 samples, LLaMA-7B; compare the ordering of methods "
                     "and the gap to `full`, not absolute values):", "",
                     "| method | R@10 | R@20 | N@10 | N@20 |", "|---|---|---|---|---|"]
            lines += [f"| {m} | " + " | ".join(f"{v:.4f}" for v in vals) + " |"
                      for m, vals in PAPER_TABLE2_GAMES.items()]
            notes.append("\n".join(lines))
        files = write_results(self.out, records, ["method"], self.metric_names(), "DEALRec bench (BIGRec protocol)",
                              settings=self.settings, order=list(methods), cost_metrics=cost,
                              notes="\n\n".join(n for n in notes if n),
                              labels={"selection_s": "select s", "finetune_s": "fine-tune s", "eval_s": "eval s"})
        paths = asdict(files)
        if records:
            rows = summarize(records, ["method"], self.metric_names(), order=list(methods))
            paths["plot"] = plot_bars(self.out / "results.png", rows, self.metric_names(), "method",
                                      title=f"{self.data.name}: {s.name} scale, budget {self.budget}")
        return {k: Path(v) for k, v in paths.items() if v is not None}


def check_methods(methods: Sequence[str]) -> list[str]:
    import tunesift.rec  # noqa: F401  (registers the methods)
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


def run_rec_bench(data: Any, out: str | os.PathLike, methods: Sequence[str] = DEFAULT_METHODS,
                  seeds: Sequence[int] = (0, 1, 2), scale: RecScale | str = "tiny", budget: int | None = None,
                  llm: str | os.PathLike | None = None, device: str = "auto",
                  cache_dir: str | os.PathLike | None = None, progress: bool = True, command: str = "",
                  format: str | None = None) -> RecBenchResult:
    """Run (or resume) the bench for every method and seed and write results.md/csv/json and a plot.

    Args:
        data: a :class:`tunesift.rec.RecData` or a data path (DEALRec folder, RecBole files, table).
        out: the bench folder (runs, results, caches).
        methods: registered rec methods and/or ``full``.
        seeds: one run per method and seed.
        scale: "tiny", "cpu", "gpu" or a :class:`RecScale` (see :func:`scale_with`).
    """
    methods = check_methods(methods)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    bench = RecBench(data, out, scale, budget=budget, llm=llm, device=device, cache_dir=cache_dir,
                     progress=progress, format=format)
    ran = []
    keys = [(m, s) for s in seeds for m in methods]  # seed-major: a stopped bench has every method's first seed
    t0 = time.perf_counter()
    for i, (method, seed) in enumerate(keys, 1):
        key = {"method": method, "seed": seed}
        if bench.store.is_done(key):
            log.info("[%d/%d] %s seed %d: done before, skipped", i, len(keys), method, seed)
            continue
        log.info("[%d/%d] %s seed %d ...", i, len(keys), method, seed)
        rec = bench.run(method, seed)
        ran.append(key)
        log.info("[%d/%d] %s seed %d: %s (%.0f s so far)", i, len(keys), method, seed,
                 ", ".join(f"{m} {rec[m]:.4f}" for m in bench.metric_names()), time.perf_counter() - t0)
        bench.write([bench.store.load({"method": m, "seed": s}) for m, s in keys
                     if bench.store.is_done({"method": m, "seed": s})], methods, command)
    records = [bench.store.load({"method": m, "seed": s}) for m, s in keys]
    files = bench.write(records, methods, command)
    return RecBenchResult(records=records, out=bench.out, files=files, ran=ran)
