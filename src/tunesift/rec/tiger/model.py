"""TIGER's vocabulary, its encoder-decoder and its (history -> next item) samples.

Rajput et al., NeurIPS 2023, §3.2: a user's history becomes the semantic-ID tokens of its items
(preceded by one user token, the user id hashed into ``n_user_tokens`` buckets); the model generates the
next item's semantic ID, one token per level. The vocabulary (Rajput et al.: 1024 semantic-ID tokens +
2000 user tokens) is laid out as::

    0 pad (also the decoder's start token), 1 end of input,
    level 0 codes, level 1 codes, ..., level L-1 codes (each level its own range),
    user tokens

so that a token says which level it belongs to. The model is a ``transformers`` T5 encoder-decoder
built from a config (the paper's: 4 + 4 layers, d_model 128, 6 heads of 64, MLP 1024, dropout 0.1),
trained from scratch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

PAD = 0
EOS = 1
FIRST_CODE = 2


@dataclass(frozen=True)
class TigerVocab:
    """Token ids of TIGER's vocabulary (see the module docstring).

    Attributes:
        level_sizes: codes per level, e.g. (256, 256, 256, 7): three RQ-VAE levels and the collision level.
        n_user_tokens: buckets of the user-id hashing trick (0: no user token).
    """

    level_sizes: tuple[int, ...]
    n_user_tokens: int

    @property
    def offsets(self) -> tuple[int, ...]:
        """First token id of each level."""
        return tuple(FIRST_CODE + int(s) for s in np.cumsum((0, *self.level_sizes[:-1])))

    @property
    def first_user_token(self) -> int:
        return FIRST_CODE + int(sum(self.level_sizes))

    @property
    def size(self) -> int:
        return self.first_user_token + self.n_user_tokens

    def item_tokens(self, codes: np.ndarray) -> np.ndarray:
        """(n, L) per-level code indices -> (n, L) token ids."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(self.level_sizes):
            raise ValueError(f"codes must be (n, {len(self.level_sizes)}), got shape {codes.shape}")
        if (codes < 0).any() or (codes >= np.asarray(self.level_sizes)).any():
            raise ValueError("a code is outside its level's range")
        return codes + np.asarray(self.offsets, dtype=np.int64)

    def user_token(self, user: Any) -> int | None:
        """The user's hashed token (stable across runs and machines: sha256 of ``str(user)``), or None."""
        if self.n_user_tokens == 0:
            return None
        digest = hashlib.sha256(str(user).encode()).digest()
        return self.first_user_token + int.from_bytes(digest[:8], "little") % self.n_user_tokens


def history_tokens(item_tokens: np.ndarray, history: Sequence[int], max_items: int, user_token: int | None) -> list[int]:
    """The encoder input of one history: ``[user] + codes of the last max_items items + [EOS]``.

    Args:
        item_tokens: (n_items + 1, L) token ids of every item (row 0 unused).
        history: 1-based item ids, oldest first.
    """
    kept = list(history)[-max_items:] if max_items > 0 else []
    tokens = [user_token] if user_token is not None else []
    if kept:
        tokens += item_tokens[np.asarray(kept, dtype=np.int64)].reshape(-1).tolist()
    return tokens + [EOS]


