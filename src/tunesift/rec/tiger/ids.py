"""TIGER's semantic IDs: item text -> sentence embedding -> RQ-VAE codes -> unique token sequences.

Rajput et al. (NeurIPS 2023, §3.1) embed each item's content with a sentence encoder, train an RQ-VAE
on the embeddings and read one code per level; items whose codes collide get one more code that tells
them apart. Here the content text is the title and the categories (:meth:`RecData.item_texts`), the
encoder the packaged all-MiniLM-L6-v2 (or a local encoder, or precomputed embeddings), and the RQ-VAE
:mod:`tunesift.rec.tiger.rqvae`. Both the embeddings and the codes are cached on disk, keyed by the
encoder, the exact texts and the RQ-VAE settings (its own seed, not the run's: every method and seed of
a bench shares one set of IDs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesift.io.atomic import atomic_write, write_json
from tunesift.rec.tiger.model import TigerVocab

log = logging.getLogger("tunesift")


@dataclass
class SemanticIds:
    """Every item's semantic ID.

    Attributes:
        codes: (n_items + 1, L) per-level code indices (row 0, the padding item, is all zeros); the
            last level tells apart items whose first L - 1 codes collide.
        vocab: the token layout (levels sized by the codebooks and the largest collision group).
        info: codebook usage per level, collision rate, dead-code re-seeds, times (for manifests).
    """

    codes: np.ndarray
    vocab: TigerVocab
    info: dict = field(default_factory=dict)

    @property
    def tokens(self) -> np.ndarray:
        """(n_items + 1, L) token ids (row 0 unused)."""
        out = self.vocab.item_tokens(self.codes)
        out[0] = 0
        return out

    @property
    def n_items(self) -> int:
        return self.codes.shape[0] - 1


def item_embeddings(data: Any, embedder: str | None, precomputed: str | None, cache_dir: str | os.PathLike | None,
                    device: str, progress: bool) -> tuple[np.ndarray, str]:
    """(n_items, d) embeddings of the items' texts and where they came from."""
    from tunesift.embed import HFEncoderEmbedder, cached_embed, load_precomputed

    texts = data.item_texts()
    if precomputed is not None:
        return load_precomputed(precomputed, len(texts), "item"), str(Path(precomputed).resolve())
    model = HFEncoderEmbedder(embedder, device=device, progress=progress)
    return cached_embed(model, texts, cache_dir), model.model_id


def build_semantic_ids(data: Any, rqvae: Any, n_user_tokens: int, embedder: str | None = None,
                       precomputed: str | None = None, cache_dir: str | os.PathLike | None = None,
                       device: str = "cpu", progress: bool = True) -> SemanticIds:
    """Embed, quantise and disambiguate every item of ``data`` (cached in ``cache_dir/tiger-ids``).

    Args:
        rqvae: :class:`tunesift.rec.tiger.rqvae.RQVAESettings`.
        n_user_tokens: buckets of the user-id hashing trick (part of the vocabulary).
    """
    from tunesift.embed import texts_key
    from tunesift.rec.tiger.rqvae import disambiguate, train_rqvae

    t0 = time.perf_counter()
    emb, source = item_embeddings(data, embedder, precomputed, cache_dir, device, progress)
    t_embed = time.perf_counter() - t0
    settings = {**asdict(rqvae), "hidden": list(rqvae.hidden)}
    key = texts_key(json.dumps({"embeddings": source, "rqvae": settings}, sort_keys=True), data.item_texts())
    path = Path(cache_dir) / "tiger-ids" / f"{key}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            codes = z["codes"]
        info = json.loads(path.with_suffix(".json").read_text())
        log.info("semantic IDs: loaded from %s", path)
        return SemanticIds(codes=codes, vocab=_vocab(codes, rqvae, n_user_tokens), info={**info, "cached": True})
    result = train_rqvae(emb, rqvae, device=device, progress=progress)
    unique = disambiguate(result.codes)
    codes = np.concatenate([np.zeros((1, unique.codes.shape[1]), dtype=np.int64), unique.codes])
    info = {"embeddings": source, "embedding_dim": int(emb.shape[1]), "embed_s": round(t_embed, 2),
            **result.info(), "rqvae_s": round(result.seconds, 2)}
    log.info("semantic IDs: %d items, codebook usage %s, collision rate %.4f (largest group %d), %.0f s",
             data.n_items, ", ".join(f"{u:.2f}" for u in result.usage), unique.collision_rate,
             unique.max_group_size, time.perf_counter() - t0)
    if path is not None:
        with atomic_write(path, "wb") as f:
            np.savez(f, codes=codes)
        write_json(path.with_suffix(".json"), info)
    return SemanticIds(codes=codes, vocab=_vocab(codes, rqvae, n_user_tokens), info={**info, "cached": False})


def _vocab(codes: np.ndarray, rqvae: Any, n_user_tokens: int) -> TigerVocab:
    last = int(codes[1:, -1].max()) + 1 if codes.shape[0] > 1 else 1
    return TigerVocab(level_sizes=(rqvae.codebook_size,) * rqvae.levels + (last,), n_user_tokens=n_user_tokens)
