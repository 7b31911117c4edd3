"""`tunesift bench gotd`: settings, leak guard, a tiny end-to-end grid (fine-tuned and zero-shot), per-example
results and paired comparisons, resumption and the CLI."""

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
    # per-example correctness of the classifier's test predictions, and the paired comparisons built on it
    _check_per_example(tmp_path, records, n_test=60)
    paired = md.split("## Paired comparisons", 1)[1]
    assert "### budget 50" in paired and "Δ vs none [95% CI]" in paired and "Δ vs random [95% CI]" in paired
    assert "| dsir | 1 |" in paired and "Significant (95% CI of the paired difference excludes 0)" in paired
    numbers = json.loads(files.json.read_text())["paired"]["50"]
    assert [c["method"] for c in numbers] == ["dsir", "random", "none"]
    assert set(numbers[0]["differences"]) == {"none", "random"}
    assert numbers[0]["estimate"]["mean"] == pytest.approx(by["dsir"]["test_accuracy"])

    # resuming: nothing is redone, and more seeds only run the new units
    def fail(*a, **k):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(GotdBench, "run_one", fail)
    again, _ = _run(tmp_path, ["dsir", "random", "none"])
    again.run()
    # other comparable settings are refused
    with pytest.raises(ValueError, match="other settings"):
        _run(tmp_path, ["random"], label_budget=70)


def test_two_benches_share_one_folder_each_run_done_once(tmp_path, monkeypatch):
    """A run another live process holds is skipped, not redone; the bench finishing last reports it."""
    import torch

    from tunesift.io.lock import LOCK_NAME, hold_lock

    torch.set_num_threads(1)
    bench, _ = _run(tmp_path, ["random", "none"])
    held = {"method": "random", "budget": 50, "seed": 0}
    ran = []
    real = GotdBench.run_one
    monkeypatch.setattr(GotdBench, "run_one", lambda self, m, *a: ran.append(m) or real(self, m, *a))
    with hold_lock(bench.store.run_dir(held) / LOCK_NAME, "the other bench"):  # as a second process would
        files = bench.run()
    assert ran == ["none"] and not bench.store.is_done(held)
    assert "| none | 0 | 1 |" in files.markdown.read_text()
    again, _ = _run(tmp_path, ["random", "none"])  # the other bench gone: its run is done here, none is not
    files = again.run()
    assert ran == ["none", "random"] and again.store.is_done(held)
    assert "| random | 50 | 1 |" in files.markdown.read_text()


def _check_per_example(out, records, n_test):
    """Every run saved (N,) correctness = (predicted == labels), whose mean is its test accuracy."""
    for r in records:
        with np.load(out / "runs" / f"method={r['method']},budget={r['budget']},seed={r['seed']}" / "per_example.npz") as z:
            assert z["correct"].shape == (n_test,) and set(np.unique(z["correct"])) <= {0, 1}
            assert np.array_equal(z["correct"], (z["predicted"] == z["labels"]).astype(np.uint8))
            assert z["correct"].mean() == pytest.approx(r["test_accuracy"])


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


ZERO_SHOT = ["bench", "gotd", "--scale", "tiny", "--eval", "zero-shot", "--label-budget", "60", "--test-limit", "60",
             "--lm-loss-texts", "30", "--pretrain-epochs", "1", "--max-length", "24", "--no-progress"]


