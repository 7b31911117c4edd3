"""A killed embedding keeps its work: the batches done are saved about once a minute within a chunk, and the
resumed chunk computes the rest exactly as an uninterrupted run would (the same bytes)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

TEXTS = [" ".join(f"w{(11 * i + j) % 40}" for j in range(1 + i % 13)) for i in range(40)]


class Stop(Exception):
    pass


def test_a_chunk_interrupted_after_a_checkpoint_resumes_there_to_the_same_bytes(encoder, tmp_path, monkeypatch, caplog):
    import tunesift.embed as embed

    clean = embed.HFEncoderEmbedder(str(encoder), device="cpu", batch_size=8, progress=False).embed(TEXTS)
    calls = []

    def stop_at_second(name):
        calls.append(name)
        if len(calls) == 2:
            raise Stop  # killed right after the 2nd save (16 of 40 texts)

    monkeypatch.setattr(embed, "fault_point", stop_at_second)
    ckpt = tmp_path / "chunk.partial.npz"
    e = embed.HFEncoderEmbedder(str(encoder), device="cpu", batch_size=8, progress=False)
    with pytest.raises(Stop):
        e.embed(TEXTS, checkpoint=ckpt, every_s=0)
    with np.load(ckpt) as z:
        assert int(z["done"]) == 16 and z["rows"].shape == (16, 16)
    monkeypatch.setattr(embed, "fault_point", lambda name: None)
    model = e._load()
    seen = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape[0]),
                                       with_kwargs=True)
    caplog.set_level("INFO", logger="tunesift")
    again = e.embed(TEXTS, checkpoint=ckpt, every_s=3600)
    hook.remove()
    assert sum(seen) == 24  # only the 3 batches after the checkpoint ran
    assert "16 of 40 texts of the chunk already saved" in caplog.text
    assert np.array_equal(again, clean) and not ckpt.exists()
    # a checkpoint of other batches (another batch size) is not used
    monkeypatch.setattr(embed, "fault_point", lambda name: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        e.embed(TEXTS, checkpoint=ckpt, every_s=0)  # a checkpoint of batches of 8
    monkeypatch.setattr(embed, "fault_point", lambda name: None)
    other = embed.HFEncoderEmbedder(str(encoder), device="cpu", batch_size=5, progress=False)
    assert np.array_equal(other.embed(TEXTS, checkpoint=ckpt), other.embed(TEXTS)) and not ckpt.exists()


def test_cached_embed_checkpoints_chunks_and_leaves_no_partial_files(encoder, tmp_path, monkeypatch):
    import tunesift.embed as embed

    monkeypatch.setenv("TUNESIFT_EMBED_CHECKPOINT_S", "0")
    e = embed.HFEncoderEmbedder(str(encoder), device="cpu", batch_size=4, progress=False)
    saved = []
    monkeypatch.setattr(embed, "fault_point", saved.append)
    arr = embed.cached_embed(e, TEXTS, tmp_path, chunk_rows=15)  # 3 chunks: 15, 15, 10
    assert saved.count("embedding checkpoint") == 3 + 3 + 2 and saved[-1] == "embeddings"
    assert np.array_equal(arr, np.concatenate([e.embed(TEXTS[k:k + 15]) for k in (0, 15, 30)]))
    assert sorted(p.name for p in (tmp_path / "embeddings").iterdir()) == [f"{embed.texts_key(e.model_id, TEXTS)}.npy"]


def _tunesift(*args, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESIFT_EMBED_CHECKPOINT_S": "0"}
    env.pop("TUNESIFT_FAULT", None)
    if fault:
        env["TUNESIFT_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "tunesift", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_gotd_killed_inside_a_chunk_resumes_at_its_last_checkpoint_to_the_same_bytes(tmp_path, encoder):
    rng = np.random.default_rng(1)
    with open(tmp_path / "pool.jsonl", "w") as f:  # 200 texts: one chunk of 4 batches of 64 or fewer
        for i in range(200):
            f.write(json.dumps({"id": f"p{i}", "text": " ".join(f"w{j}" for j in rng.integers(0, 40, 2 + i % 9))}) + "\n")
    with open(tmp_path / "target.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"text": " ".join(f"w{j}" for j in rng.integers(0, 10, 6))}) + "\n")
    args = ["gotd", "--pool", tmp_path / "pool.jsonl", "--target", tmp_path / "target.jsonl", "--budget", 10,
            "--id-field", "id", "--embedder", encoder, "--device", "cpu", "--no-progress", "--threads", 1]
    clean = _tunesift(*args, "--out", tmp_path / "clean", "--cache-dir", tmp_path / "cache-clean")
    assert clean.returncode == 0, clean.stderr
    resumable = [*args, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
    killed = _tunesift(*resumable, fault="embedding checkpoint:KILL")  # kill -9 after the first save: 64 texts
    assert killed.returncode == -9
    assert len(list((tmp_path / "cache" / "embeddings" / "partial").glob("*.partial.npz"))) == 1
    again = _tunesift(*resumable)
    assert again.returncode == 0, again.stderr
    assert "64 of 200 texts of the chunk already saved" in again.stderr
    for name in ("scores.parquet", "selected.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert not (tmp_path / "cache" / "embeddings" / "partial").exists()
