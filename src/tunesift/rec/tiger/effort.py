"""DEALRec's effort on TIGER: the norm of the gradient of each user's TIGER loss, for all users in batches.

``δ(u) = ‖∇_φ L_TIGER(u)‖₂`` (Lin et al., SIGIR 2024, Eq. 12), where ``L_TIGER(u)`` is the mean, over the
user's (history -> next item) samples, of the mean token cross-entropy of the next item's semantic ID,
and φ a subset of TIGER's parameters.

Two exact batched paths:

- φ made of ``nn.Linear`` weights (the default: the last decoder layer's self-attention value projection,
  as DEALRec's code takes one matrix of the LLM's last layer): one ordinary forward and a backward that
  stops at the earliest selected layer, over the samples of many users at once; each layer's inputs x
  and output gradients δ are caught by hooks, and ``‖Σ_{t∈u} δ_t x_tᵀ‖²`` is formed per user from them
  (outer products or Gram matrices, whichever is cheaper; :mod:`tunesift.rec.effort`).
- any other φ (embeddings, layer norms): ``torch.func.vmap`` of ``grad`` over users, each user's samples
  padded to one shape (slower; T5 runs with eager attention and an additive mask so vmap can batch it).

Both are tested against a loop that calls ``backward`` once per user.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tunesift.rec.effort import linear_squared_norms, LinearCapture, OnlySelectedTrainable, split_linear_parameters
from tunesift.rec.tiger.model import Pairs, decoder_inputs, pad_batch


def default_effort_parameters(model: torch.nn.Module) -> list[str]:
    """The last decoder layer's self-attention value projection of a T5."""
    last = len(model.decoder.block) - 1
    return [f"decoder.block.{last}.layer.0.SelfAttention.v.weight"]


def select_parameters(model: torch.nn.Module, pattern: str | None) -> list[str]:
    """Parameter names matching ``pattern`` (a regex, full match), or the default set for None."""
    if pattern is None:
        return default_effort_parameters(model)
    names = [n for n, _ in model.named_parameters() if re.fullmatch(pattern, n)]
    if not names:
        raise ValueError(f"effort parameters {pattern!r} match no parameter of the model; it has e.g. "
                         f"{[n for n, _ in model.named_parameters()][:6]}")
    return names


def user_chunks(counts: np.ndarray, max_pairs: int) -> list[np.ndarray]:
    """Users with samples, fewest samples first, grouped so each group has at most ``max_pairs`` samples
    (a user with more gets a group of its own); users of a group have similar counts, so little padding."""
    groups, current, size = [], [], 0
    for u in np.argsort(counts, kind="stable"):
        c = int(counts[u])
        if c == 0:
            continue
        if current and size + c > max_pairs:
            groups.append(np.asarray(current))
            current, size = [], 0
        current.append(int(u))
        size += c
    if current:
        groups.append(np.asarray(current))
    return groups


class _UserRows:
    """The samples of each user, from ``Pairs.owner``: ``rows(group)`` lists them user by user."""

    def __init__(self, owner: np.ndarray, n_users: int):
        self.order = np.argsort(owner, kind="stable")
        self.counts = np.bincount(owner, minlength=n_users)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def rows(self, group: np.ndarray) -> np.ndarray:
        return np.concatenate([self.order[self.starts[u]:self.starts[u] + self.counts[u]] for u in group])


