"""SASRec (Kang & McAuley, ICDM 2018): the small sequential recommender DEALRec uses as its surrogate.

The architecture, initialisation and loss follow DEALRec's released code (``code/prune/models.py``,
``modules.py``, ``trainers.py``): item + position embeddings, LayerNorm, dropout; post-LN blocks of
masked self-attention and a point-wise feed-forward layer (ReLU after both of its linear maps, as the
code does); binary cross-entropy with one sampled negative per position, averaged over the positions
that have a target. Per user: inputs ``train[:-2]``, targets ``train[1:-1]``, left-padded with 0 and
cut to the last ``max_len``.

Two things differ from the code, both so that scores are reproducible: negatives are drawn once from a
seeded generator and kept fixed (the code re-draws them at random every time), and training keeps the
best checkpoint by validation Recall/NDCG@K with early stopping (the code keeps the last epoch).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("tunesift")


@dataclass
class SASRecConfig:
    """Model settings; defaults are DEALRec's (``code/prune/utils.py``)."""

    n_items: int  # item ids are 1..n_items; 0 is padding
    hidden_size: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.5  # used for hidden states and attention probabilities alike, as in the code
    max_len: int = 50  # the last 50 items of a history are kept
    init_range: float = 0.02  # std of the normal initialisation of Linear/Embedding weights

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"`n_items` must be positive, got {self.n_items}")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"`hidden_size` ({self.hidden_size}) must be a multiple of `n_heads` ({self.n_heads})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}")
        if self.max_len < 1 or self.n_blocks < 1:
            raise ValueError("`max_len` and `n_blocks` must be positive")


