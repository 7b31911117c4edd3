import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tunesift.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"doc": f"d{i}", "text": f"text {i}", "domain": "ab"[i % 2]}) + "\n" for i in range(40)))
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": f"t {i}"}) + "\n" for i in range(10)))
    pe, te = tmp_path / "pool.npy", tmp_path / "target.npy"
    x = rng.standard_normal((40, 8)).astype(np.float32)
    np.save(pe, x / np.linalg.norm(x, axis=1, keepdims=True))
    y = rng.standard_normal((10, 8)).astype(np.float32)
    np.save(te, y / np.linalg.norm(y, axis=1, keepdims=True))
    return tmp_path, pool, target, pe, te


@pytest.mark.parametrize("method", ["random", "gotd"])
def test_gotd_command_writes_the_three_files(files, method):
    tmp, pool, target, pe, te = files
    out = tmp / f"out-{method}"
    rc = main(["gotd", "--pool", str(pool), "--target", str(target), "--budget", "5", "--out", str(out),
               "--method", method, "--id-field", "doc", "--pool-embeddings", str(pe), "--target-embeddings",
               str(te), "--seed", "7", "--no-progress", "--cache-dir", "none", "--device", "cpu"])
    assert rc == 0
    t = pq.read_table(out / "scores.parquet").to_pydict()
    assert set(t) >= {"id", "score", "rank", "selected"}
    assert sorted(t["rank"]) == list(range(1, 41)) and sum(t["selected"]) == 5
    sel = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    by_rank = sorted((r, i) for r, i in zip(t["rank"], t["id"]))[:5]
    assert [s["doc"] for s in sel] == [i for _, i in by_rank]  # rank order, original fields kept
    assert set(sel[0]) == {"doc", "text", "domain"}
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == 7 and m["method"] == method and m["pool"]["fingerprint"] and "total" in m["timings_s"]
    # same input + same seed = same selection
    out2 = tmp / f"again-{method}"
    main(["gotd", "--pool", str(pool), "--target", str(target), "--budget", "5", "--out", str(out2),
          "--method", method, "--id-field", "doc", "--pool-embeddings", str(pe), "--target-embeddings",
          str(te), "--seed", "7", "--no-progress", "--cache-dir", "none", "--device", "cpu"])
    assert (out2 / "selected.jsonl").read_text() == (out / "selected.jsonl").read_text()


