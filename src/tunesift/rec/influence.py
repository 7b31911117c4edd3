"""Influence of each training sample on the empirical risk (Koh & Liang 2017, as DEALRec uses it).

    I(s) = ∇θL(s)ᵀ · H⁻¹ · v,    v = (1/N) Σ_j ∇θL(s_j),

with H the Hessian of the training loss over a chosen parameter subset θ. Because H⁻¹ is symmetric,
one inverse-Hessian-vector product h = H⁻¹v serves every sample; each sample then costs one
gradient and a dot product. h is estimated with LiSSA (Agarwal et al. 2017):

    h₀ = v;  h_t = v + (1 − damping)·h_{t−1} − (∇²L(B_t)·h_{t−1}) / scale,

B_t a random mini-batch, whose fixed point is h = scale·(H + damping·scale·I)⁻¹v. We divide by
``scale`` at the end, so :func:`lissa` estimates ``(H + damping·scale·I)⁻¹ v``; DEALRec's code
skips that division (a constant factor, irrelevant after min-max normalisation).

The model protocol: ``model(*batch) -> (B,)`` per-sample losses (e.g. :class:`~tunesift.rec.sasrec.SASRec`),
with ``batch`` a tuple of tensors whose first dimension indexes samples. Parameters outside the chosen
subset are held fixed. Everything follows the device of the model.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.func import jvp as _jvp


def jvp(*args, **kwargs):
    """``torch.func.jvp``, without the DeprecationWarning that torch 2.13 raises from inside it (its
    forward-mode decompositions are still built with ``torch.jit.script``, which it deprecates)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
        return _jvp(*args, **kwargs)

log = logging.getLogger("tunesift")

Batch = Sequence[torch.Tensor]
Prepare = Callable[[Batch], Batch]  # applied to every chunk before use, e.g. cutting shared padding


def _identity(batch: Batch) -> Batch:
    return batch


class LissaDivergedError(ValueError):
    """LiSSA's iterate blew up: the Hessian's largest eigenvalue exceeds what ``scale`` allows."""


