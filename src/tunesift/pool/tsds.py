"""TSDS: task-specific data selection by optimal transport with a density-aware diversity term.

Liu, Karbasi and Rekatsinas, *TSDS: Data Selection for Task-Specific Model Finetuning*, NeurIPS 2024
(arXiv:2410.11303; code: github.com/ZifanL/TSDS, ``tsds.py``). The target's M examples q_j each hold
mass 1/M and send it to pool candidates x_i; the selection is the distribution p_i = Σ_j γ_ji of what
the candidates receive, from which the budget is drawn.

Objective (the one the authors' ``tsds.py`` minimises: its stopping rule, line 83, is this objective's
first-order condition; we solve it exactly)::

    min_γ   α/C · Σ_j Σ_i γ_ji ‖q_j − x_i‖₂   +   (1 − α) · M · max_{j,i} ρ_i γ_ji
    s.t.    γ_ji ≥ 0,   Σ_i γ_ji = 1/M for every j,   γ_ji = 0 unless x_i is among the K nearest
            candidates of q_j (Euclidean distance)

The first term is the transport cost of aligning p with the target (a semi-relaxed OT: only the
target's marginal is fixed), scaled by C, a constant of the scale of the embeddings' norms. The
second is the diversity regulariser: ρ_i is a kernel density estimate of candidate i, so a candidate
with many near-duplicates may receive only a small share, and a cluster of duplicates together about
what one isolated candidate receives. The cap is on each pair (j, i), as in their code: a candidate in
the neighbourhoods of several target examples can receive a share from each. α trades alignment
(α = 1: every target example sends its mass to its nearest candidate) against diversity (α = 0: the
mass spread as evenly as the K-neighbourhoods allow, ∝ 1/ρ).

Density. ``ρ_i = Σ_u max(0, 1 − ‖x_i − x_u‖² / σ²)`` over the ``kde_k`` candidates u nearest x_i
(x_i itself included, so ρ_i ≥ 1) among U, the union of the K-neighbourhoods of all target examples
(the authors' ``tsds.py`` lines 49-64); σ = 0: ρ ≡ 1 (their "KDE set to 1").

Solution. With a cap λ = 1/(M·s) on ρ_i γ_ji, each target example fills its neighbours nearest first,
γ_jk = min(λ/ρ_jk, what is left of 1/M) (k-th nearest). Its transport cost is piecewise linear in λ,
with kinks where its first k+1 neighbours are exactly full: ``s = S_jk = Σ_{k'≤k} 1/ρ_jk'``. Just
past a kink the objective changes with λ at the rate ``−α/C · Σ_j c_j + (1 − α)·M`` where
``c_j = Σ_{k'≤k} (d_j,k+1 − d_jk') / ρ_jk'`` for the k of j's last kink so far; the optimum is the first
kink s (in increasing order) at which ``α/C · Σ_j c_j ≥ (1 − α)·M`` (their lines 75-89, a heap walk;
here one sort of all kinks). With K neighbours the cap cannot go below what lets every target example
place its mass: ``s ≤ min_j S_j,K−1`` (the "boundary" stop). Then ``p_i = Σ_j γ_ji``.

Selection. The authors draw the budget i.i.d. from p (``np.random.multinomial``, with replacement).
A selection here is a ranking of distinct rows, so we take the order in which rows first appear in
that i.i.d. sequence: sampling without replacement ∝ p (exponential races, seeded), which gives the
same first draws and skips repeats; ``draw="top"`` orders by p instead. Rows with p = 0 follow, nearest
target example first. Selections of different budgets are prefixes of one ranking.

Cost: the neighbour search (every pool row against every target row, block by block, the pool read
part by part when memory-mapped), then densities only for the candidates the walk reaches (depth
doubled as needed) against U: O(N·M·d + |reached|·|U|·d), memory O(M·K + |U| + block²), never N × M.

Where we differ from the authors' code (and why):

- Exact neighbour and density searches; theirs use FAISS ``IndexIVFFlat`` (nlist √n/2, nprobe 10),
  which may miss neighbours. Densities in float64 (float32 products leave ~1e-6 errors in ρ).
- The boundary: their walk goes on past ``min_j S_j,K−1`` (until its heap is empty) and then gives each
  example's last neighbour whatever is left of 1/M, above the cap (their check on line 98 allows it);
  we stop there. With their defaults this binds whenever K is small for the data (K = N/10 on small pools).
- Before the cap reaches an example (s < S_j0, e.g. always at α = 1 with densities) their formula gives
  its nearest candidate 1/(M·s·ρ) > 1/M (their check on line 97 fails); we give it 1/M.
- Distinct rows, drawn without replacement in the order of an i.i.d. sampler (above) instead of
  ``budget`` draws with replacement; rows with p = 0 are ordered by distance to the target.
- K and kde_k capped at N // 10 as theirs, but at least 2 and 1 (their code fails below N = 20).
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tunesift.io.tables import TextSet
from tunesift.pool.base import Context, PoolMethod, Ranking, scores_from_order
from tunesift.registry import POOL_METHODS

log = logging.getLogger(__name__)

DRAWS = ("sample", "top")
FIRST_DEPTH = 32  # neighbour positions whose densities are computed first (doubled while the walk needs more)


@dataclass
class TSDSDistribution:
    """What :func:`tsds_distribution` returns.

    Attributes:
        probability: (N,) float64 p_i, summing to 1; 0 outside the neighbourhoods the mass reaches.
        density: (N,) float64 ρ_i where it was computed (the candidates the walk reached), NaN elsewhere.
        nearest_distance: (N,) float64 the Euclidean distance of each pool row to its nearest target row.
        info: the solution (level s, stop, transport cost, regulariser, objective, sizes).
    """

    probability: np.ndarray
    density: np.ndarray
    nearest_distance: np.ndarray
    info: dict = field(default_factory=dict)


def effective_depths(n: int, k: int, kde_k: int) -> tuple[int, int]:
    """(K, kde_k) used for a pool of n rows: the authors cap both at N // 10 (``tsds.py`` lines 32-33);
    we keep at least 2 neighbours (their walk needs a next neighbour) and 1 density neighbour (the row
    itself), and at most n."""
    tenth = n // 10
    return min(n, k, max(tenth, 2)), min(n, kde_k, max(tenth, 1))


def optimal_level(distances: np.ndarray, inverse_density: np.ndarray, depth: int, alpha: float,
                  c: float) -> tuple[float, str] | None:
    """The optimal level s (cap λ = 1/(M·s)) from the first D neighbours of every target example.

    Args:
        distances: (M, ≥ min(D + 1, K)) distances to the neighbours, nearest first.
        inverse_density: (M, D) 1/ρ of those neighbours, D ≤ K.
        depth: K, the length of the full neighbour lists.

    Returns ``(s, "optimum")`` or ``(s, "boundary")``; None when the first D neighbours do not decide
    it (a deeper kink may come first): call again with a larger D.
    """
    m, d = inverse_density.shape
    cumulative = np.cumsum(inverse_density, axis=1)  # S_jk
    # every kink at or below `known` is among the first D positions (later kinks of j lie above S_j,D-1)
    known = float(cumulative[:, min(d, depth) - 1].min())
    last = min(d, depth - 1)  # kinks k = 0 .. last-1 (kink k needs the distance of neighbour k + 1)
    if last > 0:
        weighted = np.cumsum(distances[:, :last] * inverse_density[:, :last], axis=1)
        slope = distances[:, 1:last + 1] * cumulative[:, :last] - weighted  # c_j just past kink k
        step = np.diff(slope, axis=1, prepend=0.0).ravel()
        values = cumulative[:, :last].ravel()
        by_value = np.argsort(values, kind="stable")
        total = np.cumsum(step[by_value])
        hit = np.flatnonzero(alpha / c * total >= (1.0 - alpha) * m)
        if hit.size and values[by_value[hit[0]]] <= known:
            return float(values[by_value[hit[0]]]), "optimum"
    if d >= depth:  # the cap cannot go lower: the example with the smallest S_j,K-1 is spread over all K
        return known, "boundary"
    return None


def transport_plan(level: float, inverse_density: np.ndarray) -> np.ndarray:
    """(M, D) γ at level s: the neighbours k with S_jk ≤ s get λ/ρ_jk (λ = 1/(M·s)), the next one what
    is left of 1/M (all of it when even the nearest is not full), the others nothing."""
    m, d = inverse_density.shape
    cumulative = np.cumsum(inverse_density, axis=1)
    full = (cumulative <= level).sum(axis=1)  # S_j is increasing
    positions = np.arange(d)[None, :]
    gamma = np.where(positions < full[:, None], inverse_density / (m * level), 0.0)
    rows = np.flatnonzero(full < d)
    before = np.where(full[rows] > 0, cumulative[rows, np.maximum(full[rows] - 1, 0)], 0.0)
    gamma[rows, full[rows]] = np.where(full[rows] > 0, (1.0 - before / level) / m, 1.0 / m)
    return gamma


def _gather(pool: Any, rows: np.ndarray, device: str, dtype: Any = np.float32) -> "torch.Tensor":
    """Rows of a (possibly memory-mapped) array as a tensor on ``device`` (those rows read, not the whole file)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(pool[rows], dtype=dtype)).to(device)


