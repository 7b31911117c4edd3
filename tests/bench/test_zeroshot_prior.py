"""benchmarks/zeroshot_prior.py: the label-prior correction against a plain loop, and the script on a folder."""

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def prior(repo_script):
    return repo_script("benchmarks/zeroshot_prior.py")


def test_prior_correction_is_the_argmax_after_each_labels_mean_is_removed(prior):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 4)) + np.array([3.0, 0.0, 0.0, -3.0])  # label 0 preferred, label 3 avoided
    means = [sum(scores[i, j] for i in range(50)) / 50 for j in range(4)]
    loop = [max(range(4), key=lambda j: scores[i, j] - means[j]) for i in range(50)]
    got = prior.prior_corrected(scores)
    assert got.tolist() == loop
    assert np.bincount(scores.argmax(1), minlength=4)[3] == 0 and np.bincount(got, minlength=4)[3] > 0


def test_the_script_reads_a_bench_folder_and_compares_to_none(prior, tmp_path, capsys):
    labels = np.arange(40) % 2
    biased = np.stack([np.where(labels == 0, 0.0, -0.5), np.full(40, 0.2)], axis=1)  # always label 1 as scored
    for method, budget, scores in (("none", 0, biased), ("random", 10, biased + [[0.0, -0.45]])):
        run = tmp_path / "runs" / f"method={method},budget={budget},seed=0"
        run.mkdir(parents=True)
        np.savez(run / "per_example.npz", predicted=scores.argmax(1), labels=labels, label_scores=scores,
                 correct=(scores.argmax(1) == labels).astype(np.uint8))
        (run / "result.json").write_text(json.dumps({"method": method, "budget": budget, "seed": 0,
                                                      "eval": "zero-shot"}))
    assert prior.main([str(tmp_path), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "| none | — | 1 | [0, 40] | 0.5000 | 1.0000 |" in out  # the prior alone made it wrong half the time
    assert "| random | 10 | 1 | [20, 20] | 1.0000 | 1.0000 |" in out
    assert "**Accuracy, label prior removed, budget 10**" in out and "Δ vs none" in out