@dataclass
class Pairs:
    """(history -> next item) samples, stored flat.

    Attributes:
        tokens: (total,) int32 encoder tokens of every sample, back to back.
        offsets: (n + 1,) sample i's tokens are ``tokens[offsets[i]:offsets[i + 1]]``.
        targets: (n,) the next item (1-based id) of each sample.
        owner: (n,) the position (in the list of users given) of the user each sample comes from.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    targets: np.ndarray
    owner: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.size)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, index: np.ndarray) -> "Pairs":
        index = np.asarray(index, dtype=np.int64)
        pieces = [self.tokens[self.offsets[i]:self.offsets[i + 1]] for i in index]
        lengths = np.array([p.size for p in pieces], dtype=np.int64)
        return Pairs(tokens=np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32),
                     offsets=np.concatenate([[0], np.cumsum(lengths)]), targets=self.targets[index],
                     owner=self.owner[index])


def make_pairs(item_tokens: np.ndarray, vocab: TigerVocab, histories: Sequence[Sequence[int]],
               targets: Sequence[Sequence[int]], users: Sequence[Any], max_items: int,
               expand: bool) -> Pairs:
    """Samples of several users.

    Args:
        histories: per user, the items before the targets (may be empty).
        targets: per user, the items to predict, in order.
        users: per user, its original id (for the user token).
        expand: every target becomes a sample whose history also holds the earlier targets (TIGER's
            training: each sequence expanded into (prefix -> next item) pairs); otherwise one sample per
            user, predicting its first target from ``histories`` alone (validation and test).
    """
    tokens, lengths, tgt, owner = [], [], [], []
    for k, (hist, tg, user) in enumerate(zip(histories, targets, users)):
        if not tg:
            continue
        ut = vocab.user_token(user)
        steps = range(len(tg)) if expand else range(1)
        for j in steps:
            seq = history_tokens(item_tokens, list(hist) + list(tg[:j]), max_items, ut)
            tokens.append(seq)
            lengths.append(len(seq))
            tgt.append(tg[j])
            owner.append(k)
    flat = np.fromiter((t for seq in tokens for t in seq), dtype=np.int32, count=int(sum(lengths)))
    return Pairs(tokens=flat, offsets=np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]),
                 targets=np.asarray(tgt, dtype=np.int64), owner=np.asarray(owner, dtype=np.int64))


def training_pairs(item_tokens: np.ndarray, vocab: TigerVocab, train: Sequence[Sequence[int]],
                   users: Sequence[Any], max_items: int) -> Pairs:
    """TIGER's training samples of users with training sequences ``train``: item j (j >= 1) predicted
    from items ``< j`` (the most recent ``max_items``); a single-item sequence gives none."""
    return make_pairs(item_tokens, vocab, [s[:1] for s in train], [s[1:] for s in train], users, max_items,
                      expand=True)


def pad_batch(pairs: Pairs, index: np.ndarray, item_tokens: np.ndarray):
    """Right-padded tensors of the samples ``index``: input_ids (B, T), attention_mask (B, T), labels (B, L)."""
    import torch

    lengths = pairs.lengths()[index]
    width = int(lengths.max()) if len(index) else 0
    ids = np.full((len(index), width), PAD, dtype=np.int64)
    for row, i in enumerate(index):
        seq = pairs.tokens[pairs.offsets[i]:pairs.offsets[i + 1]]
        ids[row, : seq.size] = seq
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    labels = item_tokens[pairs.targets[index]]
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels.astype(np.int64))


def build_t5(vocab_size: int, d_model: int, d_kv: int, num_heads: int, d_ff: int, encoder_layers: int,
             decoder_layers: int, dropout: float, seed: int, attention: str = "sdpa"):
    """A T5 encoder-decoder from a config, initialised from ``seed`` (the global RNG is left as it was).

    ``attention="eager"`` gives the same parameters (the implementation does not change them) with
    attention that ``torch.func.vmap`` can batch (the effort's fallback path).
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, num_heads=num_heads, d_ff=d_ff,
                      num_layers=encoder_layers, num_decoder_layers=decoder_layers, dropout_rate=dropout,
                      feed_forward_proj="relu", decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS,
                      use_cache=False)
    config._attn_implementation = attention
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    return model


def decoder_inputs(labels):
    """T5's decoder input for (B, L) labels: the start token, then the labels shifted right."""
    import torch

    start = torch.full_like(labels[:, :1], PAD)
    return torch.cat([start, labels[:, :-1]], dim=1)


def sample_losses(model, input_ids, attention_mask, labels):
    """(B,) each sample's mean token cross-entropy of its L label tokens (float32 log-softmax)."""
    import torch

    out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_inputs(labels))
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # (B, L, V)
    return -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)