def kernel_densities(pool: Any, rows: np.ndarray, over: np.ndarray, sigma: float, kde_k: int,
                     block_size: int = 4096, device: str = "cpu") -> np.ndarray:
    """(len(rows),) ρ of pool ``rows`` over pool rows ``over``: the sum of ``max(0, 1 − ‖x − u‖²/σ²)``
    over the ``kde_k`` rows u of ``over`` nearest x (their largest kernel values). ``over`` is read in
    blocks of ``block_size`` rows, once (twice for rows with more than ``kde_k`` positive kernels)."""
    import torch

    if sigma == 0:
        return np.ones(len(rows))
    device = "cpu" if str(device).startswith("mps") else device  # MPS has no float64
    x = _gather(pool, rows, device, np.float64)
    x2 = (x * x).sum(1)
    scale = 1.0 / (sigma * sigma)
    sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
    counts = torch.zeros(len(rows), dtype=torch.int64, device=device)

    def kernel(queries, q2, keys, k2):  # 1 − (‖q‖² + ‖u‖² − 2 q·u)/σ² in [0, 1], in place on q·u
        values = torch.addmm((1.0 - q2 * scale)[:, None], queries, keys.T, alpha=2.0 * scale)
        return values.sub_((k2 * scale)[None, :]).clamp_(0.0, 1.0)

    def blocks():
        for u0 in range(0, len(over), block_size):
            keys = _gather(pool, over[u0:u0 + block_size], device, np.float64)
            yield keys, (keys * keys).sum(1)

    for keys, k2 in blocks():
        for r0 in range(0, len(rows), block_size):
            values = kernel(x[r0:r0 + block_size], x2[r0:r0 + block_size], keys, k2)
            sums[r0:r0 + block_size] += values.sum(1, dtype=torch.float64)
            counts[r0:r0 + block_size] += (values > 0).sum(1)
    heavy = torch.nonzero(counts > kde_k).flatten()
    if len(heavy):  # more positive kernels than kde_k: keep the kde_k largest
        top = torch.zeros((len(heavy), kde_k), dtype=torch.float64, device=device)
        hx, hx2 = x[heavy], x2[heavy]
        for keys, k2 in blocks():
            for r0 in range(0, len(heavy), block_size):
                merged = torch.cat([top[r0:r0 + block_size], kernel(hx[r0:r0 + block_size], hx2[r0:r0 + block_size],
                                                                    keys, k2)], dim=1)
                top[r0:r0 + block_size] = merged.topk(kde_k, dim=1).values
        sums[heavy] = top.sum(1, dtype=torch.float64)
    return sums.cpu().numpy()


