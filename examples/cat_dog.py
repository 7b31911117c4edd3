"""Cats and dogs: why GOT-D picks what the pre-training data LACKS (Figure 3 of Kang et al., ICLR 2024).

The set-up
----------
A model was pre-trained on a pool that is 99% "cat" and 1% "dog". The target task is 50% cat, 50% dog.
We may warm the model up on k more examples from the pool before fine-tuning. Which k?

* **random** picks like the pool: 99% cats. The model hardly moves.
* **knn** (TAPT/c: the nearest pool neighbours of each target example) and other "look like the target"
  rules pick half cats, half dogs. But the model has seen plenty of cats already; the cats it picks
  are wasted budget.
* **GOT-D** asks a different question. Light fine-tuning on k examples moves the model's training
  distribution from the pool D_P towards ``λ·D_U + (1 − λ)·D_P`` (λ small). To first order, the k
  examples that bring that mixture closest to the target, in optimal-transport distance, are those with
  the most negative gradient ``∂OT(D_P, D_T)/∂a_x`` (the pool-side dual potential). Pool cats are in
  surplus relative to the target (99% vs 50%): adding more cat mass makes the transport worse. Dogs are in
  deficit (1% vs 50%): every dog added lowers the OT distance. So GOT-D picks dogs, nearly only dogs.
* **DSIR** resamples the pool with importance weights p_target(x)/p_pool(x) of hashed n-grams. With a
  budget no larger than the dogs in the pool, the dogs' weight (≈ 50%/1%) dwarfs the cats' (≈ 50%/99%),
  so it also picks mostly dogs here; it works on the texts, not on the embeddings.

What this example does
----------------------
It builds the pool and the target as 2-D points (so the picture shows the embedding space itself), with a
short text per point for DSIR, runs the four methods through ``tunesift.select_from_pool`` with the points
as precomputed embeddings, prints the share of dogs in each selection and draws what each method picked
(``examples/cat_dog.png``). GOT-D runs with the authors' settings (entropic OT, ε = 0.1), kNN with
Euclidean distance (the points are 2-D positions, not directions).

    .venv/bin/python examples/cat_dog.py [--out examples/cat_dog.png] [--seed 0]

It takes a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tunesift import TextSet, select_from_pool

CAT_WORDS = "cat kitten purrs meows whiskers litter tabby mouse yarn nap sofa claws".split()
DOG_WORDS = "dog puppy barks wags leash fetch bone walk kennel bark tail ball".split()


def make_points(n: int, centre: tuple[float, float], spread: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) Gaussian points around ``centre``."""
    return rng.normal(loc=centre, scale=spread, size=(n, 2)).astype(np.float32)


def make_texts(n: int, words: list[str], rng: np.random.Generator) -> list[str]:
    """n short texts of 5-9 words drawn from one animal's vocabulary (what DSIR reads)."""
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 10)))) for _ in range(n)]


def build(n_pool: int = 3000, dog_share: float = 0.01, n_target: int = 200, seed: int = 0):
    """The pool (99% cat, 1% dog), the 50/50 target, their 2-D embeddings and which pool rows are dogs."""
    rng = np.random.default_rng(seed)
    n_dog = int(round(dog_share * n_pool))
    cat_centre, dog_centre = (0.0, 0.0), (2.0, 1.0)
    pool_x = np.concatenate([make_points(n_pool - n_dog, cat_centre, 0.45, rng),
                             make_points(n_dog, dog_centre, 0.45, rng)])
    pool_texts = make_texts(n_pool - n_dog, CAT_WORDS, rng) + make_texts(n_dog, DOG_WORDS, rng)
    is_dog = np.arange(n_pool) >= n_pool - n_dog
    half = n_target // 2
    target_x = np.concatenate([make_points(half, cat_centre, 0.45, rng),
                               make_points(n_target - half, dog_centre, 0.45, rng)])
    target_texts = make_texts(half, CAT_WORDS, rng) + make_texts(n_target - half, DOG_WORDS, rng)
    # shuffle the target: kNN's round robin serves target examples in order, and a budget smaller than the
    # target would otherwise go to the first (cat) half only
    order = rng.permutation(n_target)
    target_x, target_texts = target_x[order], [target_texts[i] for i in order]
    records = [{"text": t, "animal": "dog" if d else "cat"} for t, d in zip(pool_texts, is_dog)]
    pool = TextSet.from_texts(pool_texts, name="cat/dog pool", records=records)
    target = TextSet.from_texts(target_texts, name="cat/dog target")
    return pool, target, pool_x, target_x, is_dog


METHODS = {
    "random": {},
    "knn": {"metric": "l2"},
    "dsir": {},
    "gotd": {},
}


def select_all(pool, target, pool_x, target_x, budget: int, seed: int) -> dict[str, np.ndarray]:
    """Row indices each method selects (methods not installed are skipped)."""
    from tunesift.registry import POOL_METHODS

    import tunesift.pool  # noqa: F401  (registers the methods)

    picks = {}
    for name, settings in METHODS.items():
        if name not in POOL_METHODS:
            print(f"{name}: not available in this installation, skipped")
            continue
        result = select_from_pool(pool, target, budget, method=name, seed=seed, pool_embeddings=pool_x,
                                  target_embeddings=target_x, cache_dir=None, device="cpu", progress=False,
                                  **settings)
        picks[name] = np.asarray(result.indices)
    return picks


def draw(path: Path, pool_x, target_x, is_dog, picks: dict[str, np.ndarray]) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(picks), figsize=(3.1 * len(picks), 3.3), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (name, rows) in zip(axes, picks.items()):
        ax.scatter(*pool_x[~is_dog].T, s=3, c="#c9c9c9", label="pool: cat (99%)", rasterized=True)
        ax.scatter(*pool_x[is_dog].T, s=9, c="#7a7a7a", label="pool: dog (1%)")
        ax.scatter(*target_x.T, s=16, facecolors="none", edgecolors="#2b6cb0", linewidths=0.6,
                   label="target (50/50)")
        ax.scatter(*pool_x[rows].T, s=22, c="#e53e3e", marker="x", linewidths=1.0, label="selected")
        ax.set_title(f"{name}: {100 * is_dog[rows].mean():.0f}% dogs", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=6.5, loc="lower left", framealpha=0.9)
    fig.suptitle(f"What each method picks from a 99% cat / 1% dog pool for a 50/50 target "
                 f"(budget = {len(next(iter(picks.values())))})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    import io

    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    buffer.seek(0)
    # a 64-colour palette keeps the committed picture small (~20 kB) without visible loss
    Image.open(buffer).convert("RGB").quantize(64).save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".png")), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    pool, target, pool_x, target_x, is_dog = build(n_pool=args.pool_size, seed=args.seed)
    budget = int(is_dog.sum())  # as many as there are dogs: a method that wants dogs can take them all
    picks = select_all(pool, target, pool_x, target_x, budget, args.seed)
    shares = {name: float(is_dog[rows].mean()) for name, rows in picks.items()}
    print(f"pool: {len(pool)} ({int(is_dog.sum())} dogs); target: {len(target)} (50% dogs); budget {budget}")
    for name, share in shares.items():
        print(f"  {name:7s} picks {100 * share:5.1f}% dogs")
    if not args.no_plot:
        print(f"wrote {draw(Path(args.out), pool_x, target_x, is_dog, picks)}")
    return shares


if __name__ == "__main__":
    main()
