"""Pre-fine-tuning ("warming up") a language model on selected texts: masked-LM for encoders, causal LM
for decoders.

GOT-D (Kang et al., ICLR 2024, §5.3) continues a model's own pre-training objective on the pool examples
it selects before fine-tuning on the labelled target task, as DAPT/TAPT do (Gururangan et al., ACL 2020).
For an encoder that is BERT's masked-LM loss: 15% of the non-special tokens are chosen, 80% of those
replaced by ``[MASK]``, 10% by a random token, 10% left as they are, and the loss is the cross-entropy of
the original token at the chosen positions. For a decoder it is the next-token loss.

A checkpoint without an LM head (a sentence encoder such as all-MiniLM-L6-v2 ships a bare ``BertModel``)
gets a fresh head: the encoder's weights with a newly initialised prediction head (its decoder tied to
the word embeddings). An untrained head's loss is worse than uniform guessing, and pre-fine-tuning all
weights through it sends large, meaningless gradients into the encoder and damages it. So such a head is
first warmed up with :func:`warm_up_head`: the head alone is trained (the encoder, word embeddings
included, stays frozen) on general text, after which the "before" loss is that of a working head and
pre-fine-tuning starts from a sensible objective.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

OBJECTIVES = ("mlm", "causal")
IGNORE_INDEX = -100  # label of positions that carry no loss (PyTorch's cross_entropy default)


# ----------------------------------------------------------------------------------------------------
# Settings and results


@dataclass
class PretrainConfig:
    """Settings of one pre-fine-tuning run (defaults follow DAPT/TAPT's masked-LM recipe)."""

    objective: str = "auto"  # "mlm", "causal" or "auto" (from the model's architecture)
    learning_rate: float = 1e-4  # DAPT/TAPT's peak learning rate for continued MLM
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimiser steps (None: all epochs)
    max_length: int = 128  # tokens per text; longer texts are cut
    batch_size: int = 16
    mlm_probability: float = 0.15  # BERT's masking rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # share of the steps with a linearly rising learning rate
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    # 0: train all weights; r > 0: LoRA adapters of rank r on the architecture's attention projections
    # (peft's defaults for the model type), merged into the weights when training ends
    lora_r: int = 0
    lora_alpha: int | None = None  # None: 2 r
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES + ("auto",):
            raise ValueError(f"objective must be one of {OBJECTIVES + ('auto',)}, got {self.objective!r}")
        for name in ("learning_rate", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}")
        for name in ("epochs", "max_length", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive integer or None, got {self.max_steps!r}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"`mlm_probability` must be in (0, 1), got {self.mlm_probability}")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}")
        check_lora(self)


@dataclass
class LanguageModel:
    """A model with an LM head, its tokenizer and its objective.

    Attributes:
        model: a transformers model with an LM head (``...ForMaskedLM`` or ``...ForCausalLM``).
        objective: "mlm" or "causal".
        path: the folder it was loaded from (None when built in memory).
        fresh_parameters: names of the parameters the checkpoint lacked (a new head).
    """

    model: Any
    tokenizer: Any
    objective: str
    path: str | None = None
    fresh_parameters: list[str] = field(default_factory=list)

    @property
    def device(self):
        return next(self.model.parameters()).device


@dataclass
class PretrainResult:
    """What :func:`pretrain` did.

    Attributes:
        losses: (steps,) the training loss of each optimiser step (mean over its predicted tokens).
        examples: texts seen (with repeats over epochs); tokens: tokens that carried loss.
    """

    objective: str
    steps: int
    examples: int
    tokens: int
    seconds: float
    losses: np.ndarray
    skipped_texts: int = 0


@dataclass
class LMLoss:
    """Mean cross-entropy per predicted token on a set of texts, and its exponential."""

    objective: str
    loss: float
    tokens: int
    texts: int

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


