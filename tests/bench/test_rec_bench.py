"""The `bench rec` harness on a synthetic DEALRec folder with a tiny model (a few seconds per run)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesift.bench.rec import RecBench, check_methods, run_rec_bench, scale_with

torch.set_num_threads(1)  # shared cores: avoid thread oversubscription


def write_games_fixture(folder: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """DEALRec layout: sequential_{train,valid,test}.txt and items.jsonl; some users without valid/test items."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["Mario", "Zelda", "Halo", "Tetris", "Portal", "Doom", "Sonic", "Metroid", "Kirby", "Pikachu"]
    lines = {s: [] for s in ("train", "valid", "test")}
    for u in range(1, n_users + 1):
        seq = [int(x) for x in rng.integers(1, n_items + 1, size=rng.integers(3, 9))]
        lines["train"].append(" ".join(map(str, [u, *seq])))
        lines["valid"].append(" ".join(map(str, [u, *([int(rng.integers(1, n_items + 1))] if u % 4 else [])])))
        lines["test"].append(" ".join(map(str, [u, *[int(x) for x in rng.integers(1, n_items + 1, size=u % 3)]])))
    for s, ls in lines.items():
        (folder / f"sequential_{s}.txt").write_text("\n".join(ls) + "\n")
    with open(folder / "items.jsonl", "w") as f:
        for i in range(1, n_items + 1):
            f.write(json.dumps({"item_id": i, "title": f"{names[(i - 1) % 10]} {(i - 1) // 10 + 1} - PC"}) + "\n")
    return folder


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    return write_games_fixture(tmp_path_factory.mktemp("games") / "games")


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory, games):
    from tunesift.finetune.tiny import build_tiny_causal_lm
    from tunesift.rec.data import read_dealrec
    from tunesift.rec.prompts import build_samples

    data = read_dealrec(games)
    texts = [s.text for s in build_samples(data, "train", max_tokens=128)] + data.titles[1:]
    return build_tiny_causal_lm(texts, tmp_path_factory.mktemp("tiny-llm"), vocab_size=400, num_heads=2,
                                pretrain_steps=30, pretrain_batch_size=8)


def recall_from_generations(path: Path, k: int) -> float:
    """Oracle: Recall@k recomputed from the saved top items and ground truth of each test user."""
    vals = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        truth = set(row["target_items"])
        vals.append(len(truth & set(row["top_items"][:k])) / len(truth))
    return float(np.mean(vals))


def test_resume_after_a_crash_redoes_nothing_finished(games, tiny_llm, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    calls = {"select": 0, "finetune": 0}
    real_select, real_finetune = RecBench.select, RecBench.finetune

    def counting_select(self, method, seed):
        calls["select"] += 1
        return real_select(self, method, seed)

    def crashing_finetune(self, selected, seed, full, folder):
        calls["finetune"] += 1
        if calls["finetune"] == 3:
            raise RuntimeError("power cut")
        return real_finetune(self, selected, seed, full, folder)

    monkeypatch.setattr(RecBench, "select", counting_select)
    monkeypatch.setattr(RecBench, "finetune", crashing_finetune)
    kw = dict(methods=["random", "full"], seeds=[0, 1], scale=scale_with("tiny", settings={"llm": str(tiny_llm)}),
              device="cpu", progress=False)
    with pytest.raises(RuntimeError, match="power cut"):
        run_rec_bench(games, out, **kw)
    done = sorted(p.parent.name for p in (out / "runs").glob("*/result.json"))
    assert done == ["method=full,seed=0", "method=random,seed=0"]  # seed-major: every method's seed 0 first
    # the crashed run's selection was saved before fine-tuning
    assert (out / "runs" / "method=random,seed=1" / "selection.json").exists()
    stamps = {d: (out / "runs" / d / "result.json").stat().st_mtime_ns for d in done}
    assert calls == {"select": 3, "finetune": 3}

    result = run_rec_bench(games, out, **kw)
    assert result.ran == [{"method": "random", "seed": 1}, {"method": "full", "seed": 1}]
    assert calls["select"] == 4  # only full/seed 1 selected; random/seed 1 read its selection back
    assert calls["finetune"] == 5
    assert {d: (out / "runs" / d / "result.json").stat().st_mtime_ns for d in done} == stamps
    assert [(r["method"], r["seed"]) for r in result.records] == [("random", 0), ("full", 0), ("random", 1), ("full", 1)]
    for r in result.records:
        assert r["n_selected"] == (8 if r["method"] == "random" else 40)
        gens = out / "runs" / f"method={r['method']},seed={r['seed']}" / "generations.jsonl"
        assert r["recall@10"] == pytest.approx(recall_from_generations(gens, 10))
        assert r["finetune_s"] > 0 and r["eval_peak_rss_mb"] > 0
    # a third call has nothing left to do
    assert run_rec_bench(games, out, **kw).ran == []
    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="budget"):
        run_rec_bench(games, out, **{**kw, "methods": ["random"]}, budget=9)