def neighbour_table(pool: Any, target: np.ndarray, k: int, block_size: int = 4096, device: str = "cpu",
                    executor: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k nearest pool rows (Euclidean) of every target row: (M, k) rows and distances, nearest first
    (among equal distances the lower row first), and (N,) each pool row's distance to its nearest target
    row. The pool is searched block by block by :func:`tunesift.pool.knn_parts.knn_index` (a memory-mapped
    pool read part by part, or split over ``executor``'s workers)."""
    import torch

    from tunesift.pool.knn import prepare, similarity
    from tunesift.pool.knn_parts import knn_index

    y = torch.from_numpy(np.array(target, dtype=np.float32)).to(device)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("target embeddings contain NaN or infinite values")
    m = y.shape[0]
    with knn_index(pool, "l2", block_size, device, executor) as index:
        y = prepare(y, "l2")
        found = index.lists(y, k, with_nearest_target=True)
        lengths = np.diff(found.offsets)
        rows = np.zeros((m, k), dtype=np.int64)
        similarities = np.zeros((m, k), dtype=np.float64)
        whole = np.flatnonzero(lengths == k)
        if len(whole):
            at = found.offsets[whole][:, None] + np.arange(k)[None, :]
            rows[whole], similarities[whole] = found.indices[at], found.similarities[at]
        short = np.flatnonzero(lengths < k)
        if len(short):  # the sampled threshold kept fewer than k rows: an exact top-k for those
            exact = index.exact(y[torch.as_tensor(short, device=y.device)], k)
            for j, found_rows in zip(short, exact):
                found_rows = np.asarray(found_rows, dtype=np.int64)
                sims = similarity(y[j:j + 1], _gather(pool, found_rows, device), "l2")[0].double().cpu().numpy()
                keep = np.lexsort((found_rows, -sims))
                rows[j], similarities[j] = found_rows[keep], sims[keep]
    return rows, -similarities, -found.best_similarity.astype(np.float64)


def tsds_distribution(pool: Any, target: np.ndarray, alpha: float = 0.5, c: float = 5.0, sigma: float = 0.75,
                      k: int = 5000, kde_k: int = 1000, block_size: int = 4096, device: str = "cpu",
                      executor: Any = None, timer: Any = None, first_depth: int = FIRST_DEPTH) -> TSDSDistribution:
    """TSDS's selection distribution p of pool rows for the target (see the module docstring).

    Args:
        pool: (N, d) embeddings (an array or a memory-mapped ``.npy``; read block by block).
        target: (M, d) embeddings.
        alpha, c, sigma, k, kde_k: the settings of :class:`TSDS` (k and kde_k capped by
            :func:`effective_depths`).
        first_depth: neighbour positions whose densities are computed first (doubled as needed; the
            result does not depend on it).
    """
    stage = (lambda name: timer.stage(name)) if timer is not None else (lambda name: nullcontext())
    n, m = pool.shape[0], target.shape[0]
    depth, kde_depth = effective_depths(n, k, kde_k)
    with stage("tsds_neighbours"):
        rows, distances, nearest = neighbour_table(pool, target, depth, block_size, device, executor)
    union = np.unique(rows)
    density = np.full(n, np.nan)
    d, rounds = min(depth, max(1, int(first_depth))), 0
    while True:
        rounds += 1
        reached = np.unique(rows[:, :d])
        missing = reached[np.isnan(density[reached])]
        if len(missing):
            with stage("tsds_density"):
                density[missing] = kernel_densities(pool, missing, union, sigma, kde_depth, block_size, device)
        inverse = 1.0 / density[rows[:, :d]]
        with stage("tsds_solve"):
            found = optimal_level(distances, inverse, depth, alpha, c)
        if found is not None:
            break
        d = min(depth, 2 * d)
    level, stop = found
    gamma = transport_plan(level, inverse)
    probability = np.bincount(rows[:, :d].ravel(), weights=gamma.ravel(), minlength=n)
    transport = float((gamma * distances[:, :d]).sum())
    regulariser = float(m * (gamma / inverse).max())
    support = int((probability > 0).sum())
    info = {
        "alpha": alpha, "c": c, "sigma": sigma, "k": depth, "kde_k": kde_depth,
        "level_s": level, "cap": 1.0 / (m * level), "stop": stop,
        "transport_cost": transport, "regulariser": regulariser,
        "objective": alpha / c * transport + (1.0 - alpha) * regulariser,
        "support": support, "neighbourhood_rows": int(len(union)), "density_rows": int(np.isfinite(density).sum()),
        "depth_reached": int(d), "rounds": rounds, "target_rows": int(m),
    }
    return TSDSDistribution(probability=probability, density=density, nearest_distance=nearest, info=info)


def draw_order(probability: np.ndarray, nearest_distance: np.ndarray, draw: str,
               rng: np.random.Generator) -> np.ndarray:
    """(N,) the ranking: rows with p > 0 in the order an i.i.d. sampler from p first draws them
    (``"sample"``: exponential races E_i / p_i, seeded) or by p (``"top"``; ties: lower row first); then
    rows with p = 0, nearest target row first (ties: lower row first)."""
    support = np.flatnonzero(probability > 0)
    rest = np.flatnonzero(probability <= 0)
    if draw == "sample":
        head = support[np.argsort(rng.exponential(size=len(support)) / probability[support], kind="stable")]
    else:
        head = support[np.argsort(-probability[support], kind="stable")]
    tail = rest[np.argsort(nearest_distance[rest], kind="stable")]
    return np.concatenate([head, tail]).astype(np.int64)


@POOL_METHODS.register("tsds")
@dataclass
class TSDS(PoolMethod):
    """TSDS settings; the defaults are the authors' ``config.yaml`` (alpha 0.5, C 5.0, sigma 0.75,
    max_K 5000, kde_K 1000), each capped at N // 10 as in their ``tsds.py``."""

    alpha: float = 0.5  # trade-off: 1 = alignment only (nearest candidates), 0 = diversity only
    c: float = 5.0  # scale of the transport cost, "in the same scale as the norm of the embeddings"
    sigma: float = 0.75  # KDE bandwidth: kernel max(0, 1 - ||x - u||^2 / sigma^2); 0 = no density (rho = 1)
    k: int = 5000  # neighbours per target example (the authors' max_K)
    kde_k: int = 1000  # neighbours a density sums over (the authors' kde_K)
    draw: str = "sample"  # sample without replacement ∝ p (the authors sample with replacement) or top: by p
    block_size: int = 4096  # pool rows per block of distances

    name: ClassVar[str] = "tsds"
    uses_embeddings: ClassVar[bool] = True
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {
        "alpha": ("--tsds-alpha", "TSDS: trade-off between alignment to the target (1) and diversity (0)"),
        "c": ("--tsds-c", "TSDS: scale C of the transport cost (about the norm of the embeddings)"),
        "sigma": ("--tsds-sigma", "TSDS: bandwidth of the density kernel max(0, 1 - d^2/sigma^2); 0: no density"),
        "k": ("--tsds-k", "TSDS: nearest candidates per target example (at most N/10)"),
        "kde_k": ("--tsds-kde-k", "TSDS: neighbours each density sums over (at most N/10)"),
        "draw": ("--tsds-draw", "TSDS: sample (without replacement, proportional to the probability) or top "
                 "(by probability)"),
        "block_size": ("--tsds-block-size", "TSDS: pool rows per block of distances"),
    }

    def __post_init__(self) -> None:
        for name, low, high in (("alpha", 0.0, 1.0), ("c", 0.0, math.inf), ("sigma", 0.0, math.inf)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
                and math.isfinite(value) and low <= value <= high
            if not ok or (name == "c" and value == 0):
                what = {"alpha": "a number in [0, 1]", "c": "a positive number", "sigma": "a number >= 0"}[name]
                raise ValueError(f"`{name}` must be {what}, got {value!r}")
        for name in ("k", "kde_k", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an integer of at least 1, got {value!r}")
        if self.draw not in DRAWS:
            raise ValueError(f"`draw` must be one of {', '.join(DRAWS)}, got {self.draw!r}")

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        if ctx.embed is None:
            raise ValueError("the tsds method needs embeddings; run it through select_from_pool or give Context.embed")
        x = ctx.embed(pool, "pool")
        y = ctx.embed(target, "target")
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"pool embeddings have dimension {x.shape[1]}, target embeddings {y.shape[1]}")
        result = tsds_distribution(x, y, alpha=float(self.alpha), c=float(self.c), sigma=float(self.sigma),
                                   k=int(self.k), kde_k=int(self.kde_k), block_size=int(self.block_size),
                                   device=ctx.device, executor=ctx.executor, timer=ctx.timer)
        n, budget = len(pool), min(int(ctx.budget), len(pool))
        p = result.probability
        order = draw_order(p, result.nearest_distance, self.draw, ctx.rng)
        scores = scores_from_order(order)  # the position in the drawn order, higher = earlier
        info = dict(result.info, draw=self.draw)
        support = info["support"]
        # what the authors' sampler (budget draws with replacement) would give, for comparison
        with np.errstate(divide="ignore"):  # p = 1: log(0)
            info["expected_distinct_with_replacement"] = float(-np.expm1(budget * np.log1p(-np.minimum(p, 1.0))).sum())
        if budget > support:
            info["filled_by_nearest"] = budget - support
            log.info("tsds: %d pool rows have a positive probability, fewer than the budget %d; the other %d are the "
                     "rows nearest a target example", support, budget, budget - support)
        info["selected_probability_mass"] = float(p[order[:budget]].sum())
        columns = {"probability": p, "density": result.density, "nearest_distance": result.nearest_distance}
        return Ranking(scores=scores, order=order, columns=columns, info=info)
