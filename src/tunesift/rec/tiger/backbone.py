"""TIGER (Rajput et al., NeurIPS 2023) as a DEALRec backbone: generative retrieval over semantic IDs.

- Samples: a user's history as semantic-ID tokens (after a hashed user token), the next item's semantic
  ID as the target. Training: every item of the training sequence after the first, predicted from the
  items before it (each sequence expanded into (prefix -> next item) pairs); validation: all training
  items -> the validation items; test: train + valid items -> all test items (BIGRec's splits).
- Effort: the gradient norm of each user's TIGER loss (the mean over its training samples) with respect
  to a parameter subset (default: the last decoder layer's self-attention value matrix), on the freshly
  initialised model the few-shot training starts from (:mod:`tunesift.rec.tiger.effort`). DEALRec
  computes the effort on the backbone's parameters before fine-tuning (its Algorithm 2 takes the
  "pre-trained parameters"); TIGER is trained from scratch, so that state is its seeded initialisation.
  ``effort_state="warm"`` measures it after ``effort_warm_epochs`` epochs on all candidates instead.
- Training: from scratch (DEALRec: TIGER "fully fine-tuned", item tokens "randomly initialized under the
  few-shot fine-tuning setting"), AdamW, early stopping on validation Recall@K (:mod:`.train`).
- Ranking: beam search constrained to valid semantic IDs (:mod:`.beam`), ``beams`` >= the largest K.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesift.io.atomic import atomic_write, write_json
from tunesift.rec.backbone import REC_BACKBONES, Backbone, Chunked, Recommendations, RecScale
from tunesift.rec.tiger.settings import RQVAESettings, TigerFitSettings, TigerSettings
from tunesift.settings import settings_record

log = logging.getLogger("tunesift")

# DEALRec's Table 2, TIGER rows (Games, 1,024 samples; R@10, R@20, N@10, N@20). The paper reports no
# full-training TIGER result.
PAPER_GAMES = {
    "random": (0.0062, 0.0102, 0.0039, 0.0051),
    "grand": (0.0042, 0.0053, 0.0027, 0.0030),
    "el2n": (0.0034, 0.0048, 0.0024, 0.0029),
    "ccs": (0.0050, 0.0084, 0.0031, 0.0041),
    "dealrec": (0.0074, 0.0114, 0.0062, 0.0074),
}
@REC_BACKBONES.register("tiger")
class Tiger(Backbone):
    """TIGER trained from scratch on the selected users (see the module docstring)."""

    name = "tiger"
    Settings = TigerSettings
    flag_prefix = "tiger-"

    def __init__(self, settings: TigerSettings | None = None, device: str = "cpu", progress: bool = True,
                 cache_dir: str | os.PathLike | None = None):
        super().__init__(settings, device, progress, cache_dir)
        self.ids = None
        self._trie = None

    # ------------------------------------------------------------------------------------ setup

    def prepare(self, data: Any, workdir: str | os.PathLike | None = None) -> None:
        """Semantic IDs of every item (embedded and quantised once, cached in ``cache_dir``)."""
        if self.ids is not None:
            return
        from tunesift.rec.tiger.ids import build_semantic_ids

        s = self.settings
        cache = self.cache_dir if self.cache_dir is not None else (Path(workdir) if workdir is not None else None)
        self.ids = build_semantic_ids(data, s.rqvae, s.user_tokens, embedder=s.item_embedder,
                                      precomputed=s.item_embeddings, cache_dir=cache, device=self.device,
                                      progress=self.progress)
        if self.ids.n_items != data.n_items:
            raise ValueError(f"semantic IDs for {self.ids.n_items} items, the data has {data.n_items}")

    def _ready(self) -> None:
        if self.ids is None:
            raise RuntimeError("call prepare(data) first: TIGER needs the items' semantic IDs")

    @property
    def tokens(self) -> np.ndarray:
        self._ready()
        return self.ids.tokens

    @property
    def trie(self):
        if self._trie is None:
            import torch

            from tunesift.rec.tiger.beam import ItemTrie

            self._trie = ItemTrie.build(torch.as_tensor(self.tokens[1:]))
        return self._trie

    def new_model(self, seed: int, attention: str = "sdpa"):
        """A freshly initialised TIGER (seeded), on the device."""
        from tunesift.rec.tiger.model import build_t5

        self._ready()
        s = self.settings
        model = build_t5(self.ids.vocab.size, s.d_model, s.d_kv, s.heads, s.d_ff, s.encoder_layers,
                         s.decoder_layers, s.dropout, seed, attention=attention)
        return model.to(self.device)

    def describe(self) -> dict:
        out = super().describe()
        if self.ids is not None:
            out["semantic_ids"] = self.ids.info
        return out

    # ------------------------------------------------------------------------------------ samples

    def _pairs(self, data: Any, users: Sequence[int], split: str):
        from tunesift.rec.tiger.model import make_pairs, training_pairs

        self._ready()
        users = [int(u) for u in users]
        ids = [data.users[u] for u in users]
        tok, vocab, h = self.tokens, self.ids.vocab, self.settings.max_history
        if split == "train":
            return training_pairs(tok, vocab, [data.train[u] for u in users], ids, h)
        if split == "valid":
            return make_pairs(tok, vocab, [data.train[u] for u in users], [data.valid[u] for u in users], ids, h,
                              expand=False)
        if split == "test":
            return make_pairs(tok, vocab, [data.train[u] + data.valid[u] for u in users],
                              [data.test[u] for u in users], ids, h, expand=False)
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")

    def samples(self, data: Any, users: Sequence[int], split: str) -> list:
        """One dict per sample: user, history items, target item, input tokens."""
        pairs = self._pairs(data, users, split)
        users = [int(u) for u in users]
        return [{"user": data.users[users[pairs.owner[i]]], "target_item": int(pairs.targets[i]),
                 "input_tokens": pairs.tokens[pairs.offsets[i]:pairs.offsets[i + 1]].tolist()}
                for i in range(len(pairs))]

    def sample_rows(self, data: Any, users: Sequence[int]) -> list[dict]:
        """What TIGER trains on for each user: its training items with the data's own ids and titles, in time
        order, and their semantic IDs."""
        tok = self.tokens
        rows = []
        for u in users:
            seq = data.train[int(u)]
            rows.append({"user": data.users[int(u)], "train_items": [data.item_ids[i] for i in seq],
                         "titles": [data.titles[i] for i in seq], "n_samples": max(len(seq) - 1, 0),
                         "semantic_ids": [tok[i].tolist() for i in seq]})
        return rows

    # ------------------------------------------------------------------------------------ effort

    def effort_key(self, data: Any, users: Sequence[int], seed: int) -> dict | None:
        s = self.settings
        self._ready()
        model_fields = {k: v for k, v in settings_record(s).items() if k not in ("fit", "effort_batch_size", "effort_chunk")}
        key = {"settings": model_fields, "ids": self.ids.info.get("embeddings"),
               "codes": _digest(self.ids.codes)}
        if s.effort_state == "warm":
            key["fit"] = {k: v for k, v in settings_record(s.fit).items() if k != "eval_batch_size"}
        return key

    def effort(self, data: Any, users: Sequence[int], seed: int, chunked: Chunked) -> tuple[np.ndarray, dict]:
        from tunesift.rec.tiger.effort import effort_scores

        s = self.settings
        users = [int(u) for u in users]
        state: dict[str, Any] = {}

        def model():
            if "model" not in state:
                m = self.new_model(seed)
                if s.effort_state == "warm":
                    self._warm(m, data, users, seed)
                state["model"] = m
            return state["model"]

        def compute(sl: slice) -> np.ndarray:
            part = users[sl]
            pairs = self._pairs(data, part, "train")
            scores, names, path = effort_scores(model(), pairs, self.tokens, len(part), s.effort_parameters,
                                                max_pairs=s.effort_batch_size, precision=s.precision,
                                                eager_model=lambda: self.new_model(seed, attention="eager"))
            state["names"], state["path"] = names, path
            return scores

        scores = chunked(len(users), s.effort_chunk, lambda: compute)  # a Ray actor builds its own model
        info = {"state": s.effort_state, "parameters": state.get("names", s.effort_parameters or "default"),
                "path": state.get("path"), "users_without_samples": int(sum(1 for u in users if len(data.train[u]) < 2))}
        return scores, info

    def _warm(self, model: Any, data: Any, users: Sequence[int], seed: int) -> None:
        import dataclasses

        from tunesift.rec.tiger.train import train_tiger

        fit = dataclasses.replace(self.settings.fit, epochs=self.settings.effort_warm_epochs, patience=0)
        train_tiger(model, self._pairs(data, users, "train"), self.tokens, fit, seed, precision=self.settings.precision,
                    progress=self.progress)

    # ------------------------------------------------------------------------------------ training

    def train(self, data: Any, users: Sequence[int], seed: int, full: bool, folder: str | os.PathLike) -> tuple[Any, dict]:
        """Train a fresh TIGER on the users' training samples, early-stopped on validation users
        (:func:`validation_users`);
        checkpointed every epoch in ``folder/checkpoint.pt`` (a killed run resumes), the best weights
        saved to ``folder/model.pt``."""
        import dataclasses

        import torch

        from tunesift.rec.tiger.train import train_tiger

        fit = self.settings.fit
        if full and fit.full_epochs is not None:
            fit = dataclasses.replace(fit, epochs=fit.full_epochs)
        users = [int(u) for u in users]
        with_valid = validation_users(data, users, fit, seed)
        valid = self._pairs(data, with_valid, "valid")
        truth = [sorted(set(data.valid[u])) for u in with_valid]
        model = self.new_model(seed)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        result = train_tiger(model, self._pairs(data, users, "train"), self.tokens, fit, seed, valid=valid,
                             valid_truth=truth, trie=self.trie, ks=_ks(fit.beams), checkpoint=folder / "checkpoint.pt",
                             precision=self.settings.precision, progress=self.progress)
        record = result.record()
        with atomic_write(folder / "model.pt", "wb") as f:
            torch.save(model.state_dict(), f)
        write_json(folder / "train.json", {"record": record, "history": result.history,
                                           "seconds": round(result.seconds, 2)})
        (folder / "checkpoint.pt").unlink(missing_ok=True)
        return model, record

    def load(self, folder: str | os.PathLike, seed: int) -> tuple[Any, dict] | None:
        import torch

        folder = Path(folder)
        if not ((folder / "model.pt").exists() and (folder / "train.json").exists()):
            return None
        model = self.new_model(seed)
        model.load_state_dict(torch.load(folder / "model.pt", map_location=self.device, weights_only=True))
        model.eval()
        return model, json.loads((folder / "train.json").read_text())["record"]

    # ------------------------------------------------------------------------------------ ranking

    def recommend(self, model: Any, data: Any, users: Sequence[int], k: int) -> Recommendations:
        from tunesift.rec.tiger.train import rank_items

        fit = self.settings.fit
        if fit.beams < k:
            raise ValueError(f"`beams` ({fit.beams}) must be at least K = {k}")
        pairs = self._pairs(data, users, "test")
        if len(pairs) != len(users):
            raise ValueError("every evaluated user needs a test item")
        top = rank_items(model, pairs, self.tokens, self.trie, fit.beams, fit.eval_batch_size, self.settings.precision)
        return Recommendations(top_items=top[:, :k])

    # ------------------------------------------------------------------------------------ reporting

    def protocol_notes(self) -> str:
        s, f = self.settings, self.settings.fit
        ids = self.ids.info if self.ids is not None else {}
        usage = ", ".join(f"{u:.2f}" for u in ids.get("usage", []))
        return (f"TIGER from scratch: T5 {s.encoder_layers}+{s.decoder_layers} layers, d_model {s.d_model}, {s.heads} "
                f"heads of {s.d_kv}, MLP {s.d_ff}, dropout {s.dropout}; history of {s.max_history} items, "
                f"{s.user_tokens} user tokens; AdamW lr {f.lr} ({f.warmup_steps} warm-up steps, then {f.schedule})"
                + (f", weights averaged (EMA {f.ema})" if f.ema is not None else "")
                + f", batch {f.batch_size}, up to {f.epochs} epochs"
                + (f" and {f.max_steps} optimizer steps" if f.max_steps else "")
                + (f", validated every {f.eval_every_steps} steps" if f.eval_every_steps else "")
                + f", patience {f.patience} on validation "
                + ("Recall@K" if f.select_on == "recall" else "loss") + f" (at most {f.max_val} validation users, "
                f"{'every user with a validation item' if f.valid_users == 'all' else 'of the users trained on'}), "
                f"{f.beams} beams, {s.precision}. Semantic IDs: RQ-VAE {s.rqvae.levels}x{s.rqvae.codebook_size} "
                f"codes" + (f", usage per level {usage}, collision rate {ids.get('collision_rate', 0):.4f} (largest "
                            f"group {ids.get('max_group_size')})" if ids else "")
                + f". Effort: state `{s.effort_state}`, parameters "
                + (s.effort_parameters or "the last decoder layer's self-attention value matrix") + ".")

    def paper_table(self, dataset: str) -> str:
        if dataset != "games":
            return ""
        from tunesift.rec.bigrec.backbone import paper_markdown

        return paper_markdown("DEALRec paper, Table 2, TIGER rows (Games, 1,024 samples; the paper reports no "
                              "full-training TIGER result):", PAPER_GAMES)


def validation_users(data: Any, users: Sequence[int], fit: TigerFitSettings, seed: int) -> list[int]:
    """The users whose validation items early stopping scores, at most ``fit.max_val`` of them.

    ``valid_users="selected"``: the trained users that have a validation item, sampled with the run's seed;
    ``"all"``: every user of the data set with one, sampled with seed 0, so every method and seed is
    early-stopped on the same users whatever it picked.
    """
    if fit.valid_users == "all":
        pool, seed = [u for u in range(data.n_users) if data.valid[u]], 0
    else:
        pool = [int(u) for u in users if data.valid[u]]
    if fit.max_val is not None and len(pool) > fit.max_val:
        keep = np.random.default_rng(seed).choice(len(pool), size=fit.max_val, replace=False)
        pool = [pool[i] for i in sorted(keep)]
    return pool


def _ks(beams: int) -> tuple[int, ...]:
    return tuple(k for k in (10, 20) if k <= beams) or (beams,)


def _digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:24]


def _scales() -> dict[str, RecScale]:
    tiny_rqvae = RQVAESettings(levels=3, codebook_size=8, latent_dim=8, hidden=(32, 16), epochs=30, batch_size=64,
                               kmeans_iters=5, dead_code_every=5)
    return {
        "tiny": RecScale(
            name="tiny", n_users=40, n_test_users=16, budget=8, ks=(10, 20),
            stages={"surrogate_epochs": 3, "early_epoch": 1, "patience": 2, "lissa_depth": 20,
                    "gradient_batch_size": 64},
            backbone=TigerSettings(rqvae=tiny_rqvae, user_tokens=16, d_model=32, d_kv=8, heads=2, d_ff=64,
                                   encoder_layers=1, decoder_layers=1,
                                   fit=TigerFitSettings(epochs=3, batch_size=32, warmup_steps=2, patience=2,
                                                        beams=20, max_val=8)),
            note="a 1+1-layer, 32-wide TIGER on a few dozen users; seconds (for CI)"),
        # The paper's protocol: every Games user in the pool, 1,024 picked, every test user scored.
        "cpu": RecScale(
            name="cpu", n_users=None, n_test_users=None, budget=1024, ks=(10, 20),
            backbone=TigerSettings(precision="bfloat16", fit=TigerFitSettings(patience=5, max_val=2000)),
            note="the paper's protocol with TIGER: all users, budget 1,024, all test users"),
        # `tunesift demo`: MovieLens-100K (751 users with training items), a smaller TIGER
        "demo": RecScale(
            name="demo", n_users=300, n_test_users=None, budget=30, ks=(10, 20),
            stages={"lissa_depth": 1000},
            backbone=TigerSettings(rqvae=RQVAESettings(codebook_size=64), d_model=64, d_kv=32, heads=4, d_ff=256,
                                   encoder_layers=2, decoder_layers=2, max_history=10,
                                   fit=TigerFitSettings(epochs=8, batch_size=128, patience=3, max_val=None,
                                                        valid_users="all")),
            note="MovieLens-100K, 300 candidate users, a 2+2-layer, 64-wide TIGER: a few minutes on 2 cores"),
        "gpu": RecScale(
            name="gpu", n_users=None, n_test_users=None, budget=1024, ks=(10, 20),
            stages={"gradient_batch_size": 1024},
            backbone=TigerSettings(fit=TigerFitSettings(patience=10, max_val=None, eval_batch_size=1024)),
            note="the paper's protocol with TIGER on a GPU: float32, all validation users"),
    }


Tiger.scales = _scales()