# ----------------------------------------------------------------------------------------------------
# Loading


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (a fresh head is expected here, not a warning)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def seeded(seed: int, device: Any = "cpu") -> Iterator[None]:
    """Seed torch's global RNG (weight init, dropout) inside the block and restore it afterwards."""
    import torch

    devices = []
    if torch.device(device).type == "cuda":
        devices = [torch.device(device).index or 0]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def infer_objective(config: Any) -> str:
    """"causal" for decoders, "mlm" for encoders, from a transformers config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return "causal"
    if any(a.endswith("ForMaskedLM") or a.endswith("ForPreTraining") for a in archs):
        return "mlm"
    if getattr(config, "is_decoder", False):
        return "causal"
    return "mlm" if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "causal"


def prepare_tokenizer(tokenizer: Any, objective: str) -> Any:
    """Give a causal tokenizer a padding token (its end-of-text token) and check an MLM one has a mask."""
    if objective == "causal" and tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an end-of-text token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if objective == "mlm" and tokenizer.mask_token_id is None:
        raise ValueError("masked-LM pre-fine-tuning needs a tokenizer with a mask token")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    return tokenizer


def load_language_model(path: str | os.PathLike, objective: str = "auto", seed: int = 0) -> LanguageModel:
    """Load a local checkpoint with an LM head for ``objective``; a missing head is initialised (seeded).

    Args:
        path: a local Hugging Face model folder (encoder or decoder; with or without an LM head).
        objective: "mlm", "causal" or "auto".
        seed: seed of the fresh head's initialisation.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such model folder (models are loaded from local paths only)")
    if objective not in OBJECTIVES + ("auto",):
        raise ValueError(f"objective must be one of {OBJECTIVES + ('auto',)}, got {objective!r}")
    config = AutoConfig.from_pretrained(path)
    objective = infer_objective(config) if objective == "auto" else objective
    cls = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    with quiet_transformers(), seeded(seed):
        model, info = cls.from_pretrained(path, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tokenizer, objective)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LanguageModel(model=model, tokenizer=tokenizer, objective=objective, path=str(path),
                         fresh_parameters=sorted(info.get("missing_keys", [])))


def clone_language_model(lm: LanguageModel) -> LanguageModel:
    """A deep copy (weights included), so one loaded model can be pre-fine-tuned several times."""
    return LanguageModel(model=copy.deepcopy(lm.model), tokenizer=lm.tokenizer, objective=lm.objective,
                         path=lm.path, fresh_parameters=list(lm.fresh_parameters))


