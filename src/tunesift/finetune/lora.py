"""LoRA fine-tuning of a causal LM on (prompt, response) samples, as BIGRec does it.

BIGRec (Bao et al. 2023) and DEALRec's ``finetune.py`` train Alpaca-LoRA style: AdamW, lr 1e-4, effective
batch 128 (gradient accumulation over micro-batches), 20 warm-up steps then linear decay, gradient norm
clipped at 1.0 (the Trainer's default), up to 50 epochs, validation loss evaluated regularly, early
stopping after 5 evaluations without improvement and the best checkpoint restored at the end.

**Which tokens carry the loss.** Both released scripts run with ``train_on_inputs=True``: the labels are
the whole text (prompt + response + end-of-sequence token), so the prompt is NOT masked. That is the
default here (``train_on_prompt=True``); ``train_on_prompt=False`` masks the prompt so only the response
and its end-of-sequence token are learnt (the usual instruction-tuning choice, and what the effort score
offers as its "response" option). Either way the loss is the mean token cross-entropy over the whole
effective batch — the sum over its label tokens divided by their count — so the update does not depend on
how the effective batch is split into micro-batches.

Prompt and response are tokenised separately and concatenated (prompt with the tokenizer's special
tokens, response without, then EOS), so the prompt tokens seen in training are exactly those given to
generation later. A text longer than ``max_length`` is cut on the right, as the authors' ``tokenize`` does.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

IGNORE = -100
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class LoraTrainSettings:
    """Settings of :func:`train_lora` (defaults: BIGRec / DEALRec's fine-tuning script).

    Attributes:
        learning_rate: peak AdamW learning rate.
        epochs: passes over the training samples (an upper bound when early stopping triggers).
        batch_size: samples per optimizer step (the effective batch).
        micro_batch_size: samples per forward/backward pass; gradients accumulate over
            ``ceil(batch_size / micro_batch_size)`` passes. Changes memory, not the result.
        warmup_steps: optimizer steps of linear warm-up from 0, then linear decay to 0.
        weight_decay: AdamW weight decay.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        eval_every: optimizer steps between validations; 0 = at the end of every epoch.
        patience: stop after this many validations without a lower validation loss (0: never stop).
        max_length: tokens per sample (prompt + response + EOS), cut on the right.
        train_on_prompt: the loss covers the prompt too (the authors' code); False = response only.
        precision: "auto" = bf16 autocast on CUDA when supported, else fp32; or "fp32" / "bf16".
        max_steps: stop after this many optimizer steps (None: ``epochs`` decides).
        seed: seed of the sample order and of dropout.
    """

    learning_rate: float = 1e-4
    epochs: int = 50
    batch_size: int = 128
    micro_batch_size: int = 16
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    eval_every: int = 0
    patience: int = 5
    max_length: int = 512
    train_on_prompt: bool = True
    precision: str = "auto"
    max_steps: int | None = None
    seed: int = 0

    cli_hidden: ClassVar[tuple[str, ...]] = ("seed",)  # set per run, not a flag

    def __post_init__(self):
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"`learning_rate` must be positive, got {self.learning_rate}")
        for name in ("epochs", "batch_size", "micro_batch_size", "max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "eval_every", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"`max_steps` must be a positive integer or None, got {self.max_steps!r}")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"`max_grad_norm` must be positive or None, got {self.max_grad_norm}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


@dataclass
class TrainResult:
    """What :func:`train_lora` did.

    Attributes:
        steps: optimizer steps taken.
        epochs: epochs started (fractional progress is not reported).
        best_step: step whose adapter was kept (the last step when there is no validation data).
        best_val_loss: its validation loss (None without validation data).
        stopped_early: True when patience ran out.
        seconds: wall time of the whole call.
        history: one entry per validation (step, epoch, train_loss since the previous entry, val_loss, lr).
        n_train, n_val: samples; n_truncated: training samples cut at ``max_length``.
        precision: what was used ("fp32" or "bf16").
    """

    steps: int
    epochs: int
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    n_train: int = 0
    n_val: int = 0
    n_truncated: int = 0
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_pairs(samples: Sequence[Any]) -> list[tuple[str, str]]:
    """(prompt, response) pairs from tuples or from objects with ``prompt`` and ``response`` fields."""
    pairs = []
    for i, s in enumerate(samples):
        if isinstance(s, (tuple, list)) and len(s) == 2:
            prompt, response = s
        elif hasattr(s, "prompt") and hasattr(s, "response"):
            prompt, response = s.prompt, s.response
        elif isinstance(s, dict) and "prompt" in s and "response" in s:
            prompt, response = s["prompt"], s["response"]
        else:
            raise TypeError(f"sample {i} must be a (prompt, response) pair or have prompt/response fields, got {type(s).__name__}")
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise TypeError(f"sample {i}: prompt and response must be strings")
        pairs.append((prompt, response))
    return pairs


def encode_samples(tokenizer, samples: Sequence[Any], max_length: int = 512,
                   train_on_prompt: bool = True) -> list[EncodedSample]:
    """Token ids and labels of each sample: ``prompt ids + response ids + EOS``, cut at ``max_length``.

    Labels equal the ids, except prompt positions are ``-100`` (ignored) when ``train_on_prompt`` is False.
    """
    pairs = as_pairs(samples)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no end-of-sequence token; the model could not learn to stop")
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    out = []
    for p_ids, r_ids in zip(prompts, responses):
        ids = list(p_ids) + list(r_ids) + [tokenizer.eos_token_id]
        labels = list(ids) if train_on_prompt else [IGNORE] * len(p_ids) + list(r_ids) + [tokenizer.eos_token_id]
        truncated = len(ids) > max_length
        out.append(EncodedSample(ids[:max_length], labels[:max_length], truncated))
    return out


def _collate(batch: Sequence[EncodedSample], pad_id: int):
    """Right-padded (B, T) input ids, attention mask and labels."""
    import torch

    width = max(len(s.input_ids) for s in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, s in enumerate(batch):
        n = len(s.input_ids)
        ids[row, :n] = torch.tensor(s.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(s.labels)
    return ids, mask, labels


def forward_hidden_states(model, **inputs):
    """A forward pass that returns every layer's hidden states, asking for the logits of the last position
    only (``logits_to_keep=1``: a (B, T, vocab) tensor is never formed); models that do not take
    ``logits_to_keep`` get a plain forward pass."""
    try:
        return model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    except TypeError as e:
        if "logits_to_keep" not in str(e):
            raise
        return model(**inputs, output_hidden_states=True, use_cache=False)


def token_loss_sum(model, input_ids, attention_mask, labels):
    """Sum of next-token cross-entropies over label positions, and how many there are.

    Logits are computed only where a label is predicted (not at padding or masked prompt positions), which
    saves the (B, T, vocab) logits tensor when the vocabulary is large.

    Args:
        input_ids, attention_mask, labels: (B, T) right-padded; labels are -100 where ignored.

    Returns:
        (loss sum as a 0-d tensor, number of label tokens as an int)
    """
    import torch

    out = forward_hidden_states(model, input_ids=input_ids, attention_mask=attention_mask)
    hidden = out.hidden_states[-1][:, :-1, :]  # (B, T-1, d): state at t predicts token t+1
    target = labels[:, 1:]  # (B, T-1)
    keep = target != IGNORE
    n = int(keep.sum())
    if n == 0:
        return hidden.sum() * 0.0, 0
    logits = model.get_output_embeddings()(hidden[keep])  # (n, vocab)
    loss = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="sum")
    return loss, n


def _resolve_precision(precision: str, device) -> str:
    import torch

    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _autocast(precision: str, device):
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def validation_loss(model, encoded: Sequence[EncodedSample], pad_id: int, micro_batch_size: int = 16,
                    precision: str = "fp32") -> float:
    """Mean token cross-entropy over ``encoded`` (dropout off)."""
    import torch

    device = next(model.parameters()).device
    order = np.argsort([len(s.input_ids) for s in encoded], kind="stable")
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(precision, device):
            for start in range(0, len(order), micro_batch_size):
                batch = [encoded[i] for i in order[start : start + micro_batch_size]]
                ids, mask, labels = (t.to(device) for t in _collate(batch, pad_id))
                loss, n = token_loss_sum(model, ids, mask, labels)
                total += float(loss)
                count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total`` (HF's default)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def train_lora(model, tokenizer, train: Sequence[Any], val: Sequence[Any] = (),
               settings: LoraTrainSettings | None = None, progress: bool = True) -> TrainResult:
    """Fine-tune the trainable (LoRA) parameters of ``model`` on ``train``; keep the best by ``val`` loss.

    Args:
        model: a causal LM whose trainable parameters are the adapters (e.g. a PEFT LoRA model); it is
            trained in place on its own device and left holding the best adapter weights.
        tokenizer: its tokenizer (needs an EOS token; the pad token defaults to EOS).
        train: (prompt, response) pairs or objects with ``prompt``/``response`` fields.
        val: the same, for early stopping; empty = no early stopping, the last weights are kept.
    """
    import torch
    from tqdm.auto import tqdm

    settings = settings or LoraTrainSettings()
    t0 = time.perf_counter()
    if len(train) == 0:
        raise ValueError("train is empty: there is nothing to fine-tune on")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (wrap it with a LoRA adapter first)")
    device = next(model.parameters()).device
    precision = _resolve_precision(settings.precision, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    enc_train = encode_samples(tokenizer, train, settings.max_length, settings.train_on_prompt)
    enc_val = encode_samples(tokenizer, val, settings.max_length, settings.train_on_prompt) if len(val) else []

    rng = np.random.default_rng(settings.seed)
    steps_per_epoch = math.ceil(len(enc_train) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    eval_every = settings.eval_every or steps_per_epoch
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, settings.warmup_steps, total_steps))

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().to("cpu", copy=True) for p in params]

    best_state, best_loss, best_step = None, math.inf, 0
    evals_without_gain = 0
    history: list[dict[str, Any]] = []
    running, running_tokens = 0.0, 0
    step, epoch, stopped = 0, 0, False
    model.train()
    bar = tqdm(total=total_steps, desc="fine-tuning", unit="step", disable=not progress)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        try:
            while step < total_steps and not stopped:
                epoch += 1
                order = rng.permutation(len(enc_train))
                for start in range(0, len(order), settings.batch_size):
                    if step >= total_steps:
                        break
                    batch = [enc_train[i] for i in order[start : start + settings.batch_size]]
                    batch.sort(key=lambda s: len(s.input_ids))  # less padding per micro-batch
                    n_tokens = sum(sum(1 for x in s.labels[1:] if x != IGNORE) for s in batch)
                    optimizer.zero_grad(set_to_none=True)
                    batch_loss = 0.0
                    for m in range(0, len(batch), settings.micro_batch_size):
                        ids, mask, labels = (t.to(device) for t in
                                             _collate(batch[m : m + settings.micro_batch_size], pad_id))
                        with _autocast(precision, device):
                            loss, _ = token_loss_sum(model, ids, mask, labels)
                        (loss / max(n_tokens, 1)).backward()
                        batch_loss += float(loss.detach())
                    if settings.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    running += batch_loss
                    running_tokens += n_tokens
                    bar.update(1)
                    bar.set_postfix(loss=f"{batch_loss / max(n_tokens, 1):.4f}", epoch=epoch)
                    end_of_epoch = start + settings.batch_size >= len(order)
                    due = (settings.eval_every and step % eval_every == 0) or (not settings.eval_every and end_of_epoch)
                    if due or step == total_steps:
                        entry = {"step": step, "epoch": epoch, "train_loss": running / max(running_tokens, 1),
                                 "lr": scheduler.get_last_lr()[0], "val_loss": None}
                        running, running_tokens = 0.0, 0
                        if enc_val:
                            vl = validation_loss(model, enc_val, pad_id, settings.micro_batch_size, precision)
                            entry["val_loss"] = vl
                            if vl < best_loss:
                                best_loss, best_step, best_state = vl, step, snapshot()
                                evals_without_gain = 0
                            else:
                                evals_without_gain += 1
                            bar.set_postfix(loss=f"{entry['train_loss']:.4f}", val=f"{vl:.4f}",
                                            best=f"{best_loss:.4f}", epoch=epoch)
                        history.append(entry)
                        if settings.patience and evals_without_gain >= settings.patience:
                            stopped = True
                            break
        finally:
            bar.close()
    if best_state is not None:
        with torch.no_grad():
            for p, saved in zip(params, best_state):
                p.copy_(saved.to(p.device))
    else:
        best_step = step
    model.eval()
    return TrainResult(steps=step, epochs=epoch, best_step=best_step,
                       best_val_loss=None if best_state is None else best_loss, stopped_early=stopped,
                       seconds=time.perf_counter() - t0, history=history, n_train=len(enc_train),
                       n_val=len(enc_val), n_truncated=sum(s.truncated for s in enc_train), precision=precision)
