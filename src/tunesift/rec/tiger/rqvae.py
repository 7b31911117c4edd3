"""Semantic IDs for TIGER (Rajput et al., NeurIPS 2023, "Recommender Systems with Generative Retrieval").

Each item's text embedding x (computed elsewhere) is encoded to a latent z; a residual quantiser with
L codebooks {e_k^(l)} reads off one code per level,

    r_1 = z,   c_l = argmin_k ||r_l − e_k^(l)||²,   r_{l+1} = r_l − e_{c_l}^(l),   ẑ = Σ_l e_{c_l}^(l),

and a decoder reconstructs x from ẑ, trained through the straight-through estimator z + sg(ẑ − z).
The RQ-VAE loss per item (the paper's §3.1) is

    L(x) = ||x − x̂||² + Σ_l ( ||sg[r_l] − e_{c_l}||² + β·||r_l − sg[e_{c_l}]||² ),

every norm summed over its dimensions (re-implementations report that averaging over dimensions
collapses the codebooks), averaged over the batch. The residuals are formed with the codewords detached,
so the commitment term trains the encoder only and the codebook term the codewords only.

As in the paper, each level's codebook starts from k-means (greedy k-means++ seeding, then Lloyd) on
the residuals of a sample of items, level by level; as in most re-implementations, codes left unused for
a while are re-seeded to current residuals. :func:`disambiguate` appends the extra code that makes
colliding items' IDs unique (the paper's fourth level).

Two choices are ours, both measured. The MLPs are He-initialised with zero biases (PyTorch's default
init maps all items to nearly one latent point, leaving k-means nothing to cluster). Dead codes are
re-seeded by continuing greedy k-means++ from the live codewords rather than uniformly: early in
training the encoder moves the latents much faster than Adam moves the codewords, most level-1 codes
go unused within the first epochs, and D²-weighted re-seeding puts the new codewords where the
quantisation error is largest (on clustered data it recovers the clusters far more often; on real
item embeddings the two are alike). ``reseed="uniform"`` gives the plain rule.

Two layers: pure functions on tensors (:func:`nearest_codes`, :func:`residual_quantize`,
:func:`kmeans_plusplus`, :func:`lloyd`, :func:`kmeans`, :func:`disambiguate`), then the model
(:class:`RQVAE`) and its training (:func:`train_rqvae` -> :class:`RQVAEResult`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tunesift.rec.tiger.settings import RESEED_METHODS, RQVAESettings  # noqa: F401  (re-exported)

log = logging.getLogger("tunesift")



# --------------------------------------------------------------------------------------------------
# settings


# --------------------------------------------------------------------------------------------------
# quantisation and k-means: pure functions on tensors


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword by squared Euclidean distance (ties: the lowest index).

    Args:
        x: (B, D) points.
        codebook: (K, D) codewords.
    Returns:
        (B,) int64 codes.
    """
    # ||x − c||² = ||x||² − 2x·c + ||c||²; ||x||² is the same for every c
    scores = torch.addmm((codebook * codebook).sum(1), x, codebook.T, alpha=-2.0)  # (B, K)
    return scores.argmin(1)