def split_parameters(model: nn.Module, names: Sequence[str] | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(chosen parameters, everything else incl. buffers), both detached.

    Args:
        names: parameter names (``model.named_parameters()``); None = all parameters.
    """
    params = dict(model.named_parameters())
    if names is None:
        names = list(params)
    names = list(names)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"unknown parameter name(s) {unknown}; the model has {', '.join(params)}")
    if not names:
        raise ValueError("the parameter subset is empty")
    chosen = {n: params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in params.items() if n not in chosen}
    rest.update({n: b for n, b in model.named_buffers()})
    return chosen, rest


def flatten(tensors: dict[str, torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """Concatenate tensors into one vector per leading batch index: (*batch, P)."""
    lead = next(iter(tensors.values())).shape[:batch_dims]
    return torch.cat([t.reshape(*lead, -1) for t in tensors.values()], dim=-1)


def unflatten(vector: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten` for one vector."""
    out, start = {}, 0
    for n, t in like.items():
        out[n] = vector[start : start + t.numel()].view_as(t)
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the parameters {start}")
    return out


def _loss_of(model: nn.Module, rest: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
    """(params, *batch) -> (B,) per-sample losses with ``params`` substituted."""

    def losses(params: dict[str, torch.Tensor], *batch: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**rest, **params}, tuple(batch))

    return losses


def _chunks(n: int, size: int):
    if size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def per_sample_gradients(model: nn.Module, batch: Batch, names: Sequence[str] | None = None,
                         batch_size: int = 256, prepare: Prepare | None = None) -> torch.Tensor:
    """Gradient of each sample's loss, batched with ``vmap(grad)``.

    Args:
        batch: tensors of shape (N, ...), one row per sample.
        names: the parameter subset (None = all).
        batch_size: samples per vmap call (memory is batch_size x P).
        prepare: applied to each chunk before the call (e.g. ``sasrec.trim_padding``).
    Returns:
        (N, P) gradients, P = total size of the subset, in ``names`` order.
    """
    params, rest = split_parameters(model, names)
    losses = _loss_of(model, rest)

    def one(p: dict[str, torch.Tensor], *sample: torch.Tensor) -> torch.Tensor:
        return losses(p, *(t.unsqueeze(0) for t in sample))[0]

    per_sample = vmap(grad(one), in_dims=(None, *([0] * len(batch))))
    n = batch[0].shape[0]
    out = []
    prepare = prepare or _identity
    for sl in _chunks(n, batch_size):
        out.append(flatten(per_sample(params, *prepare([t[sl] for t in batch])), batch_dims=1))
    return torch.cat(out) if out else torch.zeros(0, sum(p.numel() for p in params.values()))


def _embedding_squared_norms(model: nn.Module, batch: Batch, modules: dict[str, nn.Embedding]
                             ) -> tuple[torch.Tensor, list[str]]:
    """(B,) squared norms of each sample's gradient w.r.t. the weights of ``modules`` (embeddings),
    and the modules that could not be handled (looked up with ids not indexed by sample, e.g. positions
    shared by the whole batch): their weights need the dense path.

    A sample touches few rows of an embedding table, so its gradient is sparse: the gradient of row r
    is the sum of the output gradients at the positions that looked r up. One batched backward of
    Σ_s L(s) gives every output gradient (samples do not interact); rows are then summed per
    (sample, row) and squared. The padding row gets no gradient, as in ``nn.Embedding``.
    """
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in modules}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: calls[n].append((inp[0], out)))
               for n, m in modules.items()]
    weights = [m.weight for m in modules.values()]
    saved = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            losses = model(*batch)
            outputs = [out for n in modules for _, out in calls[n]]
            grads = torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for w, flag in zip(weights, saved):
            w.requires_grad_(flag)
    b = losses.shape[0]
    total = torch.zeros(b, dtype=torch.float64, device=losses.device)
    misaligned = []
    k = 0
    for name, module in modules.items():
        rows = module.weight.shape[0]
        ids, gs = [], []
        pairs = list(zip(calls[name], grads[k : k + len(calls[name])]))
        k += len(calls[name])
        if not pairs:
            continue
        if any(inp.ndim < 1 or inp.shape[0] != b for (inp, _), _ in pairs):
            misaligned.append(name)
            continue
        for (inp, out), g in pairs:
            ids.append(inp.reshape(b, -1))
            gs.append((g if g is not None else torch.zeros_like(out)).reshape(b, -1, out.shape[-1]))
        ids_all = torch.cat(ids, 1)  # (B, K)
        g_all = torch.cat(gs, 1).double()  # (B, K, d)
        sample = torch.arange(b, device=ids_all.device)[:, None].expand_as(ids_all)
        keep = ids_all != (module.padding_idx if module.padding_idx is not None else -1)
        keys = (sample * rows + ids_all)[keep]
        unique, inverse = torch.unique(keys, return_inverse=True)
        summed = torch.zeros(unique.numel(), g_all.shape[-1], dtype=torch.float64, device=g_all.device)
        summed.index_add_(0, inverse, g_all[keep])
        total.index_add_(0, unique // rows, summed.pow(2).sum(1))
    return total, misaligned


def _shared_lookups(model: nn.Module, batch: Batch, modules: dict[str, nn.Embedding], prepare: Prepare) -> list[str]:
    """The embedding modules whose lookups are not indexed by sample: the leading size of their ids does
    not follow the batch size. The shapes of one batch cannot tell (positions (T,) look like per-sample
    ids (B,) when T = B), so the model runs on the batch's first row and on its first two rows."""
    leading: dict[str, set] = {n: set() for n in modules}
    rows = [0]
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: leading[n].add(
        (rows[0], int(inp[0].shape[0]) if inp[0].ndim else None))) for n, m in modules.items()]
    try:
        with torch.no_grad():
            for rows[0] in (1, 2):
                model(*prepare([t[:rows[0]] for t in batch]))
    finally:
        for h in handles:
            h.remove()
    return [n for n, seen in leading.items() if any(size != probe for probe, size in seen)]


def per_sample_gradient_norms(model: nn.Module, batch: Batch, names: Sequence[str] | None = None,
                              batch_size: int = 64, progress: bool = False,
                              prepare: Prepare | None = None) -> torch.Tensor:
    """(N,) L2 norms of per-sample gradients w.r.t. ``names`` (None = all parameters).

    Weights of plain ``nn.Embedding`` tables (e.g. SASRec's item embeddings, most of its parameters)
    take a sparse path (:func:`_embedding_squared_norms`); the rest use ``vmap(grad)`` in chunks of
    ``batch_size``, never holding more than ``batch_size`` x P numbers.
    """
    params = dict(model.named_parameters())
    names = list(params) if names is None else list(names)
    sparse: dict[str, nn.Embedding] = {}
    for n in names:
        module_name, _, attr = n.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if (isinstance(module, nn.Embedding) and attr == "weight" and module.max_norm is None
                and not module.scale_grad_by_freq and not module.sparse):
            sparse[module_name] = module
    from tqdm.auto import tqdm

    n_rows = batch[0].shape[0]
    if sparse and n_rows >= 2:  # tables looked up with ids shared by the batch (positions) take the dense path
        for name in _shared_lookups(model, batch, sparse, prepare or _identity):
            del sparse[name]
    out = []
    for sl in tqdm(list(_chunks(n_rows, batch_size)), desc="gradient norms", unit="batch", disable=not progress):
        part = list((prepare or _identity)([t[sl] for t in batch]))
        squared = torch.zeros(sl.stop - sl.start, dtype=torch.float64, device=part[0].device)
        if sparse:
            sparse_squared, misaligned = _embedding_squared_norms(model, part, sparse)
            for name in misaligned:  # e.g. position embeddings: dense from now on
                del sparse[name]
            if misaligned:
                sparse_squared, _ = _embedding_squared_norms(model, part, sparse) if sparse else (0.0, [])
            squared += sparse_squared
        dense = [n for n in names if n.rpartition(".")[0] not in sparse]
        if dense:
            squared += per_sample_gradients(model, part, dense, batch_size).double().pow(2).sum(1)
        out.append(squared.sqrt().float())
    return torch.cat(out) if out else torch.zeros(0)