def test_methods_and_scales_are_checked(games, tmp_path):
    assert check_methods(["random", " full"]) == ["random", "full"]
    with pytest.raises(ValueError, match="unknown method"):
        check_methods(["random", "bogus"])
    with pytest.raises(ValueError, match="twice"):
        check_methods(["random", "random"])
    s = scale_with("cpu", n_users=64, settings={"fit": {"train": {"epochs": 7}}}, stages={"lissa_depth": 9})
    assert s.n_users == 64 and s.backbone.fit.train.epochs == 7 and s.name == "cpu" and s.stages["lissa_depth"] == 9
    with pytest.raises(ValueError, match="unknown setting 'epochs'"):
        scale_with("cpu", settings={"epochs": 7})
    with pytest.raises(ValueError, match="n_test_users"):
        scale_with("tiny", n_test_users=0)
    with pytest.raises(ValueError, match="larger than the pool"):
        RecBench(games, tmp_path / "b", "tiny", budget=41, device="cpu")


def test_cli_tiny_bench_end_to_end(games, tmp_path):
    """`tunesift bench rec --scale tiny` builds its own tiny LLM and writes every result file."""
    from tunesift.cli import main

    out = tmp_path / "out"
    argv = ["bench", "rec", "--data", str(games), "--out", str(out), "--methods", "random,dealrec,full",
            "--seeds", "1", "--scale", "tiny", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    md = (out / "results.md").read_text()
    for method in ("random", "dealrec", "full"):
        assert f"| {method} | 1 |" in md
    assert "tunesift bench rec --data" in md and "Table 2" in md  # the folder is named games
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"recall@10_mean", "recall@20_std", "ndcg@20_mean", "selection_s_mean", "finetune_peak_rss_mb_mean"} <= set(header)
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == 3 and data["settings"]["budget"] == 8
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "tiny-llm" / "model.safetensors").exists()
    sel = json.loads((out / "runs" / "method=dealrec,seed=0" / "selection.json").read_text())
    assert len(sel["indices"]) == 8 == len(set(sel["indices"]))
    assert main(argv) == 0  # resumes: nothing to do, same results
    assert json.loads((out / "results.json").read_text())["runs"] == data["runs"]


GAMES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rec" / "games"


@pytest.mark.slow
@pytest.mark.skipif(not (GAMES / "sequential_train.txt").exists(), reason="../shared/data/rec/games is absent")
def test_tiny_bench_on_real_games(tmp_path):
    """The tiny scale on a slice of the real Games data: 40 pool users, 16 test users, all 17,332 items."""
    result = run_rec_bench(GAMES, tmp_path / "out", methods=["random", "full"], seeds=[0], scale="tiny",
                           device="cpu", progress=False)
    assert [r["n_selected"] for r in result.records] == [8, 40]
    for r in result.records:
        assert r["n_test_users"] == 16 and 0.0 <= r["recall@20"] <= 1.0
        top = json.loads((tmp_path / "out" / "runs" / f"method={r['method']},seed=0" / "generations.jsonl")
                         .read_text().splitlines()[0])["top_items"]
        assert len(top) == 10 and all(1 <= i <= 17332 for i in top)


