import math

import numpy as np
import pytest
import torch
from recfixtures import tiny_sequences

from tunesift.rec.sasrec import (
    SASRec,
    SASRecConfig,
    TrainSettings,
    evaluate,
    evaluation_tensors,
    load_surrogate,
    sample_negatives,
    save_surrogate,
    train_sasrec,
    training_tensors,
)

torch.set_num_threads(1)


def _model(n_items=20, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = SASRecConfig(n_items=n_items, hidden_size=kw.pop("hidden_size", 16), max_len=kw.pop("max_len", 8), **kw)
    return SASRec(cfg).eval()


def test_dropout_keeps_the_mean_and_drops_p():
    from tunesift.rec.sasrec import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(200_000)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01 and abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(drop.eval()(x), x)


def test_training_rows_follow_dealrec():
    train = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    t = training_tensors(train, n_items=12, max_len=3, seed=0)
    # inputs train[:-2] and targets train[1:-1], right-aligned, cut to the last 3
    assert t.inputs.tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 9]]
    assert t.positives.tolist() == [[2, 3, 4], [0, 0, 0], [0, 0, 10]]
    assert ((t.negatives > 0) == (t.positives > 0)).all()


def test_negatives_are_unseen_fixed_and_seeded():
    train, _, _ = tiny_sequences(n_users=40, n_items=15, seed=1)
    a = training_tensors(train, 15, max_len=10, seed=5)
    b = training_tensors(train, 15, max_len=10, seed=5)
    c = training_tensors(train, 15, max_len=10, seed=6)
    assert torch.equal(a.negatives, b.negatives) and not torch.equal(a.negatives, c.negatives)
    for u, seq in enumerate(train):
        negs = a.negatives[u][a.positives[u] > 0].tolist()
        assert all(1 <= x <= 15 and x not in seq for x in negs)
    with pytest.raises(ValueError, match="every item"):
        sample_negatives(np.array([[1]]), [[1, 2]], 2, np.random.default_rng(0))


def test_loss_matches_plain_bce_formula():
    model = _model()
    train, _, _ = tiny_sequences(n_users=6, n_items=20, seed=2)
    t = training_tensors(train, 20, max_len=8, seed=0)
    losses = model(*t.loss_batch())
    with torch.no_grad():
        hidden = model.encode(t.inputs)
        emb = model.item_embeddings.weight
        for u in range(len(train)):
            terms = []
            for pos in range(8):
                p, n = int(t.positives[u, pos]), int(t.negatives[u, pos])
                if p == 0:
                    continue
                sp = torch.sigmoid(hidden[u, pos] @ emb[p]).item()
                sn = torch.sigmoid(hidden[u, pos] @ emb[n]).item()
                terms.append(-math.log(sp) - math.log(1 - sn))
            expected = sum(terms) / len(terms) if terms else 0.0
            assert losses[u].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_each_sequence_is_independent_of_its_batch_and_padding_is_inert():
    model = _model()
    train, _, _ = tiny_sequences(n_users=8, n_items=20, seed=3)
    t = training_tensors(train, 20, max_len=8, seed=0)
    together = model(*t.loss_batch())
    alone = torch.cat([model(*t.loss_batch(slice(u, u + 1))) for u in range(8)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)
    # future items cannot change the hidden state of earlier positions (causal mask)
    x = t.inputs[:1].clone()
    h1 = model.encode(x)
    x[0, -1] = (x[0, -1] % 20) + 1
    h2 = model.encode(x)
    torch.testing.assert_close(h1[0, :-1], h2[0, :-1])


def test_trimming_shared_padding_is_exact():
    from tunesift.rec.sasrec import length_order, trim_padding

    model = _model(max_len=12)
    train, _, _ = tiny_sequences(n_users=10, n_items=20, seed=6, max_train=6)
    t = training_tensors(train, 20, max_len=12, seed=0)
    batch = t.loss_batch()
    trimmed = trim_padding(batch)
    assert trimmed[0].shape[1] < 12 and (batch[0][:, : 12 - trimmed[0].shape[1]] == 0).all()
    torch.testing.assert_close(model(*trimmed), model(*batch), rtol=1e-5, atol=1e-7)
    order = length_order(batch[0])
    lengths = (batch[0][order] > 0).sum(1)
    assert (lengths[1:] >= lengths[:-1]).all()


def _metrics_oracle(scores, answers, exclude, k):
    """DEALRec's computeTopNAccuracy on a full score matrix, written plainly."""
    recalls, ndcgs = [], []
    for s, ans, ex in zip(scores, answers, exclude):
        s = s.copy()
        s[0] = -np.inf
        s[list(ex)] = -np.inf
        top = list(np.argsort(-s, kind="stable")[:k])
        gt = set(ans)
        hits = [1.0 if item in gt else 0.0 for item in top]
        dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(gt), k)))
        recalls.append(sum(hits) / len(gt))
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def test_evaluate_matches_plain_metrics():
    model = _model(seed=4)
    train, valid, _ = tiny_sequences(n_users=30, n_items=20, seed=4)
    ev = evaluation_tensors(train, valid, max_len=8)
    assert ev.users.tolist() == [u for u in range(30) if train[u] and valid[u]]
    got = evaluate(model, ev, ks=(3, 5), batch_size=7)
    with torch.no_grad():
        scores = model.score_items(ev.inputs).numpy()
    for k in (3, 5):
        users = ev.users.tolist()
        r, n = _metrics_oracle(scores, [valid[u] for u in users], [train[u] for u in users], k)
        assert got[f"recall@{k}"] == pytest.approx(r) and got[f"ndcg@{k}"] == pytest.approx(n)


