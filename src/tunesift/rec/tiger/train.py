"""Training TIGER from scratch on (history -> next item) samples, and ranking with it.

AdamW with a linear warm-up (then a constant or cosine learning rate), batches of similar length (seeded
shuffling), early stopping on validation Recall@K (then NDCG@K) computed with the same trie-constrained
beam search as the test, or on the validation items' teacher-forced loss; the best validation's weights
restored at the end. With ``ema``, an exponential moving average of the weights is what is validated and
kept. Validation runs every ``eval_every`` epochs, or every
``eval_every_steps`` optimizer steps (a budget that does not depend on how many steps an epoch of a given
pick is; ``max_steps`` caps the steps the same way). The state is checkpointed after every epoch (weights,
optimizer, best weights, history), and every epoch's sample order and dropout draw from generators seeded
with ``(seed, epoch)``, so a killed run resumes where it stopped and ends with the same model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tunesift.io.atomic import atomic_write
from tunesift.io.faults import fault_point
from tunesift.rec.tiger.model import Pairs, pad_batch, sample_losses

log = logging.getLogger("tunesift")


@dataclass
class TigerTrainResult:
    """What :func:`train_tiger` did (see the fields' names); ``history`` has one entry per epoch, and with
    ``eval_every_steps`` one more per validation."""

    epochs: int
    steps: int
    best_epoch: int
    best_metrics: dict
    stopped_early: bool
    seconds: float
    n_train: int
    n_val: int
    history: list = field(default_factory=list)
    best_step: int | None = None

    def record(self) -> dict:
        out = {"n_train": self.n_train, "n_val": self.n_val, "train_steps": self.steps, "train_epochs": self.epochs,
               "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}
        if self.best_step is not None:
            out["best_step"] = self.best_step
        out.update({f"val_{k}": v for k, v in self.best_metrics.items()})
        return out


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, window: int = 50) -> list[np.ndarray]:
    """Shuffled batches of samples of similar length: shuffle, sort windows of ``window`` batches by
    length, cut them into batches, shuffle the batches."""
    order = rng.permutation(lengths.size)
    batches = []
    span = batch_size * window
    for lo in range(0, order.size, span):
        part = order[lo : lo + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, part.size, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def autocast(precision: str, device: Any):
    import contextlib

    import torch

    if precision == "bfloat16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rank_items(model: Any, pairs: Pairs, item_tokens: np.ndarray, trie: Any, beams: int, batch_size: int = 256,
               precision: str = "float32") -> np.ndarray:
    """(n, beams) 1-based item ids of each sample's best items by constrained beam search, best first
    (0 pads rows where the catalogue has fewer than ``beams`` items). Samples run sorted by length."""
    import torch

    from tunesift.rec.tiger.beam import constrained_beam_search

    n = len(pairs)
    out = np.zeros((n, beams), dtype=np.int64)
    order = np.argsort(pairs.lengths(), kind="stable")
    for lo in range(0, n, batch_size):
        index = order[lo : lo + batch_size]
        ids, mask, _ = pad_batch(pairs, index, item_tokens)
        with autocast(precision, next(model.parameters()).device):
            result = constrained_beam_search(model, ids, mask, trie, beams, batch_size=batch_size)
        items = result.items.cpu().numpy()
        out[index] = np.where(items >= 0, items + 1, 0)
    return out


def validation_metrics(top: np.ndarray, truth: Sequence[Sequence[int]], ks: Sequence[int]) -> dict:
    from tunesift.finetune.metrics import metrics_from_top_k

    m = metrics_from_top_k(top, truth, ks)
    return {k: round(v, 6) for k, v in m.as_dict().items()}


def validation_loss(model: Any, pairs: Pairs, item_tokens: np.ndarray, batch_size: int = 256,
                    precision: str = "float32") -> float:
    """Mean over ``pairs`` of each sample's teacher-forced cross-entropy (:func:`sample_losses`), in eval
    mode: what ``select_on="loss"`` validates on. Samples run sorted by length."""
    import torch

    device = next(model.parameters()).device
    order = np.argsort(pairs.lengths(), kind="stable")
    model.eval()
    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(pairs), batch_size):
            ids, mask, labels = (t.to(device) for t in pad_batch(pairs, order[lo : lo + batch_size], item_tokens))
            with autocast(precision, device):
                total += float(sample_losses(model, ids, mask, labels).double().sum())
    return total / max(len(pairs), 1)


def learning_rate(settings: Any, step: int) -> float:
    """The learning rate of optimizer step ``step`` (1-based): linear warm-up to ``lr`` over ``warmup_steps``,
    then constant, or cosine down to 0 at ``max_steps``."""
    s = settings
    warm = min(1.0, step / max(1, s.warmup_steps))
    if s.schedule == "cosine" and step > s.warmup_steps:
        done = min(1.0, (step - s.warmup_steps) / max(1, s.max_steps - s.warmup_steps))
        return s.lr * 0.5 * (1.0 + np.cos(np.pi * done))
    return s.lr * warm


def ema_decay(decay: float, step: int) -> float:
    """The average's decay at optimizer step ``step``: ``min(decay, (1 + step) / (10 + step))``, so the first
    steps' average is not dominated by the random initialisation."""
    return min(decay, (1.0 + step) / (10.0 + step))


def _better(a: dict, b: dict | None, ks: Sequence[int]) -> bool:
    if b is None:
        return True
    if "loss" in a:
        return a["loss"] < b["loss"]
    k = max(ks)
    return (a[f"recall@{k}"], a[f"ndcg@{k}"]) > (b[f"recall@{k}"], b[f"ndcg@{k}"])


def train_tiger(model: Any, train: Pairs, item_tokens: np.ndarray, settings: Any, seed: int,
                valid: Pairs | None = None, valid_truth: Sequence[Sequence[int]] = (), trie: Any = None,
                ks: Sequence[int] = (10, 20), checkpoint: str | os.PathLike | None = None,
                precision: str = "float32", progress: bool = True) -> TigerTrainResult:
    """Train ``model`` (in place) on ``train``; validate on ``valid`` every ``settings.eval_every`` epochs.

    Args:
        settings: :class:`tunesift.rec.tiger.backbone.TigerFitSettings` (lr, batch_size, epochs, patience...).
        item_tokens: (n_items + 1, L) token ids of every item.
        valid, valid_truth, trie: validation samples, their ground-truth items and the catalogue's trie;
            without validation samples the model trains for ``settings.epochs`` and the last epoch is kept.
        checkpoint: a file to save the state to after every epoch and to resume from.
        precision: "float32", or "bfloat16" autocast.
    """
    import torch
    from tqdm.auto import tqdm

    s = settings
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "best_state": None, "history": [], "bad": 0,
             "stopped": False, "ema": None}
    if s.ema is not None:  # the average starts at the initial weights
        state["ema"] = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        state.setdefault("ema", None)  # checkpoints written before the moving average existed
        log.info("tiger: resumed at epoch %d from %s", state["epoch"], ckpt)
    has_val = valid is not None and len(valid) > 0
    lengths = train.lengths()
    max_steps = s.max_steps or float("inf")

    def averaged() -> dict:
        """The weights validated and kept: the moving average where there is one, else the model's own."""
        current = model.state_dict()
        if state["ema"] is None:
            return current
        return {k: state["ema"].get(k, v) for k, v in current.items()}

    def validate(epoch: int, entry: dict) -> None:
        raw = None
        if state["ema"] is not None:
            raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(averaged())
        if s.select_on == "loss":
            metrics = {"loss": round(validation_loss(model, valid, item_tokens, s.eval_batch_size, precision), 6)}
        else:
            top = rank_items(model, valid, item_tokens, trie, s.beams, s.eval_batch_size, precision)
            metrics = validation_metrics(top, valid_truth, ks)
        entry.update(metrics)
        if _better(metrics, state["best"], ks):
            state.update(best=metrics, best_epoch=epoch, best_step=state["step"], bad=0,
                         best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            state["bad"] += 1
            if s.patience and state["bad"] >= s.patience:
                state["stopped"] = True
        if raw is not None:
            model.load_state_dict(raw)
        model.train()

    while state["epoch"] < s.epochs and state["step"] < max_steps and not state["stopped"] and len(train):
        epoch = state["epoch"] + 1
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(int(rng.integers(2**62)))  # dropout of this epoch
        model.train()
        total, count = 0.0, 0
        bar = tqdm(total=len(train), desc=f"tiger epoch {epoch}", unit="sample", disable=not progress, leave=False)
        for index in length_batches(lengths, s.batch_size, rng):
            ids, mask, labels = (t.to(device) for t in pad_batch(train, index, item_tokens))
            step = state["step"] + 1
            for group in opt.param_groups:
                group["lr"] = learning_rate(s, step)
            with autocast(precision, device):
                loss = sample_losses(model, ids, mask, labels).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if s.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            opt.step()
            if state["ema"] is not None:
                d = ema_decay(s.ema, step)
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if k in state["ema"]:
                            state["ema"][k].mul_(d).add_(v.detach(), alpha=1.0 - d)
            state["step"] = step
            total += float(loss.detach()) * len(index)
            count += len(index)
            bar.update(len(index))
            if has_val and s.eval_every_steps and (step % s.eval_every_steps == 0 or step >= max_steps):
                check = {"epoch": epoch, "step": step, "validation": True}
                validate(epoch, check)
                state["history"].append(check)
                log.info("tiger step %d: %s", step, ", ".join(f"{k} {v}" for k, v in check.items()
                                                             if k not in ("epoch", "step", "validation")))
            if state["stopped"] or step >= max_steps:
                break
        bar.close()
        entry = {"epoch": epoch, "step": state["step"], "train_loss": round(total / max(count, 1), 6),
                 "seconds": round(time.perf_counter() - t0, 1)}
        if has_val and not s.eval_every_steps and (epoch % s.eval_every == 0 or epoch == s.epochs
                                                   or state["step"] >= max_steps):
            validate(epoch, entry)
        state["history"].append(entry)
        state["epoch"] = epoch
        log.info("tiger epoch %d: %s", epoch, ", ".join(f"{k} {v}" for k, v in entry.items() if k != "epoch"))
        if ckpt is not None:
            with atomic_write(ckpt, "wb") as f:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}, f)
            fault_point("tiger:epoch")
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    else:
        state["best_epoch"] = state["epoch"]
        model.load_state_dict(averaged())
    model.eval()
    return TigerTrainResult(epochs=state["epoch"], steps=state["step"], best_epoch=state["best_epoch"],
                            best_step=state.get("best_step") if s.eval_every_steps else None,
                            best_metrics=state["best"] or {}, stopped_early=state["stopped"],
                            seconds=time.perf_counter() - t0, n_train=len(train),
                            n_val=len(valid) if valid is not None else 0, history=state["history"])
