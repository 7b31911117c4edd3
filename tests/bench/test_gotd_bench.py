"""`tunesift bench gotd`: settings, leak guard, a tiny end-to-end grid, resumption and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tunesift.bench import gotd as bench_gotd  # noqa: E402
from tunesift.bench.gotd import (SCALES, GotdBench, GotdBenchConfig, HashingEmbedder, config_from_args,  # noqa: E402
                                 parse_int_list, pool_rows, prepare_pool)
from tunesift.io.tables import TextSet  # noqa: E402
from tunesift.warmup.tasks import LabelledSplit, synthetic_task  # noqa: E402

@pytest.fixture(autouse=True)
def embedding_cache(tmp_path, monkeypatch):
    """Embeddings are cached in tunesift's cache: keep the tests' out of the user's."""
    monkeypatch.setenv("TUNESIFT_CACHE", str(tmp_path / "tunesift-cache"))


SMALL = dict(label_budget=60, test_limit=60, dev_limit=40, lm_loss_texts=30, pretrain_epochs=1,
             finetune_epochs=2, max_length=24, progress=False)


def test_hashing_embedder_is_deterministic_unit_norm_and_lexical():
    e = HashingEmbedder(dim=64)
    x = e.embed(["the cat sat", "the cat sat", "a dog ran far", ""])
    assert x.shape == (4, 64) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x[:3], axis=1), 1.0) and not x[3].any()
    assert np.array_equal(x[0], x[1])
    y = e.embed(["the cat sat down", "a dog ran far away"])
    assert y[0] @ x[0] > y[0] @ x[2] and y[1] @ x[2] > y[1] @ x[0]
    with pytest.raises(ValueError, match="dim"):
        HashingEmbedder(dim=1)


def test_prepare_pool_drops_dev_and_test_texts_then_subsamples():
    task = synthetic_task(n_train=5, n_dev=3, n_test=4)
    leaked = [task.test.texts[0].upper(), "  ".join(task.dev.texts[1].split()), task.train.texts[0]]
    texts = [f"other text {i}" for i in range(20)] + leaked
    pool = TextSet.from_texts(texts)
    kept, dropped = prepare_pool(pool, task, None)
    assert dropped == 2  # test and dev texts (up to case and spacing); train texts may stay
    assert task.train.texts[0] in kept.texts and len(kept) == 21
    small, _ = prepare_pool(pool, task, 5)
    again, _ = prepare_pool(pool, task, 5)
    assert len(small) == 5 and small.texts == again.texts
    assert set(small.texts) <= set(kept.texts)


def test_pool_sample_does_not_depend_on_the_task():
    pool = TextSet.from_texts([f"text {i}" for i in range(100)])
    a = synthetic_task(n_train=2, n_dev=1, n_test=1)
    b = synthetic_task(n_train=2, n_dev=1, n_test=1, seed=5)
    a.test = LabelledSplit(texts=["text 3", "text 50"], labels=[0, 1])
    sample_a, kept_a, dropped_a = pool_rows(pool, a, 30)
    sample_b, kept_b, dropped_b = pool_rows(pool, b, 30)
    assert np.array_equal(sample_a, sample_b) and len(sample_a) == 30
    assert dropped_b == 0 and np.array_equal(kept_b, sample_b)
    assert set(kept_a) == set(sample_a) - {3, 50} and dropped_a == len(set(sample_a) & {3, 50})


def test_prepare_pool_checks_pairs_joined():
    task = synthetic_task(n_train=2, n_dev=1, n_test=1)
    task.test = LabelledSplit(texts=["premise here"], labels=[0], text_pairs=["hypothesis"])
    pool = TextSet.from_texts(["premise here hypothesis", "premise here", "unrelated"])
    kept, dropped = prepare_pool(pool, task, None)
    assert kept.texts == ["unrelated"] and dropped == 2


def test_config_from_scale_and_errors(tmp_path):
    c = GotdBenchConfig.from_scale("tiny", str(tmp_path), methods=["random", "none"])
    assert c.task == "synthetic" and c.budgets == list(SCALES["tiny"].budgets) and c.seeds == [0, 1]
    with pytest.raises(ValueError, match="--task is required"):
        GotdBenchConfig.from_scale("cpu", str(tmp_path), pool="p.jsonl")
    with pytest.raises(ValueError, match="unknown \\['magic'\\]"):
        GotdBenchConfig.from_scale("tiny", str(tmp_path), methods=["magic"])
    with pytest.raises(ValueError, match="scale must be one of"):
        GotdBenchConfig.from_scale("huge", str(tmp_path))
    with pytest.raises(ValueError, match="`label_budget`"):
        GotdBenchConfig.from_scale("tiny", str(tmp_path), label_budget=0)
    assert parse_int_list("5000, 1000,1000", "--budgets") == [1000, 5000]
    with pytest.raises(ValueError, match="--budgets"):
        parse_int_list("10,x", "--budgets")
    with pytest.raises(ValueError, match="--budgets"):
        parse_int_list("0", "--budgets")


