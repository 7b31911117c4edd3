"""DEALRec and its baselines, each one registered class in ``tunesift.registry.REC_METHODS``.

A rec method turns the candidate users into a selection of exactly ``budget`` of them:
``rank(ctx) -> RecRanking``. It asks the context for the stages it needs (surrogate, influence,
the backbone's effort, early-training scores); the context computes each once and caches it
(``stages.py``). Scores are "higher = more important".

- ``dealrec``: min-max(influence) + λ·min-max(effort), coverage-enhanced stratified sampling.
- ``greedy``: the same score, top-n (the paper's ablation "Greedy", without coverage).
- ``dealrec-no-effort``: influence only, stratified (the paper's ablation "w/o δs").
- ``dealrec-no-influence``: effort only, stratified (the paper's ablation "w/o IS").
- ``random``: uniform.
- ``grand``: GraNd (Paul et al., NeurIPS 2021), per-sample gradient norm early in training, top-n.
- ``el2n``: EL2N (ibid.), the L2 norm of the prediction error early in training, top-n.
- ``ccs``: CCS (Zheng et al., ICLR 2023), EL2N scores + stratified sampling with hard pruning.

All baselines use the same SASRec surrogate as DEALRec (its snapshot after ``early_epoch`` epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tunesift.registry import REC_METHODS, Method
from tunesift.rec.select import (Selection, combine_scores, greedy_top, min_max_normalize, random_subset,
                                 stratified_sample)

# λ per dataset from DEALRec's hyper-parameters.txt; other datasets get the code's default 0.5
DEFAULT_LAMBDA = {"games": 0.3, "book": 1.0, "microlens-50k": 1.0}
CODE_DEFAULT_LAMBDA = 0.5


@dataclass
class RecRanking:
    """What a rec method returns.

    Attributes:
        scores: (N,) the method's score per candidate, higher = more important.
        selection: the chosen candidates (exactly ``budget``) and their strata.
        columns: extra (N,) columns for scores.parquet (``influence``, ``effort``...; NaN = not computed).
        info: entries for the manifest.
    """

    scores: np.ndarray
    selection: Selection
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class RecMethod(Method):
    """Base class of rec methods (settings, CLI flags: :class:`tunesift.registry.Method`).

    ``uses_effort``: the method needs the backbone's effort (so the backbone's model is loaded).
    """

    uses_effort: ClassVar[bool] = False

    def rank(self, ctx: Any) -> RecRanking:
        raise NotImplementedError


def _check_stratified(n_strata: int, hard_prune: float) -> None:
    if n_strata < 1:
        raise ValueError(f"`strata` must be at least 1, got {n_strata}")
    if not 0 <= hard_prune < 1:
        raise ValueError(f"`hard_prune` must be in [0, 1), got {hard_prune}")


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


_STRATA_OPTIONS = {"strata": ("--strata", "number K of equal-width score strata"),
                   "hard_prune": ("--hard-prune", "fraction of the highest scores dropped before stratifying")}


@REC_METHODS.register("dealrec")
@dataclass
class DealRec(RecMethod):
    """DEALRec: influence on the surrogate's empirical risk + λ·the LLM's effort, stratified sampling.

    Attributes:
        lam: λ; None = DEALRec's value for the dataset (Games 0.3, Book/MicroLens 1.0; else 0.5).
        strata: K (DEALRec: 50). hard_prune: β (DEALRec's code: 0.1; the paper does not mention it).
    """

    lam: float | None = None
    strata: int = 50
    hard_prune: float = 0.1
    name: ClassVar[str] = "dealrec"
    uses_effort: ClassVar[bool] = True
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {
        "lam": ("--lambda", "weight λ of the effort score (default: DEALRec's for the data set named by a DEALRec "
                "folder, a RecBole file or --name: 0.3 for games, 1.0 for book and microlens-50k; 0.5, its code's "
                "default, for any other, a table included; the run's log says which)"),
        **_STRATA_OPTIONS,
    }

    def __post_init__(self) -> None:
        _check_stratified(self.strata, self.hard_prune)
        if self.lam is not None and self.lam < 0:
            raise ValueError(f"`lam` must be non-negative, got {self.lam}")

    def rank(self, ctx: Any) -> RecRanking:
        scores, columns, lam = combined_score(ctx, self.lam)
        selection = stratified_sample(scores, ctx.budget, self.strata, self.hard_prune, ctx.rng)
        return RecRanking(scores, selection, columns, {"lambda": lam, "stratified": selection.info})


def resolve_lambda(lam: float | None, dataset: str) -> float:
    """λ given, or DEALRec's value for the dataset (Games 0.3, Book/MicroLens 1.0, else the code's 0.5)."""
    from tunesift.rec.prompts import dataset_key

    return lam if lam is not None else DEFAULT_LAMBDA.get(dataset_key(dataset), CODE_DEFAULT_LAMBDA)


def combined_score(ctx: Any, lam: float | None) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    influence = ctx.influence()
    effort = ctx.effort()
    lam = resolve_lambda(lam, ctx.data.name)
    return combine_scores(influence, effort, lam), {"influence": influence, "effort": effort}, lam


@REC_METHODS.register("greedy")
@dataclass
class Greedy(RecMethod):
    """DEALRec's combined score, top-n instead of stratified sampling (the paper's ablation)."""

    lam: float | None = None
    name: ClassVar[str] = "greedy"
    uses_effort: ClassVar[bool] = True
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {"lam": DealRec.cli_options["lam"]}

    def __post_init__(self) -> None:
        if self.lam is not None and self.lam < 0:
            raise ValueError(f"`lam` must be non-negative, got {self.lam}")

    def rank(self, ctx: Any) -> RecRanking:
        scores, columns, lam = combined_score(ctx, self.lam)
        return RecRanking(scores, greedy_top(scores, ctx.budget), columns, {"lambda": lam})


@REC_METHODS.register("dealrec-no-effort")
@dataclass
class DealRecNoEffort(RecMethod):
    """DEALRec without the effort score (the paper's "w/o δs"): min-max(influence), stratified sampling."""

    strata: int = 50
    hard_prune: float = 0.1
    name: ClassVar[str] = "dealrec-no-effort"
    cli_options: ClassVar[dict[str, tuple[str, str]]] = dict(_STRATA_OPTIONS)

    def __post_init__(self) -> None:
        _check_stratified(self.strata, self.hard_prune)

    def rank(self, ctx: Any) -> RecRanking:
        influence = ctx.influence()
        scores = min_max_normalize(influence)
        selection = stratified_sample(scores, ctx.budget, self.strata, self.hard_prune, ctx.rng)
        return RecRanking(scores, selection, {"influence": influence, "effort": _nan(scores.size)},
                          {"stratified": selection.info})


@REC_METHODS.register("dealrec-no-influence")
@dataclass
class DealRecNoInfluence(RecMethod):
    """DEALRec without the influence score (the paper's "w/o IS"): min-max(effort), stratified sampling."""

    strata: int = 50
    hard_prune: float = 0.1
    name: ClassVar[str] = "dealrec-no-influence"
    uses_effort: ClassVar[bool] = True
    cli_options: ClassVar[dict[str, tuple[str, str]]] = dict(_STRATA_OPTIONS)

    def __post_init__(self) -> None:
        _check_stratified(self.strata, self.hard_prune)

    def rank(self, ctx: Any) -> RecRanking:
        effort = ctx.effort()
        scores = min_max_normalize(effort)
        selection = stratified_sample(scores, ctx.budget, self.strata, self.hard_prune, ctx.rng)
        return RecRanking(scores, selection, {"influence": _nan(scores.size), "effort": effort},
                          {"stratified": selection.info})


@REC_METHODS.register("random")
@dataclass
class RandomUsers(RecMethod):
    """Uniformly random users: the baseline every method must beat."""

    name: ClassVar[str] = "random"

    def rank(self, ctx: Any) -> RecRanking:
        n = len(ctx.pool)
        selection = random_subset(n, ctx.budget, ctx.rng)
        scores = np.zeros(n)
        scores[selection.indices] = np.linspace(1.0, 0.5, selection.indices.size)  # drawn first = highest
        return RecRanking(scores, selection, {"influence": _nan(n), "effort": _nan(n)})


# --------------------------------------------------------------------------------------------------
# early-training scores on the surrogate


def el2n_scores(model: Any, batch: tuple[Any, Any, Any], batch_size: int = 1024) -> np.ndarray:
    """EL2N for the BCE surrogate: per sequence, the mean over target positions of the L2 norm of the
    error vector ``(σ(pos) − 1, σ(neg) − 0)`` (predictions vs labels of the two scored items).

    Args:
        model: a SASRec in eval mode. batch: (inputs, positives, negatives), each (N, T).
    Returns:
        (N,) scores; 0 for sequences without targets.
    """
    import torch

    from tunesift.rec.sasrec import length_order, trim_padding

    inputs, positives, negatives = batch
    device = next(model.parameters()).device
    order = length_order(inputs)
    out = []
    for start in range(0, inputs.shape[0], batch_size) if inputs.shape[0] else []:
        sl = order[start : start + batch_size]
        x, p, q = trim_padding((inputs[sl].to(device), positives[sl].to(device), negatives[sl].to(device)))
        with torch.no_grad():
            hidden = model.encode(x)  # (B, T, d)
            pos = torch.sigmoid((hidden * model.item_embeddings(p)).sum(-1))
            neg = torch.sigmoid((hidden * model.item_embeddings(q)).sum(-1))
        error = torch.sqrt((1 - pos) ** 2 + neg**2)  # (B, T)
        is_target = (p > 0).to(error.dtype)
        out.append(((error * is_target).sum(1) / is_target.sum(1).clamp_min(1.0)).cpu())
    if not out:
        return np.zeros(0)
    scores = torch.empty(inputs.shape[0], dtype=torch.float64)
    scores[order] = torch.cat(out).double()
    return scores.numpy()


@REC_METHODS.register("el2n")
@dataclass
class EL2N(RecMethod):
    """EL2N (Paul et al. 2021) on the surrogate early in training: keep the highest scores."""

    name: ClassVar[str] = "el2n"

    def rank(self, ctx: Any) -> RecRanking:
        scores = ctx.early_scores("el2n")
        n = scores.size
        return RecRanking(scores, greedy_top(scores, ctx.budget), {"influence": _nan(n), "effort": _nan(n)},
                          {"early_epoch": ctx.surrogate().early_epoch})


@REC_METHODS.register("grand")
@dataclass
class GraNd(RecMethod):
    """GraNd (Paul et al. 2021): per-sample gradient norm (all surrogate parameters by default) early in
    training; keep the highest."""

    name: ClassVar[str] = "grand"

    def rank(self, ctx: Any) -> RecRanking:
        scores = ctx.early_scores("grand")
        n = scores.size
        return RecRanking(scores, greedy_top(scores, ctx.budget), {"influence": _nan(n), "effort": _nan(n)},
                          {"early_epoch": ctx.surrogate().early_epoch})


@REC_METHODS.register("ccs")
@dataclass
class CCS(RecMethod):
    """CCS (Zheng et al. 2023): EL2N scores, hard-prune the top β, stratified sampling over K strata."""

    strata: int = 50
    hard_prune: float = 0.1
    name: ClassVar[str] = "ccs"
    cli_options: ClassVar[dict[str, tuple[str, str]]] = dict(_STRATA_OPTIONS)

    def __post_init__(self) -> None:
        _check_stratified(self.strata, self.hard_prune)

    def rank(self, ctx: Any) -> RecRanking:
        scores = ctx.early_scores("el2n")
        n = scores.size
        selection = stratified_sample(scores, ctx.budget, self.strata, self.hard_prune, ctx.rng)
        return RecRanking(scores, selection, {"influence": _nan(n), "effort": _nan(n)},
                          {"early_epoch": ctx.surrogate().early_epoch, "stratified": selection.info})
