"""Real process kills: kill -9 (and SIGTERM / SIGINT) at a stage, then the same command again.

Each test runs ``python -m tunesift`` in a subprocess and stops it for real at a fault point
(:mod:`tunesift.io.faults`: right after the named result was saved), then reruns the same command and
checks that it loads the finished stages from the cache (the log says so) and writes the same bytes as
an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "rec"))
from recfixtures import build_tiny_lm, write_dealrec_folder  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")


def tunesift(*args, fault=None, cwd=None, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TUNESIFT_FAULT", None)
    if fault:
        env["TUNESIFT_FAULT"] = fault
    # SIGINT at its default: a suite started in the background (`cmd &` in a script) has it ignored, and
    # the ignored disposition would pass to the child, which then could not be interrupted
    return subprocess.run([sys.executable, "-m", "tunesift", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def killed_then_resumed(args, fault: str, folder: Path, pattern: str, saved: int) -> str:
    """Kill -9 the command at ``fault``; check ``saved`` chunk files match ``folder/pattern``; rerun it to
    the end and return the rerun's log."""
    killed = tunesift(*args, fault=f"{fault}:KILL")
    assert killed.returncode == -9
    assert len(list(folder.glob(pattern))) == saved
    again = tunesift(*args)
    assert again.returncode == 0, again.stderr
    return again.stderr


