"""TIGER's samples, effort (against a loop), training (learns a pattern, resumes) and the backbone."""

import json

import numpy as np
import pytest
import torch

from tunesift.rec.data import RecData
from tunesift.rec.tiger.effort import effort_scores, user_chunks
from tunesift.rec.tiger.model import EOS, TigerVocab, build_t5, history_tokens, pad_batch, sample_losses, training_pairs

torch.set_num_threads(1)


def tiny_vocab(n_items=12, users=4):
    return TigerVocab(level_sizes=(4, 4, 3), n_user_tokens=users)


def tiny_tokens(vocab, n_items=12, seed=0):
    """(n_items + 1, 3) unique token rows (row 0 unused)."""
    rng = np.random.default_rng(seed)
    combos = np.array([(a, b, c) for a in range(4) for b in range(4) for c in range(3)])
    codes = combos[rng.choice(len(combos), size=n_items, replace=False)]
    return np.concatenate([np.zeros((1, 3), dtype=np.int64), vocab.item_tokens(codes)])


def test_vocab_layout_and_history_tokens():
    v = TigerVocab(level_sizes=(256, 256, 256, 5), n_user_tokens=2000)
    assert v.offsets == (2, 258, 514, 770) and v.first_user_token == 775 and v.size == 2775
    assert v.item_tokens(np.array([[0, 1, 2, 3]])).tolist() == [[2, 259, 516, 773]]
    with pytest.raises(ValueError, match="outside"):
        v.item_tokens(np.array([[0, 0, 0, 5]]))
    assert v.user_token("u1") == v.user_token("u1") and 775 <= v.user_token("u1") < 2775
    assert TigerVocab((4,), 0).user_token("u1") is None
    tok = np.arange(40).reshape(10, 4)
    assert history_tokens(tok, [1, 2, 3], max_items=2, user_token=99) == [99, 8, 9, 10, 11, 12, 13, 14, 15, EOS]
    assert history_tokens(tok, [], max_items=2, user_token=None) == [EOS]


def test_training_pairs_expand_every_prefix_like_a_loop():
    vocab = tiny_vocab()
    tok = tiny_tokens(vocab)
    train = [[1, 2, 3, 4], [5], [6, 7], []]
    pairs = training_pairs(tok, vocab, train, ["a", "b", "c", "d"], max_items=2)
    expected = []
    for k, seq in enumerate(train):
        for j in range(1, len(seq)):
            expected.append((k, history_tokens(tok, seq[:j], 2, vocab.user_token("abcd"[k])), seq[j]))
    assert len(pairs) == len(expected) == 4
    for i, (owner, inputs, target) in enumerate(expected):
        assert pairs.owner[i] == owner and pairs.targets[i] == target
        assert pairs.tokens[pairs.offsets[i]:pairs.offsets[i + 1]].tolist() == inputs
    ids, mask, labels = pad_batch(pairs, np.array([0, 2]), tok)
    assert ids.shape == mask.shape and labels.tolist() == [tok[2].tolist(), tok[4].tolist()]
    assert mask.sum(1).tolist() == [int(pairs.lengths()[0]), int(pairs.lengths()[2])]


def test_user_chunks_cover_every_user_with_samples_once():
    counts = np.array([3, 0, 1, 7, 2, 2])
    groups = user_chunks(counts, max_pairs=4)
    flat = [u for g in groups for u in g]
    assert sorted(flat) == [0, 2, 3, 4, 5]
    assert all(counts[g].sum() <= 4 or len(g) == 1 for g in groups)


def _loop_effort(model, pairs, tok, n_users, names):
    """Oracle: one backward per user of its mean sample loss."""
    params = dict(model.named_parameters())
    out = np.zeros(n_users)
    model.eval()
    for u in range(n_users):
        index = np.flatnonzero(pairs.owner == u)
        if index.size == 0:
            continue
        model.zero_grad()
        ids, mask, labels = pad_batch(pairs, index, tok)
        sample_losses(model, ids, mask, labels).mean().backward()
        out[u] = float(torch.sqrt(sum((params[n].grad ** 2).sum() for n in names)))
    return out