class LayerNorm(nn.Module):
    """TF-style LayerNorm (epsilon inside the square root), as in the reference code."""

    def __init__(self, size: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # w·(x − mean)/√(var + eps) + b with the biased variance: the reference formula, in one fused op
        # (its double backward, which LiSSA runs 5,000 times, is about half the cost of the spelled-out one)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Dropout(nn.Dropout):
    """Inverted dropout drawn with ``torch.rand`` (same distribution as ``nn.Dropout``; its
    ``bernoulli_`` kernel is ~2.5x slower on CPU and took a quarter of SASRec's training time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep / (1.0 - self.p)


class SelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_size = cfg.hidden_size // cfg.n_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_dropout = Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_size, cfg.hidden_size)  # the code's `attention.dense`
        self.norm = LayerNorm(cfg.hidden_size)
        self.output_dropout = Dropout(cfg.dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def context(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The heads' attention-weighted values, concatenated: (B, T, d), before the output projection."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + mask  # (B, nh, T, T)
        probs = self.attention_dropout(torch.softmax(scores, dim=-1))
        return (probs @ v).transpose(1, 2).reshape(x.shape)  # (B, T, d)

    def finish(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Output projection, residual and norm: position by position (any leading shape)."""
        return self.norm(self.output_dropout(self.output(context)) + x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.finish(self.context(x, mask), x)


class FeedForward(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.inner = nn.Linear(cfg.hidden_size, cfg.hidden_size)  # the code's 1x1 conv1d_1
        self.outer = nn.Linear(cfg.hidden_size, cfg.hidden_size)  # conv1d_2
        self.dropout = Dropout(cfg.dropout)
        self.norm = LayerNorm(cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.outer(F.relu(self.inner(x))))  # ReLU after both maps, as the reference code
        return self.norm(self.dropout(h) + x)


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention(x, mask))


class SASRec(nn.Module):
    """SASRec whose ``forward`` is its training loss per sequence.

    ``forward(inputs, positives, negatives) -> (B,)`` per-sequence BCE losses: this is the small
    protocol the influence code plugs into (``torch.func.functional_call`` on ``forward``).
    """

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.config = cfg
        self.item_embeddings = nn.Embedding(cfg.n_items + 1, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.norm = LayerNorm(cfg.hidden_size)
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_blocks))
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.init_range)  # padding row too, as the code
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def influence_parameter_names(self) -> list[str]:
        """DEALRec's default for influence: the last block's attention output projection (d x d)."""
        return [f"blocks.{self.config.n_blocks - 1}.attention.output.weight"]

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded item ids -> (B, T, d) hidden states (position t sees items <= t).

        The last column is position ``max_len - 1``: a batch whose leading all-padding columns were cut
        (:func:`trim_padding`, T < max_len) gives the same hidden states at its items, since padded
        keys are masked out.
        """
        context, x = self._last_context(inputs)
        last = self.blocks[-1]
        return last.feed_forward(last.attention.finish(context, x))

    def _last_context(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> the last block's attention context and its input (the residual), both (B, T, d):
        everything after them works position by position."""
        t = inputs.shape[-1]
        if t > self.config.max_len:
            raise ValueError(f"sequences have {t} positions, the model at most max_len={self.config.max_len}")
        positions = torch.arange(self.config.max_len - t, self.config.max_len, device=inputs.device)
        x = self.dropout(self.norm(self.item_embeddings(inputs) + self.position_embeddings(positions)))
        keep = (inputs > 0)[:, None, None, :]  # (B, 1, 1, T): keys that are items
        causal = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()  # (T, T)
        mask = (1.0 - (keep & causal).to(x.dtype)) * -10000.0  # additive, as the reference code
        for block in self.blocks[:-1]:
            x = block(x, mask)
        return self.blocks[-1].attention.context(x, mask), x

    def positionwise_loss(self, batch: Sequence[torch.Tensor], names: Sequence[str],
                          batch_size: int = 1024) -> "PositionwiseLoss | None":
        """The loss from the last block's attention output projection on, as independent rows.

        After the attention, SASRec works position by position and each target position adds one BCE
        term, so a sample's loss is the mean of its target positions' terms. The rows hold what those
        terms take as input (the attention context, the residual, the positive and negative item
        embeddings), computed once here; none depends on the parameters after the attention. Returns None
        when ``names`` reach earlier (e.g. the item embeddings): the rows would not be constant.
        """
        from tunesift.rec.influence import PositionwiseLoss

        head = _PositionwiseHead(self.blocks[-1])
        by_identity = {id(p): n for n, p in self.named_parameters()}
        mapping = {hn: by_identity[id(p)] for hn, p in head.named_parameters()}
        if not set(names) <= set(mapping.values()):
            return None
        parts: list[list[torch.Tensor]] = [[], [], [], []]
        owners, counts = [], []
        n = batch[0].shape[0]
        with torch.no_grad():
            for start in range(0, n, batch_size):
                inputs, positives, negatives = trim_padding([t[start : start + batch_size] for t in batch])
                context, x = self._last_context(inputs)
                target = positives > 0  # (B, T); rows in (sample, position) order
                for store, value in zip(parts, (context[target], x[target], self.item_embeddings(positives[target]),
                                                self.item_embeddings(negatives[target]))):
                    store.append(value)
                owner = torch.arange(start, start + inputs.shape[0], device=inputs.device)[:, None]
                owners.append(owner.expand_as(target)[target])
                counts.append(target.sum(1))
        rows = tuple(torch.cat(p) for p in parts)
        owner, count = torch.cat(owners), torch.cat(counts)
        weight = 1.0 / count[owner].to(rows[0].dtype)
        return PositionwiseLoss(head=head, parameter_names=mapping, rows=rows, owner=owner, weight=weight,
                                n_samples=n)

    def forward(self, inputs: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Per-sequence BCE: mean over target positions of -log σ(pos) - log(1 - σ(neg)).

        Args:
            inputs, positives, negatives: (B, T) item ids, 0 where there is no target.
        Returns:
            (B,) losses; 0 for a sequence without any target.
        """
        hidden = self.encode(inputs)  # (B, T, d)
        pos_logits = (hidden * self.item_embeddings(positives)).sum(-1)  # (B, T)
        neg_logits = (hidden * self.item_embeddings(negatives)).sum(-1)
        is_target = (positives > 0).to(hidden.dtype)
        per_position = -(F.logsigmoid(pos_logits) + F.logsigmoid(-neg_logits)) * is_target
        return per_position.sum(-1) / is_target.sum(-1).clamp_min(1.0)

    def score_items(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T) histories -> (B, n_items + 1) scores of every item for the next position."""
        last = self.encode(inputs)[:, -1, :]  # (B, d)
        return last @ self.item_embeddings.weight.T


class _PositionwiseHead(nn.Module):
    """SASRec's loss after the last block's attention, for rows (target positions) of any shape (R, d)."""

    def __init__(self, last: Block):
        super().__init__()
        # the modules of SelfAttention.finish (not query/key/value: the rows depend on those)
        self.output, self.norm, self.dropout = last.attention.output, last.attention.norm, last.attention.output_dropout
        self.feed_forward = last.feed_forward

    def forward(self, context: torch.Tensor, residual: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        hidden = self.feed_forward(self.norm(self.dropout(self.output(context)) + residual))
        return -(F.logsigmoid((hidden * positive).sum(-1)) + F.logsigmoid(-(hidden * negative).sum(-1)))


# --------------------------------------------------------------------------------------------------
# tensors


def trim_padding(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Cut the leading columns that are padding (0) in every row of every tensor of the batch.

    Exact for SASRec (see :meth:`SASRec.encode`) and much cheaper: most histories are far shorter
    than ``max_len``. At least one column is kept.
    """
    used = torch.zeros(batch[0].shape[-1], dtype=torch.bool, device=batch[0].device)
    for t in batch:
        used |= (t != 0).any(0)
    nonzero = torch.nonzero(used)
    first = int(nonzero[0]) if nonzero.numel() else batch[0].shape[-1] - 1
    return tuple(t[:, first:] for t in batch)


def length_order(inputs: torch.Tensor) -> torch.Tensor:
    """Row indices sorted by history length (stable), so chunks of rows pad little."""
    return torch.argsort((inputs > 0).sum(1), stable=True)


def right_align(seqs: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """(n, max_len) the last ``max_len`` items of each sequence, right-aligned, 0 = padding."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = list(seq)[-max_len:]
        if tail:
            out[row, max_len - len(tail):] = tail
    return out


def sample_negatives(targets: np.ndarray, exclude: Sequence[Sequence[int]], n_items: int,
                     rng: np.random.Generator, max_rounds: int = 1000) -> np.ndarray:
    """One negative item per target position, uniform over items the user never interacted with.

    Args:
        targets: (U, T) item ids, 0 = no target (gets negative 0).
        exclude: (U,) the items each user interacted with (never drawn as their negatives).
    Returns:
        (U, T) negatives in 1..n_items.
    """
    u_count, t_len = targets.shape
    stride = n_items + 1
    seen = np.unique(np.fromiter((u * stride + i for u, items in enumerate(exclude) for i in items), dtype=np.int64))
    for u, items in enumerate(exclude):
        if len(set(items)) >= n_items:
            raise ValueError(f"user at position {u} interacted with every item; no negative can be drawn")
    negatives = np.zeros_like(targets)
    todo = np.flatnonzero(targets.reshape(-1) > 0)
    for _ in range(max_rounds):
        if todo.size == 0:
            return negatives
        draw = rng.integers(1, n_items + 1, size=todo.size)
        users = todo // t_len
        keys = users * stride + draw
        pos = np.searchsorted(seen, keys)
        clash = (pos < seen.size) & (seen[np.minimum(pos, seen.size - 1)] == keys)
        negatives.reshape(-1)[todo[~clash]] = draw[~clash]
        todo = todo[clash]
    raise ValueError("could not draw negatives: users interacted with almost every item")


@dataclass
class SequenceTensors:
    """Right-aligned (U, T) tensors of one split.

    Attributes:
        inputs: histories fed to the model.
        positives: next items (training) — zero rows for evaluation splits.
        negatives: one fixed sampled negative per positive.
        answers: (U, A) items to recommend (evaluation), 0-padded.
        exclude: (U, E) items already seen, never recommended (evaluation), 0-padded.
        users: (U,) user positions in the RecData.
    """

    inputs: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    users: torch.Tensor
    answers: torch.Tensor | None = None
    exclude: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def loss_batch(self, index: Any = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.positives[index], self.negatives[index]

    def to(self, device: Any) -> "SequenceTensors":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return SequenceTensors(**moved)


def _pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max([len(r) for r in rows] + [1])
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def training_tensors(train: Sequence[Sequence[int]], n_items: int, max_len: int = 50,
                     seed: int = 0) -> SequenceTensors:
    """DEALRec's training rows: inputs ``train[:-2]``, targets ``train[1:-1]``, fixed seeded negatives."""
    inputs = right_align([s[:-2] for s in train], max_len)
    positives = right_align([s[1:-1] for s in train], max_len)
    negatives = sample_negatives(positives, train, n_items, np.random.default_rng(seed))
    return SequenceTensors(torch.from_numpy(inputs), torch.from_numpy(positives), torch.from_numpy(negatives),
                           users=torch.arange(len(train)))


def evaluation_tensors(histories: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                       max_len: int = 50) -> SequenceTensors:
    """Users with a history and an answer: input = history (last ``max_len``), answers = the items to
    find, exclude = the history's items (DEALRec masks them out of the ranking)."""
    keep = [u for u, (h, a) in enumerate(zip(histories, answers)) if h and a]
    inputs = torch.from_numpy(right_align([histories[u] for u in keep], max_len))
    zeros = torch.zeros_like(inputs)
    return SequenceTensors(inputs, zeros, zeros, users=torch.tensor(keep, dtype=torch.long),
                           answers=_pad([sorted(set(answers[u])) for u in keep]),
                           exclude=_pad([sorted(set(histories[u])) for u in keep]))


# --------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(model: SASRec, data: SequenceTensors, ks: Sequence[int] = (10, 20),
             batch_size: int = 1024) -> dict[str, float]:
    """Recall@K and NDCG@K over all items (seen items excluded), averaged over users.

    NDCG's ideal DCG counts min(|answers|, K) hits, as DEALRec's ``computeTopNAccuracy``.
    """
    if len(data) == 0:
        return {**{f"recall@{k}": 0.0 for k in ks}, **{f"ndcg@{k}": 0.0 for k in ks}}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks}
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, device=device, dtype=torch.float64))  # (K,)
    order = length_order(data.inputs)  # sums over users do not depend on the order
    for start in range(0, len(data), batch_size):
        sl = order[start : start + batch_size]
        inputs, answers, exclude = data.inputs[sl].to(device), data.answers[sl].to(device), data.exclude[sl].to(device)
        (inputs,) = trim_padding((inputs,))
        scores = model.score_items(inputs)  # (B, n_items + 1)
        scores[:, 0] = -torch.inf
        scores.scatter_(1, exclude, -torch.inf)
        top = scores.topk(min(kmax, scores.shape[1] - 1), dim=1).indices  # (B, K)
        hit = ((top[:, :, None] == answers[:, None, :]) & (answers[:, None, :] > 0)).any(-1).double()  # (B, K)
        n_answers = (answers > 0).sum(1).double()  # (B,)
        for k in ks:
            h = hit[:, :k]
            sums[f"recall@{k}"] += (h.sum(1) / n_answers).sum().item()
            dcg = (h * discounts[: h.shape[1]]).sum(1)
            ideal_hits = torch.clamp(n_answers, max=k).long()
            idcg = torch.cumsum(discounts[:k], 0)[ideal_hits - 1]
            sums[f"ndcg@{k}"] += (dcg / idcg).sum().item()
    model.train(was_training)
    return {k: v / len(data) for k, v in sums.items()}