def test_zero_shot_bench_end_to_end_through_the_cli(tmp_path):
    import torch
    from transformers import AutoConfig

    from tunesift.cli import main
    from tunesift.warmup.classify import macro_f1

    torch.set_num_threads(1)
    out = tmp_path / "zs"
    assert main(ZERO_SHOT + ["--methods", "dsir,random,none", "--budgets", "50", "--seeds", "2", "--out", str(out)]) == 0
    assert AutoConfig.from_pretrained(out / "model").architectures == ["LlamaForCausalLM"]  # a tiny causal LM
    records = json.loads((out / "results.json").read_text())["runs"]
    # `none` is the starting model scored without labels: deterministic, so one run, not one per seed
    assert sorted((r["method"], r["seed"]) for r in records) == [("dsir", 0), ("dsir", 1), ("none", 0),
                                                                   ("random", 0), ("random", 1)]
    by = {(r["method"], r["seed"]): r for r in records}
    for r in records:
        assert r["eval"] == "zero-shot" and r["labels_used"] == 0 and r["test_examples"] == 60
        assert 0 <= r["test_accuracy"] <= 1 and np.isfinite(r["lm_loss_after"])
    assert by[("dsir", 0)]["lm_loss_after"] < by[("none", 0)]["lm_loss_before"]  # pre-fine-tuned on the target domain
    _check_per_example(out, records, n_test=60)
    with np.load(out / "runs" / "method=random,budget=50,seed=1" / "per_example.npz") as z:
        assert z["label_scores"].shape == (60, 2) and np.array_equal(z["predicted"], z["label_scores"].argmax(1))
        # the synthetic task's metric is macro-F1: the main score is computed from the same predictions
        assert by[("random", 1)]["test_score"] == pytest.approx(macro_f1(z["labels"], z["predicted"]))
    md = (out / "results.md").read_text()
    assert "(zero-shot)" in md and "test accuracy" in md and "Evaluation **zero-shot**" in md
    assert '`"{text}\\nLabel:"`' in md and '`" label0"`' in md and "summed over its tokens" in md
    assert "--eval zero-shot" in md
    paired = md.split("## Paired comparisons", 1)[1]
    assert "### budget 50" in paired and "Δ vs none [95% CI]" in paired and "| none | 1 |" in paired
    # run to run: dsir and random share seeds 0 and 1; none has one run, so nothing is paired with it over seeds
    over = json.loads((out / "results.json").read_text())["paired"]["over seeds"]["50"]
    assert set(over) == {"dsir"} and set(over["dsir"]) == {"random"}
    acc = {k: r["test_accuracy"] for k, r in by.items()}
    assert over["dsir"]["random"]["differences"] == pytest.approx(
        [acc[("dsir", s)] - acc[("random", s)] for s in (0, 1)], abs=1e-12)
    assert "Δ accuracy vs random over seeds [95% t-interval]" in paired
    settings = json.loads((out / "bench.json").read_text())
    assert settings["eval"] == "zero-shot" and settings["length_norm"] == "sum"
    assert settings["zero_shot_prompt"]["verbalizers"] == {"label0": " label0", "label1": " label1"}
    # another prompt cannot resume into the same folder
    assert main(ZERO_SHOT + ["--methods", "none", "--budgets", "50", "--seeds", "1", "--out", str(out),
                             "--template", "{text} is"]) == 2


def test_zero_shot_prompt_from_files_and_bad_ones_through_the_cli(tmp_path, capsys):
    from tunesift.cli import main

    good = tmp_path / "verbalizer.json"
    good.write_text(json.dumps({"label1": " cue1", "label0": " cue0"}))
    out = tmp_path / "own"
    assert main(ZERO_SHOT + ["--methods", "none", "--budgets", "50", "--seeds", "1", "--out", str(out),
                             "--template", "{text}\\nanswer:", "--verbalizer", str(good), "--length-norm", "mean"]) == 0
    prompt = json.loads((out / "bench.json").read_text())["zero_shot_prompt"]
    assert prompt == {"template": "{text}\nanswer:", "verbalizers": {"label0": " cue0", "label1": " cue1"},
                      "source": str(good)}
    assert "mean per token" in (out / "results.md").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"label0": " cue0"}))
    cases = [(["--verbalizer", str(bad)], "bad.json: no verbalizer for label(s) 'label1'"),
             (["--template", "no placeholder"], "--template: no {text} placeholder"),
             (["--verbalizer", str(tmp_path / "nope.json")], "nope.json: no such verbalizer file")]
    for flags, message in cases:
        target = tmp_path / "bad-out"
        assert main(ZERO_SHOT + ["--methods", "none", "--out", str(target)] + flags) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not target.exists()
    assert main(["bench", "gotd", "--scale", "tiny", "--template", "{text}:", "--out", str(tmp_path / "ft")]) == 2
    assert "--template applies to --eval zero-shot only" in capsys.readouterr().err