def residual_quantize(z: torch.Tensor, codebooks: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy residual quantisation, level by level.

    Args:
        z: (B, D) latents.
        codebooks: (L, K, D), one codebook per level.
    Returns:
        codes (B, L) int64; z_q (B, D) = Σ_l e_{c_l}^(l), differentiable w.r.t. the codebooks;
        residuals (B, L, D) with r_1 = z and r_{l+1} = r_l − sg[e_{c_l}], differentiable w.r.t. z only.
    """
    residual = z
    codes, chosen, residuals = [], [], []
    for codebook in codebooks:
        c = nearest_codes(residual.detach(), codebook.detach())  # (B,)
        e = codebook[c]  # (B, D)
        codes.append(c)
        chosen.append(e)
        residuals.append(residual)
        residual = residual - e.detach()
    return torch.stack(codes, 1), torch.stack(chosen, 0).sum(0), torch.stack(residuals, 1)


def _plusplus_draws(x: torch.Tensor, d2: torch.Tensor, k: int, generator: torch.Generator, trials: int
                    ) -> list[int]:
    """Greedy D² draws of ``k`` more rows of (n, D) ``x``, given each row's (n,) squared distance
    ``d2`` to the centres chosen so far."""
    n = x.shape[0]
    chosen = []
    for _ in range(k):
        weights = d2.double().cpu().clamp_min(0)
        if not weights.sum() > 0:  # every point is already a centre
            weights = torch.ones(n, dtype=torch.float64)
        drawn = torch.multinomial(weights, trials, replacement=True, generator=generator)  # (T,)
        new = torch.minimum(d2, torch.cdist(x[drawn.to(x.device)], x).pow(2))  # (T, n) if each were added
        best = int(new.sum(1).argmin())
        chosen.append(int(drawn[best]))
        d2 = new[best]
    return chosen


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator, candidates: int | None = None,
                    centres: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the greedy variant scikit-learn uses).

    Each new centre is the best, by the resulting potential Σ_i D²(x_i), of ``candidates`` points drawn
    with probability ∝ D², D the distance to the nearest centre so far (plain k-means++ is
    ``candidates=1``). Greedy draws rarely put two centres in one cluster while missing another. With
    fewer distinct points than ``k``, the remaining centres repeat points.

    Args:
        x: (n, D) points, n >= 1.
        k: number of centres to draw.
        generator: a CPU generator (draws are made on the CPU, so they do not depend on the device).
        candidates: draws per centre; None = 2 + ⌊ln k⌋.
        centres: (m, D) centres already fixed, to add ``k`` to (None: start afresh, the first uniformly).
    Returns:
        (k, D) new centres, each a row of ``x``.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one point")
    trials = candidates if candidates is not None else 2 + int(math.log(max(k, 1)))
    if trials < 1:
        raise ValueError(f"`candidates` must be at least 1, got {candidates}")
    if k < 1:
        return x[:0].clone()
    if centres is None or centres.shape[0] == 0:
        first = int(torch.randint(n, (1,), generator=generator))
        chosen = [first] + _plusplus_draws(x, ((x - x[first]) ** 2).sum(1), k - 1, generator, trials)
    else:
        d2 = torch.cdist(x, centres).pow(2).min(1).values  # (n,)
        chosen = _plusplus_draws(x, d2, k, generator, trials)
    return x[torch.tensor(chosen, device=x.device)].clone()


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's iterations from the given centres; an empty cluster keeps its centre.

    Args:
        x: (n, D) points.
        centroids: (k, D) starting centres.
        iters: maximum iterations (stops early once the assignment no longer changes).
    Returns:
        (k, D) centres and the (n,) assignment of the points to them.
    """
    centroids = centroids.clone()
    k = centroids.shape[0]
    assignment = nearest_codes(x, centroids)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)  # (k, D)
        counts = torch.bincount(assignment, minlength=k).to(x.dtype)  # (k,)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        new = nearest_codes(x, centroids)
        if torch.equal(new, assignment):
            break
        assignment = new
    return centroids, assignment


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then ``iters`` Lloyd iterations. Returns (k, D) centres and (n,) assignment."""
    return lloyd(x, kmeans_plusplus(x, k, generator), iters)


def inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Σ_i min_k ||x_i − c_k||² of (n, D) points against (k, D) centres."""
    return float(((x - centroids[nearest_codes(x, centroids)]) ** 2).sum())


# --------------------------------------------------------------------------------------------------
# collisions


@dataclass
class DisambiguatedCodes:
    """Semantic IDs made unique by one extra level.

    Attributes:
        codes: (N, L + 1) int64; the last column tells apart items that share their first L codes
            (0, 1, 2, ... in item order within each group; 0 for unique items). Every row is unique.
        collision_rate: fraction of items that share their L codes with at least one other item.
        n_groups_with_collisions: number of distinct L-code prefixes shared by two or more items.
        max_group_size: the largest number of items sharing a prefix (the extra level needs this many
            tokens; 1 when there is no collision, 0 for no items).
    """

    codes: np.ndarray
    collision_rate: float
    n_groups_with_collisions: int
    max_group_size: int

    def info(self) -> dict:
        return {"collision_rate": self.collision_rate, "n_groups_with_collisions": self.n_groups_with_collisions,
                "max_group_size": self.max_group_size}


