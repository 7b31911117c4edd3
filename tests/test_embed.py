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


# --- backends: float32 torch, bfloat16 autocast, and auto by the CPU's flags ---------------------------------------

TEXTS = [" ".join(f"w{(7 * i + j) % 40}" for j in range(3 + i % 9)) for i in range(40)]


def test_bf16_vectors_are_close_to_float32_and_have_their_own_cache_key(encoder, tmp_path):
    from tunesift.embed import HFEncoderEmbedder

    fp32 = HFEncoderEmbedder(str(encoder), device="cpu", progress=False, batch_size=8)
    bf16 = HFEncoderEmbedder(str(encoder), device="cpu", progress=False, batch_size=8, backend="torch-bf16")
    assert fp32.backend == "torch" and bf16.backend == "torch-bf16"
    # float32 torch keeps the key it had before backends existed: existing caches stay valid
    assert fp32.model_id == f"hf-mean:{encoder.name}:256:norm"
    assert bf16.model_id == f"hf-mean:{encoder.name}:256:norm:torch-bf16"
    a, b = fp32.embed(TEXTS), bf16.embed(TEXTS)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)
    # cached side by side: a float32 embedding is never served for a bf16 request, nor the other way round
    ca = cached_embed(fp32, TEXTS, tmp_path)
    cb = cached_embed(bf16, TEXTS, tmp_path)
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2
    assert np.array_equal(ca, a) and np.array_equal(cb, b)


def test_auto_resolves_by_the_cpu_flags(monkeypatch):
    import tunesift.embed as embed

    monkeypatch.setattr(embed, "cpu_flags", lambda: {"fpu", "avx2", "avx512f", "avx512_bf16"})
    assert embed.resolve_embed_backend("auto", "cpu") == "torch-bf16"
    assert embed.resolve_embed_backend("auto", "cuda") == "torch"  # the GPU path stays as it was
    assert embed.resolve_embed_backend("auto", "cuda:1") == "torch"
    assert embed.resolve_embed_backend("torch", "cpu") == "torch"
    monkeypatch.setattr(embed, "cpu_flags", lambda: {"fpu", "amx_bf16", "amx_tile"})
    assert embed.resolve_embed_backend("auto", "cpu") == "torch-bf16"
    monkeypatch.setattr(embed, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    assert embed.resolve_embed_backend("auto", "cpu") == "torch"
    assert embed.resolve_embed_backend("torch-bf16", "cpu") == "torch-bf16"  # asked for, it is used
    with pytest.raises(ValueError, match="embed backend must be one of torch, torch-bf16, auto"):
        embed.resolve_embed_backend("onnx", "cpu")


def test_without_cpuinfo_flags_auto_asks_torch(monkeypatch):
    import torch

    import tunesift.embed as embed

    monkeypatch.setattr(embed, "cpu_flags", lambda: set())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert embed.resolve_embed_backend("auto", "cpu") == "torch-bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert embed.resolve_embed_backend("auto", "cpu") == "torch"


def _text_sets(tmp_path):
    import json

    from tunesift.io.tables import read_text_set

    with open(tmp_path / "pool.jsonl", "w") as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps({"id": f"p{i}", "text": t}) + "\n")
    with open(tmp_path / "target.jsonl", "w") as f:
        for t in TEXTS[:6]:
            f.write(json.dumps({"text": t}) + "\n")
    return (read_text_set(tmp_path / "pool.jsonl", "text", "id", name="pool"),
            read_text_set(tmp_path / "target.jsonl", "text", None, name="target"))


@pytest.mark.parametrize("flags, backend, resolved", [
    ({"avx512_bf16"}, "auto", "torch-bf16"), ({"avx2"}, "auto", "torch"), ({"avx512_bf16"}, "torch", "torch")])
def test_the_manifest_records_the_resolved_backend(encoder, tmp_path, monkeypatch, flags, backend, resolved):
    import tunesift.embed as embed
    from tunesift.pool import select_from_pool

    monkeypatch.setattr(embed, "cpu_flags", lambda: flags)
    pool, target = _text_sets(tmp_path)
    result = select_from_pool(pool, target, 4, method="knn", embedder=str(encoder), device="cpu", progress=False,
                              cache_dir=tmp_path / "cache", embed_backend=backend)
    for role in ("pool", "target"):
        assert result.manifest["embeddings"][role]["backend"] == resolved
    suffix = "" if resolved == "torch" else f":{resolved}"
    assert result.manifest["embeddings"]["pool"]["source"] == f"hf-mean:{encoder.name}:256:norm{suffix}"


def test_the_cli_takes_the_backend_and_refuses_another(encoder, tmp_path, monkeypatch):
    import json

    import tunesift.embed as embed
    from tunesift.cli import main

    monkeypatch.setattr(embed, "cpu_flags", lambda: {"avx512_bf16"})
    _text_sets(tmp_path)
    common = ["gotd", "--pool", str(tmp_path / "pool.jsonl"), "--target", str(tmp_path / "target.jsonl"),
              "--budget", "4", "--id-field", "id", "--embedder", str(encoder), "--device", "cpu", "--no-progress",
              "--cache-dir", "none", "--method", "knn"]
    for given, resolved in ((None, "torch-bf16"), ("torch", "torch"), ("torch-bf16", "torch-bf16")):
        out = tmp_path / f"out-{given}"
        assert main(common + ["--out", str(out)] + ([] if given is None else ["--embed-backend", given])) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["embeddings"]["pool"]["backend"] == resolved
    with pytest.raises(SystemExit):
        main(common + ["--out", str(tmp_path / "bad"), "--embed-backend", "onnx-int8"])