@pytest.fixture(scope="module")
def tiny_t5():
    vocab = tiny_vocab()
    tok = tiny_tokens(vocab)
    model = build_t5(vocab.size, d_model=16, d_kv=4, num_heads=2, d_ff=32, encoder_layers=2, decoder_layers=2,
                     dropout=0.1, seed=0)
    rng = np.random.default_rng(1)
    train = [[int(x) for x in rng.integers(1, 13, size=rng.integers(1, 9))] for _ in range(9)]
    pairs = training_pairs(tok, vocab, train, list(range(9)), max_items=3)
    return model, pairs, tok, len(train)


@pytest.mark.parametrize("pattern", [None, r"decoder\.block\.\d\.layer\.\d\.(SelfAttention|EncDecAttention)\.[qkvo]\.weight",
                                     r".*DenseReluDense\.w[io]\.weight"])
def test_effort_hook_path_matches_a_loop(tiny_t5, pattern):
    model, pairs, tok, n = tiny_t5
    scores, names, path = effort_scores(model, pairs, tok, n, pattern, max_pairs=7)
    assert path == "hooks"
    np.testing.assert_allclose(scores, _loop_effort(model, pairs, tok, n, names), rtol=1e-4, atol=1e-7)
    assert scores[np.bincount(pairs.owner, minlength=n) == 0].tolist() == [0.0] * int(
        (np.bincount(pairs.owner, minlength=n) == 0).sum())
    model.train()
    again, _, _ = effort_scores(model, pairs, tok, n, pattern, max_pairs=1000)  # batch invariance
    np.testing.assert_allclose(again, scores, rtol=1e-4)  # dropout is off while it runs...
    assert model.training  # ...and the mode is restored afterwards
    model.eval()


def test_effort_vmap_path_matches_a_loop(tiny_t5):
    model, pairs, tok, n = tiny_t5
    vocab = tiny_vocab()

    def eager():
        return build_t5(vocab.size, d_model=16, d_kv=4, num_heads=2, d_ff=32, encoder_layers=2, decoder_layers=2,
                        dropout=0.1, seed=0, attention="eager")

    pattern = r"shared\.weight|decoder\.final_layer_norm\.weight"
    scores, names, path = effort_scores(model, pairs, tok, n, pattern, eager_model=eager)
    assert path == "vmap" and names == ["shared.weight", "decoder.final_layer_norm.weight"]
    np.testing.assert_allclose(scores, _loop_effort(model, pairs, tok, n, names), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="match no parameter"):
        effort_scores(model, pairs, tok, n, "nothing-like-this")