def mean_gradient(model: nn.Module, batch: Batch, names: Sequence[str] | None = None,
                  batch_size: int = 1024, progress: bool = False, prepare: Prepare | None = None) -> torch.Tensor:
    """v = (1/N) Σ_j ∇θL(s_j): one ordinary backward per chunk of the summed losses. Returns (P,)."""
    return gradient_sum(model, batch, names, batch_size, progress, prepare) / batch[0].shape[0]


def gradient_sum(model: nn.Module, batch: Batch, names: Sequence[str] | None = None,
                 batch_size: int = 1024, progress: bool = False, prepare: Prepare | None = None) -> torch.Tensor:
    """Σ_j ∇θL(s_j) over the samples of ``batch``. Returns (P,)."""
    from tqdm.auto import tqdm

    params, rest = split_parameters(model, names)
    losses = _loss_of(model, rest)
    n = batch[0].shape[0]
    total = torch.zeros_like(flatten(params))
    summed = grad(lambda p, *b: losses(p, *b).sum())
    for sl in tqdm(list(_chunks(n, batch_size)), desc="mean gradient", unit="batch", disable=not progress):
        total += flatten(summed(params, *(prepare or _identity)([t[sl] for t in batch])))
    return total


def hessian_vector_product(model: nn.Module, batch: Batch, vector: torch.Tensor,
                           names: Sequence[str] | None = None) -> torch.Tensor:
    """∇²[(1/B) Σ L(s)] · vector for the samples in ``batch`` (forward-over-reverse). Returns (P,)."""
    params, rest = split_parameters(model, names)
    losses = _loss_of(model, rest)
    mean_grad = grad(lambda p: losses(p, *batch).mean())
    return flatten(jvp(mean_grad, (params,), (unflatten(vector, params),))[1])


def _hessian(params: dict[str, torch.Tensor], summed_losses: Sequence[Callable[[dict[str, torch.Tensor]], torch.Tensor]],
             n: int, chunk_size: int | None) -> torch.Tensor:
    """(1/n) Σ over the callables of the Hessian of each (a sum of sample losses), symmetrised: (P, P)."""
    flat_params = flatten(params)
    p_size = flat_params.numel()
    eye = torch.eye(p_size, dtype=flat_params.dtype, device=flat_params.device)
    total = torch.zeros(p_size, p_size, dtype=flat_params.dtype, device=flat_params.device)
    for summed in summed_losses:
        summed_grad = grad(summed)

        def hvp(direction: torch.Tensor) -> torch.Tensor:
            return flatten(jvp(summed_grad, (params,), (unflatten(direction, params),))[1])

        total += vmap(hvp, chunk_size=chunk_size)(eye)
    hessian = total / n
    return (hessian + hessian.T) / 2  # exact up to rounding; symmetrise


def hessian_matrix(model: nn.Module, batch: Batch, names: Sequence[str] | None = None,
                   batch_size: int = 1024, chunk_size: int | None = 64, prepare: Prepare | None = None) -> torch.Tensor:
    """The exact Hessian of the mean loss over all of ``batch`` w.r.t. the subset: (P, P).

    Meant for small subsets (P up to a few thousand): P Hessian-vector products per chunk of samples.
    """
    params, rest = split_parameters(model, names)
    losses = _loss_of(model, rest)
    parts = (list((prepare or _identity)([t[sl] for t in batch])) for sl in _chunks(batch[0].shape[0], batch_size))
    return _hessian(params, (lambda p, part=part: losses(p, *part).sum() for part in parts), batch[0].shape[0],
                    chunk_size)


