"""benchmarks/bench_runs.py: packing a bench folder's evidence, pooling folders, and the tables from it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rr(repo_script):
    return repo_script("benchmarks/bench_runs.py")


def _bench(folder: Path, runs: dict, source: str = "/data/games", fingerprint: str = "abc") -> Path:
    """A bench folder as `bench rec` leaves it: settings, reference rankers, and per run a record, per-user
    metrics and the files that are not evidence (generations, selection, a checkpoint)."""
    folder.mkdir(parents=True)
    (folder / "bench.json").write_text(json.dumps({"data": {"source": source, "fingerprint": fingerprint},
                                                   "backbone": "tiger", "budget": 8}))
    n = next(iter(runs.values())).size
    np.savez(folder / "references.npz", **{"popular:recall@10": np.full(n, 0.1), "sasrec:recall@10": np.full(n, 0.2)})
    for (method, seed), values in runs.items():
        run = folder / "runs" / f"method={method},seed={seed}"
        run.mkdir(parents=True)
        np.savez(run / "per_user.npz", **{"recall@10": values, "ndcg@10": values / 2})
        (run / "result.json").write_text(json.dumps({"method": method, "seed": seed, "recall@10": values.mean(),
                                                     "finetune_s": 100.0 + seed}))
        (run / "generations.jsonl").write_text('{"user": "u1"}\n')
        (run / "selection.json").write_text('{"users": ["u1"]}')
        (run / "model.pt").write_bytes(b"0" * 100)
    return folder


def _values(seed: int, shift: float = 0.0, n: int = 50) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).uniform(0, 1, n) + shift, 0, 1)


def test_pack_copies_only_the_evidence_and_a_second_pack_adds_nothing(rr, tmp_path, capsys):
    runs = {("random", s): _values(s) for s in (0, 1, 2)} | {("dealrec", s): _values(10 + s, 0.1) for s in (0, 1, 2)}
    src = _bench(tmp_path / "a", runs)
    dest = tmp_path / "packed"
    assert rr.main(["pack", str(src), str(dest)]) == 0
    assert "6 run(s) added, 0 already there" in capsys.readouterr().out
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["bench.json", "machine.json", "references.npz"] + [f"runs/method={m},seed={s}/{f}" for m in ("dealrec", "random")
                                                         for s in (0, 1, 2) for f in ("per_user.npz", "result.json")]
    for (m, s), values in runs.items():
        with np.load(dest / "runs" / f"method={m},seed={s}" / "per_user.npz") as z:
            assert np.array_equal(z["recall@10"], values) and z["recall@10"].dtype == values.dtype
    assert rr.pack([src], dest) == {"added": 0, "same": 6}


def test_pack_pools_folders_of_one_bench_and_refuses_what_does_not_match(rr, tmp_path):
    first = _bench(tmp_path / "a", {("random", 0): _values(0), ("random", 1): _values(1)})
    dest = tmp_path / "packed"
    rr.pack([first], dest)
    # another machine: the same data under another path, seeds 1 (identical) and 2 (new)
    second = _bench(tmp_path / "b", {("random", 1): _values(1), ("random", 2): _values(2)}, source="/elsewhere/games")
    assert rr.pack([second], dest) == {"added": 1, "same": 1}
    assert sorted(p.name for p in (dest / "runs").iterdir()) == [f"method=random,seed={s}" for s in (0, 1, 2)]
    before = sorted((p, p.read_bytes()) for p in dest.rglob("*") if p.is_file())
    # the same seed with other per-user values is not the same run: refused, nothing written
    clash = _bench(tmp_path / "c", {("random", 2): _values(99), ("random", 3): _values(3)})
    with pytest.raises(SystemExit, match="method=random,seed=2.*different per-example"):
        rr.pack([clash], dest)
    other = _bench(tmp_path / "d", {("random", 4): _values(4)}, fingerprint="other data")
    with pytest.raises(SystemExit, match="other settings.*data"):
        rr.pack([other], dest)
    assert sorted((p, p.read_bytes()) for p in dest.rglob("*") if p.is_file()) == before
    with pytest.raises(SystemExit, match="no bench.json"):
        rr.pack([tmp_path], tmp_path / "x")


def test_table_matches_the_runs_and_a_plain_paired_t_test(rr, tmp_path, capsys):
    from scipy.stats import ttest_rel

    from tunesift.bench.stats import holm

    runs = {("random", s): _values(s) for s in (0, 1, 2)}
    runs |= {("dealrec", s): _values(s, 0.05 * (s + 1)) for s in (0, 1, 2)}  # a clear gain on every seed
    runs |= {("grand", s): _values(20 + s) for s in (0, 1, 2)}
    dest = tmp_path / "packed"
    rr.pack([_bench(tmp_path / "a", runs)], dest)
    assert rr.main(["table", str(dest), "--metrics", "recall@10", "--methods", "random,dealrec,grand"]) == 0
    out = capsys.readouterr().out
    means = {m: [float(runs[(m, s)].mean()) for s in (0, 1, 2)] for m in ("random", "dealrec", "grand")}
    assert "| random | 3 | " + ", ".join(f"{v:.4f}" for v in means["random"]) in out
    assert "popular (train)" in out and "sasrec (surrogate)" in out and "Run-to-run" in out
    p = {m: ttest_rel(means[m], means["random"]).pvalue for m in ("dealrec", "grand")}
    adjusted = holm([p["dealrec"], p["grand"]])
    diff = np.mean(np.subtract(means["dealrec"], means["random"]))
    assert f"{diff:+.4f} [" in out and f"p={p['dealrec']:.3f} (Holm p={adjusted[0]:.3f}), 3 seeds" in out
    assert f"p={p['grand']:.3f} (Holm p={adjusted[1]:.3f}), 3 seeds" in out
    assert "| method | runs | train s |" in out and "| dealrec | 3 | 101.0 ± 1.0 |" in out  # seeds 0-2: 100-102 s
    with pytest.raises(SystemExit, match="no metric 'recall@20'"):
        rr.tables(dest, ["recall@20"])


def test_summary_is_one_row_per_method_with_the_bootstrap_and_the_seed_test(rr, tmp_path, capsys):
    from scipy.stats import ttest_rel

    from tunesift.bench.stats import compare_methods, holm

    runs = {("random", s): _values(s) for s in (0, 1, 2)}
    runs |= {("dealrec", s): _values(s, 0.05 * (s + 1)) for s in (0, 1, 2)}
    runs |= {("grand", s): _values(20 + s) for s in (0, 1, 2)} | {("ccs", 0): _values(30)}
    dest = tmp_path / "packed"
    rr.pack([_bench(tmp_path / "a", runs)], dest)
    assert rr.main(["summary", str(dest), "--metrics", "recall@10,ndcg@10", "--methods", "random,dealrec,grand,ccs"]) == 0
    rows = {line.split(" | ")[0].strip("| *"): line for line in capsys.readouterr().out.strip().splitlines()[2:]}
    assert list(rows) == ["random", "dealrec", "grand", "ccs", "popular (train)", "sasrec (surrogate)"]
    stacked = {m: np.stack([runs[(m, s)] for s in sorted(s for (k, s) in runs if k == m)])
               for m in ("random", "dealrec", "grand", "ccs")}
    # the CI cells are compare_methods' (bootstrap over users, seeds averaged), for both metrics
    for metric, scale in (("recall@10", 1.0), ("ndcg@10", 0.5)):
        c = {x.method: x for x in compare_methods({m: v * scale for m, v in stacked.items()}, ["random"], seed=0)}
        e = c["dealrec"].estimate
        assert f"{e.mean:.4f} [{e.low:.4f}, {e.high:.4f}]" in rows["dealrec"]
        if metric == "recall@10":  # the compared metric: Δ over test users
            d = c["grand"].differences["random"]
    assert f"{d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}]" in rows["grand"]
    # over seeds: a plain paired t-test on the per-seed means, Holm over the methods with seeds in common
    means = {m: stacked[m].mean(axis=1) for m in stacked}
    p = [ttest_rel(means[m], means["random"]).pvalue for m in ("dealrec", "grand")]
    adjusted = holm(p)
    assert f"p={p[0]:.3f} (p={adjusted[0]:.3f}), 3 seeds" in rows["dealrec"]
    assert f"p={p[1]:.3f} (p={adjusted[1]:.3f}), 3 seeds" in rows["grand"]
    assert rows["ccs"].endswith("| — |") and "| ccs | 1 | " in rows["ccs"]  # one seed: no seed test
    assert "| popular (train) | — | " in rows["popular (train)"]
    with pytest.raises(SystemExit, match="no run of the reference 'full'"):
        rr.summary(dest, reference="full")


def test_a_packed_folder_resumes_as_a_bench_folder(rr, tmp_path):
    """`bench rec` on a copy of a packed folder skips the packed runs and tables them with its new ones."""
    from tests.bench.test_rec_bench import write_games_fixture
    from tunesift.bench.rec import run_rec_bench

    games = write_games_fixture(tmp_path / "games")
    emb = tmp_path / "items.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32))
    from tunesift.bench.rec import scale_with

    scale = scale_with("tiny", "tiger", settings={"item_embeddings": str(emb)})
    kw = dict(methods=["random"], scale=scale, backbone="tiger", device="cpu", progress=False)
    run_rec_bench(games, tmp_path / "one", seeds=[0], **kw)
    rr.pack([tmp_path / "one"], tmp_path / "packed")
    work = tmp_path / "work"
    shutil.copytree(tmp_path / "packed", work)
    result = run_rec_bench(games, work, seeds=[0, 1], **kw)
    assert result.ran == [{"method": "random", "seed": 1}]
    assert [r["seed"] for r in result.records] == [0, 1]
    assert "| random | 2 |" in (work / "results.md").read_text()