def pattern_data(n_users=120, n_items=24, length=6, seed=0) -> RecData:
    """Every user walks the catalogue in steps of +1 from a random start: the next item is predictable."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for _ in range(n_users):
        start = int(rng.integers(0, n_items))
        walk = [(start + j) % n_items + 1 for j in range(length + 2)]
        train.append(walk[:length])
        valid.append([walk[length]])
        test.append([walk[length + 1]])
    titles = [""] + [f"item {i}" for i in range(1, n_items + 1)]
    return RecData(users=list(range(n_users)), train=train, valid=valid, test=test, titles=titles,
                   item_ids=[None, *range(1, n_items + 1)], name="walk", source="pattern", fingerprint=f"walk{seed}")


def _tiger(tmp_path, epochs=25, **fit):
    from tunesift.rec.tiger import Tiger, TigerFitSettings, TigerSettings
    from tunesift.rec.tiger.rqvae import RQVAESettings

    emb = np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32)
    np.save(tmp_path / "emb.npy", emb)
    settings = TigerSettings(item_embeddings=str(tmp_path / "emb.npy"), user_tokens=8, d_model=32, d_kv=8, heads=2,
                             d_ff=64, encoder_layers=2, decoder_layers=2, dropout=0.0,
                             rqvae=RQVAESettings(codebook_size=4, latent_dim=8, hidden=(32, 16), epochs=20,
                                                 batch_size=32, kmeans_iters=5),
                             fit=TigerFitSettings(**{"epochs": epochs, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5,
                                                     "patience": 0, "beams": 10, "max_val": None, **fit}))
    return Tiger(settings, device="cpu", progress=False, cache_dir=tmp_path / "cache")


def test_tiger_learns_a_pattern_and_beats_popularity(tmp_path):
    from tunesift.finetune.metrics import metrics_from_top_k

    data = pattern_data()
    bb = _tiger(tmp_path)
    bb.prepare(data)
    assert len({tuple(r) for r in bb.tokens[1:].tolist()}) == data.n_items  # unique semantic IDs
    model, record = bb.train(data, range(100), seed=0, full=True, folder=tmp_path / "run")
    test_users = list(range(100, 120))  # users never trained on
    top = bb.recommend(model, data, test_users, 10).top_items
    assert ((top >= 1) & (top <= data.n_items)).all()
    truth = [data.test[u] for u in test_users]
    tiger = metrics_from_top_k(top, truth, [10]).recall[10]
    counts = np.bincount([i for s in data.train[:100] for i in s], minlength=data.n_items + 1)
    popular = np.argsort(-counts[1:], kind="stable")[:10] + 1
    pop = metrics_from_top_k(np.tile(popular, (20, 1)), truth, [10]).recall[10]
    assert tiger >= 0.8 and tiger > pop + 0.3, (tiger, pop)
    assert record["n_train"] == 100 * 5 and (tmp_path / "run" / "model.pt").exists()
    loaded, rec2 = bb.load(tmp_path / "run", seed=0)
    np.testing.assert_array_equal(bb.recommend(loaded, data, test_users, 10).top_items, top)
    assert rec2 == json.loads((tmp_path / "run" / "train.json").read_text())["record"]


def _die_in_epoch(monkeypatch, epoch):
    """Make training raise KeyboardInterrupt as epoch ``epoch`` starts (the epochs before it are
    checkpointed); returns the undo."""
    import tunesift.rec.tiger.train as train_module

    real, calls = train_module.length_batches, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "length_batches", dying)
    return lambda: monkeypatch.setattr(train_module, "length_batches", real)


def test_training_resumes_from_its_checkpoint_to_the_same_model(tmp_path, monkeypatch):
    data = pattern_data(n_users=40)
    bb = _tiger(tmp_path, epochs=4)
    bb.prepare(data)
    clean, _ = bb.train(data, range(40), seed=3, full=False, folder=tmp_path / "clean")
    undo = _die_in_epoch(monkeypatch, 3)  # the third epoch dies; two are checkpointed
    with pytest.raises(KeyboardInterrupt):
        bb.train(data, range(40), seed=3, full=False, folder=tmp_path / "killed")
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    undo()
    resumed, record = bb.train(data, range(40), seed=3, full=False, folder=tmp_path / "killed")
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert record["train_epochs"] == 4 and not (tmp_path / "killed" / "checkpoint.pt").exists()


def test_bfloat16_effort_stays_close_to_float32(tiny_t5):
    from scipy.stats import spearmanr

    model, pairs, tok, n = tiny_t5
    exact, _, _ = effort_scores(model, pairs, tok, n)
    half, _, _ = effort_scores(model, pairs, tok, n, precision="bfloat16")
    has = exact > 0
    assert not np.array_equal(exact, half)
    np.testing.assert_allclose(half[has], exact[has], rtol=0.05)
    assert spearmanr(half[has], exact[has]).correlation > 0.9


def test_dealrec_command_on_the_tiger_backbone(tmp_path):
    import pyarrow.parquet as pq
    from recfixtures import write_dealrec_folder

    from tunesift.cli import main

    folder = tmp_path / "games"
    write_dealrec_folder(folder, n_users=24, n_items=20, seed=5)
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
    out = tmp_path / "out"
    argv = ["dealrec", "--data", str(folder), "--budget", "5", "--out", str(out), "--backbone", "tiger",
            "--tiger-item-embeddings", str(tmp_path / "emb.npy"), "--tiger-d-model", "16", "--tiger-d-kv", "4",
            "--tiger-heads", "2", "--tiger-d-ff", "32", "--tiger-encoder-layers", "1", "--tiger-decoder-layers", "1",
            "--tiger-rqvae-codebook-size", "4", "--tiger-rqvae-hidden", "16", "--tiger-rqvae-epochs", "5",
            "--surrogate-epochs", "2", "--hidden-size", "16", "--max-len", "8", "--lissa-depth", "20",
            "--device", "cpu", "--no-progress", "--no-plot"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"] == "tiger" and manifest["settings"]["backbone"]["d_model"] == 16
    assert manifest["stages"]["effort"]["path"] == "hooks"
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert np.isfinite(table["effort"]).all() and sum(table["selected"]) == 5
    rows = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(len(r["semantic_ids"]) == len(r["train_items"]) for r in rows)
    assert all(len(ids) == 4 for r in rows for ids in r["semantic_ids"])
    assert main([*argv, "--lora-r", "4"]) == 2  # a BIGRec flag with the TIGER backbone is refused


def test_validation_users_of_the_pick_or_the_same_users_for_every_pick():
    from types import SimpleNamespace

    from tunesift.rec.tiger.backbone import validation_users
    from tunesift.rec.tiger.settings import TigerFitSettings

    valid = [[1] if u % 3 == 0 else [] for u in range(30)]  # users 0, 3, ..., 27 have a validation item
    data = SimpleNamespace(n_users=30, valid=valid)
    pick_a, pick_b = [1, 3, 4, 9, 10], [0, 6, 7, 8, 27, 28]
    selected = TigerFitSettings(max_val=None)
    assert validation_users(data, pick_a, selected, seed=0) == [3, 9]
    assert validation_users(data, pick_b, selected, seed=0) == [0, 6, 27]
    every = TigerFitSettings(max_val=None, valid_users="all")
    assert validation_users(data, pick_a, every, seed=0) == list(range(0, 30, 3))
    capped = TigerFitSettings(max_val=4, valid_users="all")
    first = validation_users(data, pick_a, capped, seed=0)
    assert len(first) == 4 and set(first) <= set(range(0, 30, 3)) and first == sorted(first)
    assert validation_users(data, pick_b, capped, seed=5) == first  # the same users whatever the pick and seed
    with pytest.raises(ValueError, match="valid_users"):
        TigerFitSettings(valid_users="some")


def test_step_budget_validates_every_n_steps_and_stops_at_the_budget(tmp_path, monkeypatch):
    data = pattern_data(n_users=40)  # 200 samples, batches of 32: 7 steps an epoch
    by_epoch = _tiger(tmp_path, epochs=3)
    by_epoch.prepare(data)
    ref, ref_record = by_epoch.train(data, range(40), seed=1, full=False, folder=tmp_path / "epochs")
    # validating every 7 steps is validating every epoch: the same model and the same pick of the best
    by_step = _tiger(tmp_path, epochs=3, eval_every_steps=7)
    by_step.prepare(data)
    same, record = by_step.train(data, range(40), seed=1, full=False, folder=tmp_path / "steps")
    for (name, a), b in zip(ref.state_dict().items(), same.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert record["best_step"] == 7 * record["best_epoch"] and record["train_steps"] == ref_record["train_steps"] == 21
    assert {k: v for k, v in record.items() if k != "best_step"} == ref_record

    budget = _tiger(tmp_path, epochs=50, eval_every_steps=3, max_steps=10)
    budget.prepare(data)
    clean, record = budget.train(data, range(40), seed=2, full=False, folder=tmp_path / "budget")
    history = json.loads((tmp_path / "budget" / "train.json").read_text())["history"]
    assert [h["step"] for h in history if h.get("validation")] == [3, 6, 9, 10]
    assert record["train_steps"] == 10 and record["train_epochs"] == 2 and record["best_step"] in (3, 6, 9, 10)

    undo = _die_in_epoch(monkeypatch, 2)  # the second epoch dies after the first is checkpointed
    with pytest.raises(KeyboardInterrupt):
        budget.train(data, range(40), seed=2, full=False, folder=tmp_path / "killed")
    undo()
    resumed, again = budget.train(data, range(40), seed=2, full=False, folder=tmp_path / "killed")
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert again == record

    stops = _tiger(tmp_path, epochs=50, eval_every_steps=2, patience=1)
    stops.prepare(data)
    _, early = stops.train(data, range(40), seed=2, full=False, folder=tmp_path / "patience")
    assert early["stopped_early"] and early["train_steps"] % 2 == 0 and early["train_steps"] < 50 * 7


def _raw_run(bb, data, users, seed, **fit):
    """A fresh model trained by train_tiger without validation (the last weights kept)."""
    import dataclasses

    from tunesift.rec.tiger.train import train_tiger

    model = bb.new_model(seed)
    settings = dataclasses.replace(bb.settings.fit, **fit)
    train_tiger(model, bb._pairs(data, users, "train"), bb.tokens, settings, seed, progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_weight_average_is_the_moving_average_of_the_raw_trajectory(tmp_path):
    from tunesift.rec.tiger.train import ema_decay

    data = pattern_data(n_users=40)  # 7 steps an epoch: the trajectory crosses an epoch boundary
    bb = _tiger(tmp_path, epochs=50)
    bb.prepare(data)
    users, steps, decay = range(40), 9, 0.8
    trajectory = [{k: v.detach().clone() for k, v in bb.new_model(4).state_dict().items()}]
    trajectory += [_raw_run(bb, data, users, 4, max_steps=t) for t in range(1, steps + 1)]
    average = _raw_run(bb, data, users, 4, max_steps=steps, ema=decay)
    for name, w0 in trajectory[0].items():  # a plain loop over the saved weights of every step
        expected = w0.double()
        for t in range(1, steps + 1):
            d = min(decay, (1 + t) / (10 + t))
            expected = d * expected + (1 - d) * trajectory[t][name].double()
        torch.testing.assert_close(average[name].double(), expected, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(average["shared.weight"], trajectory[-1]["shared.weight"])  # it is not the raw model
    assert ema_decay(0.999, 0) == 0.1 and ema_decay(0.999, 10**6) == 0.999


def test_cosine_learning_rate_closed_form_and_settings_checks():
    from tunesift.rec.tiger.settings import TigerFitSettings
    from tunesift.rec.tiger.train import learning_rate

    s = TigerFitSettings(lr=2e-3, warmup_steps=10, schedule="cosine", max_steps=110)
    assert learning_rate(s, 5) == pytest.approx(1e-3)  # warm-up: linear
    assert learning_rate(s, 10) == pytest.approx(2e-3)
    for step in (35, 60, 85):
        assert learning_rate(s, step) == pytest.approx(1e-3 * (1 + np.cos(np.pi * (step - 10) / 100)))
    assert learning_rate(s, 110) == pytest.approx(0.0, abs=1e-12)
    constant = TigerFitSettings(lr=2e-3, warmup_steps=10)
    assert learning_rate(constant, 5) == pytest.approx(1e-3) and learning_rate(constant, 500) == 2e-3
    with pytest.raises(ValueError, match="max_steps"):
        TigerFitSettings(schedule="cosine")
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema"):
            TigerFitSettings(ema=bad)
    with pytest.raises(ValueError, match="select_on"):
        TigerFitSettings(select_on="accuracy")


def test_validation_loss_matches_a_per_sample_loop(tiny_t5):
    from tunesift.rec.tiger.train import validation_loss

    model, pairs, tok, _ = tiny_t5
    got = validation_loss(model, pairs, tok, batch_size=4)
    model.eval()
    with torch.no_grad():
        losses = [float(sample_losses(model, *pad_batch(pairs, np.array([i]), tok)).item()) for i in range(len(pairs))]
    assert got == pytest.approx(np.mean(losses), rel=1e-5)


def test_loss_selection_keeps_the_lowest_validation_loss_and_resumes_with_the_average(tmp_path, monkeypatch):
    from tunesift.rec.tiger.train import validation_loss

    data = pattern_data(n_users=40)
    fit = dict(epochs=50, eval_every_steps=3, max_steps=16, select_on="loss", ema=0.7, schedule="cosine")
    bb = _tiger(tmp_path, **fit)
    bb.prepare(data)
    model, record = bb.train(data, range(40), seed=5, full=False, folder=tmp_path / "clean")
    history = json.loads((tmp_path / "clean" / "train.json").read_text())["history"]
    checks = [h for h in history if h.get("validation")]
    assert [h["step"] for h in checks] == [3, 6, 9, 12, 15, 16] and all("loss" in h for h in checks)
    best = min(checks, key=lambda h: h["loss"])
    assert record["best_step"] == best["step"] and record["val_loss"] == best["loss"]
    valid = bb._pairs(data, [u for u in range(40) if data.valid[u]], "valid")  # the kept model is the best one
    assert validation_loss(model, valid, bb.tokens) == pytest.approx(best["loss"], abs=1e-5)

    undo = _die_in_epoch(monkeypatch, 2)  # the second epoch dies after the first (and its average) is checkpointed
    with pytest.raises(KeyboardInterrupt):
        bb.train(data, range(40), seed=5, full=False, folder=tmp_path / "killed")
    undo()
    resumed, again = bb.train(data, range(40), seed=5, full=False, folder=tmp_path / "killed")
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert again == record