def test_budget_larger_than_pool_is_refused(tmp_path):
    c = GotdBenchConfig.from_scale("tiny", str(tmp_path), methods=["random"], budgets=[700], pool_size=600, **SMALL)
    with pytest.raises(ValueError, match="budget 700 is larger than the pool \\(600 rows"):
        GotdBench(c)


def _run(tmp_path, methods, **kw):
    settings = {**SMALL, "seeds": [0], **kw}
    c = GotdBenchConfig.from_scale("tiny", str(tmp_path), methods=methods, budgets=[50], **settings)
    return GotdBench(c), c


def test_tiny_grid_end_to_end_and_resume(tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    bench, _ = _run(tmp_path, ["dsir", "random", "none"])
    files = bench.run()
    records = bench.store.records()
    assert sorted((r["method"], r["budget"]) for r in records) == [("dsir", 50), ("none", 0), ("random", 50)]
    by = {r["method"]: r for r in records}
    for r in records:
        assert 0.0 <= r["test_score"] <= 1.0 and r["labels_used"] == 60 and r["test_examples"] == 60
        assert np.isfinite(r["lm_loss_before"]) and np.isfinite(r["lm_loss_after"])
        assert r["lm_loss_before"] == pytest.approx(by["none"]["lm_loss_before"])  # same seeded head
    assert by["none"]["lm_loss_after"] == by["none"]["lm_loss_before"] and by["none"]["pretrain_steps"] == 0
    assert by["random"]["pretrain_steps"] == 4  # 50 texts, batch 16, 1 epoch
    assert sum(by["dsir"]["selected_domains"].values()) == 50
    # DSIR sees the target (domain-0 texts): most of its picks come from domain 0 (100 of the 2000 rows)
    assert by["dsir"]["selected_domains"].get("d0", 0) >= 40
    assert by["random"]["selected_domains"].get("d0", 0) <= 15
    for path in (files.markdown, files.csv, files.json, files.runs_csv, files.plot, tmp_path / "lm_loss.png"):
        assert path.exists() and path.stat().st_size > 0
    summary = json.loads(files.json.read_text())["summary"]
    assert {(s["method"], s["budget"]) for s in summary} == {("dsir", 50), ("random", 50), ("none", 0)}
    md = files.markdown.read_text()
    assert "tunesift bench gotd --scale tiny" in md and "| dsir | 50 | 1 |" in md
    assert (tmp_path / "selections" / "method=dsir,seed=0" / "scores.parquet").exists()

    # resuming: nothing is redone, and more seeds only run the new units
    def fail(*a, **k):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(GotdBench, "run_one", fail)
    again, _ = _run(tmp_path, ["dsir", "random", "none"])
    again.run()
    # other comparable settings are refused
    with pytest.raises(ValueError, match="other settings"):
        _run(tmp_path, ["random"], label_budget=70)


def test_every_method_starts_from_the_same_warmed_head(tmp_path, monkeypatch):
    import torch

    from tunesift.warmup import pretrain as pretrain_module
    from tunesift.warmup.pretrain import head_parameters, lm_loss, load_language_model

    torch.set_num_threads(1)
    seen = []
    original = pretrain_module.pretrain

    def spy(lm, texts, config=None, progress=False):
        if any(p.requires_grad for p in lm.model.base_model.parameters()):  # pre-fine-tuning, not the warm-up
            seen.append({n: p.detach().clone() for n, p in head_parameters(lm.model)})
        return original(lm, texts, config, progress)

    monkeypatch.setattr(pretrain_module, "pretrain", spy)
    bench, _ = _run(tmp_path, ["dsir", "random", "none"], seeds=[0, 1], finetune_epochs=1, head_warmup_steps=20)
    bench.run()
    info = json.loads((tmp_path / "cache" / "warm_head.json").read_text())
    assert info["warmed"] and info["steps"] == 20 and np.isfinite(info["last_loss"])
    assert info["fresh_parameters"] and all(k.startswith("cls.") for k in info["fresh_parameters"])
    warm = load_language_model(tmp_path / "cache" / "warm_head")
    assert warm.fresh_parameters == []  # the warmed head is saved with the model
    fresh = load_language_model(bench.model_path, seed=0)
    # the warm-up changed the head and nothing else
    for k, v in fresh.model.base_model.state_dict().items():
        assert torch.equal(v, warm.model.base_model.state_dict()[k]), k
    warm_head = dict(head_parameters(warm.model))
    assert not torch.equal(warm_head["cls.predictions.transform.dense.weight"],
                           dict(head_parameters(fresh.model))["cls.predictions.transform.dense.weight"])
    general = [bench.pool.texts[i] for i in bench.head_warmup_rows()[:200]]
    assert lm_loss(warm, general, 24).loss < lm_loss(fresh, general, 24).loss - 0.2
    assert bench.lm_loss_before() == pytest.approx(lm_loss(warm, bench.lm_texts, 24).loss)  # "before": warm head
    # both pre-fine-tuned methods, both seeds, started from that head
    assert len(seen) == 4
    for heads in seen:
        for n, p in heads.items():
            assert torch.equal(p, warm_head[n]), n
    records = bench.store.records()
    assert len({r["lm_loss_before"] for r in records}) == 1  # `none` too: warmed head, no pre-fine-tuning
    assert "warmed up alone" in (tmp_path / "results.md").read_text()


def test_no_head_warm_up_for_a_checkpoint_with_a_head(tmp_path):
    from tunesift.warmup.tasks import synthetic_pool
    from tunesift.warmup.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "bert", synthetic_pool().texts + synthetic_task().train.texts,
                              objective="mlm", max_length=64, with_lm_head=True)
    bench, _ = _run(tmp_path / "out", ["random"], model=str(folder))
    assert bench.start_path() == str(folder)
    assert json.loads((tmp_path / "out" / "cache" / "warm_head.json").read_text())["warmed"] is False
    with pytest.raises(ValueError, match="head_warmup_steps"):
        _run(tmp_path / "bad", ["random"], head_warmup_steps=-1)