def test_zero_shot_needs_a_causal_model_and_cpu_scale_defaults_to_smollm2(tmp_path):
    from tunesift.warmup.tasks import synthetic_pool
    from tunesift.warmup.tiny import build_tiny_model

    c = GotdBenchConfig.from_scale("cpu", str(tmp_path), task="ag_news", pool="p.jsonl", eval="zero-shot")
    assert c.model == "smollm2" and c.embedder == "minilm"
    assert (c.budgets, c.seeds) == ([250, 1000], [0, 1, 2])  # the zero-shot grid, sized from measured runs
    finetune = GotdBenchConfig.from_scale("cpu", str(tmp_path), task="ag_news", pool="p.jsonl")
    assert (finetune.model, finetune.budgets, finetune.seeds) == ("minilm", [500, 2000], [0, 1])
    given = GotdBenchConfig.from_scale("cpu", str(tmp_path), task="ag_news", pool="p.jsonl", eval="zero-shot",
                                       model="tiny", budgets=[40], seeds=[5])
    assert (given.model, given.budgets, given.seeds) == ("tiny", [40], [5])  # flags win over the eval's defaults
    parser = argparse.ArgumentParser()
    bench_gotd.register(parser.add_subparsers(dest="bench"))
    args = parser.parse_args(["gotd", "--scale", "cpu", "--eval", "zero-shot", "--task", "ag_news", "--pool", "p.jsonl",
                              "--first-seed", "2", "--out", str(tmp_path / "o")])
    assert config_from_args(args).seeds == [2, 3, 4]
    with pytest.raises(ValueError, match="--objective mlm does not apply"):
        GotdBenchConfig.from_scale("tiny", str(tmp_path), eval="zero-shot", objective="mlm")
    with pytest.raises(ValueError, match="`eval` must be one of"):
        GotdBenchConfig.from_scale("tiny", str(tmp_path), eval="few-shot")
    bert = build_tiny_model(tmp_path / "bert", synthetic_pool().texts[:200], objective="mlm", max_length=64)
    with pytest.raises(ValueError, match="needs a causal LM"):
        _run(tmp_path / "out", ["random"], model=str(bert), eval="zero-shot")
    assert not (tmp_path / "out" / "bench.json").exists()


SHARED_TEXT = __import__("pathlib").Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"


