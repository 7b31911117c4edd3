"""How much of a zero-shot bench's differences is the model's label prior? A diagnostic of a finished run.

A causal LM scoring verbalizers ("World", "Sports", "Business", "Technology") after a prompt prefers some
labels whatever the text (Zhao et al., *Calibrate Before Use*, ICML 2021). A warm-up can move that prior
without teaching the task anything, and the accuracy moves with it. For every run of a
``tunesift bench gotd --eval zero-shot`` folder (its ``runs/*/per_example.npz``) this prints:

- the predicted-label counts next to the true ones (where the prior pushes the predictions);
- the accuracy as scored, and after removing each run's label prior: from every label's score the mean
  of that label's score over the run's test texts is subtracted before the argmax. The correction uses
  the test texts themselves but none of their labels (transductive, as contextual calibration); it is a
  diagnostic, not the bench's metric;
- both as paired comparisons to ``none`` and ``random`` (``tunesift.bench.stats``: bootstrap over the test
  texts, seeds averaged per text, as ``results.md``).

    python benchmarks/zeroshot_prior.py bench-gotd-agnews
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def prior_corrected(label_scores: np.ndarray) -> np.ndarray:
    """(n,) argmax of each row after subtracting each label's mean score over the rows."""
    scores = np.asarray(label_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"label_scores must be (n, labels) with n ≥ 1, got shape {scores.shape}")
    return (scores - scores.mean(axis=0, keepdims=True)).argmax(axis=1)


def load_runs(folder: Path) -> dict[tuple[str, int], list[dict]]:
    """(method, budget) -> one entry per seed: predictions, labels, label scores (seed order)."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for path in sorted(folder.glob("runs/*/per_example.npz")):
        record = json.loads((path.parent / "result.json").read_text())
        if record.get("eval") != "zero-shot":
            raise SystemExit(f"{path.parent}: not a zero-shot run (eval {record.get('eval')!r})")
        z = np.load(path)
        runs.setdefault((record["method"], int(record["budget"])), []).append(
            {"seed": int(record["seed"]), "predicted": z["predicted"], "labels": z["labels"],
             "label_scores": z["label_scores"]})
    for entries in runs.values():
        entries.sort(key=lambda e: e["seed"])
    return runs


def main(argv: list[str] | None = None) -> int:
    from tunesift.bench.stats import compare_methods, markdown

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", help="a `tunesift bench gotd --eval zero-shot` output folder")
    p.add_argument("--n-boot", type=int, default=10000)
    args = p.parse_args(argv)
    runs = load_runs(Path(args.bench))
    if not runs:
        raise SystemExit(f"{args.bench}: no runs/*/per_example.npz")
    labels = next(iter(runs.values()))[0]["labels"]
    k = next(iter(runs.values()))[0]["label_scores"].shape[1]
    print(f"{len(labels)} test texts; true label counts {np.bincount(labels, minlength=k).tolist()}\n")
    print("| method | budget | seeds | predicted label counts (seed 0) | accuracy | accuracy, prior removed |")
    print("|---|---|---|---|---|---|")
    raw, corrected = {}, {}
    for (method, budget), entries in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if any(not np.array_equal(e["labels"], labels) for e in entries):
            raise SystemExit(f"{method} {budget}: other test texts than the first run's")
        name = method if method == "none" else f"{method} {budget}"
        raw[name] = np.stack([(e["predicted"] == labels).astype(np.float64) for e in entries])
        corrected[name] = np.stack([(prior_corrected(e["label_scores"]) == labels).astype(np.float64)
                                    for e in entries])
        counts = np.bincount(entries[0]["predicted"], minlength=k).tolist()
        print(f"| {method} | {budget or '—'} | {len(entries)} | {counts} | {raw[name].mean():.4f} | "
              f"{corrected[name].mean():.4f} |")
    for title, values in (("as scored", raw), ("label prior removed", corrected)):
        budgets = sorted({b for _, b in runs if b})
        for budget in budgets:
            table = {m: v for m, v in values.items() if m == "none" or m.endswith(f" {budget}")}
            refs = ["none"] + [f"random {budget}"] * (f"random {budget}" in table)
            print(f"\n**Accuracy, {title}, budget {budget}**\n")
            print(markdown(compare_methods(table, refs, n_boot=args.n_boot), metric="accuracy", references=refs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