def _cyclic(n_users=60, n_items=12, length=10, seed=0):
    """Users walk items i, i+1, ... cyclically: easy to learn, so validation improves with training."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for _ in range(n_users):
        start = int(rng.integers(0, n_items))
        seq = [(start + j) % n_items + 1 for j in range(length + 1)]
        train.append(seq[:-1])
        valid.append([seq[-1]])
    return train, valid


def test_training_learns_is_reproducible_and_keeps_best():
    train, valid = _cyclic()
    tr = training_tensors(train, 12, max_len=8, seed=0)
    va = evaluation_tensors(train, valid, max_len=8)
    cfg = SASRecConfig(n_items=12, hidden_size=16, max_len=8, dropout=0.1)
    settings = TrainSettings(epochs=25, batch_size=16, lr=5e-3, metric_k=2, early_epoch=3, patience=0, seed=1)
    a = train_sasrec(tr, va, cfg, settings, progress=False)
    b = train_sasrec(tr, va, cfg, settings, progress=False)
    for (ka, va_), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va_, vb)
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    assert a.best_metrics["recall@2"] > 0.5  # random ranking of 12 items gives ~0.17
    best = max(a.history, key=lambda h: (h["recall@2"], h["ndcg@2"]))
    assert a.best_epoch == best["epoch"]
    assert evaluate(a.model, va, ks=(2,))["recall@2"] == pytest.approx(a.best_metrics["recall@2"])
    assert a.early_epoch == 3 and not all(torch.equal(a.early_state[k], v) for k, v in a.model.state_dict().items())


def test_early_stopping_and_save_load(tmp_path):
    train, valid = _cyclic(n_users=20)
    tr = training_tensors(train, 12, max_len=8, seed=0)
    va = evaluation_tensors(train, valid, max_len=8)
    cfg = SASRecConfig(n_items=12, hidden_size=8, max_len=8)
    # lr 0 never improves after the first validation: stops after `patience` more
    res = train_sasrec(tr, va, cfg, TrainSettings(epochs=50, batch_size=8, lr=1e-12, patience=2, seed=0), progress=False)
    assert res.epochs_run == 3 and res.best_epoch == 1
    save_surrogate(res, tmp_path / "s.pt")
    back = load_surrogate(tmp_path / "s.pt")
    assert back.best_epoch == 1 and back.config == cfg
    for k, v in res.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[k], v)
    with pytest.raises(ValueError, match="`lr`"):
        TrainSettings(lr=0)
    with pytest.raises(ValueError, match="multiple of `n_heads`"):
        SASRecConfig(n_items=3, hidden_size=10, n_heads=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_cuda_device():
    train, valid = _cyclic(n_users=20)
    tr = training_tensors(train, 12, max_len=8, seed=0)
    va = evaluation_tensors(train, valid, max_len=8)
    res = train_sasrec(tr, va, SASRecConfig(n_items=12, hidden_size=8, max_len=8),
                       TrainSettings(epochs=2, batch_size=8), device="cuda", progress=False)
    assert next(res.model.parameters()).is_cuda


def test_layer_norm_is_the_reference_formula():
    from tunesift.rec.sasrec import LayerNorm

    norm = LayerNorm(8, eps=1e-12)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    expected = norm.weight.double() * (x - mean) / torch.sqrt(var + 1e-12) + norm.bias.double()
    torch.testing.assert_close(norm.double()(x), expected)