def test_gotd_on_a_shard_folder_selects_as_on_the_single_file(files):
    """--pool FOLDER: ids default to SHARD:ROW, selected rows come from the shards, the manifest lists them."""
    tmp, pool, target, pe, te = files
    shards = tmp / "shards"
    shards.mkdir()
    lines = pool.read_text().splitlines(keepends=True)
    for k, (lo, hi) in enumerate([(0, 15), (15, 30), (30, 40)]):
        (shards / f"part-{k}.jsonl").write_text("".join(lines[lo:hi]))
    common = ["--target", str(target), "--budget", "5", "--method", "gotd", "--pool-embeddings", str(pe),
              "--target-embeddings", str(te), "--no-progress", "--cache-dir", "none", "--device", "cpu"]
    assert main(["gotd", "--pool", str(pool), "--out", str(tmp / "file"), *common]) == 0
    assert main(["gotd", "--pool", str(shards), "--out", str(tmp / "shards-out"), *common]) == 0
    one = pq.read_table(tmp / "file" / "scores.parquet").to_pydict()
    sharded = pq.read_table(tmp / "shards-out" / "scores.parquet").to_pydict()
    assert sharded["id"][:2] == ["part-0.jsonl:0", "part-0.jsonl:1"] and sharded["id"][15] == "part-1.jsonl:0"
    assert sharded["rank"] == one["rank"] and sharded["gradient"] == one["gradient"]
    assert (tmp / "shards-out" / "selected.jsonl").read_bytes() == (tmp / "file" / "selected.jsonl").read_bytes()
    manifest = json.loads((tmp / "shards-out" / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["pool"]["shards"]] == [15, 15, 10]
    assert "shards" not in json.loads((tmp / "file" / "manifest.json").read_text())["pool"]
    # with a cache, the shards' texts go to an unnamed memory-mapped file in CACHE/spill: same outputs
    cached = [a if a != "none" else str(tmp / "cache") for a in common]
    assert main(["gotd", "--pool", str(shards), "--out", str(tmp / "spilled"), *cached]) == 0
    assert (tmp / "spilled" / "selected.jsonl").read_bytes() == (tmp / "file" / "selected.jsonl").read_bytes()
    assert (tmp / "cache" / "spill").is_dir() and not any((tmp / "cache" / "spill").iterdir())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "41"], "budget must be in 1..40 (40 rows in the pool"),
        (["--budget", "0"], "budget must be in 1..40"),
        (["--budget", "3", "--text-field", "body"], "no field 'body'"),
        (["--budget", "3", "--pool-embeddings", "WRONG"], "pool embeddings for 40"),
        (["--budget", "3", "--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)
def test_bad_input_is_a_clear_error(files, capsys, extra, message):
    tmp, pool, target, pe, te = files
    if "WRONG" in extra:
        np.save(tmp / "short.npy", np.zeros((3, 8), np.float32))
        extra = [e.replace("WRONG", str(tmp / "short.npy")) for e in extra]
    args = ["gotd", "--pool", str(pool), "--target", str(target), "--out", str(tmp / "o"), "--method", "gotd",
            "--target-embeddings", str(te), "--cache-dir", "none", "--device", "cpu", "--no-progress"]
    if "--pool-embeddings" not in extra:
        args += ["--pool-embeddings", str(pe)]
    rc = main(args + extra)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp / "o" / "manifest.json").exists()


def test_console_entry_point_lists_methods():
    out = subprocess.run([sys.executable, "-m", "tunesift", "gotd", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("gotd", "random", "--epsilon", "--contrast", "--domains-keep"):
        assert name in out.stdout


@pytest.mark.parametrize("command", [["gotd", "--pool", "p", "--target", "t", "--budget", "3"],
                                     ["dealrec", "--data", "d", "--budget", "3"],
                                     ["bench", "rec", "--data", "d"]])
@pytest.mark.parametrize("flag,value,message", [
    ("--device", "gpu", "argument --device: 'gpu' is not a device; expected auto, cpu, cuda, cuda:N or mps"),
    ("--device", "cuda:7", "argument --device: 'cuda:7'"),
    ("--out", "FILE", "argument --out: {path}: is a file, expected a folder"),
    ("--out", "FILE/sub", "argument --out: {path}: {file} is a file, so no folder can be made there"),
])
def test_bad_device_or_out_is_refused_when_the_flag_is_read(tmp_path, capsys, command, flag, value, message):
    import torch

    if value == "cuda:7" and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    file = tmp_path / "a-file"
    file.write_text("x")
    path = value.replace("FILE", str(file))
    argv = [*command, "--out", str(tmp_path / "out"), flag, path] if flag == "--device" else [*command, flag, path]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message.format(path=path, file=file) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written


def test_the_parser_and_the_torch_free_methods_run_without_torch(tmp_path):
    """torch is an extra: building the parser, reading, dsir/random and writing must not import it."""
    script = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
from tunesift.cli import build_parser, main
build_parser()
assert "torch" not in sys.modules
for method in ("dsir", "random"):
    rc = main(["gotd", "--pool", sys.argv[1], "--target", sys.argv[2], "--budget", "5", "--out",
               sys.argv[3] + "/" + method, "--method", method, "--no-progress"])
    assert rc == 0, rc
assert "torch" not in sys.modules
"""
    pool, target = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    pool.write_text("".join(json.dumps({"text": f"some text {i} word{i % 5}"}) + "\n" for i in range(40)))
    target.write_text("".join(json.dumps({"text": f"word{i % 2} text"}) + "\n" for i in range(10)))
    done = subprocess.run([sys.executable, "-c", script, str(pool), str(target), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for method in ("dsir", "random"):
        assert (tmp_path / method / "selected.jsonl").exists()