def _weights(owner: torch.Tensor) -> torch.Tensor:
    """(B,) 1 / (the user's number of samples): a user's loss is the mean over its samples."""
    _, inverse, counts = torch.unique(owner, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(torch.float32)


def _per_user_rows(rows: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """(B, T, f) sample rows -> (U, max samples per user x T, f), each user's samples concatenated."""
    users, inverse, counts = torch.unique_consecutive(owner, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(owner.numel(), device=owner.device) - starts[inverse]  # sample's position in its user
    b, t, f = rows.shape
    out = rows.new_zeros(users.numel(), int(counts.max()) * t, f)
    positions = (slot[:, None] * t + torch.arange(t, device=rows.device)[None, :])  # (B, T)
    out[inverse[:, None].expand(b, t), positions] = rows
    return out


def linear_effort(model: torch.nn.Module, pairs: Pairs, item_tokens: np.ndarray, n_users: int,
                  names: Sequence[str], max_pairs: int = 512, precision: str = "float32",
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n_users,) effort for φ = ``names``, all weights of ``nn.Linear`` layers (the hook path); the
    forward runs under ``precision`` (bfloat16 autocast or float32), the norms in float32."""
    from tunesift.rec.tiger.train import autocast

    linear, parts, other = split_linear_parameters(model, names)
    if other or any("bias" in p for p in parts.values()):
        raise ValueError(f"the hook path takes nn.Linear weights only, got {other or names}")
    device = next(model.parameters()).device
    squared = np.zeros(n_users, dtype=np.float64)
    by_user = _UserRows(pairs.owner, n_users)
    was_training = model.training
    model.eval()
    try:
        with OnlySelectedTrainable(model, names):
            for group in user_chunks(by_user.counts, max_pairs):
                index = by_user.rows(group)  # the group's users' samples, user by user
                ids, mask, labels = (x.to(device) for x in pad_batch(pairs, index, item_tokens))
                owner = torch.as_tensor(pairs.owner[index], device=device)
                capture = LinearCapture(linear)
                try:
                    with autocast(precision, device):
                        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_inputs(labels))
                finally:
                    capture.remove()
                logp = torch.log_softmax(out.logits.float(), dim=-1)
                losses = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)  # (B,)
                loss = (losses * _weights(owner)).sum()
                outputs = [o for name in linear for o in capture.outputs[name]]
                grads = torch.autograd.grad(loss, outputs)
                total = None
                k = 0
                for name in linear:
                    for x in capture.inputs[name]:
                        delta = grads[k]
                        k += 1
                        xs = _per_user_rows(x.float(), owner)
                        ds = _per_user_rows(delta.float(), owner)
                        part = linear_squared_norms(xs, ds)
                        total = part if total is None else total + part
                squared[group] = total.double().cpu().numpy()
                if progress is not None:
                    progress(len(group))
    finally:
        model.train(was_training)
    return np.sqrt(squared)


def vmap_effort(model: torch.nn.Module, pairs: Pairs, item_tokens: np.ndarray, n_users: int, names: Sequence[str],
                max_users: int = 16, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n_users,) effort for any φ by ``vmap(grad)`` over users (``model`` built with eager attention)."""
    from torch.func import functional_call, grad, vmap

    device = next(model.parameters()).device
    params = {n: p.detach() for n, p in model.named_parameters()}
    selected = {n: params[n] for n in names}
    rest = {n: p for n, p in params.items() if n not in selected}
    buffers = {n: b for n, b in model.named_buffers()}
    neg = torch.finfo(torch.float32).min

    def user_loss(p: dict, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, w: torch.Tensor):
        additive = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(mask == 0, neg)
        out = functional_call(model, {**rest, **p, **buffers}, (), dict(
            input_ids=ids, attention_mask=additive[:, None, None, :], decoder_input_ids=decoder_inputs(labels)))
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        losses = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)  # (P,)
        return (losses * w).sum() / w.sum()

    per_user = vmap(grad(user_loss), in_dims=(None, 0, 0, 0, 0))
    norms = np.zeros(n_users, dtype=np.float64)
    by_user = _UserRows(pairs.owner, n_users)
    users = np.array([u for group in user_chunks(by_user.counts, 10**9) for u in group], dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, users.size, max_users):
            chunk = users[lo : lo + max_users]
            rows = [by_user.rows(np.array([u])) for u in chunk]
            n_samples = max(r.size for r in rows)
            width = int(max(pairs.lengths()[r].max() for r in rows))
            shape = (len(chunk), n_samples)
            ids = torch.zeros(*shape, width, dtype=torch.long)
            mask = torch.zeros(*shape, width, dtype=torch.long)
            labels = torch.zeros(*shape, item_tokens.shape[1], dtype=torch.long)
            w = torch.zeros(shape)
            for k, r in enumerate(rows):
                i, m, y = pad_batch(pairs, r, item_tokens)
                ids[k, : r.size, : i.shape[1]] = i
                mask[k, : r.size, : i.shape[1]] = m
                labels[k, : r.size] = y
                labels[k, r.size:] = y[:1]  # padded samples: any valid tokens, weight 0
                ids[k, r.size:, 0] = i[0, 0]
                mask[k, r.size:, 0] = 1
                w[k, : r.size] = 1.0
            grads = per_user(selected, ids.to(device), mask.to(device), labels.to(device), w.to(device))
            squared = sum(g.flatten(1).double().pow(2).sum(1) for g in grads.values())
            norms[chunk] = squared.sqrt().cpu().numpy()
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return norms


def effort_scores(model: torch.nn.Module, pairs: Pairs, item_tokens: np.ndarray, n_users: int,
                  parameters: str | None = None, max_pairs: int = 512, precision: str = "float32",
                  eager_model: Callable[[], torch.nn.Module] | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[str], str]:
    """(n_users,) DEALRec's effort of each user (0 for users without samples), the parameter names and
    the path used ("hooks" or "vmap").

    Args:
        pairs: every user's training samples (``owner`` = the user's position, 0..n_users-1).
        parameters: a regex of parameter names (None: the last decoder layer's self-attention value matrix).
        precision: "bfloat16" runs the hook path's forward under autocast (the vmap path is float32).
        eager_model: builds the same model with eager attention, for the vmap path.
    """
    names = select_parameters(model, parameters)
    _, parts, other = split_linear_parameters(model, names)
    if not other and not any("bias" in p for p in parts.values()):
        return linear_effort(model, pairs, item_tokens, n_users, names, max_pairs, precision, progress), names, "hooks"
    eager = eager_model() if eager_model is not None else model
    eager.load_state_dict(model.state_dict())
    eager.to(next(model.parameters()).device)
    return vmap_effort(eager, pairs, item_tokens, n_users, names, progress=progress), names, "vmap"