def exact_inverse_hvp(hessian: torch.Tensor, vector: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
    """Solve (H + damping·I) x = v in float64. Returns x with the dtype of ``vector``."""
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1] or hessian.shape[0] != vector.numel():
        raise ValueError(f"hessian has shape {tuple(hessian.shape)}, vector {tuple(vector.shape)}")
    if damping < 0:
        raise ValueError(f"`damping` must be non-negative, got {damping}")
    h64 = hessian.double() + damping * torch.eye(hessian.shape[0], dtype=torch.float64, device=hessian.device)
    return torch.linalg.solve(h64, vector.double().reshape(-1)).to(vector.dtype)


# --------------------------------------------------------------------------------------------------
# LiSSA


@dataclass
class LissaSettings:
    """LiSSA settings; defaults are DEALRec's (T = 5000 steps of one sample, damp 0.01, scale 25, one
    repeat)."""

    depth: int = 5000  # recursion steps T per repeat
    damping: float = 0.01
    scale: float = 25.0  # must exceed about half the Hessian's largest eigenvalue
    batch_size: int = 1  # samples per Hessian-vector product
    repeats: int = 1  # independent estimates averaged
    seed: int = 0
    blowup: float = 1e3  # divergence when ‖h_t‖ > blowup · ‖v‖ · min(1/damping, t + 1)

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"`depth` must be at least 1, got {self.depth}")
        if not 0 <= self.damping < 1:
            raise ValueError(f"`damping` must be in [0, 1), got {self.damping}")
        if self.scale <= 0:
            raise ValueError(f"`scale` must be positive, got {self.scale}")
        if self.batch_size < 1 or self.repeats < 1:
            raise ValueError("`batch_size` and `repeats` must be at least 1")


@dataclass
class LissaResult:
    """h ≈ (H + damping·scale·I)⁻¹ v, with how the iteration behaved.

    Attributes:
        h: (P,) the estimate (averaged over repeats, divided by scale).
        norms: (repeats, depth) ‖h_t‖ (before dividing by scale).
        relative_change: per repeat, ‖h_T − h_{⌈0.9T⌉}‖ / ‖h_T‖ over the last 10% of the steps.
        converged: every repeat ended finite with relative_change < 0.1 (stochastic steps never
            settle exactly; a large change means more depth or a larger batch).
    """

    h: torch.Tensor
    norms: np.ndarray
    relative_change: list[float]
    converged: bool
    settings: LissaSettings
    seconds: float = 0.0

    def info(self) -> dict:
        idx = np.unique(np.linspace(0, self.norms.shape[1] - 1, 21).astype(int))
        return {"converged": self.converged, "relative_change": [round(x, 6) for x in self.relative_change],
                "norm_trace": {int(i + 1): [float(f"{v:.6g}") for v in self.norms[:, i]] for i in idx},
                "final_norm": float(self.h.norm()), "seconds": round(self.seconds, 3),
                "settings": self.settings.__dict__}


def lissa(hvp: Callable[[np.ndarray, torch.Tensor], torch.Tensor], v: torch.Tensor, n_samples: int,
          settings: LissaSettings | None = None, progress: bool = False) -> LissaResult:
    """Estimate (H + damping·scale·I)⁻¹ v by the LiSSA recursion.

    Args:
        hvp: ``hvp(indices, vector)`` = Hessian of the mean loss over samples ``indices`` times ``vector``.
        v: (P,) the vector (the mean training gradient).
        n_samples: sample indices are drawn uniformly (with replacement) from range(n_samples).
    Raises:
        LissaDivergedError: when ‖h_t‖ blows up; the advice is to raise ``scale``.
    """
    from tqdm.auto import tqdm

    s = settings or LissaSettings()
    if n_samples < 1:
        raise ValueError("`n_samples` must be at least 1")
    rng = np.random.default_rng(s.seed)
    t0 = time.perf_counter()
    v_norm = float(v.norm())
    ceiling = s.blowup * max(v_norm, 1e-30)
    total = torch.zeros_like(v)
    norms = np.zeros((s.repeats, s.depth))
    changes = []
    bar = tqdm(total=s.depth * s.repeats, desc="LiSSA", unit="step", disable=not progress)
    checkpoint = max(int(math.ceil(0.9 * s.depth)) - 1, 0)
    for r in range(s.repeats):
        h = v.clone()
        h_mark = h
        for t in range(s.depth):
            idx = rng.integers(0, n_samples, size=s.batch_size)
            h = v + (1.0 - s.damping) * h - hvp(idx, h) / s.scale
            norm = float(h.norm())
            norms[r, t] = norm
            limit = ceiling * (min(1.0 / s.damping, t + 1.0) if s.damping > 0 else t + 1.0)
            if not math.isfinite(norm) or norm > limit:
                bar.close()
                raise LissaDivergedError(
                    f"LiSSA diverged at step {t + 1} of repeat {r + 1} (‖h‖ = {norm:.3g}, ‖v‖ = {v_norm:.3g}): "
                    f"the Hessian's largest eigenvalue is above about 2·scale; raise the scale "
                    f"(now {s.scale:g}, e.g. --lissa-scale {s.scale * 10:g}) or the damping")
            if t == checkpoint:
                h_mark = h
            bar.update(1)
        changes.append(float((h - h_mark).norm() / max(float(h.norm()), 1e-30)))
        total += h
    bar.close()
    estimate = total / s.repeats / s.scale
    converged = all(c < 0.1 for c in changes)
    if not converged:
        log.warning("LiSSA: the estimate still moved by %s over the last 10%% of steps (stochastic noise or "
                    "slow convergence); consider a larger depth, "
                    "batch size or more repeats", ", ".join(f"{c:.2%}" for c in changes))
    return LissaResult(h=estimate, norms=norms, relative_change=changes, converged=converged, settings=s,
                       seconds=time.perf_counter() - t0)