def test_cli_tiger_bench_with_ablations_paired_statistics_and_references(games, tmp_path, capsys):
    """`bench rec --backbone tiger --scale tiny`: every ablation, paired comparisons, reference rankers."""
    from tunesift.cli import main

    emb = tmp_path / "items.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32))
    out = tmp_path / "out"
    methods = "random,dealrec,dealrec-no-effort,dealrec-no-influence,greedy,full"
    argv = ["bench", "rec", "--data", str(games), "--out", str(out), "--backbone", "tiger", "--methods", methods,
            "--seeds", "2", "--scale", "tiny", "--device", "cpu", "--no-progress", "--tiger-item-embeddings", str(emb)]
    assert main(argv) == 0
    md = (out / "results.md").read_text()
    for method in methods.split(","):
        assert f"| {method} | 2 |" in md
    assert "## Paired comparisons" in md and "### recall@10" in md and "Δ vs random" in md and "Δ vs full" in md
    assert "popular (train)" in md and "sasrec (surrogate)" in md and "TIGER rows" in md
    data = json.loads((out / "results.json").read_text())
    rows = {c["method"]: c for c in data["paired"]["recall@10"]}
    from tunesift.bench.rec import REFERENCE_LABELS

    assert set(rows) == {*methods.split(","), *REFERENCE_LABELS.values()}
    # the paired difference to random is the difference of the per-user means pooled over seeds
    per = {m: np.stack([np.load(out / "runs" / f"method={m},seed={s}" / "per_user.npz")["recall@10"]
                        for s in (0, 1)]) for m in ("dealrec", "random")}
    assert per["dealrec"].shape == (2, 16)
    diff = rows["dealrec"]["differences"]["random"]["diff"]
    assert diff == pytest.approx(per["dealrec"].mean() - per["random"].mean(), abs=1e-12)
    # run to run: seed s of dealrec paired with seed s of random, a t-test over the two seeds
    from scipy.stats import ttest_rel

    over = data["paired"]["over seeds"]["recall@10"]["dealrec"]["random"]
    assert over["seeds"] == [0, 1]
    assert over["differences"] == pytest.approx(list(per["dealrec"].mean(1) - per["random"].mean(1)), abs=1e-12)
    same = over["differences"][0] == over["differences"][1]
    if not same:
        assert over["p_value"] == pytest.approx(ttest_rel(per["dealrec"].mean(1), per["random"].mean(1)).pvalue)
    assert "Run-to-run" in md and "Δ recall@10 vs random over seeds [95% t-interval]" in md
    # what was picked, against a plain loop over the selection files and the data as read from disk
    from tunesift.rec.data import read_dealrec

    raw = read_dealrec(games)
    train = dict(zip(raw.users, raw.train))
    picks = {(p["method"], p["seed"]): p for p in data["picks"]}
    assert set(picks) == {(m, s) for m in methods.split(",") for s in (0, 1)}
    for method in ("dealrec", "random"):
        users = [json.loads((out / "runs" / f"method={method},seed={s}" / "selection.json").read_text())["users"]
                 for s in (0, 1)]
        for s in (0, 1):
            assert picks[(method, s)]["items_per_user"] == pytest.approx(np.mean([len(train[u]) for u in users[s]]))
            assert picks[(method, s)]["distinct_items"] == len({i for u in users[s] for i in train[u]})
            assert picks[(method, s)]["shared_users"] == len(set(users[0]) & set(users[1]))
    assert "## What was picked" in md and "users shared with another seed's picks" in md
    run = data["runs"][0]
    assert run["n_test_users"] == 16 and 0 <= run["recall@20"] <= 1 and "best_epoch" in run
    sel = json.loads((out / "runs" / "method=dealrec,seed=0" / "selection.json").read_text())
    assert len(sel["indices"]) == 8 == len(set(sel["indices"]))
    assert main(argv) == 0  # resumes: nothing to do, same results
    assert json.loads((out / "results.json").read_text())["runs"] == data["runs"]
    # a flag of the other backbone is refused, naming it
    assert main([*argv, "--lora-r", "4"]) == 2
    assert "--lora-r applies to bigrec only" in capsys.readouterr().err


def test_popularity_rankers_equal_a_plain_count_and_leave_out_only_what_the_user_has_seen():
    from types import SimpleNamespace

    from tunesift.bench.rec import popularity_tops

    # 6 items; the pool counts item 3 most in training, item 5 once there but three times in validation
    pool = SimpleNamespace(train=[[3, 1], [3, 2], [3, 5, 1]], valid=[[5], [5], [5]])
    data = SimpleNamespace(n_items=6, train=[[3, 1], [4], [2, 6]], valid=[[5], [], [1]], test=[[2], [1], [4]])
    tops = popularity_tops(pool, data, [0, 1, 2], k=3)
    train = {i: sum(seq.count(i) for seq in pool.train) for i in range(1, 7)}
    both = {i: train[i] + sum(seq.count(i) for seq in pool.valid) for i in range(1, 7)}
    plain = lambda counts: sorted(counts, key=lambda i: (-counts[i], i))  # noqa: E731  (ties by item id)
    assert tops["popular"].tolist() == [plain(train)[:3]] * 3
    assert tops["popular-valid"].tolist() == [plain(both)[:3]] * 3 and plain(both)[0] == 5
    for row, u in enumerate([0, 1, 2]):
        seen = set(data.train[u]) | set(data.valid[u])
        assert tops["popular-valid-unseen"][row].tolist() == [i for i in plain(both) if i not in seen][:3]
    # a catalogue with fewer unseen items than k: the list is padded with 0, an item no user has
    short = popularity_tops(pool, data, [0], k=6)["popular-valid-unseen"][0].tolist()
    assert short == [i for i in plain(both) if i not in {1, 3, 5}] + [0, 0, 0]