# ----------------------------------------------------------------------------------------------------
# Pure tensor functions


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with the tokenizer's special tokens, cut to ``max_length``."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int):
    """(B, T) ids right-padded with ``pad_id`` and the (B, T) attention mask (1 = real token)."""
    import torch

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def mask_tokens(input_ids, maskable, mask_token_id: int, vocab_size: int, probability: float, generator):
    """BERT's masking: choose each maskable position with ``probability``; of the chosen, 80% become
    ``mask_token_id``, 10% a uniformly random token, 10% stay.

    Args:
        input_ids: (B, T) long.
        maskable: (B, T) bool, False at special tokens and padding.
        generator: a CPU ``torch.Generator`` (every draw comes from it, so masks are reproducible).

    Returns:
        (inputs, labels): (B, T) the corrupted ids and (B, T) the original id at chosen positions,
        ``IGNORE_INDEX`` elsewhere. Both on ``input_ids``' device.
    """
    import torch

    shape = tuple(input_ids.shape)
    chosen = (torch.rand(shape, generator=generator) < probability).to(input_ids.device) & maskable.bool()
    kind = torch.rand(shape, generator=generator).to(input_ids.device)  # < 0.8 mask, < 0.9 random, else keep
    random_ids = torch.randint(vocab_size, shape, generator=generator).to(input_ids.device)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    inputs = torch.where(chosen & (kind < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
    return inputs, labels


def causal_labels(input_ids, attention_mask):
    """(B, T) labels for next-token prediction: the ids themselves, ``IGNORE_INDEX`` at padding.
    (The shift by one happens in :func:`token_losses`.)"""
    import torch

    return torch.where(attention_mask.bool(), input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def token_losses(logits, labels, objective: str):
    """Sum of the cross-entropy over positions with a label, and their number.

    Args:
        logits: (B, T, V).
        labels: (B, T), ``IGNORE_INDEX`` where there is no loss. For "causal", position t's logits
            predict label t+1.
    Returns:
        (loss_sum, count): a 0-d float tensor and a 0-d long tensor.
    """
    import torch.nn.functional as F

    if objective == "causal":
        logits, labels = logits[:, :-1], labels[:, 1:]
    flat_labels = labels.reshape(-1)
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_labels,
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (flat_labels != IGNORE_INDEX).sum()


def _mlm_head(model: Any):
    """The prediction head of a BERT-family masked LM (``model.cls``), or None for other architectures."""
    head = getattr(model, "cls", None)
    base = getattr(model, "base_model", None)
    return head if head is not None and base is not None and base is not model else None


def model_losses(model: Any, inputs, attention_mask, labels, objective: str):
    """(loss sum, count) of ``model`` on one batch (all tensors on the model's device).

    For BERT-family masked LMs the vocabulary projection runs on the labelled positions only (about 15%
    of the tokens): the same loss as the full logits, at a fraction of the head's cost, which for a
    small encoder such as MiniLM (hidden 384, vocabulary 30,522) is about half of the whole model's.
    """
    # a PEFT (LoRA) wrapper: its base model carries the adapters in place, and its own `base_model` is the
    # wrapper's, not the encoder
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = _mlm_head(inner) if objective == "mlm" else None
    if head is None:
        logits = model(input_ids=inputs, attention_mask=attention_mask).logits  # (B, T, V)
        return token_losses(logits, labels, objective)
    hidden = inner.base_model(input_ids=inputs, attention_mask=attention_mask)[0]  # (B, T, H)
    where = labels != IGNORE_INDEX
    logits = head(hidden[where])  # (n, V)
    return token_losses(logits[None], labels[where][None], objective)


def _special_ids(tokenizer: Any):
    import torch

    return torch.as_tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)


def _batch_inputs(lm: LanguageModel, sequences: Sequence[Sequence[int]], mlm_probability: float, generator):
    """(inputs, attention_mask, labels) for one batch, on CPU."""
    import torch

    ids, attention = pad_batch(sequences, lm.tokenizer.pad_token_id)
    if lm.objective == "causal":
        return ids, attention, causal_labels(ids, attention)
    maskable = attention.bool() & ~torch.isin(ids, _special_ids(lm.tokenizer))
    vocab_size = min(len(lm.tokenizer), lm.model.config.vocab_size)
    inputs, labels = mask_tokens(ids, maskable, lm.tokenizer.mask_token_id, vocab_size, mlm_probability, generator)
    return inputs, attention, labels


# ----------------------------------------------------------------------------------------------------
# Evaluation and training


def lm_loss(lm: LanguageModel, texts: Sequence[str], max_length: int = 128, batch_size: int = 32, seed: int = 0,
            mlm_probability: float = 0.15) -> LMLoss:
    """Mean loss per predicted token of ``lm`` on ``texts`` (eval mode, on the model's device).

    For "mlm" every text is masked once, in order, from one generator seeded with ``seed``, so the value
    does not depend on ``batch_size`` and "before" and "after" are measured on the same masks.
    """
    import torch

    if not texts:
        raise ValueError("texts is empty: the LM loss needs at least one text")
    seqs = encode(lm.tokenizer, texts, max_length)
    generator = torch.Generator().manual_seed(seed)
    # Per-text inputs first (masks independent of batching), then batches.
    prepared = []
    for s in seqs:
        inputs, attention, labels = _batch_inputs(lm, [s], mlm_probability, generator)
        prepared.append((inputs[0], labels[0]))
    model, device = lm.model, lm.device
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), 0
    pad = lm.tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            inputs, attention = pad_batch([p[0].tolist() for p in chunk], pad)
            labels, _ = pad_batch([p[1].tolist() for p in chunk], IGNORE_INDEX)
            loss_sum, n = model_losses(model, inputs.to(device), attention.to(device), labels.to(device), lm.objective)
            total += loss_sum.double().cpu()
            count += int(n)
    model.train(was_training)
    if count == 0:
        raise ValueError("no token carried loss (texts too short to mask or predict)")
    return LMLoss(objective=lm.objective, loss=float(total / count), tokens=count, texts=len(texts))


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: rises linearly over ``warmup`` steps, then falls linearly to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: Any, learning_rate: float, weight_decay: float):
    """AdamW with no weight decay on biases and normalisation weights (BERT's convention)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def check_lora(config: Any) -> None:
    """Check a settings object's ``lora_r``, ``lora_alpha`` and ``lora_dropout``."""
    r = config.lora_r
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"`lora_r` must be a non-negative integer (0: all weights), got {r!r}")
    if config.lora_alpha is not None and not config.lora_alpha > 0:
        raise ValueError(f"`lora_alpha` must be positive, got {config.lora_alpha!r}")
    if not 0 <= config.lora_dropout < 1:
        raise ValueError(f"`lora_dropout` must be in [0, 1), got {config.lora_dropout}")


