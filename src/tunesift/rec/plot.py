"""What a recommendation-data selection picked: one picture from its ``scores.parquet``.

For DEALRec (columns ``influence`` and ``effort``): each candidate user as a point of min-max normalised
influence (x) and effort (y), the picked ones highlighted and the hard-pruned ones (``stratum`` -1,
the top ``hard_prune`` share of scores) marked; beside it, how many candidates and how many picks fall
into each score stratum, which shows coverage-enhanced sampling flattening the score distribution.
Other methods get the second panel alone (their ``score`` column).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from tunesift.io.atomic import atomic_write
from tunesift.output import pyplot
from tunesift.rec.select import min_max_normalize


def read_scores(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a ``scores.parquet`` (or of the folder holding one) as numpy arrays."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        path = path / "scores.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such scores file (a `tunesift dealrec` output folder holds one)")
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def plot_selection(scores: Mapping[str, np.ndarray] | str | os.PathLike, path: str | os.PathLike,
                   title: str = "", n_bins: int = 50) -> Path:
    """Draw what a selection picked (see the module docstring) into the PNG ``path``, atomically.

    Args:
        scores: the columns of ``scores.parquet`` (``score``, ``selected``, and for DEALRec ``influence``,
            ``effort``, ``stratum``), or the path of that file or of its folder.
        n_bins: score bins of the right panel when there is no ``stratum`` column.
    """
    columns = read_scores(scores) if isinstance(scores, (str, os.PathLike)) else dict(scores)
    key = "method_score" if "method_score" in columns else "score"  # the method's own score where written
    missing = [c for c in (key, "selected") if c not in columns]
    if missing:
        raise ValueError(f"scores lack the column(s) {missing}; expected a tunesift selection's scores.parquet")
    score = np.asarray(columns[key], dtype=np.float64)
    picked = np.asarray(columns["selected"], dtype=bool)
    if score.ndim != 1 or picked.shape != score.shape or not score.size:
        raise ValueError(f"`score` and `selected` must be non-empty columns of one length, got {score.shape} "
                         f"and {picked.shape}")
    if not np.isfinite(score).all():
        raise ValueError("`score` holds non-finite values")
    stratum = np.asarray(columns["stratum"], dtype=np.int64) if "stratum" in columns else None
    pruned = stratum < 0 if stratum is not None else np.zeros_like(picked)
    scatter = "influence" in columns and "effort" in columns and np.isfinite(columns["effort"]).all()

    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if scatter else 1, figsize=(11 if scatter else 6, 4.2), squeeze=False)
    axes = axes[0]
    if scatter:
        ax = axes[0]
        x = min_max_normalize(columns["influence"])
        y = min_max_normalize(columns["effort"])
        rest = ~picked & ~pruned
        ax.scatter(x[rest], y[rest], s=4, c="0.7", lw=0, label=f"not picked ({rest.sum():,})")
        if pruned.any():
            ax.scatter(x[pruned], y[pruned], s=6, c="tab:orange", marker="x", lw=0.6,
                       label=f"hard-pruned: top scores ({pruned.sum():,})")
        ax.scatter(x[picked], y[picked], s=5, c="tab:red", lw=0, label=f"picked ({picked.sum():,})")
        ax.set_xlabel("influence (min-max normalised)")
        ax.set_ylabel("effort (min-max normalised)")
        ax.legend(fontsize="small", markerscale=3, loc="best")
        ax.grid(alpha=0.3)
    ax = axes[-1]
    if stratum is not None and (stratum >= 0).any():
        k = int(stratum.max()) + 1
        kept = stratum >= 0
        counts = np.bincount(stratum[kept], minlength=k)
        chosen = np.bincount(stratum[kept & picked], minlength=k)
        lo, hi = score[kept].min(), score[kept].max()
        centres = lo + (np.arange(k) + 0.5) * (hi - lo) / k
        width = (hi - lo) / k if hi > lo else 1.0
        ax.set_xlabel(f"score, {k} equal-width strata" + (f" (above {hi:.3g}: hard-pruned)" if pruned.any() else ""))
    else:
        counts, edges = np.histogram(score, bins=n_bins)
        chosen, _ = np.histogram(score[picked], bins=edges)
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        ax.set_xlabel("score")
    ax.bar(centres, counts, width=width * 0.95, color="0.75", label="candidates")
    ax.bar(centres, chosen, width=width * 0.6, color="tab:red", label="picked")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel("users")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"{picked.sum():,} of {score.size:,} picked")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
