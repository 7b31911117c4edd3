"""TIGER's settings, declared once (their fields are the ``--tiger-*`` flags): the RQ-VAE that makes the
semantic IDs, the model and its effort, and training/ranking in ``bench rec``. Kept free of torch so
building the command-line parser does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunesift.settings import setting

RESEED_METHODS = ("kmeans++", "uniform")


@dataclass
class RQVAESettings:
    """RQ-VAE architecture and training settings; defaults follow the paper where it gives them."""

    levels: int = setting(3, "codes per item before the collision code (the paper: 3)")
    codebook_size: int = setting(256, "codewords per level (the paper: 256)")
    latent_dim: int = setting(32, "the quantised latent (the paper: 32)")
    hidden: tuple[int, ...] = setting((512, 256, 128), "encoder widths d→512→256→128→latent, ReLU; decoder "
                                                       "mirrored")
    commitment: float = setting(0.25, "β, weight of the commitment term (the paper: 0.25)")
    epochs: int = setting(100, "training epochs (17k Games items, 2 CPU threads: ~80 s, every level's codes all "
                               "used, 9%% of items collide; longer runs reconstruct better while collisions creep "
                               "up; the paper: 20k)")
    batch_size: int = setting(1024, "items per step (the paper: 1024)")
    lr: float = setting(1e-3, "AdamW learning rate (the paper: Adagrad at 0.4, which collapses the codebooks in "
                              "re-implementations)")
    weight_decay: float = setting(1e-4, "AdamW's decoupled decay, on every parameter")
    kmeans_init: bool = setting(True, "k-means initialised codebooks (off: a random normal start, an ablation)")
    kmeans_iters: int = setting(20, "Lloyd iterations after k-means++ seeding, per level")
    kmeans_sample: int = setting(20000, "items whose residuals feed k-means (and dead-code re-seeding)")
    dead_code_every: int = setting(10, "epochs between dead-code checks: codes unused since the last check are "
                                       "re-seeded to current residuals (0: never; then level 1 keeps ~10%% of its codes)")
    reseed: str = setting("kmeans++", "how dead codes are re-seeded: kmeans++ (D²-weighted, from the live "
                                      "codewords) or uniform", choices=RESEED_METHODS)
    standardize: bool = setting(False, "z-score each input dimension first")
    seed: int = setting(0, "seed of the RQ-VAE (init, k-means, shuffling, re-seeding); not the run's seed, so "
                           "every method and seed share one set of semantic IDs")

    def __post_init__(self) -> None:
        try:  # digit strings too, as command-line flags give them
            self.hidden = tuple(int(h) if isinstance(h, str) and h.strip().isdigit() else h for h in self.hidden)
        except TypeError:
            raise ValueError(f"`hidden` must be a tuple of positive integers, got {self.hidden!r}") from None
        for name in ("levels", "codebook_size", "latent_dim", "epochs", "batch_size", "kmeans_iters",
                     "kmeans_sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in self.hidden):
            raise ValueError(f"`hidden` must be a tuple of positive integers, got {self.hidden!r}")
        if isinstance(self.dead_code_every, bool) or not isinstance(self.dead_code_every, (int, np.integer)) \
                or self.dead_code_every < 0:
            raise ValueError(f"`dead_code_every` must be a non-negative integer, got {self.dead_code_every!r}")
        if self.reseed not in RESEED_METHODS:
            raise ValueError(f"`reseed` must be one of {RESEED_METHODS}, got {self.reseed!r}")
        if not self.commitment >= 0:
            raise ValueError(f"`commitment` must be non-negative, got {self.commitment!r}")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {self.weight_decay!r}")


PRECISIONS = ("float32", "bfloat16")
SCHEDULES = ("constant", "cosine")
SELECT_ON = ("recall", "loss")


@dataclass
class TigerFitSettings:
    """How TIGER is trained and ranks in ``bench rec``."""

    lr: float = setting(1e-4, "AdamW learning rate after the warm-up (1e-3 and 3e-4 overfit 1,024 Games users "
                                  "within the first epoch: validation Recall@10 0.0017-0.007 against 0.0196)")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    batch_size: int = setting(256, "samples per optimizer step (the paper: 256)")
    epochs: int = setting(200, "most training epochs (early stopping usually ends sooner)")
    full_epochs: int | None = setting(None, "most epochs of `full` training (default: epochs)")
    warmup_steps: int = setting(20, "optimizer steps of linear learning-rate warm-up")
    schedule: str = setting("constant", "learning rate after the warm-up: constant, or cosine (decays to 0 at "
                                        "`max_steps`, which it needs)", choices=SCHEDULES, key="unless-default")
    ema: float | None = setting(
        None, "decay of an exponential moving average of the weights, updated after every optimizer step; the "
        "average is what is validated, kept and ranked with (none: the raw weights)", key="unless-default")
    max_grad_norm: float | None = setting(1.0, "clip the global gradient norm (none: no clipping)")
    eval_every: int = setting(1, "epochs between validations")
    patience: int = setting(10, "validations without a better Recall@K before stopping (0: never)")
    select_on: str = setting(
        "recall", "what validation compares: recall (Recall@K, then NDCG@K, by constrained beam search; noisy "
        "with few hits) or loss (mean cross-entropy of the validation items' codes, teacher-forced: one "
        "forward pass, so every validation user can be read often)", choices=SELECT_ON, key="unless-default")
    max_steps: int | None = setting(
        None, "stop after this many optimizer steps (none: `epochs` alone ends training); with "
        "`eval_every_steps`, every method trains on the same step budget whatever the size of its pick",
        key="unless-default")
    eval_every_steps: int | None = setting(
        None, "validate every this many optimizer steps instead of every `eval_every` epochs (patience then "
        "counts these validations), so early stopping does not depend on how many steps an epoch of a pick is",
        key="unless-default")
    max_val: int | None = setting(2000, "at most this many validation users (seeded sample; none: all)")
    valid_users: str = setting(
        "selected", "whose validation items early stopping reads: `selected` (the users trained on that have "
        "one, as few as a handful in a small pick) or `all` (every user of the data set with one, the same "
        "seeded sample for every method and seed)", choices=("selected", "all"), key="unless-default")
    beams: int = setting(20, "beams of the constrained beam search (at least the largest K)")
    eval_batch_size: int = setting(256, "users per beam-search batch", key=False)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, got {self.lr}")
        for name in ("batch_size", "epochs", "eval_every", "beams", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)}")
        for name, allowed in (("schedule", SCHEDULES), ("select_on", SELECT_ON)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.schedule == "cosine" and self.max_steps is None:
            raise ValueError("`schedule` cosine decays to 0 at `max_steps`; set `max_steps`")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"`ema` must be in (0, 1) or none, got {self.ema!r}")
        if self.valid_users not in ("selected", "all"):
            raise ValueError(f"`valid_users` must be 'selected' or 'all', got {self.valid_users!r}")
        for name in ("full_epochs", "max_val", "max_steps", "eval_every_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"`{name}` must be at least 1 or none, got {v}")


@dataclass
class TigerSettings:
    """TIGER's semantic IDs, model and effort (the paper's values unless noted)."""

    item_embedder: str | None = setting(None, "local Hugging Face sentence encoder of the item texts "
                                              "(default: the packaged all-MiniLM-L6-v2)")
    item_embeddings: str | None = setting(None, ".npy of precomputed item embeddings, row i = item i + 1")
    rqvae: RQVAESettings = setting(default_factory=RQVAESettings, prefix="rqvae-",
                                   help="the RQ-VAE that turns item embeddings into semantic IDs")
    user_tokens: int = setting(2000, "user-id hashing buckets (the paper: 2000; 0: no user token)")
    max_history: int = setting(20, "most recent items of a history the model reads (the paper: 20)")
    d_model: int = setting(128, "model width (the paper: 128)")
    d_kv: int = setting(64, "width of each attention head (the paper: 64)")
    heads: int = setting(6, "attention heads (the paper: 6)")
    d_ff: int = setting(1024, "feed-forward width (the paper: 1024)")
    encoder_layers: int = setting(4, "encoder layers (the paper: 4)")
    decoder_layers: int = setting(4, "decoder layers (the paper: 4)")
    dropout: float = setting(0.1, "dropout (the paper: 0.1)")
    precision: str = setting("float32", "float32, or bfloat16 autocast in effort, training and ranking (~1.5-2x "
                                        "faster on chips with bf16 units)", choices=PRECISIONS)
    effort_parameters: str | None = setting(None, "regex of TIGER parameters for the effort gradient (default: "
                                                  "the last decoder layer's self-attention value matrix)")
    effort_state: str = setting("init", "init: the seeded initial model few-shot training starts from; warm: "
                                        "after effort_warm_epochs on all candidates", choices=("init", "warm"))
    effort_warm_epochs: int = setting(1, "epochs of training on all candidates before a 'warm' effort")
    effort_batch_size: int = setting(1024, "samples per effort forward/backward", key=False)
    effort_chunk: int = setting(8192, "users per saved effort chunk (a crash loses at most one)", key=False)
    fit: TigerFitSettings = setting(default_factory=TigerFitSettings, prefix="", bench_only=True,
                                    help="training and ranking (bench rec)")

    def __post_init__(self) -> None:
        for name in ("d_model", "d_kv", "heads", "d_ff", "encoder_layers", "decoder_layers", "max_history",
                     "effort_warm_epochs", "effort_batch_size", "effort_chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        if self.user_tokens < 0:
            raise ValueError(f"`user_tokens` must be non-negative, got {self.user_tokens}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.effort_state not in ("init", "warm"):
            raise ValueError(f"`effort_state` must be 'init' or 'warm', got {self.effort_state!r}")