def test_gotd_and_knn_units_when_registered(tmp_path):
    from tunesift.registry import POOL_METHODS

    methods = [m for m in ("gotd", "knn") if m in POOL_METHODS]
    if not methods:
        pytest.skip("gotd/knn not registered yet")
    bench, _ = _run(tmp_path, methods, finetune_epochs=1)
    bench.run()
    for r in bench.store.records():
        # the synthetic pool holds 100 domain-0 rows (5% of 2000): the target's domain dominates the picks
        assert r["selected_domains"].get("d0", 0) >= 30, r
        assert (tmp_path / "selections" / f"method={r['method']},seed=0" / "done.json").exists()


def test_precomputed_pool_embeddings_give_the_same_selection(tmp_path):
    from tunesift.warmup.tasks import synthetic_pool

    path = tmp_path / "pool.npy"
    np.save(path, HashingEmbedder().embed(synthetic_pool().texts))
    given, _ = _run(tmp_path / "given", ["knn"], pool_embeddings=str(path), pool_size=1500)
    given_order, _ = given.ranking("knn", 0)
    # the same rows in the subsample, in the same order, as picked from the full pool's embeddings
    ids_given = given.kept_rows[given_order[:50]]
    assert set(ids_given) <= set(given.kept_rows)
    full, _ = _run(tmp_path / "full", ["knn"], pool_size=1500)
    assert np.array_equal(full.kept_rows[full.ranking("knn", 0)[0][:50]], ids_given)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.random.default_rng(0).normal(size=(2000, 256)).astype(np.float32))
    wrong, _ = _run(tmp_path / "wrong", ["knn"], pool_embeddings=str(bad))
    with pytest.raises(ValueError, match="do not match --embedder"):
        wrong.ranking("knn", 0)


def test_a_decoder_is_pre_fine_tuned_with_causal_lm(tmp_path):
    from tunesift.warmup.tasks import synthetic_pool
    from tunesift.warmup.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "llama", synthetic_pool().texts + synthetic_task().train.texts,
                              objective="causal", max_length=64)
    bench, _ = _run(tmp_path / "out", ["random"], model=str(folder), finetune_epochs=1)
    bench.run()
    (record,) = bench.store.records()
    assert record["pretrain_steps"] == 4 and 0 <= record["test_score"] <= 1
    # next-token loss of a random model over a vocabulary of ~170 words: about log(170)
    assert 3.0 < record["lm_loss_before"] < 7.0 and record["lm_loss_after"] != record["lm_loss_before"]
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["model_path"] == str(folder)


def test_cli_registers_and_parses(tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="bench")
    bench_gotd.register(sub)
    args = parser.parse_args(["gotd", "--scale", "tiny", "--out", str(tmp_path), "--methods", "random,none",
                              "--budgets", "400,100", "--seeds", "3", "--label-budget", "50", "--pretrain-lr", "0.01"])
    assert args.func is bench_gotd.run_cli
    c = config_from_args(args)
    assert c.methods == ["random", "none"] and c.budgets == [100, 400] and c.seeds == [0, 1, 2]
    assert c.label_budget == 50 and c.pretrain_lr == 0.01 and c.finetune_lr == SCALES["tiny"].finetune_lr
    bad = parser.parse_args(["gotd", "--out", str(tmp_path), "--seeds", "0"])
    with pytest.raises(ValueError, match="--seeds"):
        config_from_args(bad)


def test_tunesift_bench_gotd_command_exists():
    from tunesift.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(["bench", "gotd", "--out", "x", "--methods", "random"])
    except SystemExit:
        pytest.skip("`tunesift bench` (bench/cli.py) does not register gotd yet")
    assert args.func is bench_gotd.run_cli