def with_lora(model: Any, config: Any, task_type: str | None = None) -> Any:
    """``model`` wrapped with trainable LoRA adapters of rank ``config.lora_r`` on peft's default modules of
    its architecture (the attention projections), everything else frozen; ``task_type="SEQ_CLS"`` also
    trains a sequence classifier's new head whole."""
    from peft import LoraConfig, get_peft_model

    try:
        lora = LoraConfig(r=int(config.lora_r), lora_alpha=config.lora_alpha or 2 * int(config.lora_r),
                          lora_dropout=config.lora_dropout, bias="none", task_type=task_type)
        return get_peft_model(model, lora)
    except ValueError as e:  # no default target modules for this architecture
        raise ValueError(f"LoRA on a {type(model).__name__}: {e}") from None


def pretrain(lm: LanguageModel, texts: Sequence[str], config: PretrainConfig | None = None,
             progress: bool = False) -> PretrainResult:
    """Continue ``lm``'s own objective on ``texts`` (in place) and return what was done.

    The model is moved to ``config.device`` ("auto": CUDA when available). Batches are drawn in a seeded
    random order each epoch; MLM masks are drawn anew per batch (dynamic masking, as RoBERTa/DAPT).
    """
    import torch
    from tqdm.auto import tqdm

    from tunesift.embed import resolve_device

    config = config or PretrainConfig()
    if config.objective != "auto" and config.objective != lm.objective:
        raise ValueError(f"config.objective is {config.objective!r} but the model was loaded for {lm.objective!r}")
    if not texts:
        raise ValueError("texts is empty: nothing to pre-fine-tune on")
    device = resolve_device(config.device)
    seqs = encode(lm.tokenizer, texts, config.max_length)
    min_len = 2 if lm.objective == "causal" else 1
    kept = [s for s in seqs if len(s) >= min_len]
    steps_per_epoch = math.ceil(len(kept) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    model = lm.model.to(device)
    if config.lora_r:
        with seeded(config.seed, device):  # the adapters' initialisation
            model = with_lora(model, config)
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    warmup = int(config.warmup_ratio * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_schedule(s, total, warmup))
    generator = torch.Generator().manual_seed(config.seed)
    losses, examples, tokens, step = [], 0, 0, 0
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc=f"pre-fine-tuning ({lm.objective})", unit="step", disable=not progress)
    with seeded(config.seed, device):
        while step < total:
            order = torch.randperm(len(kept), generator=generator).tolist()
            for start in range(0, len(order), config.batch_size):
                if step >= total:
                    break
                batch = [kept[i] for i in order[start : start + config.batch_size]]
                inputs, attention, labels = _batch_inputs(lm, batch, config.mlm_probability, generator)
                loss_sum, n = model_losses(model, inputs.to(device), attention.to(device), labels.to(device),
                                           lm.objective)
                if int(n) > 0:  # a batch of short texts can draw no mask at all
                    loss = loss_sum / n
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    losses.append(float(loss.detach()))
                else:
                    losses.append(float("nan"))
                schedule.step()
                examples += len(batch)
                tokens += int(n)
                step += 1
                bar.update(1)
    bar.close()
    if config.lora_r:  # the adapters become part of the weights: later stages see a plain model
        lm.model = model = model.merge_and_unload()
    model.eval()
    return PretrainResult(objective=lm.objective, steps=step, examples=examples, tokens=tokens,
                          seconds=time.perf_counter() - t0, losses=np.asarray(losses, dtype=np.float64),
                          skipped_texts=len(seqs) - len(kept))