def _double_backward_hvp(loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                         params: dict[str, torch.Tensor], vector: torch.Tensor) -> torch.Tensor:
    """∇²loss · vector w.r.t. ``params`` by reverse-over-reverse; ``vector`` is flat, in ``params`` order."""
    leaves = {n: t.detach().requires_grad_() for n, t in params.items()}
    with torch.enable_grad():
        loss = loss_of(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        directions = unflatten(vector.to(next(iter(params.values())).device), params)
        dot = sum((g * directions[n]).sum() for g, n in zip(grads, leaves))
        if not dot.requires_grad:  # the loss does not depend on the subset (e.g. no targets)
            return torch.zeros_like(vector)
        second = torch.autograd.grad(dot, list(leaves.values()), allow_unused=True)
    return torch.cat([(s if s is not None else torch.zeros_like(t)).reshape(-1)
                      for s, t in zip(second, leaves.values())])


def model_hvp(model: nn.Module, batch: Batch, names: Sequence[str] | None = None, prepare: Prepare | None = None
              ) -> Callable[[np.ndarray, torch.Tensor], torch.Tensor]:
    """The ``hvp(indices, vector)`` callback of :func:`lissa` for a model and its training samples.

    Reverse-over-reverse (double backward): for the small mini-batches LiSSA uses it is several times
    faster on CPU than forward-over-reverse (:func:`hessian_vector_product`), with the same result.
    """
    params, rest = split_parameters(model, names)

    def hvp(indices: np.ndarray, vector: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, device=batch[0].device)
        part = tuple((prepare or _identity)([t[idx] for t in batch]))
        return _double_backward_hvp(lambda p: functional_call(model, {**rest, **p}, part).mean(), params, vector)

    return hvp


# --------------------------------------------------------------------------------------------------
# models whose loss splits into independent rows past the chosen parameters


@dataclass
class PositionwiseLoss:
    """Per-sample losses as weighted sums of independent rows, from the chosen parameters on:

        L(s) = Σ_{r: owner[r] = s} weight[r] · head(rows[r]),

    where ``head`` holds the chosen parameters and nothing that comes before them, so the rows are
    constants (e.g. SASRec past its last attention: one row per target position, see
    ``SASRec.positionwise_loss``). A model offers it as ``model.positionwise_loss(batch, names)``
    (None when ``names`` reach before the split). The same numbers as the full model, at a fraction of
    the cost: a LiSSA step runs the head on one sample's rows only, and the scores of all samples come
    from one forward-mode pass over the rows.

    Attributes:
        head: ``head(*rows) -> (R,)`` per-row losses.
        parameter_names: head parameter name -> model parameter name.
        rows: tensors (R, ...), rows of one sample contiguous, samples in ascending order.
        owner: (R,) the sample (0..n_samples-1) of each row. weight: (R,).
    """

    head: nn.Module
    parameter_names: dict[str, str]
    rows: tuple[torch.Tensor, ...]
    owner: torch.Tensor
    weight: torch.Tensor
    n_samples: int
    chunk_size: int = 65536  # rows per pass for v, the scores and the Hessian

    def __post_init__(self) -> None:
        counts = torch.bincount(self.owner.cpu(), minlength=self.n_samples).numpy()
        self._offsets = np.concatenate([[0], np.cumsum(counts)])

    def parameters_for(self, names: Sequence[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(chosen, rest) head tensors, detached; ``chosen`` in the order of the model names ``names``."""
        by_model = {m: h for h, m in self.parameter_names.items()}
        missing = [n for n in names if n not in by_model]
        if missing:
            raise ValueError(f"{missing} are not parameters of the position-wise head "
                             f"({', '.join(by_model)})")
        tensors = dict(self.head.named_parameters())
        chosen = {by_model[n]: tensors[by_model[n]].detach() for n in names}
        rest = {h: t.detach() for h, t in tensors.items() if h not in chosen}
        rest.update(dict(self.head.named_buffers()))
        return chosen, rest

    def _weighted(self, params: dict[str, torch.Tensor], rest: dict[str, torch.Tensor], index) -> torch.Tensor:
        rows = tuple(t[index] for t in self.rows)
        return functional_call(self.head, {**rest, **params}, rows) * self.weight[index]

    def _row_chunks(self):
        return _chunks(self.owner.shape[0], self.chunk_size)

    def mean_gradient(self, names: Sequence[str]) -> torch.Tensor:
        return self.gradient_sum(names) / self.n_samples

    def gradient_sum(self, names: Sequence[str]) -> torch.Tensor:
        """Σ over the samples of ∇θL(s): (P,)."""
        params, rest = self.parameters_for(names)
        total = torch.zeros_like(flatten(params))
        summed = grad(lambda p, sl: self._weighted(p, rest, sl).sum())
        for sl in self._row_chunks():
            total += flatten(summed(params, sl))
        return total

    def hvp(self, names: Sequence[str]) -> Callable[[np.ndarray, torch.Tensor], torch.Tensor]:
        """The ``hvp(indices, vector)`` callback of :func:`lissa` (Hessian of the mean over ``indices``)."""
        params, rest = self.parameters_for(names)
        offsets = self._offsets
        device = self.owner.device

        def hvp(indices: np.ndarray, vector: torch.Tensor) -> torch.Tensor:
            if len(indices) == 1:
                index = slice(int(offsets[indices[0]]), int(offsets[indices[0] + 1]))
            else:  # with replacement: a sample drawn twice counts twice
                index = torch.as_tensor(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices]),
                                        dtype=torch.long, device=device)
            return _double_backward_hvp(lambda p: self._weighted(p, rest, index).sum() / len(indices),
                                        params, vector)

        return hvp

    def hessian(self, names: Sequence[str], chunk_size: int | None = 64) -> torch.Tensor:
        """The exact Hessian of the mean loss over all samples: (P, P)."""
        params, rest = self.parameters_for(names)
        return _hessian(params, [lambda p, sl=sl: self._weighted(p, rest, sl).sum() for sl in self._row_chunks()],
                        self.n_samples, chunk_size)

    def dot(self, names: Sequence[str], vector: torch.Tensor) -> torch.Tensor:
        """(N,) ∇θL(s) · vector for every sample: forward mode over the rows, summed per sample."""
        params, rest = self.parameters_for(names)
        tangent = unflatten(vector.to(self.owner.device), params)
        out = torch.zeros(self.n_samples, dtype=vector.dtype, device=self.owner.device)
        for sl in self._row_chunks():
            per_row = jvp(lambda p: self._weighted(p, rest, sl), (params,), (tangent,))[1]
            out.index_add_(0, self.owner[sl], per_row.detach().to(out.dtype))
        return out


# --------------------------------------------------------------------------------------------------
# scores


def per_sample_dot(model: nn.Module, batch: Batch, vector: torch.Tensor, names: Sequence[str] | None = None,
                   batch_size: int = 1024, prepare: Prepare | None = None) -> torch.Tensor:
    """∇θL(s) · vector for every sample via forward-mode differentiation of the per-sample losses
    (one jvp per chunk; the same numbers as ``per_sample_gradients(...) @ vector``). Returns (N,)."""
    params, rest = split_parameters(model, names)
    losses = _loss_of(model, rest)
    tangent = unflatten(vector.to(next(iter(params.values())).device), params)
    n = batch[0].shape[0]
    prepare = prepare or _identity
    out = [jvp(lambda p: losses(p, *prepare([t[sl] for t in batch])), (params,), (tangent,))[1].detach()
           for sl in _chunks(n, batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


@dataclass
class InfluenceResult:
    """Influence on the empirical risk per sample (higher = removing it raises the loss more).

    Attributes:
        scores: (N,) ∇θL(s)ᵀ · h.
        h: (P,) the inverse-Hessian-vector product used.
        v_norm: ‖v‖, the mean training gradient's norm.
        solver: "lissa" or "exact"; ``lissa`` holds its trace when LiSSA was used.
        path: "positionwise" when the model's row split was used, else "full".
    """

    scores: np.ndarray
    h: torch.Tensor
    v_norm: float
    parameters: list[str]
    solver: str
    lissa: LissaResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    path: str = "full"  # or "positionwise" (the model's PositionwiseLoss)

    def info(self) -> dict:
        out = {"solver": self.solver, "path": self.path, "parameters": self.parameters,
               "n_parameters": int(self.h.numel()),
               "v_norm": self.v_norm, "seconds": {k: round(t, 3) for k, t in self.seconds.items()}}
        if self.lissa is not None:
            out["lissa"] = self.lissa.info()
        return out


class InfluenceParts:
    """The influence computation in its three steps, the first and last over chunks of the samples, so a
    caller can save each finished piece (``tunesift.rec.stages.InfluenceStage``) and a killed run resumes:

    1. :meth:`gradient_sum` of a chunk; v = (Σ over chunks) / N;
    2. :meth:`inverse_hvp`: h from v (LiSSA or the exact solve) — its cost does not grow with N;
    3. :meth:`scores` of a chunk: ∇θL(s) · h for its samples.

    Memory: with the model's row split (:class:`PositionwiseLoss`) the rows are built per chunk, so no
    more than one chunk's rows are held (a LiSSA step then builds the rows of the samples it draws). With
    one chunk (``chunk`` ≥ N) the rows are built once and shared by the three steps — the numbers of
    :func:`influence_scores`. Several chunks give the same numbers up to float rounding (the sums are
    formed per chunk). Arguments as in :func:`influence_scores`; ``chunk``: samples per chunk.
    """

    def __init__(self, model: nn.Module, batch: Batch, names: Sequence[str] | None = None, solver: str = "lissa",
                 lissa_settings: LissaSettings | None = None, batch_size: int = 256, scoring: str = "vmap",
                 progress: bool = False, prepare: Prepare | None = None, positionwise: bool = True,
                 chunk: int | None = None):
        if solver not in ("lissa", "exact"):
            raise ValueError(f"solver must be 'lissa' or 'exact', got {solver!r}")
        if scoring not in ("vmap", "jvp"):
            raise ValueError(f"scoring must be 'vmap' or 'jvp', got {scoring!r}")
        self.model, self.batch, self.solver, self.scoring = model, batch, solver, scoring
        self.settings = lissa_settings or LissaSettings()
        self.names = list(names) if names is not None else [n for n, _ in model.named_parameters()]
        self.batch_size, self.progress, self.prepare = batch_size, progress, prepare
        self.n = int(batch[0].shape[0])
        if chunk is not None and int(chunk) < 1:
            raise ValueError(f"`chunk` must be at least 1, got {chunk}")
        self.chunk = max(1, self.n if chunk is None else min(int(chunk), self.n))  # one chunk = the same numbers
        self.slices = list(_chunks(self.n, self.chunk)) or [slice(0, 0)]
        self._positionwise = positionwise and hasattr(model, "positionwise_loss")
        self._rows: tuple[slice, PositionwiseLoss | None] | None = None
        self.seconds: dict[str, float] = {}

    def _part(self, sl: slice) -> list[torch.Tensor]:
        return [t[sl] for t in self.batch]

    def rows(self, sl: slice) -> PositionwiseLoss | None:
        """The row split of the samples in ``sl`` (None when the model has none for these parameters);
        the last one is kept, so the steps of a one-chunk run build it once."""
        if not self._positionwise:
            return None
        if self._rows is None or self._rows[0] != sl:
            t0 = time.perf_counter()
            self._rows = (sl, self.model.positionwise_loss(self._part(sl), self.names))
            self._add("rows", t0)
            if self._rows[1] is None:
                self._positionwise = False  # the subset reaches before the split: the full model throughout
        return self._rows[1]

    @property
    def path(self) -> str:
        return "positionwise" if self._positionwise else "full"

    def _add(self, what: str, t0: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - t0

    def gradient_sum(self, sl: slice) -> torch.Tensor:
        """Σ over the samples in ``sl`` of ∇θL(s): (P,)."""
        rows = self.rows(sl)
        t0 = time.perf_counter()
        if rows is not None:
            out = rows.gradient_sum(self.names)
        else:
            out = gradient_sum(self.model, self._part(sl), self.names, batch_size=max(self.batch_size, 1024),
                               progress=self.progress, prepare=self.prepare)
        self._add("mean_gradient", t0)
        return out

    def mean(self, sums: Sequence[torch.Tensor]) -> torch.Tensor:
        """v from the chunks' :meth:`gradient_sum` values, added in chunk order."""
        total = sums[0].clone()
        for g in sums[1:]:
            total += g
        return total / self.n

    def _hvp(self) -> Callable[[np.ndarray, torch.Tensor], torch.Tensor]:
        rows = self.rows(self.slices[0]) if len(self.slices) == 1 else None
        if rows is not None:
            return rows.hvp(self.names)
        if not self._positionwise:
            return model_hvp(self.model, self.batch, self.names, self.prepare)
        device = self.batch[0].device

        def hvp(indices: np.ndarray, vector: torch.Tensor) -> torch.Tensor:  # the drawn samples' rows only
            drawn = self.model.positionwise_loss([t[torch.as_tensor(indices, device=device)] for t in self.batch],
                                                 self.names)
            return drawn.hvp(self.names)(np.arange(len(indices)), vector)

        return hvp

    def _hessian(self) -> torch.Tensor:
        if not self._positionwise:
            return hessian_matrix(self.model, self.batch, self.names, prepare=self.prepare)
        total = None
        for sl in self.slices:  # the mean Hessian of each chunk, weighted by its share of the samples
            part = self.rows(sl).hessian(self.names) * ((sl.stop - sl.start) / self.n)
            total = part if total is None else total + part
        return total

    def inverse_hvp(self, v: torch.Tensor) -> tuple[torch.Tensor, LissaResult | None]:
        """h ≈ (H + damping·scale·I)⁻¹ v, and LiSSA's trace (None for the exact solve)."""
        t0 = time.perf_counter()
        if self.solver == "lissa":
            result = lissa(self._hvp(), v, self.n, self.settings, progress=self.progress)
            h, trace = result.h, result
        else:
            h, trace = exact_inverse_hvp(self._hessian(), v, self.settings.damping * self.settings.scale), None
        self._add("inverse_hvp", t0)
        return h, trace

    def scores(self, sl: slice, h: torch.Tensor) -> torch.Tensor:
        """(len,) ∇θL(s) · h for the samples in ``sl``."""
        rows = self.rows(sl)
        t0 = time.perf_counter()
        part = self._part(sl)
        if rows is not None:
            out = rows.dot(self.names, h)
        elif self.scoring == "jvp":
            out = per_sample_dot(self.model, part, h, self.names, batch_size=max(self.batch_size, 1024),
                                 prepare=self.prepare)
        else:
            from tqdm.auto import tqdm

            out = [per_sample_gradients(self.model, [t[b] for t in part], self.names, self.batch_size,
                                        self.prepare) @ h
                   for b in tqdm(list(_chunks(part[0].shape[0], self.batch_size)), desc="influence", unit="batch",
                                 disable=not self.progress)]
            out = torch.cat(out) if out else torch.zeros(0)
        self._add("scores", t0)
        return out


def influence_scores(
    model: nn.Module,
    batch: Batch,
    names: Sequence[str] | None = None,
    solver: str = "lissa",
    lissa_settings: LissaSettings | None = None,
    batch_size: int = 256,
    scoring: str = "vmap",
    progress: bool = False,
    prepare: Prepare | None = None,
    positionwise: bool = True,
    chunk: int | None = None,
) -> InfluenceResult:
    """Influence of every sample in ``batch`` on the training loss of ``model`` (in eval mode).

    Args:
        names: the parameter subset θ (None = all parameters).
        solver: "lissa" (stochastic, any size) or "exact" (forms the Hessian; small subsets only).
            "exact" solves (H + damping·scale·I) x = v with the LiSSA settings' damping and scale,
            i.e. the quantity LiSSA estimates.
        scoring: "vmap" (per-sample gradients with vmap(grad), then dot products) or "jvp" (the same
            dot products by forward-mode differentiation, without materialising gradients).
        prepare: applied to every chunk / mini-batch (e.g. ``sasrec.trim_padding``); rows sorted by
            length before the call make it most effective.
        positionwise: when the model offers ``positionwise_loss(batch, names)`` and the subset lies past
            its split (SASRec's default does), run every stage on the rows (:class:`PositionwiseLoss`):
            the same numbers up to rounding, the part before the subset computed once instead of at every
            step. ``scoring`` and ``batch_size`` then do not apply.
        chunk: samples per chunk of the mean gradient and the scores (None: all at once); see
            :class:`InfluenceParts`, which a caller that saves each chunk uses directly.
    """
    parts = InfluenceParts(model, batch, names, solver, lissa_settings, batch_size, scoring, progress, prepare,
                           positionwise, chunk)
    was_training = model.training
    model.eval()
    try:
        v = parts.mean([parts.gradient_sum(sl) for sl in parts.slices])
        h, trace = parts.inverse_hvp(v)
        scores = torch.cat([parts.scores(sl, h) for sl in parts.slices])
    finally:
        model.train(was_training)
    return InfluenceResult(scores=scores.detach().cpu().double().numpy(), h=h.detach(), v_norm=float(v.norm()),
                           parameters=parts.names, solver=parts.solver, lissa=trace, seconds=parts.seconds,
                           path=parts.path)
