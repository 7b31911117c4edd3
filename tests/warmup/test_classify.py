"""Metrics against scikit-learn; classifier building, training and prediction on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesift.warmup.classify import (METRICS, ClassifierConfig, accuracy, binary_f1, confusion_matrix,
                                      finetune_and_evaluate, load_classifier, macro_f1, matthews_corrcoef,
                                      micro_f1, predict, score, train_classifier)
from tunesift.warmup.pretrain import PretrainConfig, load_language_model, pretrain
from tunesift.warmup.tasks import LabelledSplit

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    y = rng.integers(0, k, size=int(rng.integers(5, 60)))
    p = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, k, size=len(y)))
    assert accuracy(y, p) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    assert micro_f1(y, p) == pytest.approx(sklearn_metrics.f1_score(y, p, average="micro"))
    assert macro_f1(y, p) == pytest.approx(sklearn_metrics.f1_score(y, p, average="macro", zero_division=0))
    assert matthews_corrcoef(y, p) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p))
    yb, pb = (y > 0).astype(int), (p > 0).astype(int)
    assert binary_f1(yb, pb) == pytest.approx(sklearn_metrics.f1_score(yb, pb, zero_division=0))
    assert micro_f1(y, p) == pytest.approx(accuracy(y, p))  # single-label data


def test_metric_edge_cases():
    y = np.array([0, 0, 1, 1])
    assert macro_f1(y, y) == 1.0 and matthews_corrcoef(y, y) == pytest.approx(1.0)
    assert matthews_corrcoef(y, 1 - y) == pytest.approx(-1.0)
    assert matthews_corrcoef(y, np.zeros(4, int)) == 0.0  # undefined: constant prediction
    # a label present only in the predictions counts in macro-F1 (scikit-learn's convention)
    assert macro_f1(np.array([0, 0]), np.array([0, 2])) == pytest.approx((2 / 3 + 0) / 2)
    assert confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 3).tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="same length"):
        accuracy(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="metric 'auc'"):
        score("auc", y, y)
    assert set(METRICS) == {"micro_f1", "macro_f1", "f1", "mcc", "accuracy"}


def test_classifier_config_names_bad_fields():
    with pytest.raises(ValueError, match="`learning_rate`"):
        ClassifierConfig(learning_rate=0)
    with pytest.raises(ValueError, match="`epochs`"):
        ClassifierConfig(epochs=0)
    with pytest.raises(ValueError, match="`warmup_ratio`"):
        ClassifierConfig(warmup_ratio=1.0)


def _assert_same(a: dict, b: dict, keys) -> None:
    for k in keys:
        assert torch.equal(a[k], b[k]), k


def test_classifier_takes_the_pre_fine_tuned_encoder_and_the_original_pooler(bert_dir, task):
    lm = load_language_model(bert_dir, seed=0)
    pretrain(lm, task.train.texts[:32], PretrainConfig(learning_rate=1e-2, max_steps=3, batch_size=8, device="cpu"))
    original = load_classifier(bert_dir, 2, seed=0)
    warmed = load_classifier(bert_dir, 2, seed=0, backbone=lm)
    lm_state = lm.model.base_model.state_dict()
    warm_state = warmed.model.base_model.state_dict()
    encoder_keys = [k for k in lm_state]
    _assert_same(warm_state, lm_state, encoder_keys)
    assert not torch.equal(original.model.base_model.state_dict()[encoder_keys[0]], lm_state[encoder_keys[0]])
    pooler = [k for k in warm_state if k.startswith("pooler.")]
    assert pooler
    _assert_same(warm_state, original.model.base_model.state_dict(), pooler)
    # the classification head depends on the seed only
    _assert_same(warmed.model.state_dict(), original.model.state_dict(), ["classifier.weight", "classifier.bias"])
    other = load_classifier(bert_dir, 2, seed=1)
    assert not torch.equal(other.model.classifier.weight, original.model.classifier.weight)


def test_classifier_refuses_a_backbone_of_another_architecture(bert_dir, llama_dir):
    lm = load_language_model(llama_dir)
    with pytest.raises(ValueError, match="does not match"):
        load_classifier(bert_dir, 2, backbone=lm)


def test_fine_tuning_learns_the_synthetic_task_and_keeps_the_best_epoch(bert_dir, task):
    torch.set_num_threads(1)
    config = ClassifierConfig(learning_rate=1e-3, epochs=6, batch_size=16, max_length=32, device="cpu")
    result = finetune_and_evaluate(bert_dir, task, config)
    assert result.test_score > 0.9  # chance is ~0.5
    assert result.labels_used == len(task.train) and result.test_examples == len(task.test)
    assert result.test_predictions.shape == (len(task.test),)  # the per-example values of the paired statistics
    assert score(task.metric, task.test.labels, result.test_predictions) == result.test_score
    dev_scores = [h["dev_score"] for h in result.history]
    assert len(dev_scores) == 6
    assert result.dev_score == max(dev_scores) and result.best_epoch == 1 + dev_scores.index(max(dev_scores))


def test_best_epoch_weights_are_restored(bert_dir, task):
    config = ClassifierConfig(learning_rate=1e-3, epochs=3, batch_size=16, max_length=32, device="cpu")
    clf = load_classifier(bert_dir, task.num_labels, seed=0)
    training = train_classifier(clf, task.train, config, dev=task.dev, metric="macro_f1")
    kept = training.history[training.best_epoch - 1]["dev_score"]
    assert score("macro_f1", task.dev.labels, predict(clf, task.dev)) == pytest.approx(kept)


def test_predictions_do_not_depend_on_batch_size(bert_dir, task):
    clf = load_classifier(bert_dir, 2, seed=3)
    a = predict(clf, task.test, batch_size=1)
    b = predict(clf, task.test, batch_size=7)
    c = predict(clf, task.test, batch_size=100)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_pairs_use_segment_ids(bert_dir):
    clf = load_classifier(bert_dir, 2)
    pairs = LabelledSplit(texts=["d0w1 d0w2", "d0w3"], labels=[0, 1], text_pairs=["d1w1", "d1w2 d1w3"])
    from tunesift.warmup.classify import _encode_split

    enc = _encode_split(clf.tokenizer, pairs, 32)
    assert enc[0]["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    single = LabelledSplit(texts=["d0w1"], labels=[0])
    assert "token_type_ids" not in _encode_split(clf.tokenizer, single, 32)[0]
    assert predict(clf, pairs).shape == (2,)


def test_decoder_classifier_from_a_causal_lm(llama_dir, task):
    lm = load_language_model(llama_dir)
    pretrain(lm, task.train.texts[:16], PretrainConfig(max_steps=2, batch_size=8, device="cpu"))
    clf = load_classifier(llama_dir, 2, backbone=lm)
    config = ClassifierConfig(learning_rate=3e-3, epochs=4, batch_size=16, max_length=32, device="cpu")
    train_classifier(clf, task.train, config, metric="accuracy")
    # the decoder reads the last real token: right padding must not change predictions
    assert np.array_equal(predict(clf, task.test, batch_size=1), predict(clf, task.test, batch_size=50))
    assert score("accuracy", task.test.labels, predict(clf, task.test)) > 0.75


@pytest.mark.parametrize("which,adapted,head", [("bert_dir", ("query", "value"), "classifier"),
                                                ("llama_dir", ("q_proj", "v_proj"), "score")])
def test_lora_fine_tuning_trains_the_adapters_and_the_head_only_and_merges(which, adapted, head, request, task):
    torch.set_num_threads(1)
    folder = request.getfixturevalue(which)
    config = ClassifierConfig(learning_rate=3e-2, epochs=4, batch_size=16, max_length=32, device="cpu", lora_r=4)
    start = {n: p.detach().clone() for n, p in load_classifier(folder, 2, seed=0).model.named_parameters()}
    clf = load_classifier(folder, 2, seed=0)
    train_classifier(clf, task.train, config, dev=task.dev, metric="accuracy")
    assert not hasattr(clf.model, "peft_config") and set(dict(clf.model.named_parameters())) == set(start)
    changed = {n for n, p in clf.model.named_parameters() if not torch.equal(p, start[n])}
    backbone = {n for n in changed if not n.startswith(head)}
    assert any(n.startswith(head) for n in changed)  # the new head is trained whole
    assert backbone and all(n.rsplit(".", 2)[-2] in adapted for n in backbone), sorted(backbone)[:5]
    assert score("accuracy", task.test.labels, predict(clf, task.test)) > 0.75  # chance ~0.5
    again = load_classifier(folder, 2, seed=0)
    train_classifier(again, task.train, config, dev=task.dev, metric="accuracy")
    assert np.array_equal(predict(again, task.test), predict(clf, task.test))  # seeded adapters
    with pytest.raises(ValueError, match="lora_r"):
        ClassifierConfig(lora_r=-2)


def test_training_rejects_bad_labels(bert_dir):
    clf = load_classifier(bert_dir, 2)
    with pytest.raises(ValueError, match="training labels"):
        train_classifier(clf, LabelledSplit(texts=["a"], labels=[2]), ClassifierConfig(device="cpu"))
    with pytest.raises(ValueError, match="num_labels"):
        load_classifier(bert_dir, 1)
