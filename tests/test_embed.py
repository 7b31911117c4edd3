"""The embedding cache: chunks saved as they finish, resumed after a crash, the result memory-mapped."""

import numpy as np
import pytest

from tunesift.embed import cached_embed, load_precomputed


class CountingEmbedder:
    """A deterministic embedder that records the texts it is asked for and can fail on a call."""

    model_id = "counting:v1"

    def __init__(self, fail_on_call=None):
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def embed(self, texts):
        self.calls.append(list(texts))
        if self.fail_on_call == len(self.calls):
            raise KeyboardInterrupt  # a crash in the middle of the pool
        return np.asarray([[len(t), sum(map(ord, t)) % 97, i % 5] for i, t in enumerate(texts)], dtype=np.float32)


def test_a_crashed_chunked_embedding_resumes_at_the_first_unfinished_chunk(tmp_path):
    texts = [f"text number {i}" for i in range(23)]
    whole = CountingEmbedder().embed(texts[:10])  # row i % 5 depends on the position in the call
    with pytest.raises(KeyboardInterrupt):
        cached_embed(CountingEmbedder(fail_on_call=3), texts, tmp_path, chunk_rows=10)
    parts = list((tmp_path / "embeddings").glob("*.chunks-10/*.npy"))
    assert sorted(p.name for p in parts) == ["00000.npy", "00001.npy"]  # two chunks were saved
    again = CountingEmbedder()
    arr = cached_embed(again, texts, tmp_path, chunk_rows=10)
    assert again.calls == [texts[20:]]  # only the third chunk was embedded again
    clean = cached_embed(CountingEmbedder(), texts, tmp_path / "clean", chunk_rows=10)
    assert np.array_equal(arr, clean) and arr.dtype == np.float32 and arr.shape == (23, 3)
    assert np.array_equal(arr[:10], whole)
    assert isinstance(arr, np.memmap) and arr.mode == "r"  # opened memory-mapped, read-only
    assert not list((tmp_path / "embeddings").glob("*.chunks-*"))  # the chunks were joined and removed
    assert not list((tmp_path / "embeddings").glob(".*.tmp"))
    cached = CountingEmbedder()
    assert np.array_equal(cached_embed(cached, texts, tmp_path, chunk_rows=10), arr) and cached.calls == []


def test_a_small_input_is_one_file_as_before_and_no_cache_is_in_memory(tmp_path):
    texts = ["a", "bb", "ccc"]
    arr = cached_embed(CountingEmbedder(), texts, tmp_path, chunk_rows=10)
    files = list((tmp_path / "embeddings").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and isinstance(arr, np.memmap)
    plain = cached_embed(CountingEmbedder(), texts, None)
    assert not isinstance(plain, np.memmap) and np.array_equal(plain, arr)
    with pytest.raises(ValueError, match="chunk_rows must be at least 1"):
        cached_embed(CountingEmbedder(), texts, tmp_path, chunk_rows=0)


def test_precomputed_float32_stays_memory_mapped_and_bad_rows_are_named(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    arr = load_precomputed(tmp_path / "x.npy", 4, "pool")
    assert isinstance(arr, np.memmap) and np.array_equal(arr, x)
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    arr64 = load_precomputed(tmp_path / "x64.npy", 4, "pool")
    assert arr64.dtype == np.float32 and not isinstance(arr64, np.memmap)
    x[2, 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(ValueError, match="pool embedding row 2 has NaN or inf"):
        load_precomputed(tmp_path / "bad.npy", 4, "pool")