def head_parameters(model: Any) -> list[tuple[str, Any]]:
    """(name, parameter) of the LM head: the parameters not shared with ``model.base_model``.

    A decoder tied to the word embeddings belongs to the base model, so it is not among them (for BERT's
    head: the transform's dense layer and LayerNorm, and the output bias).
    """
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise ValueError(f"{type(model).__name__} has no separate base model: cannot tell its head apart")
    shared = {id(p) for p in base.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in shared]


def unigram_log_prior(sequences: Sequence[Sequence[int]], vocab_size: int, exclude: Sequence[int] = (),
                      smoothing: float = 1.0):
    """(V,) float32 log-frequencies of the token ids in ``sequences`` (add-``smoothing`` counts, ids in
    ``exclude`` not counted): the best output bias of a head that knows nothing else."""
    import torch

    counts = torch.zeros(vocab_size, dtype=torch.float64)
    ids = torch.as_tensor([i for s in sequences for i in s], dtype=torch.long)
    if len(exclude):
        ids = ids[~torch.isin(ids, torch.as_tensor(list(exclude), dtype=torch.long))]
    counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size].double() + smoothing
    return torch.log(counts / counts.sum()).float()


def set_unigram_output_bias(lm: LanguageModel, texts: Sequence[str], max_length: int = 128) -> None:
    """Set the LM head's output bias to the unigram log-frequencies of ``texts`` (special tokens not
    counted), in place: a fresh head then starts at the unigram loss instead of worse than uniform."""
    import torch

    output = lm.model.get_output_embeddings()
    if output is None or getattr(output, "bias", None) is None:
        raise ValueError("the model's output layer has no bias to set")
    prior = unigram_log_prior(encode(lm.tokenizer, texts, max_length), output.bias.shape[0],
                              exclude=sorted(set(lm.tokenizer.all_special_ids)))
    with torch.no_grad():
        output.bias.copy_(prior.to(output.bias.device, output.bias.dtype))


def warm_up_head(lm: LanguageModel, texts: Sequence[str], config: PretrainConfig | None = None,
                 progress: bool = False) -> PretrainResult:
    """Train only ``lm``'s LM head on ``texts`` (in place), every base-model weight frozen.

    Gives a fresh head (a checkpoint without one) a working prediction before the whole model is
    pre-fine-tuned, so that pre-fine-tuning does not push an untrained head's gradients into the encoder
    and so that the LM loss before pre-fine-tuning means something. The encoder's weights are unchanged
    (no gradient reaches them); ``config`` is used as in :func:`pretrain` (``max_steps`` fixes the
    number of steps; ``epochs`` must then be large enough to reach it).
    """
    heads = head_parameters(lm.model)
    if not heads:
        raise ValueError("the model has no head parameters of its own to warm up")
    head_ids = {id(p) for _, p in heads}
    flags = [(p, p.requires_grad) for p in lm.model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in head_ids)
        return pretrain(lm, texts, config, progress=progress)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
