"""Fine-tuning a classifier on a labelled target task, and the tasks' metrics.

After pre-fine-tuning, GOT-D's paper fine-tunes the model with a classification head on the target's
labelled examples (at most a label budget of them, e.g. 5K for GLUE, Table 3) and reports the test
metric averaged over seeds (Kang et al., ICLR 2024, §5.3). The head sits on the pre-fine-tuned encoder
(or decoder: the last real token's state, as ``...ForSequenceClassification`` does for decoders); the
rest of the checkpoint (e.g. BERT's pooler) comes from the original model, so every method starts from
the same non-backbone weights.

Metrics are plain functions of (y_true, y_pred) over label ids, checked against scikit-learn in the
tests: ``micro_f1`` (ChemProt; for single-label data it equals accuracy), ``macro_f1`` (mean per-class
F1 over the labels present in y_true or y_pred), ``f1`` (binary, label 1 positive), ``mcc`` (Matthews'
correlation, multiclass form) and ``accuracy``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tunesift.warmup.pretrain import (LanguageModel, check_lora, linear_schedule, make_optimizer, prepare_tokenizer,
                                      quiet_transformers, seeded, with_lora)
from tunesift.warmup.tasks import ClassificationTask, LabelledSplit

from tunesift.warmup.metrics import (  # noqa: F401  (re-exported where they were first defined)
    METRICS, accuracy, binary_f1, confusion_matrix, macro_f1, matthews_corrcoef, micro_f1, score)


# ----------------------------------------------------------------------------------------------------
# Settings and results


@dataclass
class ClassifierConfig:
    """Settings of the classifier fine-tuning (defaults: BERT's GLUE recipe, shortened)."""

    learning_rate: float = 5e-5
    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    max_length: int = 128  # tokens per example (pairs: both texts together)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    select_on_dev: bool = True  # keep the epoch with the best dev score (when the task has a dev split)
    seed: int = 0
    device: str = "auto"
    # 0: fine-tune all weights; r: LoRA adapters of rank r on the backbone (the head trained whole), merged
    lora_r: int = 0
    lora_alpha: int | None = None  # None: 2 r
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("learning_rate", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "max_length"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}")
        check_lora(self)


@dataclass
class Classifier:
    """A sequence classifier and its tokenizer."""

    model: Any
    tokenizer: Any
    num_labels: int


@dataclass
class ClassifierTraining:
    """What :func:`train_classifier` did.

    Attributes:
        history: one entry per epoch: ``epoch``, ``train_loss`` (mean over its steps), ``dev_score``.
        best_epoch: the epoch whose weights were kept (1-based; the last when there is no dev split).
    """

    steps: int
    seconds: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


@dataclass
class FinetuneResult:
    """One fine-tuning + test evaluation.

    Attributes:
        test_score: the task's metric on its test split (in [0, 1]; MCC in [-1, 1]).
        dev_score: the kept epoch's dev score (None without a dev split).
        labels_used: how many labelled examples were fine-tuned on.
    """

    metric: str
    test_score: float
    dev_score: float | None
    labels_used: int
    test_examples: int
    best_epoch: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    test_predictions: np.ndarray | None = None  # (test_examples,) predicted label ids


# ----------------------------------------------------------------------------------------------------
# Building, training and predicting


def load_classifier(path: str | os.PathLike, num_labels: int, seed: int = 0,
                    backbone: LanguageModel | None = None) -> Classifier:
    """A sequence classifier from a local checkpoint, its backbone optionally replaced by a pre-fine-tuned one.

    Args:
        path: the original model folder (the classification head is new, initialised with ``seed``).
        backbone: a pre-fine-tuned :class:`LanguageModel` of the same architecture; its base model's
            weights (the encoder/decoder without the LM head) replace the classifier's.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such model folder (models are loaded from local paths only)")
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    with quiet_transformers(), seeded(seed):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:  # decoders: pad with the end-of-text token
        prepare_tokenizer(tokenizer, "causal")
    model.config.pad_token_id = tokenizer.pad_token_id
    if backbone is not None:
        source = backbone.model.base_model.state_dict()
        result = model.base_model.load_state_dict(source, strict=False)
        # Only parts the LM model does not have (BERT's pooler) may stay from the original checkpoint.
        missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"the pre-fine-tuned backbone does not match {path}: missing {missing[:5]}, "
                f"unexpected {list(result.unexpected_keys)[:5]}"
            )
        model.to(backbone.device)
    return Classifier(model=model, tokenizer=tokenizer, num_labels=num_labels)


def _encode_split(tokenizer: Any, split: LabelledSplit, max_length: int) -> list[dict[str, list[int]]]:
    """Per example: ``input_ids`` and, for pairs with a tokenizer that has them, ``token_type_ids``."""
    if split.text_pairs is None:
        enc = tokenizer(list(split.texts), truncation=True, max_length=max_length)
    else:
        enc = tokenizer(list(split.texts), list(split.text_pairs), truncation=True, max_length=max_length)
    keys = ["input_ids"] + (["token_type_ids"] if split.text_pairs is not None and "token_type_ids" in enc else [])
    return [{k: list(enc[k][i]) for k in keys} for i in range(len(split))]


def _collate(encoded: list[dict[str, list[int]]], pad_id: int, device: Any) -> dict:
    """Model inputs for a batch: (B, T) ``input_ids``, ``attention_mask`` (and ``token_type_ids``)."""
    from tunesift.warmup.pretrain import pad_batch

    ids, mask = pad_batch([e["input_ids"] for e in encoded], pad_id)
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if "token_type_ids" in encoded[0]:
        batch["token_type_ids"] = pad_batch([e["token_type_ids"] for e in encoded], 0)[0].to(device)
    return batch


def predict(classifier: Classifier, split: LabelledSplit, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """(n,) predicted label ids (eval mode, on the model's device; batches sorted by length)."""
    import torch

    model, tok = classifier.model, classifier.tokenizer
    device = next(model.parameters()).device
    seqs = _encode_split(tok, split, max_length)
    order = np.argsort([-len(s["input_ids"]) for s in seqs], kind="stable")
    out = np.empty(len(seqs), dtype=np.int64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(seqs), batch_size):
            idx = order[start : start + batch_size]
            logits = model(**_collate([seqs[i] for i in idx], tok.pad_token_id, device)).logits  # (B, K)
            out[idx] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return out


def evaluate(classifier: Classifier, split: LabelledSplit, metric: str, batch_size: int = 64,
             max_length: int = 128) -> float:
    """The task's ``metric`` of the classifier's predictions on ``split``."""
    return score(metric, split.labels, predict(classifier, split, batch_size, max_length))


def train_classifier(classifier: Classifier, train: LabelledSplit, config: ClassifierConfig | None = None,
                     dev: LabelledSplit | None = None, metric: str = "macro_f1",
                     progress: bool = False) -> ClassifierTraining:
    """Fine-tune ``classifier`` in place with cross-entropy; with a dev split (and ``select_on_dev``) keep
    the epoch with the best dev score. The model is moved to ``config.device``."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from tunesift.embed import resolve_device

    config = config or ClassifierConfig()
    if len(train) == 0:
        raise ValueError("the training split is empty")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    if train.labels.max() >= classifier.num_labels or train.labels.min() < 0:
        raise ValueError(f"training labels must be in [0, {classifier.num_labels}), "
                         f"got {train.labels.min()}..{train.labels.max()}")
    device = resolve_device(config.device)
    classifier.model = classifier.model.to(device)
    if config.lora_r:
        with seeded(config.seed, device):  # the adapters' initialisation
            classifier.model = with_lora(classifier.model, config, task_type="SEQ_CLS")
    model, tok = classifier.model, classifier.tokenizer
    seqs = _encode_split(tok, train, config.max_length)
    labels = torch.as_tensor(train.labels, dtype=torch.long)
    steps_per_epoch = math.ceil(len(seqs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    warmup = int(config.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_schedule(s, total, warmup))
    generator = torch.Generator().manual_seed(config.seed)
    use_dev = dev is not None and len(dev) > 0 and config.select_on_dev
    best_score, best_state, best_epoch = -math.inf, None, config.epochs
    history, step = [], 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="fine-tuning classifier", unit="step", disable=not progress)
    with seeded(config.seed, device):
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(seqs), generator=generator).tolist()
            epoch_losses = []
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                logits = model(**_collate([seqs[i] for i in idx], tok.pad_token_id, device)).logits  # (B, K)
                loss = F.cross_entropy(logits.float(), labels[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                schedule.step()
                epoch_losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
            entry = {"epoch": epoch, "train_loss": float(np.mean(epoch_losses))}
            if use_dev:
                entry["dev_score"] = evaluate(classifier, dev, metric, config.eval_batch_size, config.max_length)
                if entry["dev_score"] > best_score:
                    best_score, best_epoch = entry["dev_score"], epoch
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            history.append(entry)
    bar.close()
    if best_state is not None and best_epoch != config.epochs:
        model.load_state_dict(best_state)
    if config.lora_r:  # a plain classifier again, the adapters in its weights
        classifier.model = model = model.merge_and_unload()
    model.eval()
    return ClassifierTraining(steps=step, seconds=time.perf_counter() - t0, best_epoch=best_epoch, history=history)


def finetune_and_evaluate(path: str | os.PathLike, task: ClassificationTask, config: ClassifierConfig | None = None,
                          train: LabelledSplit | None = None, backbone: LanguageModel | None = None,
                          dev: LabelledSplit | None = None, test: LabelledSplit | None = None,
                          progress: bool = False) -> FinetuneResult:
    """Build a classifier from ``path`` (backbone replaced by ``backbone`` if given), fine-tune it on
    ``train`` (default: the task's train split) and score it on ``test`` (default: the task's test split).

    ``dev`` defaults to the task's dev split (None: no epoch selection).
    """
    config = config or ClassifierConfig()
    train = task.train if train is None else train
    dev = task.dev if dev is None else dev
    test = task.test if test is None else test
    t0 = time.perf_counter()
    classifier = load_classifier(path, task.num_labels, seed=config.seed, backbone=backbone)
    training = train_classifier(classifier, train, config, dev=dev, metric=task.metric, progress=progress)
    predictions = predict(classifier, test, config.eval_batch_size, config.max_length)
    test_score = score(task.metric, test.labels, predictions)
    kept = training.history[training.best_epoch - 1].get("dev_score") if training.history else None
    return FinetuneResult(metric=task.metric, test_score=test_score, dev_score=kept, labels_used=len(train),
                          test_examples=len(test), best_epoch=training.best_epoch,
                          seconds=time.perf_counter() - t0, history=training.history,
                          test_predictions=predictions)