def same_bytes(a: Path, b: Path, names=("scores.parquet", "selected.jsonl")):
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    rng = np.random.default_rng(0)
    with open(folder / "pool.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"id": f"p{i}", "text": " ".join(f"w{j}" for j in rng.integers(0, 40, 6))}) + "\n")
    with open(folder / "target.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"text": " ".join(f"w{j}" for j in rng.integers(0, 10, 6))}) + "\n")
    return folder


def test_gotd_killed_after_embedding_resumes_to_the_same_bytes(tmp_path, encoder, texts):
    args = ["gotd", "--pool", texts / "pool.jsonl", "--target", texts / "target.jsonl", "--budget", 10,
            "--id-field", "id", "--embedder", encoder, "--device", "cpu", "--no-progress", "--threads", 1]
    clean = tunesift(*args, "--out", tmp_path / "clean", "--cache-dir", tmp_path / "cache-clean")
    assert clean.returncode == 0, clean.stderr
    out, cache = tmp_path / "out", tmp_path / "cache"
    killed = tunesift(*args, "--out", out, "--cache-dir", cache, fault="embeddings:KILL")
    assert killed.returncode == -9
    assert not (out / "scores.parquet").exists()
    again = tunesift(*args, "--out", out, "--cache-dir", cache)
    assert again.returncode == 0, again.stderr
    assert "texts loaded from the cache" in again.stderr  # the embedding finished before the kill
    same_bytes(out, tmp_path / "clean")
    assert not list(out.glob(".*.tmp")) and not (out / ".tunesift.lock").exists()


def test_gotd_on_shards_killed_between_embedding_chunks_resumes_at_the_next_chunk(tmp_path, encoder, texts):
    from tunesift.cli import main

    shards = tmp_path / "shards"
    shards.mkdir()
    lines = (texts / "pool.jsonl").read_text().splitlines(keepends=True)
    for k in range(3):  # part-0..2, 20 rows each: the pool's 60 rows in order
        (shards / f"part-{k}.jsonl").write_text("".join(lines[20 * k:20 * (k + 1)]))
    common = ["--target", texts / "target.jsonl", "--budget", 10, "--id-field", "id", "--embedder", encoder,
              "--device", "cpu", "--no-progress", "--threads", 1, "--embed-chunk", 25]  # 3 chunks: 25, 25, 10
    # the uninterrupted run, on the single file, in this process
    assert main(list(map(str, ["gotd", "--pool", texts / "pool.jsonl", *common, "--out", tmp_path / "clean",
                               "--cache-dir", tmp_path / "cache-clean"]))) == 0
    args = ["gotd", "--pool", shards, *common, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
    # killed right after the 2nd of 3 chunks was saved
    log = killed_then_resumed(args, "embeddings:part00001", tmp_path / "cache" / "embeddings", "*.chunks-25/*.npy", 2)
    assert "2 of 3 chunks (25 texts each) already in the cache; resuming at chunk 2" in log
    assert "chunk 1 of 3 saved" not in log and "chunk 3 of 3 saved" in log
    same_bytes(tmp_path / "out", tmp_path / "clean")  # shards = the file they were cut from; resumed = clean
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(s["path"], s["rows"]) for s in manifest["pool"]["shards"]] == [(f"part-{k}.jsonl", 20) for k in range(3)]
    assert not list((tmp_path / "cache" / "embeddings").glob("*.chunks-*"))


def test_dsir_killed_between_feature_chunks_counts_only_the_rest(tmp_path, texts):
    args = ["gotd", "--method", "dsir", "--pool", texts / "pool.jsonl", "--target", texts / "target.jsonl",
            "--budget", 10, "--id-field", "id", "--no-progress", "--threads", 1, "--embed-chunk", 25]
    clean = tunesift(*args, "--out", tmp_path / "clean", "--cache-dir", "none")  # in memory, one pass
    assert clean.returncode == 0, clean.stderr
    resumable = [*args, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache"]
    # killed after the 2nd of 3 chunks
    log = killed_then_resumed(resumable, "dsir features:part00001", tmp_path / "cache" / "dsir", "*.chunks-25/*.npz", 2)
    assert "dsir features: 2 of 3 chunks (25 rows each) already in the cache; resuming at chunk 2" in log
    assert "chunk 2 of 3 saved" not in log and "dsir features: chunk 3 of 3 saved" in log
    same_bytes(tmp_path / "out", tmp_path / "clean")


@pytest.fixture(scope="module")
def rec_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    write_dealrec_folder(root / "games", n_users=24, n_items=20, seed=2)
    return root / "games", build_tiny_lm(root / "lm")


DEALREC = ["--surrogate-epochs", 2, "--surrogate-batch-size", 8, "--hidden-size", 16, "--max-len", 8,
           "--lissa-depth", 20, "--effort-batch-size", 4, "--effort-chunk", 8, "--device", "cpu", "--no-progress",
           "--no-plot", "--threads", 1]


def test_dealrec_killed_during_effort_resumes_without_redoing_finished_stages(tmp_path, rec_inputs):
    data, lm = rec_inputs
    args = ["dealrec", "--data", data, "--budget", 5, "--llm", lm, *DEALREC]
    assert tunesift(*args, "--out", tmp_path / "clean").returncode == 0
    out = tmp_path / "out"
    killed = tunesift(*args, "--out", out, fault="stage:effort.part00000:KILL")  # one of 3 effort chunks saved
    assert killed.returncode == -9 and not (out / "scores.parquet").exists()
    again = tunesift(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    for stage in ("surrogate", "influence"):
        assert f"{stage}: loaded from the cache" in again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["surrogate"]["cached"] and not manifest["stages"]["effort"]["cached"]
    same_bytes(out, tmp_path / "clean")


@pytest.mark.parametrize("signal_name,code,word", [("TERM", 143, "terminated"), ("INT", 130, "interrupted")])
def test_dealrec_stopped_by_a_signal_exits_cleanly_and_keeps_the_previous_outputs(tmp_path, rec_inputs,
                                                                                   signal_name, code, word):
    data, lm = rec_inputs
    out = tmp_path / "out"
    args = ["dealrec", "--data", data, "--budget", 5, "--llm", lm, "--out", out, *DEALREC]
    assert tunesift(*args).returncode == 0
    before = {n: (out / n).read_bytes() for n in ("scores.parquet", "selected.jsonl", "manifest.json")}
    stopped = tunesift(*args, "--seed", 7, fault=f"stage:influence:{signal_name}")
    assert stopped.returncode == code
    assert f"tunesift dealrec: {word}" in stopped.stderr and "Traceback" not in stopped.stderr
    assert {n: (out / n).read_bytes() for n in before} == before  # the old selection, whole
    assert tunesift(*args, "--seed", 7).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 7


def test_a_second_run_on_the_same_out_is_refused(tmp_path, rec_inputs):
    from tunesift.io.lock import LOCK_NAME, hold_lock

    data, lm = rec_inputs
    out = tmp_path / "out"
    with hold_lock(out / LOCK_NAME, "test"):
        busy = tunesift("dealrec", "--data", data, "--budget", 5, "--llm", lm, "--out", out, *DEALREC)
    assert busy.returncode == 2
    assert f"--out {out} is in use by tunesift pid {os.getpid()}" in busy.stderr
    assert not (out / "scores.parquet").exists()


def _runs(folder: Path) -> dict:
    """Every finished run's record without its times and memory, and its per-user metrics."""
    out = {}
    for path in sorted(folder.glob("runs/*/result.json")):
        record = {k: v for k, v in json.loads(path.read_text()).items()
                  if not k.endswith(("_s", "_mb")) and k != "seconds"}
        per_user = path.parent / "per_user.npz"
        if per_user.exists():
            with np.load(per_user) as z:
                record["per_user"] = {k: z[k].tolist() for k in z.files}
        out[path.parent.name] = record
    return out


def test_bench_rec_killed_mid_training_resumes_to_the_same_results(tmp_path, rec_inputs):
    data, _ = rec_inputs
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
    args = ["bench", "rec", "--data", data, "--backbone", "tiger", "--scale", "tiny", "--methods", "random,dealrec",
            "--seeds", 1, "--n-users", 24, "--tiger-item-embeddings", tmp_path / "emb.npy", "--device", "cpu",
            "--no-progress", "--threads", 1]
    assert tunesift(*args, "--out", tmp_path / "clean").returncode == 0
    out = tmp_path / "out"
    killed = tunesift(*args, "--out", out, fault="tiger:epoch:KILL")  # after the first epoch's checkpoint
    assert killed.returncode == -9 and not (out / "results.md").exists()
    again = tunesift(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    assert "selection read from" in again.stderr and "tiger: resumed at epoch 1" in again.stderr
    assert _runs(out) == _runs(tmp_path / "clean") and len(_runs(out)) == 2


def test_bench_gotd_killed_after_a_run_resumes_to_the_same_results(tmp_path):
    args = ["bench", "gotd", "--scale", "tiny", "--methods", "random,none", "--budgets", 50, "--seeds", 1,
            "--label-budget", 60, "--test-limit", 60, "--dev-limit", 40, "--lm-loss-texts", 30,
            "--pretrain-epochs", 1, "--finetune-epochs", 2, "--max-length", 24, "--device", "cpu", "--no-progress",
            "--threads", 1]
    env_cache = {"TUNESIFT_CACHE": str(tmp_path / "cache")}
    os.environ.update(env_cache)
    try:
        assert tunesift(*args, "--out", tmp_path / "clean").returncode == 0
        out = tmp_path / "out"
        killed = tunesift(*args, "--out", out, fault="bench:run:KILL")
        assert killed.returncode == -9 and len(list(out.glob("runs/*/result.json"))) == 1
        again = tunesift(*args, "--out", out)
        assert again.returncode == 0, again.stderr
        assert _runs(out) == _runs(tmp_path / "clean") and len(_runs(out)) == 2
    finally:
        os.environ.pop("TUNESIFT_CACHE")