def disambiguate(codes: np.ndarray | torch.Tensor) -> DisambiguatedCodes:
    """Append the collision level to (N, L) integer codes (see :class:`DisambiguatedCodes`)."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"`codes` must be a 2-D integer array (N, L), got shape {codes.shape} of {codes.dtype}")
    codes = codes.astype(np.int64)
    n = codes.shape[0]
    if n == 0:
        return DisambiguatedCodes(np.zeros((0, codes.shape[1] + 1), dtype=np.int64), 0.0, 0, 0)
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")  # items grouped, in item order within a group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first position of each group in `order`
    extra = np.empty(n, dtype=np.int64)
    extra[order] = np.arange(n) - starts[group[order]]
    shared = counts[group] > 1
    return DisambiguatedCodes(codes=np.concatenate([codes, extra[:, None]], axis=1),
                              collision_rate=float(shared.mean()),
                              n_groups_with_collisions=int((counts > 1).sum()),
                              max_group_size=int(counts.max()))


def codebook_usage(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """(L,) fraction of each level's ``codebook_size`` codes that (N, L) ``codes`` use."""
    return np.array([np.unique(codes[:, l]).size / codebook_size for l in range(codes.shape[1])])


# --------------------------------------------------------------------------------------------------
# the model


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them, He-initialised with zero biases.

    PyTorch's default initialisation shrinks the signal at every layer while the biases stay, so a
    fresh 4-layer MLP maps all items to nearly one point (its biases) and the k-means initialisation
    has almost nothing to cluster; He initialisation keeps the inputs' geometry at the latent.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.kaiming_normal_(linear.weight, nonlinearity="linear" if last else "relu")
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class RQVAELoss:
    """Per-item loss terms of one batch (each summed over its dimensions).

    Attributes:
        reconstruction: (B,) ||x − x̂||² (in standardised units when ``standardize``).
        codebook: (B, L) ||sg[r_l] − e_{c_l}||², which trains the codewords.
        commitment: (B, L) ||r_l − sg[e_{c_l}]||², unweighted; trains the encoder.
        codes: (B, L) the chosen codes.
        beta: the commitment weight.
    """

    reconstruction: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor
    codes: torch.Tensor
    beta: float

    @property
    def per_item(self) -> torch.Tensor:
        """(B,) the RQ-VAE loss of each item."""
        return self.reconstruction + self.codebook.sum(1) + self.beta * self.commitment.sum(1)

    @property
    def total(self) -> torch.Tensor:
        """Scalar: the batch mean of :attr:`per_item`, the training objective."""
        return self.per_item.mean()