@pytest.mark.skipif(not (SHARED_TEXT / "ag_news").is_dir(), reason="../shared/data/text/ag_news is absent")
def test_ag_news_parts_are_disjoint_and_its_dev_test_texts_leave_the_pool():
    import csv

    from tunesift.warmup.tasks import load_task

    task = load_task("ag_news", data_root=SHARED_TEXT)
    assert (len(task.train), len(task.dev), len(task.test)) == (5320, 760, 1520)
    parts = [set(split.texts) for split in (task.train, task.dev, task.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    # the pool's AG News rows as benchmarks/text_pool.py writes them (escaped backslashes kept)
    with open(SHARED_TEXT / "ag_news" / "test.csv", encoding="utf-8", newline="") as f:
        texts = [" ".join((r[1] + ". " + r[2]).split()) for r in csv.reader(f)]
    assert sum("\\" in t for t in texts) > 500
    _, kept, dropped = pool_rows(TextSet.from_texts(texts), task, None)
    assert dropped == len(task.dev) + len(task.test) and len(kept) == len(task.train)


def test_a_new_evaluation_is_one_registered_class(tmp_path):
    """The bench names no evaluation: a class registered in WARMUP_EVALS runs the grid, reports, and another
    evaluation's settings are refused with it."""
    from tunesift.bench.evals import WARMUP_EVALS, WarmupEval

    @WARMUP_EVALS.register("majority")
    class Majority(WarmupEval):  # the seed's most frequent label for every test text
        seeded_baseline = False

        def evaluate(self, bench, model, seed, record):
            labels = bench.labelled(seed).labels
            predictions = np.full(len(bench.test), np.bincount(labels).argmax())
            record.update(test_score=float(np.mean(predictions == bench.test.labels)), test_examples=len(bench.test))
            return predictions, {}

        def report(self, bench):
            return {"metrics": ["test_score", "lm_loss_after"], "cost": ["pretrain_s"], "protocol": "Majority label.",
                    "training": "pre-fine-tuning"}

    try:
        with pytest.raises(ValueError, match="--length-norm applies to --eval zero-shot only"):
            _run(tmp_path / "refused", ["random"], eval="majority", length_norm="mean")
        bench, c = _run(tmp_path / "out", ["random", "none"], eval="majority", seeds=[0, 1])
        files = bench.run()
        runs = sorted((r["method"], r["seed"]) for r in bench.store.records())
        assert runs == [("none", 0), ("random", 0), ("random", 1)]  # `none` once: not seeded
        assert "Majority label." in files.markdown.read_text()
        assert bench.store.settings["eval"] == "majority" and "length_norm" not in bench.store.settings
    finally:
        WARMUP_EVALS._items.pop("majority", None)


def test_lora_pre_fine_tuning_is_a_setting_of_the_bench(tmp_path, capsys):
    from tunesift.cli import main

    out = tmp_path / "lora"
    assert main(ZERO_SHOT + ["--methods", "random", "--budgets", "50", "--seeds", "1", "--pretrain-lora-r", "4",
                             "--out", str(out)]) == 0
    settings = json.loads((out / "bench.json").read_text())
    assert settings["pretrain_lora_r"] == 4
    text = (out / "results.md").read_text()
    assert "LoRA rank 4, merged" in text and "--pretrain-lora-r 4" in text
    run = json.loads(next((out / "runs").glob("method=random*/result.json")).read_text())
    assert run["pretrain_steps"] == 4 and np.isfinite(run["lm_loss_after"])  # the adapters' effect: tests/warmup
    # full-weight benches record no LoRA setting (folders from before it existed still resume)
    assert "pretrain_lora_r" not in GotdBenchConfig.from_scale("tiny", str(tmp_path / "x")).comparable_settings()
    assert main(ZERO_SHOT + ["--pretrain-lora-r", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "pretrain_lora_r" in capsys.readouterr().err


def test_a_causal_lm_fine_tuned_with_lora_on_the_labels_through_the_cli(tmp_path, capsys):
    """--eval finetune on a causal LM (GOT-D's NLU tables with a decoder): --model tiny --objective causal is a
    tiny Llama, pre-fine-tuned with causal LM, then a sequence classifier on it trained with LoRA."""
    from transformers import AutoConfig

    from tunesift.cli import main

    out = tmp_path / "causal-ft"
    base = ["bench", "gotd", "--scale", "tiny", "--model", "tiny", "--objective", "causal", "--methods", "random,none",
            "--budgets", "50", "--seeds", "1", "--label-budget", "60", "--test-limit", "60", "--lm-loss-texts", "30",
            "--pretrain-epochs", "1", "--finetune-epochs", "2", "--max-length", "24", "--no-progress"]
    assert main(base + ["--finetune-lora-r", "4", "--out", str(out)]) == 0
    assert AutoConfig.from_pretrained(out / "model").model_type == "llama"
    settings = json.loads((out / "bench.json").read_text())
    assert settings["finetune_lora_r"] == 4 and settings["objective"] == "causal"
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")]
    assert len(records) == 2 and all(0 <= r["test_score"] <= 1 and r["labels_used"] == 60 for r in records)
    text = (out / "results.md").read_text()
    assert "LoRA rank 4 and the head, merged" in text and "--finetune-lora-r 4" in text
    # full-weight benches record no LoRA setting; zero-shot refuses it
    assert "finetune_lora_r" not in GotdBenchConfig.from_scale("tiny", str(tmp_path / "x")).comparable_settings()
    assert main(ZERO_SHOT + ["--finetune-lora-r", "4", "--out", str(tmp_path / "bad")]) == 2
    assert "--finetune-lora-r applies to --eval finetune only" in capsys.readouterr().err
