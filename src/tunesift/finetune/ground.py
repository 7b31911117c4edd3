"""Grounding generated titles to catalogue items (BIGRec), and the ranking metrics that follow.

BIGRec maps a free-text generation to real items by embedding the generation and every item title with
the BASE language model (no adapters): the embedding of a text is the last layer's hidden state at its
last token. All items are then ranked by L2 distance to the generation's embedding, and Recall@K /
NDCG@K are computed against the user's test items (:mod:`tunesift.finetune.metrics`).

Item embeddings depend only on the base model and the titles, so they are computed once and cached on
disk (keyed by a fingerprint of the base weights and the exact titles).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tunesift.embed import texts_key
from tunesift.finetune.lora import forward_hidden_states
from tunesift.finetune.metrics import RankingMetrics, metrics_from_ranks, top_k_from_distances, truth_ranks_from_distances
from tunesift.io.atomic import atomic_write


def base_model(model):
    """A context in which ``model`` runs as its base model: PEFT adapters disabled (no-op otherwise)."""
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def model_fingerprint(model) -> str:
    """A short hash of the base model: its config and a strided sample of every non-adapter weight.

    Used as the cache key of item embeddings, so two different base models never share a cache entry.
    """
    import torch

    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                continue
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(name.replace("base_model.model.", "").encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def last_token_states(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 512,
                      progress: bool = False, desc: str = "embedding") -> np.ndarray:
    """Last-layer hidden state at the last token of each text.

    Texts are left-padded in length-sorted batches, with position ids counted from each text's first
    real token, so a text's embedding does not depend on its batch. A text with no tokens (an empty
    generation) is embedded as the end-of-sequence token alone. Texts longer than ``max_length`` tokens
    keep their last ``max_length`` tokens.

    Args:
        model: a causal LM (use :func:`base_model` to switch PEFT adapters off).
        texts: (n,) strings.

    Returns:
        (n, hidden_size) float32 array.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    filler = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else filler
    encoded = [ids[-max_length:] or [filler] for ids in tokenizer(list(texts))["input_ids"]]
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")
    out = None
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(encoded), desc=desc, unit="text", disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    n = len(encoded[i])
                    ids[row, width - n:] = torch.tensor(encoded[i])
                    mask[row, width - n:] = 1
                positions = (mask.cumsum(1) - 1).clamp_min(0)  # (B, T), 0 at each text's first token
                result = forward_hidden_states(model, input_ids=ids.to(device), attention_mask=mask.to(device),
                                               position_ids=positions.to(device))
                states = result.hidden_states[-1][:, -1, :].float().cpu().numpy()  # (B, d)
                if out is None:
                    out = np.empty((len(encoded), states.shape[1]), dtype=np.float32)
                out[idx] = states
                bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    if out is None:
        raise ValueError("texts is empty: nothing to embed")
    return out


def item_states(model, tokenizer, titles: Sequence[str], cache_dir: str | os.PathLike | None = None,
                batch_size: int = 32, max_length: int = 512, progress: bool = True) -> np.ndarray:
    """Base-model last-token states of every item title, read from / written to ``cache_dir``.

    Returns:
        (n_items, hidden_size) float32 array, row i for ``titles[i]``.
    """
    with base_model(model):
        key = None
        if cache_dir is not None:
            key = texts_key(f"last-token:{model_fingerprint(model)}:{max_length}", titles)
            path = Path(cache_dir) / "item_states" / f"{key}.npy"
            if path.exists():
                arr = np.load(path, allow_pickle=False)
                if arr.shape[0] == len(titles):
                    return arr
        arr = last_token_states(model, tokenizer, titles, batch_size, max_length, progress, desc="item titles")
    if key is not None:
        with atomic_write(path, "wb") as f:
            np.save(f, arr)
    return arr


@dataclass
class Grounding:
    """Items ranked for each generation, and the metrics against the ground truth.

    Attributes:
        metrics: Recall@K and NDCG@K averaged over users.
        top_items: (n_users, max K) item columns ranked first (ties by column).
        truth_ranks: per user, 0-based ranks of their ground-truth items.
    """

    metrics: RankingMetrics
    top_items: np.ndarray
    truth_ranks: list[np.ndarray] = field(repr=False, default_factory=list)


def ground_and_score(generated_states, item_embeddings, truth: Sequence[Sequence[int]], ks: Sequence[int],
                     chunk_size: int = 256, ties: str = "index") -> Grounding:
    """Rank all items by L2 distance to each generation's state and score the ranking.

    Args:
        generated_states: (n_users, d) embeddings of the generations.
        item_embeddings: (n_items, d) embeddings of the item titles (same model).
        truth: per user, the item columns of their ground-truth items.
        chunk_size: users per distance block ((chunk_size, n_items) floats at a time).
        ties: tie rule of :func:`tunesift.finetune.metrics.truth_ranks_from_distances`.
    """
    import torch

    gen = torch.as_tensor(np.asarray(generated_states, dtype=np.float32))
    items = torch.as_tensor(np.asarray(item_embeddings, dtype=np.float32))
    if gen.ndim != 2 or items.ndim != 2 or gen.shape[1] != items.shape[1]:
        raise ValueError(f"generated_states {tuple(gen.shape)} and item_embeddings {tuple(items.shape)} "
                         "must be (n_users, d) and (n_items, d) with the same d")
    if len(truth) != gen.shape[0]:
        raise ValueError(f"truth has {len(truth)} users but generated_states has {gen.shape[0]} rows")
    kmax = max(int(k) for k in ks)
    ranks: list[np.ndarray] = []
    tops = []
    for start in range(0, gen.shape[0], chunk_size):
        dist = torch.cdist(gen[start : start + chunk_size], items)  # (c, n_items)
        ranks.extend(truth_ranks_from_distances(dist, truth[start : start + chunk_size], ties))
        tops.append(top_k_from_distances(dist, kmax).numpy())
    return Grounding(metrics=metrics_from_ranks(ranks, ks), top_items=np.concatenate(tops), truth_ranks=ranks)


def top_items_by_distance(generated_states, item_embeddings, k: int, chunk_size: int = 256) -> np.ndarray:
    """(n_users, min(k, n_items)) 0-based item columns nearest (L2) to each generation, ties by column.

    The same order as :func:`ground_and_score`'s ``top_items``, without scoring against a ground truth.
    """
    import torch

    gen = torch.as_tensor(np.asarray(generated_states, dtype=np.float32))
    items = torch.as_tensor(np.asarray(item_embeddings, dtype=np.float32))
    if gen.ndim != 2 or items.ndim != 2 or gen.shape[1] != items.shape[1]:
        raise ValueError(f"generated_states {tuple(gen.shape)} and item_embeddings {tuple(items.shape)} "
                         "must be (n_users, d) and (n_items, d) with the same d")
    tops = [top_k_from_distances(torch.cdist(gen[s : s + chunk_size], items), k).numpy()
            for s in range(0, gen.shape[0], chunk_size)]
    return np.concatenate(tops) if tops else np.zeros((0, min(k, items.shape[0])), dtype=np.int64)