class RQVAE(nn.Module):
    """MLP encoder, residual quantiser with ``levels`` codebooks, mirrored MLP decoder.

    Args:
        input_dim: d, the embedding size.
        settings: the architecture (``levels``, ``codebook_size``, ``latent_dim``, ``hidden``) and β.
    """

    def __init__(self, input_dim: int, settings: RQVAESettings | None = None):
        super().__init__()
        s = settings or RQVAESettings()
        if input_dim < 1:
            raise ValueError(f"`input_dim` must be positive, got {input_dim}")
        self.settings = s
        self.encoder = _mlp([input_dim, *s.hidden, s.latent_dim])
        self.decoder = _mlp([s.latent_dim, *reversed(s.hidden), input_dim])
        # replaced by k-means at the start of training; N(0, 1) is only the ablation's start
        self.codebooks = nn.Parameter(torch.randn(s.levels, s.codebook_size, s.latent_dim))
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_scale", torch.ones(input_dim))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) embeddings -> the space the encoder reads and the decoder writes."""
        return (x - self.input_mean) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) embeddings -> (B, D) latents."""
        return self.encoder(self.standardize(x))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, D) latents -> codes (B, L), z_q (B, D), residuals (B, L, D); see :func:`residual_quantize`."""
        return residual_quantize(z, self.codebooks)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, D) quantised latents -> (B, d) reconstructed embeddings (in the input's units)."""
        return self.decoder(z_q) * self.input_scale + self.input_mean

    def forward(self, x: torch.Tensor) -> RQVAELoss:
        """(B, d) embeddings -> the loss terms; the decoder sees z + sg(ẑ − z) (straight-through)."""
        z = self.encode(x)
        codes, z_q, residuals = self.quantize(z)  # (B, L), (B, D), (B, L, D)
        x_hat = self.decoder(z + (z_q - z).detach())  # standardised units
        chosen = self.codebooks[torch.arange(codes.shape[1], device=codes.device), codes]  # (B, L, D)
        return RQVAELoss(reconstruction=((self.standardize(x) - x_hat) ** 2).sum(1),
                         codebook=((residuals.detach() - chosen) ** 2).sum(2),
                         commitment=((residuals - chosen.detach()) ** 2).sum(2),
                         codes=codes, beta=self.settings.commitment)


def _as_tensor(embeddings: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor):
        embeddings = np.asarray(embeddings)
        if not embeddings.flags.writeable:  # e.g. a read-only memory map of the embedding cache: torch
            embeddings = embeddings.copy()  # cannot share it safely (and warns)
    x = torch.as_tensor(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`embeddings` must be a non-empty 2-D array (N, d), got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"`embeddings` must be numeric, got {x.dtype}")
    x = x.to(device=device, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("`embeddings` contain NaN or infinite values")
    return x


@torch.no_grad()
def assign_codes(model: RQVAE, embeddings: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Each item's codes, one per level: (N, d) embeddings -> (N, L) int64 numpy (on the model's device)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
    x = _as_tensor(embeddings, model.codebooks.device)
    out = [model.quantize(model.encode(x[i : i + batch_size]))[0] for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).cpu().numpy().astype(np.int64)


@torch.no_grad()
def _residuals(model: RQVAE, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """(n, L, D) residuals of every level under the current codebooks."""
    return torch.cat([model.quantize(model.encode(x[i : i + batch_size]))[2] for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def init_codebooks(model: RQVAE, x: torch.Tensor, iters: int, generator: torch.Generator) -> list[float]:
    """Set each level's codebook to k-means on that level's residuals, level by level.

    Level l is fitted on the residuals left after quantising with the (already initialised) levels < l.

    Args:
        x: (n, d) embeddings, the sample to fit on.
        iters: Lloyd iterations per level.
    Returns:
        the per-level inertia (mean squared distance of a residual to its centre).
    """
    residual = model.encode(x)  # (n, D)
    inertias = []
    for level in range(model.codebooks.shape[0]):
        centroids, assignment = kmeans(residual, model.codebooks.shape[1], iters, generator)
        model.codebooks[level] = centroids
        residual = residual - centroids[assignment]
        inertias.append(float((residual ** 2).sum(1).mean()))
    return inertias


@torch.no_grad()
def reseed_dead_codes(model: RQVAE, x: torch.Tensor, counts: torch.Tensor, generator: torch.Generator,
                      method: str = "kmeans++") -> int:
    """Move the codewords that ``counts`` says were unused onto randomly chosen current residuals.

    Level by level: level l's residuals are recomputed after levels < l were re-seeded.

    Args:
        x: (n, d) embeddings whose residuals are candidates.
        counts: (L, K) assignments each code received since the last check.
        method: "uniform" draws residuals uniformly (without replacement when there are enough);
            "kmeans++" continues greedy k-means++ from the live codewords, so new codewords go where the
            quantisation error is largest (e.g. into clusters that share a code) and not onto each other.
    Returns:
        the number of codewords re-seeded.
    """
    if method not in RESEED_METHODS:
        raise ValueError(f"`method` must be one of {RESEED_METHODS}, got {method!r}")
    total = 0
    for level in range(model.codebooks.shape[0]):
        dead = counts[level] == 0  # (K,)
        n_dead = int(dead.sum())
        if n_dead == 0:
            continue
        residual = _residuals(model, x)[:, level]  # (n, D)
        n = residual.shape[0]
        if method == "kmeans++":
            new = kmeans_plusplus(residual, n_dead, generator, centres=model.codebooks[level][~dead])
        elif n >= n_dead:
            new = residual[torch.randperm(n, generator=generator)[:n_dead].to(residual.device)]
        else:
            new = residual[torch.randint(n, (n_dead,), generator=generator).to(residual.device)]
        model.codebooks[level, dead] = new
        total += n_dead
    return total


# --------------------------------------------------------------------------------------------------
# training


@dataclass
class RQVAEResult:
    """A trained RQ-VAE and the semantic IDs it gives the training items.

    Attributes:
        codes: (N, levels) int64, one code per level for each item (before disambiguation).
        usage: (levels,) fraction of each codebook used by ``codes``.
        dead_resets: total codewords re-seeded during training.
        losses: per-epoch mean RQ-VAE loss.
        reconstruction_losses: per-epoch mean reconstruction term.
        reconstruction: final mean ||x − x̂||² of the trained model on all items.
        state: the model's state dict (CPU tensors); ``model()`` rebuilds it.
        input_dim: d.
        seconds: wall time of training.
    """

    codes: np.ndarray
    usage: np.ndarray
    dead_resets: int
    losses: list[float]
    reconstruction: float
    state: dict[str, torch.Tensor]
    settings: RQVAESettings
    input_dim: int
    reconstruction_losses: list[float] = field(default_factory=list)
    kmeans_inertia: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def model(self, device: str | torch.device = "cpu") -> RQVAE:
        """The trained model, in eval mode."""
        model = RQVAE(self.input_dim, self.settings)
        model.load_state_dict(self.state)
        return model.to(device).eval()

    def disambiguated(self) -> DisambiguatedCodes:
        return disambiguate(self.codes)

    def info(self) -> dict:
        """JSON-able summary: usage, re-seeds, final losses, collision statistics."""
        return {"usage": [round(float(u), 6) for u in self.usage], "dead_resets": int(self.dead_resets),
                "final_loss": float(self.losses[-1]) if self.losses else None,
                "reconstruction": float(self.reconstruction), "epochs": len(self.losses),
                "seconds": round(self.seconds, 3), **self.disambiguated().info(),
                "settings": {**asdict(self.settings), "hidden": list(self.settings.hidden)}}


def train_rqvae(embeddings: np.ndarray | torch.Tensor, settings: RQVAESettings | None = None,
                device: str | torch.device = "cpu", progress: bool = False) -> RQVAEResult:
    """Train an RQ-VAE on (N, d) item embeddings and read off each item's codes.

    k-means initialisation on up to ``kmeans_sample`` items, then ``epochs`` epochs of AdamW on shuffled
    batches, re-seeding dead codes every ``dead_code_every`` epochs. Deterministic given
    ``settings.seed`` (and the device and thread count): the initialisation, sampling and shuffling all
    draw from generators seeded with it; the global RNG is left as it was.

    Args:
        embeddings: (N, d) float array, row i = item i.
        device: "cpu", "cuda", ... or "auto".
    """
    from tqdm.auto import tqdm

    from tunesift.embed import resolve_device

    s = settings or RQVAESettings()
    device = torch.device(resolve_device(str(device)))
    x = _as_tensor(embeddings, device)  # (N, d)
    n, d = x.shape
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(s.seed)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(s.seed)
        model = RQVAE(d, s).to(device)
    if s.standardize:
        model.input_mean.copy_(x.mean(0))
        model.input_scale.copy_(x.std(0, unbiased=False).clamp_min(1e-8))

    def sample() -> torch.Tensor:
        return x if n <= s.kmeans_sample else x[torch.randperm(n, generator=generator)[: s.kmeans_sample].to(device)]

    inertias = init_codebooks(model, sample(), s.kmeans_iters, generator) if s.kmeans_init else []
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    counts = torch.zeros(s.levels, s.codebook_size, dtype=torch.long, device=device)
    losses, reconstructions, resets = [], [], 0
    bar = tqdm(range(1, s.epochs + 1), desc="RQ-VAE", unit="epoch", disable=not progress)
    model.train()
    for epoch in bar:
        total, total_rec = 0.0, 0.0
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, s.batch_size):
            out = model(x[order[start : start + s.batch_size]])
            loss = out.total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            b = out.codes.shape[0]
            total += loss.item() * b
            total_rec += out.reconstruction.detach().sum().item()
            for level in range(s.levels):
                counts[level] += torch.bincount(out.codes[:, level], minlength=s.codebook_size)
        losses.append(total / n)
        reconstructions.append(total_rec / n)
        if s.dead_code_every and epoch % s.dead_code_every == 0 and epoch < s.epochs:
            resets += reseed_dead_codes(model, sample(), counts, generator, s.reseed)
            counts.zero_()
        bar.set_postfix(loss=f"{losses[-1]:.4f}", rec=f"{reconstructions[-1]:.4f}", resets=resets)
    bar.close()
    model.eval()
    codes = assign_codes(model, x)
    with torch.no_grad():
        reconstruction = float(torch.cat([model(x[i : i + 4096]).reconstruction for i in range(0, n, 4096)]).mean())
    result = RQVAEResult(codes=codes, usage=codebook_usage(codes, s.codebook_size), dead_resets=resets,
                         losses=losses, reconstruction=reconstruction,
                         state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                         settings=s, input_dim=d, reconstruction_losses=reconstructions,
                         kmeans_inertia=inertias, seconds=time.perf_counter() - t0)
    log.info("RQ-VAE: usage %s, %d dead codes re-seeded, collision rate %.4f, %.1fs",
             np.round(result.usage, 3).tolist(), resets, result.disambiguated().collision_rate, result.seconds)
    return result