# --------------------------------------------------------------------------------------------------
# training


@dataclass
class TrainSettings:
    """Training settings; defaults are DEALRec's except early stopping and the best checkpoint."""

    epochs: int = 200
    batch_size: int = 500
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 1  # epochs between validations
    patience: int = 10  # validations without improvement before stopping (0: never stop early)
    metric_k: int = 20  # best checkpoint by Recall@K, ties broken by NDCG@K
    early_epoch: int = 10  # snapshot "early in training" for GraNd / EL2N
    length_buckets: int = 50  # ours: batches drawn from pools of this many batches sorted by length,
    # so each batch pads little (several times faster; 0 = plain random batches as the code)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "metric_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"`lr` must be positive, got {self.lr}")
        if self.patience < 0 or self.early_epoch < 0 or self.length_buckets < 0:
            raise ValueError("`patience`, `early_epoch` and `length_buckets` must be non-negative")


@dataclass
class TrainedSurrogate:
    """A trained SASRec and how it got there.

    Attributes:
        model: the best checkpoint (by validation), in eval mode.
        early_state: the state dict after ``early_epoch`` epochs (for GraNd / EL2N).
        best_epoch: the epoch (1-based) of the best checkpoint; 0 = untrained.
        history: one dict per validation: epoch, loss, recall@K, ndcg@K.
    """

    model: SASRec
    config: SASRecConfig
    settings: TrainSettings
    best_epoch: int
    best_metrics: dict[str, float]
    early_state: dict[str, torch.Tensor]
    early_epoch: int
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    test_metrics: dict[str, float] = field(default_factory=dict)

    def early_model(self) -> SASRec:
        model = SASRec(self.config).to(next(self.model.parameters()).device)
        model.load_state_dict(self.early_state)
        return model.eval()

    def info(self) -> dict:
        return {"best_epoch": self.best_epoch, "epochs_run": self.epochs_run, "early_epoch": self.early_epoch,
                "best_valid": self.best_metrics, "test": self.test_metrics, "seconds": round(self.seconds, 3),
                "config": asdict(self.config), "settings": asdict(self.settings)}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _epoch_batches(rows: torch.Tensor, lengths: torch.Tensor, batch_size: int, buckets: int,
                   generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of ``rows``: shuffled; with ``buckets``, each run of ``buckets`` batches is
    sorted by length before it is cut, and the batches are shuffled again."""
    order = rows[torch.randperm(rows.numel(), generator=generator)]
    if not buckets:
        return [order[i : i + batch_size] for i in range(0, order.numel(), batch_size)]
    span = batch_size * buckets
    batches = []
    for start in range(0, order.numel(), span):
        part = order[start : start + span]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part[i : i + batch_size] for i in range(0, part.numel(), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train_sasrec(
    train: SequenceTensors,
    valid: SequenceTensors,
    config: SASRecConfig,
    settings: TrainSettings | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    test: SequenceTensors | None = None,
) -> TrainedSurrogate:
    """Train with Adam on the position-weighted BCE (DEALRec's batch loss), validating every
    ``eval_every`` epochs; keep the best checkpoint; stop after ``patience`` validations without
    improvement. Every random choice (init, shuffling, dropout) follows ``settings.seed``.
    """
    from tqdm.auto import tqdm

    s = settings or TrainSettings()
    device = torch.device(device)
    t0 = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(s.seed)
        model = SASRec(config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(0.9, 0.999), weight_decay=s.weight_decay)
        generator = torch.Generator().manual_seed(s.seed)
        has_target = (train.positives > 0).any(1)
        rows = torch.nonzero(has_target).squeeze(1)  # sequences without a target add nothing
        inputs, positives, negatives = (t.to(device) for t in train.loss_batch())
        best_key, best_state, best_epoch, best_metrics = None, _cpu_state(model), 0, {}
        early_state, early_epoch = (_cpu_state(model), 0)
        history, stale, epoch = [], 0, 0
        bar = tqdm(range(1, s.epochs + 1), desc="surrogate (SASRec)", unit="epoch", disable=not progress)
        lengths = (train.positives > 0).sum(1)
        for epoch in bar:
            model.train()
            total, weight = 0.0, 0.0
            for idx in _epoch_batches(rows, lengths, s.batch_size, s.length_buckets, generator):
                idx = idx.to(device)
                batch = trim_padding((inputs[idx], positives[idx], negatives[idx]))
                losses = model(*batch)  # (B,)
                counts = (batch[1] > 0).sum(1).to(losses.dtype)
                loss = (losses * counts).sum() / counts.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * counts.sum().item()
                weight += counts.sum().item()
            if epoch == s.early_epoch:
                early_state, early_epoch = _cpu_state(model), epoch
            if epoch % s.eval_every and epoch != s.epochs:
                continue
            metrics = evaluate(model, valid, ks=(s.metric_k,))
            key = (metrics[f"recall@{s.metric_k}"], metrics[f"ndcg@{s.metric_k}"])
            history.append({"epoch": epoch, "loss": total / max(weight, 1.0), **metrics})
            bar.set_postfix(loss=f"{total / max(weight, 1.0):.4f}", recall=f"{key[0]:.4f}", ndcg=f"{key[1]:.4f}")
            if best_key is None or key > best_key:
                best_key, best_state, best_epoch, best_metrics, stale = key, _cpu_state(model), epoch, metrics, 0
            else:
                stale += 1
                if s.patience and stale >= s.patience:
                    log.info("surrogate: early stop at epoch %d (best epoch %d)", epoch, best_epoch)
                    break
        bar.close()
    if early_epoch == 0 and s.early_epoch > 0:  # training ended before the early epoch
        early_state, early_epoch = _cpu_state(model), epoch
    model.load_state_dict(best_state)
    model.eval()
    result = TrainedSurrogate(model=model, config=config, settings=s, best_epoch=best_epoch,
                              best_metrics=best_metrics, early_state=early_state, early_epoch=early_epoch,
                              history=history, epochs_run=epoch, seconds=time.perf_counter() - t0)
    if test is not None and len(test):
        result.test_metrics = evaluate(model, test, ks=(10, s.metric_k) if s.metric_k != 10 else (10,))
    return result


def save_surrogate(trained: TrainedSurrogate, path: Any) -> None:
    """Save weights, early snapshot and metadata (plain tensors and dicts) atomically."""
    from tunesift.io.atomic import atomic_write

    payload = {"config": asdict(trained.config), "settings": asdict(trained.settings),
               "state": _cpu_state(trained.model), "early_state": trained.early_state,
               "best_epoch": trained.best_epoch, "best_metrics": trained.best_metrics,
               "early_epoch": trained.early_epoch, "history": trained.history,
               "epochs_run": trained.epochs_run, "seconds": trained.seconds, "test_metrics": trained.test_metrics}
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_surrogate(path: Any, device: str | torch.device = "cpu") -> TrainedSurrogate:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    config = SASRecConfig(**payload["config"])
    model = SASRec(config)
    model.load_state_dict(payload["state"])
    model.to(device).eval()
    return TrainedSurrogate(model=model, config=config, settings=TrainSettings(**payload["settings"]),
                            best_epoch=payload["best_epoch"], best_metrics=payload["best_metrics"],
                            early_state=payload["early_state"], early_epoch=payload["early_epoch"],
                            history=payload["history"], epochs_run=payload["epochs_run"],
                            seconds=payload["seconds"], test_metrics=payload.get("test_metrics", {}))


def copy_model(model: SASRec) -> SASRec:
    return copy.deepcopy(model)
